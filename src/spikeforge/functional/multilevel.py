r"""Multi-level (burst-count) spikes: integer spike counts up to a cap (the IF node of SpiCalib/BrainCog's
conversion with ``gamma_burst > 1``; the burst idea of LIFB).

Per time step, with :math:`k = 1/\tau` (``tau=None``: IF, :math:`k = 0`) and cap :math:`\Gamma \ge 1`:

.. math::
    h_t = v_{t-1} - k\,v_{t-1} + x_t, \qquad
    n_t = \mathrm{clamp}(\lfloor h_t / \vartheta \rfloor, 0, \Gamma), \qquad
    v_t = h_t - \vartheta\, n_t \quad\text{(soft reset by what was emitted)}

With :math:`\Gamma = 1` this is exactly the binary IF/LIF neuron with soft reset
(``spikeforge.functional.lif(..., v_reset=None, decay_input=False)``).  Gradient: the surrogate summed over the
levels, :math:`\partial n/\partial h = \sum_{j=1}^{\Gamma} g'(h - j\vartheta)`.

Example:
    >>> import torch
    >>> from spikeforge.functional import multilevel
    >>> n, state = multilevel(torch.tensor([[[2.5]], [[0.2]], [[9.0]]]), cap=3)
    >>> n.flatten().tolist()          # h = 2.5 -> 2 spikes (v 0.5); 0.7 -> 0; 9.7 -> capped at 3 (v 6.7)
    [2.0, 0.0, 3.0]
"""

from __future__ import annotations

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ._checks import check_number, check_step
from .lif import LIFState


# fmt: off
def multilevel_update(x, v, k, vth, cap):
    h = v - v * k + x
    n = mspike(h, vth, cap)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    return n, h - vth * n


def multilevel_update_vjp(gn, gv1, x, v, k, vth, cap, alpha):
    h = v - v * k + x
    n = clamp(floor(h / vth), ZERO, cap)  # noqa: F821
    du, dk = dmspike(h, vth, cap, alpha)  # noqa: F821
    g_n = gn - gv1 * vth
    gh = gv1 + g_n * du
    return gh, gh * (ONE - k), -(gh * v), -(gv1 * n) - g_n * dk, ZERO * cap  # noqa: F821
# fmt: on


MULTILEVEL_CELL = Cell("multilevel", multilevel_update, multilevel_update_vjp, states=("v",),
                       params=("k", "v_threshold", "cap"), no_grad_params=("cap",), const_params=("cap",))


@register_cell(MULTILEVEL_CELL, help="integer spikes 0..cap per step, soft reset")
def _multilevel_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5
    params = (0.5, uniform(g, dtype, (C, 1), 0.4, 0.9, grad=True), 4.0)
    return CellExample(uniform(g, dtype, (T, B, C, M), 0.0, 2.0), (uniform(g, dtype, (B, C, M)),), params)


def multilevel(x_seq, state=None, *, cap=4, tau=None, v_threshold=1.0, surrogate="atan", backend="auto",
               return_v=False, check_inputs=True):
    """Integer spikes ``0..cap`` over ``x_seq [T, B, ...]``; returns ``(n, LIFState)`` (plus the membrane after
    reset with ``return_v``).  ``cap`` is an integer >= 1; ``tau=None`` is IF, else LIF with ``tau >= 1``."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap: expected an integer >= 1 (the most spikes per step), got {cap!r}")
    if tau is not None:
        check_number("tau", tau, low=1.0)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    k = 0.0 if tau is None else 1.0 / tau
    return cell_seq(MULTILEVEL_CELL, x_seq, state, LIFState, (k, v_threshold, float(cap)), surrogate=surrogate,
                    backend=backend, return_v=return_v, check_inputs=check_inputs)


def multilevel_step(x_t, state=None, **kw):
    """One step: ``x_t [B, ...]`` -> ``(n_t, LIFState)``; keyword arguments as :func:`multilevel`."""
    check_step(x_t)
    n, st = multilevel(x_t.unsqueeze(0), state, **kw)
    return n.squeeze(0), st
