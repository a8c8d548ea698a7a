r"""A recurrent neuron's update written once, as a :class:`Cell`, plus its torch bindings and the reference loop.

A :class:`Cell` holds two plain Python functions, written with arithmetic and a few helper names only (the way
:mod:`spikeforge.surrogate` writes derivatives), so :func:`spikeforge.surrogate.bind` can point those names at
torch (:func:`torch_namespace`), at scalar numba math (:mod:`spikeforge.kernels.fused`) or at Triton:

- ``step(x, *states, *params) -> (out, *new_states)``: one time step.  Helpers: ``spike(u)`` (Heaviside
  :math:`u \ge 0` with the surrogate gradient), ``ste(q, a)`` (value ``q``, gradient of ``a``), ``floor``,
  ``relu``, ``clamp(u, lo, hi)``, ``mspike(u, vth, cap)`` (``clamp(floor(u / vth), 0, cap)``, the surrogate
  summed over the levels), and the constants ``ONE`` / ``ZERO`` (typed like the data).
- ``vjp(g_out, *g_new_states, x, *states, *params, alpha) -> (g_x, *g_states, *g_params)``: the hand-written
  vector-Jacobian product of ``step`` (it recomputes what it needs from the step's inputs).  Helpers:
  ``dspike(u, alpha)``, ``dmspike(u, vth, cap, alpha)``, ``heav``, ``relu``, ``step`` (``[x > 0]``),
  ``floor``, ``ONE``, ``ZERO``.

:func:`reference_seq` runs a cell as a plain torch loop over ``x_seq.unbind(0)`` (autograd gives the gradient):
the definition of truth every other execution is tested against.  :func:`spikeforge.kernels.dispatch.run_cell`
picks the execution.

Example:
    >>> import torch
    >>> from spikeforge.kernels.cell import Cell, reference_seq
    >>> from spikeforge.surrogate import get_surrogate
    >>> def if_step(x, v, vth):            # integrate-and-fire with soft reset
    ...     h = v + x
    ...     s = spike(h - vth)
    ...     return s, h - vth * s
    >>> def if_vjp(gs, gv, x, v, vth, alpha):
    ...     h = v + x
    ...     s = heav(h - vth)
    ...     d = dspike(h - vth, alpha)
    ...     gh = gs * d + gv * (ONE - vth * d)
    ...     return gh, gh, -gs * d + gv * (vth * d - s)
    >>> cell = Cell("if_soft", if_step, if_vjp, states=("v",), params=("vth",))
    >>> s, (v,), _ = reference_seq(cell, torch.full((4, 1), 0.6), (torch.zeros(1),), (torch.tensor(1.0),),
    ...                            get_surrogate("atan"))
    >>> s.flatten().tolist()
    [0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..surrogate import Surrogate, SpikeFn, bind


@dataclass(frozen=True, eq=False)
class Cell:
    """A recurrent neuron's update: ``step`` and its ``vjp`` (see the module docstring), with slot names."""

    name: str
    step: Callable
    vjp: Callable
    states: tuple
    params: tuple
    no_grad_params: tuple = ()  # parameters that are flags/configuration: never get a gradient
    # no-gradient parameters baked into the fused kernels as compile-time constants (one kernel per value): a
    # loop bound such as a spike cap becomes a constant trip count, so the loop unrolls and the row vectorises
    const_params: tuple = ()
    # parameters that may change over time: broadcastable to the whole ``[T, B, ...]`` input (e.g. GLIF's
    # conductance per time step and channel); every execution hands ``step`` the value for the current step
    seq_params: tuple = ()

    def __post_init__(self):
        if len(self.states) < 1:
            raise ValueError(f"cell {self.name!r}: needs at least one state")
        if not set(self.const_params) <= set(self.no_grad_params):
            raise ValueError(f"cell {self.name!r}: const_params {self.const_params} must be no_grad_params")
        if not set(self.seq_params) <= set(self.params) - set(self.const_params):
            raise ValueError(f"cell {self.name!r}: seq_params {self.seq_params} must be non-constant params")

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_params(self) -> int:
        return len(self.params)


# --- torch bindings ------------------------------------------------------------------------------------
class StraightThroughFn(torch.autograd.Function):
    """Value ``q``, gradient passed to ``a`` unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, q, a):
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        return None, g


class MultiSpikeFn(torch.autograd.Function):
    r"""Integer spike count ``clamp(floor(u / vth), 0, cap)``; gradient: the surrogate summed over the levels,
    :math:`\sum_{k=1}^{cap} g'(u - k\,\vartheta)` for ``u`` and :math:`-\sum_k k\,g'(u - k\vartheta)` for ``vth``."""

    @staticmethod
    def forward(ctx, u, vth, cap, surrogate):
        ctx.save_for_backward(u, vth)
        ctx.cap, ctx.surrogate = cap, surrogate
        return torch.clamp(torch.floor(u / vth), min=0.0, max=float(cap))

    @staticmethod
    def backward(ctx, g):
        u, vth = ctx.saved_tensors
        du = torch.zeros_like(u)
        dth = torch.zeros_like(u)
        for k in range(1, int(ctx.cap) + 1):
            d = ctx.surrogate.derivative(u - vth * float(k))
            du = du + d
            dth = dth - float(k) * d
        gu = g * du
        gth = (g * dth).sum_to_size(vth.shape) if vth.requires_grad else None
        return gu, gth, None, None


def torch_namespace(surrogate: Surrogate) -> dict:
    """Helper names of ``Cell.step`` bound to torch (``spike`` carries ``surrogate``'s gradient)."""
    return {
        "spike": lambda u: SpikeFn.apply(u, surrogate),
        "ste": StraightThroughFn.apply,
        "mspike": lambda u, vth, cap: MultiSpikeFn.apply(u, vth, cap, surrogate),
        "floor": torch.floor,
        "relu": torch.relu,
        "clamp": lambda u, lo, hi: torch.clamp(u, lo, hi),
        "ONE": 1.0,
        "ZERO": 0.0,
    }


def torch_step(cell: Cell, surrogate: Surrogate) -> Callable:
    """``cell.step`` bound to torch (used by the reference execution and by single-step calls)."""
    return bind(cell.step, torch_namespace(surrogate))


def reference_seq(cell: Cell, x_seq, states, params, surrogate: Surrogate, record: bool = False):
    """Plain torch loop over ``x_seq.unbind(0)`` calling ``cell.step`` (autograd gives the gradient)."""
    step = torch_step(cell, surrogate)
    outs, vs = [], []
    states = tuple(states)
    T = x_seq.shape[0]
    seq = [n in cell.seq_params for n in cell.params]  # seq params have x_seq's rank (see run_cell)
    for t, x in enumerate(x_seq.unbind(0)):
        ps = [(p[t] if p.shape[0] == T else p[0]) if is_seq else p for p, is_seq in zip(params, seq)]
        o, *states = step(x, *states, *ps)
        outs.append(o)
        if record:
            vs.append(states[0])
    return torch.stack(outs), tuple(states), (torch.stack(vs) if record else None)
