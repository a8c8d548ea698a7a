r"""The fused CPU kernels as registered custom operators, for ``torch.compile`` and ``torch.export``.

``torch.compile`` cannot trace into numba (it would read the tensors' memory through numpy, which fake tensors do
not have).  Under the compiler, :func:`spikeforge.kernels.cpu.lif_cpu` therefore calls the two opaque operators
below instead of its autograd Function:

- ``spikeforge::lif_fwd(x_seq, v0, k, v_th, ...) -> (s, v_T, v_seq)``: the fused forward;
- ``spikeforge::lif_bwd(...) -> (dx, dv0, dk, dth)``: the fused backward, registered as the forward's autograd
  formula (:func:`torch.library.register_autograd`).

Both have fake implementations (shapes and dtypes only), so the compiler plans memory around them, and both run
exactly the numba kernels of :mod:`spikeforge.kernels.cpu`: compiled and eager models give the same spikes and
the same gradients.  Eager calls keep the direct path (no dispatcher overhead per call).

Parameters that are numbers in eager (``k``, ``v_th``, ``v0``) travel as ``(tensor or None, float)`` pairs; the
surrogate travels as a key into :data:`SURROGATES`, filled when the operator is traced.

Example (the operator called directly; ``torch.compile(model, fullgraph=True)`` calls it for you):
    >>> import torch
    >>> from spikeforge.kernels.ops import lif_cpu_op
    >>> from spikeforge.surrogate import get_surrogate
    >>> x = torch.full((3, 1, 2), 0.6, requires_grad=True)
    >>> s, v_T, _ = lif_cpu_op(x, 0.0, 0.5, 1.0, 0.0, False, False, get_surrogate("atan"), False, True)
    >>> s.flatten().tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    >>> s.sum().backward(); tuple(x.grad.shape)
    (3, 1, 2)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..surrogate import Surrogate

SURROGATES: dict = {}  # key -> Surrogate, for the backward operator (which takes strings, not objects)


def surrogate_key(sg: Surrogate) -> str:
    key = f"{sg.name}:{sg.alpha!r}:{id(sg.grad_source)}"
    SURROGATES.setdefault(key, sg)
    return key


def _param(t, f):
    return f if t is None else t


@torch.library.custom_op("spikeforge::lif_fwd", mutates_args=())
def lif_fwd(x_seq: Tensor, v0_t: Tensor | None, v0_f: float, k_t: Tensor | None, k_f: float, th_t: Tensor | None,
            th_f: float, v_reset: float, hard: bool, decay_input: bool, return_v: bool, check: bool,
            detach_reset: bool, surrogate: str) -> tuple[Tensor, Tensor, Tensor]:
    """The fused forward; ``detach_reset`` and ``surrogate`` are for its backward."""
    from .cpu import _lif_fwd

    s, v_last, v_seq, _, _ = _lif_fwd(x_seq, _param(v0_t, v0_f), _param(k_t, k_f), _param(th_t, th_f),
                                      v_reset if hard else None, decay_input, return_v, check)
    return s, v_last, (v_seq if v_seq is not None else x_seq.new_empty(0))


@lif_fwd.register_fake
def _(x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard, decay_input, return_v, check, detach_reset,
      surrogate):
    shape = x_seq.shape[1:]
    v_shape = v0_t.shape if v0_t is not None else shape
    return (torch.empty(x_seq.shape, dtype=x_seq.dtype), x_seq.new_empty(v_shape),
            torch.empty(x_seq.shape, dtype=x_seq.dtype) if return_v else x_seq.new_empty(0))


@torch.library.custom_op("spikeforge::lif_bwd", mutates_args=())
def lif_bwd(gs: Tensor | None, gvlast: Tensor | None, gvseq: Tensor | None, x_seq: Tensor, v0_t: Tensor | None,
            v0_f: float, k_t: Tensor | None, k_f: float, th_t: Tensor | None, th_f: float, v_reset: float, hard: bool,
            decay_input: bool, detach_reset: bool, surrogate: str, need_v0: bool, need_k: bool,
            need_th: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from .cpu import LIFFamilyCpuFn

    ctx = _Ctx(x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard, decay_input, detach_reset,
               SURROGATES[surrogate], (True, need_v0, need_k, need_th))
    gx, gv0, gk, gth = LIFFamilyCpuFn.backward(ctx, gs, gvlast, gvseq if gvseq is None or gvseq.numel() else None)[:4]
    def out(g):  # an absent gradient is an empty tensor (each its own: outputs may not alias)
        return x_seq.new_empty(0) if g is None else g.contiguous()

    return gx, out(gv0), out(gk), out(gth)


@lif_bwd.register_fake
def _(gs, gvlast, gvseq, x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard, decay_input, detach_reset, surrogate,
      need_v0, need_k, need_th):
    def like(t, need):
        return x_seq.new_empty(t.shape if t is not None else ()) if need else x_seq.new_empty(0)

    v0_like = v0_t if v0_t is not None else None
    return (torch.empty(x_seq.shape, dtype=x_seq.dtype), like(v0_like, need_v0 and v0_t is not None),
            like(k_t, need_k and k_t is not None), like(th_t, need_th and th_t is not None))


class _Ctx:
    """What :meth:`LIFFamilyCpuFn.backward` reads from its ctx, rebuilt from the operator's arguments."""

    def __init__(self, x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard, decay_input, detach, sg, needs):
        from ._layout import state_vec

        shape = x_seq.shape[1:]
        N = math.prod(shape)
        self.saved_tensors = (x_seq, None if v0_t is None else state_vec(v0_t, N), k_t, th_t)
        self.cfg = (x_seq.shape[0], math.prod(shape), shape, hard, v_reset if hard else 0.0, decay_input, detach, sg,
                    None if k_t is not None else k_f, None if th_t is not None else th_f,
                    None if v0_t is not None else v0_f, v0_t.shape if v0_t is not None else shape)
        self.xa = None
        self.needs_input_grad = needs


