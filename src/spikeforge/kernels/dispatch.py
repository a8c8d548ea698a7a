"""The one place that picks an execution for a neuron recurrence.

``backend="auto"`` picks the fastest available backend for the tensor: ``triton`` for float32/float64 CUDA
tensors (when triton is installed), ``cpu`` (numba) for float32/float64 CPU tensors, else ``reference``
(half precision always: the reference rounds every op as torch does).  A named backend
is used or a ValueError says why it cannot be — it is never silently replaced.  :func:`resolve_backend`
tells what "auto" chose, so runs can record it.
"""

from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("auto", "reference", "cpu", "triton")


def check_backend_name(backend) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: unknown value {backend!r}; allowed: {', '.join(BACKENDS)}")
    return backend


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The concrete backend that ``backend`` means for tensor ``x``."""
    check_backend_name(backend)
    if backend != "auto":
        return backend
    if x.dtype not in (torch.float32, torch.float64):  # half precision: the reference rounds per op
        return "reference"
    if x.device.type == "cuda":
        return "triton" if _has("triton") else "reference"
    if x.device.type == "cpu" and _has("numba"):
        return "cpu"
    return "reference"


def lif_family(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, backend, check):
    """Run the LIF-family recurrence with the chosen backend; returns ``(spikes, v_T, v_seq | None)``."""
    name = resolve_backend(backend, x_seq)
    if name == "reference":
        from .reference import lif_reference

        if check and not bool(torch.isfinite(x_seq.detach()).all()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        return lif_reference(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v)
    if name == "cpu":
        if not _has("numba"):
            raise ValueError("backend='cpu' needs numba, which is not installed (pip install numba)")
        from ._layout import permute_seq, permute_step, step_perm
        from .cpu import lif_cpu

        order = step_perm(x_seq)
        if order is None:
            return lif_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)
        # a dense non-C layout (channels-last): run in memory order, hand back the same layout
        s, v_last, v_seq = lif_cpu(permute_seq(x_seq, order), permute_step(v0, order), permute_step(k, order),
                                   permute_step(v_th, order), v_reset, decay_input, detach_reset, surrogate,
                                   return_v, check)
        return (permute_seq(s, order, inverse=True), permute_step(v_last, order, inverse=True),
                None if v_seq is None else permute_seq(v_seq, order, inverse=True))
    # triton
    if not _has("triton"):
        raise ValueError("backend='triton' needs triton, which is not installed (pip install 'spikeforge[triton]')")
    from .triton import lif_triton

    return lif_triton(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)
