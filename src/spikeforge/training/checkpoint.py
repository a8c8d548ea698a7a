"""Checkpoints: one safetensors file holding every tensor, plus a JSON sidecar; nothing is ever unpickled.

``save_checkpoint(path, model_state, optim_state, meta)`` writes ``<path>.safetensors`` atomically
(temporary file in the same folder, fsync, ``os.replace``, fsync of the folder): a crash at any point
leaves the previous checkpoint intact. The file embeds the JSON metadata (config, epoch, step, the
optimiser's non-tensor state, RNG state, metric history), so it is self-contained and the rename is the
single commit point; ``<path>.json`` is a readable copy written after it.

Example:
    >>> import tempfile, torch
    >>> from spikeforge.training.checkpoint import save_checkpoint, load_checkpoint
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Linear(2, 3)
    >>> opt = torch.optim.Adam(net.parameters())
    >>> net(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> _ = save_checkpoint(d + "/last", net.state_dict(), opt.state_dict(), {"epoch": 1})
    >>> ck = load_checkpoint(d + "/last")
    >>> ck["meta"]["epoch"], torch.equal(ck["model"]["weight"], net.weight)
    (1, True)
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "spikeforge-checkpoint/1"


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - folders cannot be fsynced on some filesystems
        pass


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    _atomic_write(Path(path), text.encode())


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def _split_optim(optim_state: dict, tensors: dict) -> dict:
    """Tensors of the optimiser state go to ``tensors``; the rest is returned as JSON-able data."""
    state_meta = {}
    for idx, st in optim_state.get("state", {}).items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                name = f"optim.{idx}.{k}"
                tensors[name] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": name}
            else:
                entry[k] = {"value": _jsonable(v)}
        state_meta[str(idx)] = entry
    return {"state": state_meta, "param_groups": _jsonable(optim_state.get("param_groups", []))}


def _join_optim(meta: dict, tensors: dict) -> dict:
    state = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {k: (tensors[e["tensor"]] if "tensor" in e else e["value"]) for k, e in entry.items()}
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):  # torch keeps betas as a tuple; JSON made it a list
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state(tensors: dict) -> dict:
    """Capture torch (CPU and CUDA), numpy and Python RNG states: tensors into ``tensors``, the rest returned."""
    tensors["rng.torch"] = torch.get_rng_state()
    n_cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
        n_cuda = torch.cuda.device_count()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    return {"cuda_devices": n_cuda, "numpy": [kind, int(pos), int(has_gauss), float(cached)],
            "python": [py[0], list(py[1]), py[2]]}


def restore_rng_state(meta: dict, tensors: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if meta.get("cuda_devices") and torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"]) if f"rng.cuda.{i}" in tensors]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))


def save_checkpoint(path, model_state: dict, optim_state: dict | None, meta: dict,
                    save_rng: bool = True) -> Path:
    """Write ``<path>.safetensors`` (atomically) and its ``<path>.json`` sidecar; returns the safetensors path."""
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        if not torch.is_tensor(v):
            raise ValueError(f"model_state[{k!r}]: expected a tensor, got {type(v).__name__}")
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    full = {"format": FORMAT, **_jsonable(meta)}
    if optim_state is not None:
        full["optimizer"] = _split_optim(optim_state, tensors)
    if save_rng:
        full["rng"] = rng_state(tensors)
    # safetensors refuses tensors sharing memory; clone the few that do (e.g. tied weights)
    seen = {}
    for k, v in list(tensors.items()):
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr is not None and ptr in seen:
            tensors[k] = v.clone()
        seen[ptr] = k
    meta_text = json.dumps(full)
    st_path = path.with_name(path.name + ".safetensors")
    _atomic_write(st_path, save(tensors, metadata={"spikeforge": meta_text}))
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(full, indent=1) + "\n")
    return st_path


def checkpoint_exists(path) -> bool:
    path = Path(path)
    return path.with_name(path.name + ".safetensors").is_file()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`: ``{"model", "optimizer", "meta", "tensors"}``.

    Only safetensors and JSON are parsed (no pickle). ``optimizer`` is ``None`` when none was saved.
    """
    from safetensors import safe_open

    path = Path(path)
    st_path = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(st_path)!r} does not exist")
    tensors = {}
    with safe_open(str(st_path), framework="pt", device=str(map_location)) as f:
        header = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    if "spikeforge" not in header:
        raise ValueError(f"{st_path}: not a spikeforge checkpoint (no 'spikeforge' metadata in the header)")
    meta = json.loads(header["spikeforge"])
    if meta.get("format") != FORMAT:
        raise ValueError(f"{st_path}: checkpoint format {meta.get('format')!r}; this spikeforge reads {FORMAT!r}")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = _join_optim(meta["optimizer"], tensors) if "optimizer" in meta else None
    return {"model": model, "optimizer": optim, "meta": meta, "tensors": tensors}
