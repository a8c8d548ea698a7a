"""Start a new run from trained weights: ``spikeforge train --init-from RUN_DIR|FILE.safetensors``.

A run folder gives its ``best`` checkpoint (else ``last``); a ``.safetensors`` file is a spikeforge checkpoint or a
plain state dict.  Only the weights are taken -- the new run has its own config, optimiser, schedule and epochs --
and they must fit the new model exactly: an error lists the missing, unexpected and mis-shaped keys.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from safetensors.torch import save_file
    >>> from spikeforge.training.finetune import init_weights
    >>> with tempfile.TemporaryDirectory() as d:
    ...     save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(Path(d) / "w.safetensors"))
    ...     net = torch.nn.Linear(3, 2)
    ...     _ = init_weights(net, Path(d) / "w.safetensors")
    ...     net.weight.sum().item()
    6.0
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import checkpoint_exists, load_checkpoint, load_model_state


def resolve_source(source) -> Path:
    """The checkpoint file ``source`` names: a run folder's best (else last) checkpoint, or the file itself."""
    path = Path(source)
    if path.is_dir():
        for name in ("best", "last"):
            ck = path / "checkpoints" / name
            if checkpoint_exists(ck):
                return ck.with_name(name + ".safetensors")
        raise ValueError(f"--init-from: {path} holds no checkpoints/best.safetensors or checkpoints/last.safetensors; "
                         "allowed: a run folder with a checkpoint, or a .safetensors file")
    if path.suffix != ".safetensors":
        raise ValueError(f"--init-from: {str(path)!r} is neither a run folder nor a .safetensors file")
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: {path} does not exist")
    return path


def _state(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            spikeforge = "spikeforge" in (f.metadata() or {})
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"--init-from: {path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if spikeforge:
        return load_checkpoint(path)["model"]
    from safetensors.torch import load_file

    return load_file(str(path))


def init_weights(model: torch.nn.Module, source) -> Path:
    """Load the weights of ``source`` into ``model`` (all keys, same shapes); returns the file read."""
    path = resolve_source(source)
    try:
        load_model_state(model, _state(path), f"--init-from {path}")
    except ValueError as e:
        raise ValueError(str(e).replace("checkpoint does not fit the model",
                                        "weights do not fit the new run's model")) from None
    return path