def _setup_context(ctx, inputs, output):
    x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard, decay_input, return_v, check, detach, sg = inputs
    ctx.save_for_backward(x_seq, v0_t, k_t, th_t)
    ctx.consts = (v0_f, k_f, th_f, v_reset, hard, decay_input, detach, sg)


def _backward(ctx, gs, gvlast, gvseq):
    x_seq, v0_t, k_t, th_t = ctx.saved_tensors
    v0_f, k_f, th_f, v_reset, hard, decay_input, detach, sg = ctx.consts
    need = ctx.needs_input_grad
    gx, gv0, gk, gth = lif_bwd(gs, gvlast, gvseq, x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, v_reset, hard,
                               decay_input, detach, sg, bool(need[1] and v0_t is not None),
                               bool(need[3] and k_t is not None), bool(need[5] and th_t is not None))
    return (gx, gv0 if need[1] and v0_t is not None else None, None, gk if need[3] and k_t is not None else None,
            None, gth if need[5] and th_t is not None else None, None, None, None, None, None, None, None, None)


lif_fwd.register_autograd(_backward, setup_context=_setup_context)


def lif_cpu_op(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
    """:func:`spikeforge.kernels.cpu.lif_cpu` through the custom operators (what runs under ``torch.compile``)."""
    hard = v_reset is not None

    def split(p):
        return (p, 0.0) if torch.is_tensor(p) else (None, float(p))

    (v0_t, v0_f), (k_t, k_f), (th_t, th_f) = split(v0), split(k), split(v_th)
    s, v_last, v_seq = lif_fwd(x_seq, v0_t, v0_f, k_t, k_f, th_t, th_f, float(v_reset) if hard else 0.0, hard,
                               bool(decay_input), bool(return_v), bool(check), bool(detach_reset),
                               surrogate_key(surrogate))
    return s, v_last, (v_seq if return_v else None)
