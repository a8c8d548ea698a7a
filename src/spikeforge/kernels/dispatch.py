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
import torch.autograd.forward_ad as _fw_ad

from ..surrogate import Surrogate, get_surrogate
from ._layout import permute_seq, permute_step, step_perm
from .cell import Cell, reference_seq

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


def _seq_view(name: str, p: torch.Tensor, x_seq: torch.Tensor) -> torch.Tensor:
    """A time-varying parameter with ``x_seq``'s rank (leading dims of size 1 added), checked to broadcast."""
    shape = tuple(x_seq.shape)
    if p.dim() > len(shape) or any(a != 1 and a != b for a, b in zip(reversed(p.shape), reversed(shape))):
        raise ValueError(f"{name}: shape {tuple(p.shape)} does not broadcast to x_seq's {shape}")
    return p.reshape((1,) * (len(shape) - p.dim()) + tuple(p.shape)) if p.dim() < len(shape) else p


def resolve_cell_backend(backend: str, x: torch.Tensor) -> str:
    """What ``backend`` means for a cell neuron (every cell has a numba and a Triton driver)."""
    return resolve_backend(backend, x)


_SURROGATES: dict = {}  # name -> Surrogate (immutable): resolved once, not on every call


def resolve_surrogate(surrogate) -> Surrogate:
    """``get_surrogate(surrogate)``, made once per name (a Surrogate is immutable)."""
    sg = _SURROGATES.get(surrogate) if type(surrogate) is str else None
    if sg is None:
        sg = get_surrogate(surrogate)
        if type(surrogate) is str:
            _SURROGATES[surrogate] = sg
    return sg


def _needs_autograd(x_seq: torch.Tensor, states, params) -> bool:
    """Whether a call must record a gradient: grad mode on and some tensor requiring one, or a forward-mode AD
    level open (where a bare forward would silently drop the tangents)."""
    if _fw_ad._current_level >= 0:
        return True
    if not torch.is_grad_enabled():
        return False
    return x_seq.requires_grad or any(torch.is_tensor(a) and a.requires_grad for a in (*states, *params))


def run_cell(cell: Cell, x_seq: torch.Tensor, states=None, params=(), surrogate="atan", backend="auto",
             record: bool = False, check: bool = True):
    """Run ``cell`` over ``x_seq [T, B, ...]``; returns ``(out, final_states, v_seq or None)``.

    ``states`` are tensors of one step's shape ``[B, ...]`` or numbers (one value everywhere), zeros by default;
    ``params`` are numbers or tensors broadcastable to ``[B, ...]`` (a ``cell.seq_params`` one to ``[T, B, ...]``).
    ``v_seq`` (``record=True``) is the first state after every step.
    """
    sg = resolve_surrogate(surrogate)
    dt = x_seq.dtype
    if states is None:
        states = (0.0,) * cell.n_states
    if len(states) != cell.n_states or len(params) != cell.n_params:
        raise ValueError(f"{cell.name}: expected {cell.n_states} states and {cell.n_params} params, got "
                         f"{len(states)} and {len(params)}")
    shape = x_seq.shape[1:]
    states = tuple(s if not torch.is_tensor(s) else s.to(dt) if s.shape == shape else s.to(dt).expand(shape)
                   for s in states)
    params = tuple(_param(cell, n, p, x_seq) for n, p in zip(cell.params, params))
    name = resolve_cell_backend(backend, x_seq)
    if name != "cpu":  # the reference and Triton executions take states as tensors
        states = tuple(s if torch.is_tensor(s) else x_seq.new_full((), s).expand(shape) for s in states)
    if name == "reference":
        if check and not torch.compiler.is_compiling() and not bool(torch.isfinite(x_seq).all()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        # floats as tensors of x's dtype, so each op rounds like the fused kernels (a Python float would be
        # combined with other floats in float64 first)
        params = tuple(p if torch.is_tensor(p) else
                       torch.tensor(p, dtype=dt, device=x_seq.device).reshape(
                           (1,) * (x_seq.dim() if n in cell.seq_params else 0))
                       for n, p in zip(cell.params, params))
        return reference_seq(cell, x_seq, states, params, sg, record)
    if name == "triton":
        from .triton import run_cell as run_cell_triton

        return run_cell_triton(cell, x_seq, states, params, sg, record, check)
    if dt not in (torch.float32, torch.float64):
        raise ValueError(f"backend='cpu': dtype {dt} is not supported (float32, float64); "
                         "use backend='reference' or 'auto' for half precision")
    if x_seq.device.type != "cpu":
        raise ValueError(f"backend='cpu': x_seq is on {x_seq.device}; the cpu backend needs CPU tensors")
    order = step_perm(x_seq)
    if order is not None:  # a dense non-C layout (channels-last): run in memory order, return the same layout
        x_seq = permute_seq(x_seq, order)
        states = tuple(permute_step(s, order) for s in states)
        params = tuple(permute_seq(p, order) if n in cell.seq_params and torch.is_tensor(p) else permute_step(p, order)
                       for n, p in zip(cell.params, params))
    if torch.compiler.is_compiling():  # numba cannot be traced: the same kernels as opaque operators (ops.py)
        from .ops import cell_op

        states = tuple(s if torch.is_tensor(s) else x_seq.new_full((), s).expand(x_seq.shape[1:]) for s in states)
        res = cell_op(cell, sg, record, check, x_seq, *states, *params)
    elif _needs_autograd(x_seq, states, params):
        res = _fused().FusedCellFn.apply(cell, sg, record, check, x_seq, *states, *params)
    else:  # nothing to differentiate: the forward kernel alone, without autograd's bookkeeping
        res = _fused().fused_forward(cell, record, check, x_seq, states, params)[0]
    out, vseq, final = res[0], res[1], tuple(res[2:])
    if order is not None:
        out, vseq = permute_seq(out, order, inverse=True), permute_seq(vseq, order, inverse=True) if record else vseq
        final = tuple(permute_step(s, order, inverse=True) for s in final)
    return out, final, (vseq if record else None)


def _param(cell: Cell, name: str, p, x_seq: torch.Tensor):
    """A parameter as the executions take it: a float, or a tensor of ``x_seq``'s dtype (detached when it is a
    flag, which never gets a gradient; with ``x_seq``'s rank when it may change over time)."""
    if not torch.is_tensor(p):
        return float(p)
    if p.dtype != x_seq.dtype:
        p = p.to(x_seq.dtype)
    if name in cell.no_grad_params:
        p = p.detach()
    if name in cell.seq_params:
        p = _seq_view(name, p, x_seq)
    return p


_FUSED = None


def _fused():
    """:mod:`spikeforge.kernels.fused`, imported on first use (importing spikeforge needs no numba)."""
    global _FUSED
    if _FUSED is None:
        if not _has("numba"):
            raise ValueError("backend='cpu' needs numba, which is not installed (pip install numba)")
        from . import fused as _FUSED
    return _FUSED
