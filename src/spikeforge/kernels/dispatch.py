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

from ._layout import permute_seq, permute_step, step_perm

BACKENDS = ("auto", "reference", "cpu", "triton")


def check_backend_name(backend) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend: unknown value {backend!r}; allowed: {', '.join(BACKENDS)}")
    return backend


_FOUND: dict = {}


def _has(mod: str) -> bool:
    """Whether ``mod`` is installed; looked up once (``find_spec`` costs microseconds on every call)."""
    found = _FOUND.get(mod)
    if found is None:
        found = _FOUND[mod] = importlib.util.find_spec(mod) is not None
    return found


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The concrete backend that ``backend`` means for tensor ``x``."""
    check_backend_name(backend)
    if backend != "auto":
        return backend
    if x.dtype not in (torch.float32, torch.float64):  # half precision: the reference rounds per op
        return "reference"
    if x.is_cuda:
        return "triton" if _has("triton") else "reference"
    if x.is_cpu and _has("numba"):
        return "cpu"
    return "reference"


def _state_tensor(v0, x_seq: torch.Tensor) -> torch.Tensor:
    """``v0`` as a tensor of one step's shape: a number becomes one value broadcast (nothing of size [B, ...] is
    allocated or saved for backward)."""
    if torch.is_tensor(v0):
        return v0
    return x_seq.new_full((), v0).expand(x_seq.shape[1:])


def lif_family(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, backend, check):
    """Run the LIF-family recurrence with the chosen backend; returns ``(spikes, v_T, v_seq | None)``.  ``v0`` is
    a tensor of one step's shape ``[B, ...]`` or a number (the same initial value everywhere)."""
    name = resolve_backend(backend, x_seq)
    if name == "cpu":
        return _lif_family_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)
    v0 = _state_tensor(v0, x_seq)
    if name == "reference":
        from .reference import lif_reference

        if check and not bool(torch.isfinite(x_seq.detach()).all()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        return lif_reference(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v)
    # triton
    if not _has("triton"):
        raise ValueError("backend='triton' needs triton, which is not installed (pip install 'spikeforge[triton]')")
    from .triton import lif_triton

    return lif_triton(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)


_lif_cpu = None  # spikeforge.kernels.cpu.lif_cpu, imported on first use (importing spikeforge needs no numba)


def _lif_family_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
    global _lif_cpu
    if _lif_cpu is None:
        if not _has("numba"):
            raise ValueError("backend='cpu' needs numba, which is not installed (pip install numba)")
        from .cpu import lif_cpu as _lif_cpu
    order = step_perm(x_seq)
    if order is None:
        return _lif_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)
    # a dense non-C layout (channels-last): run in memory order, hand back the same layout
    s, v_last, v_seq = _lif_cpu(permute_seq(x_seq, order), permute_step(v0, order), permute_step(k, order),
                                permute_step(v_th, order), v_reset, decay_input, detach_reset, surrogate,
                                return_v, check)
    return (permute_seq(s, order, inverse=True), permute_step(v_last, order, inverse=True),
            None if v_seq is None else permute_seq(v_seq, order, inverse=True))
