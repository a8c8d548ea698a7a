r"""ALIF: leaky integrate-and-fire with an adaptive threshold that has its own decay (Bellec et al. 2018, LSNN).

Per time step, with :math:`k = 1/\tau`, :math:`\rho = e^{-1/\tau_a}` and :math:`v_r^0 = v_{reset}` (hard
reset) or 0 (soft reset):

.. math::
    h_t &= v_{t-1} + k\,(x_t - (v_{t-1} - v_r^0))       &\text{(the LIF membrane of spikeforge.functional.lif)}\\
    \vartheta_t &= V_{th} + \beta\,a_{t-1}              &\text{(threshold raised by recent spikes)}\\
    s_t &= H(h_t - \vartheta_t)\\
    v_t &= h_t (1 - s_t) + v_{reset}\, s_t \;\text{(hard)} \quad\text{or}\quad h_t - \vartheta_t s_t \;\text{(soft)}\\
    a_t &= \rho\, a_{t-1} + s_t                          &\text{(adaptation: +1 per spike, decays with } \tau_a)

So every spike raises the threshold by :math:`\beta`, and without spikes the excess
:math:`\vartheta_t - V_{th}` shrinks by the factor :math:`e^{-1/\tau_a}` per step.  With :math:`\beta = 0`
ALIF is exactly LIF (bit for bit).  ``tau``, ``tau_adapt``, ``beta`` and ``v_threshold`` are floats or
tensors broadcastable to ``[B, ...]``; gradients flow to every tensor that requires one.  The reset is not
detached.

Example:
    >>> import torch
    >>> from spikeforge.functional import alif
    >>> x = torch.full((6, 1, 1), 2.0)
    >>> s, state = alif(x, tau=2.0, beta=0.5, tau_adapt=10.0)
    >>> s.flatten().tolist()          # the raised threshold skips spikes that LIF would emit
    [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ._checks import check_number, check_step, check_v_reset


class ALIFState(NamedTuple):
    """``v``: membrane after reset, ``a``: adaptation variable (threshold = V_th + beta * a)."""

    v: torch.Tensor
    a: torch.Tensor


# fmt: off
def alif_update(x, v, a, k, vth, beta, rho, vr, hard):
    h = v + (x - (v - vr)) * k
    th = vth + beta * a
    s = spike(h - th)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    v1 = hard * (h * (ONE - s) + vr * s) + (ONE - hard) * (h - th * s)  # noqa: F821
    a1 = rho * a + s
    return s, v1, a1


def alif_update_vjp(gs, gv1, ga1, x, v, a, k, vth, beta, rho, vr, hard, alpha):
    h = v + (x - (v - vr)) * k
    th = vth + beta * a
    s = heav(h - th)  # noqa: F821
    d = dspike(h - th, alpha)  # noqa: F821
    soft = ONE - hard  # noqa: F821
    gst = gs + gv1 * (hard * (vr - h) - soft * th) + ga1
    gh = gv1 * (hard * (ONE - s) + soft) + gst * d  # noqa: F821
    gth = -(gv1 * soft * s) - gst * d
    gx = gh * k
    gv = gh * (ONE - k)  # noqa: F821
    gk = gh * (x - (v - vr))
    gvr = gh * k + gv1 * hard * s
    ga = gth * beta + ga1 * rho
    return gx, gv, ga, gk, gth, gth * a, ga1 * a, gvr, ZERO * hard  # noqa: F821
# fmt: on


ALIF_CELL = Cell("alif", alif_update, alif_update_vjp, states=("v", "a"),
                 params=("k", "v_threshold", "beta", "rho", "v_reset", "hard"), no_grad_params=("hard",))


@register_cell(ALIF_CELL, help="LIF with an adaptive threshold that decays with its own time constant (Bellec 2018)")
def _alif_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5

    def example(hard, label):
        params = (uniform(g, dtype, (C, 1), 0.25, 1.0, grad=True), torch.tensor(0.8, dtype=dtype).requires_grad_(),
                  uniform(g, dtype, (C, 1), 0.0, 0.5, grad=True), uniform(g, dtype, (C, 1), 0.6, 0.95, grad=True),
                  0.1 if hard else 0.0, float(hard))
        states = (uniform(g, dtype, (B, C, M), 0.0, 0.5), uniform(g, dtype, (B, C, M)))
        return CellExample(uniform(g, dtype, (T, B, C, M), 0.0, 2.0), states, params, label=label)

    return example(True, "hard reset"), example(False, "soft reset")


def adaptation_decay(tau_adapt):
    r""":math:`\rho = e^{-1/\tau_a}` (a float or a tensor, following ``tau_adapt``)."""
    return torch.exp(-1.0 / tau_adapt) if torch.is_tensor(tau_adapt) else math.exp(-1.0 / tau_adapt)


def alif(x_seq, state=None, *, tau=2.0, tau_adapt=20.0, beta=0.2, v_threshold=1.0, v_reset=0.0,
         surrogate="atan", backend="auto", return_v=False, check_inputs=True):
    """Adaptive-threshold LIF over ``x_seq [T, B, ...]``; returns ``(spikes, ALIFState)`` (plus the post-reset
    membrane at every step with ``return_v``).  ``tau`` >= 1 and ``tau_adapt`` > 0 are in time steps;
    ``beta`` >= 0 is the threshold increment per spike; ``v_reset=None`` selects the soft reset."""
    check_number("tau", tau, low=1.0)
    check_number("tau_adapt", tau_adapt, low=0.0, low_inclusive=False)
    check_number("beta", beta, low=0.0)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    v_reset = check_v_reset(v_reset)
    hard = v_reset is not None
    params = (1.0 / tau, v_threshold, beta, adaptation_decay(tau_adapt), v_reset if hard else 0.0,
              1.0 if hard else 0.0)
    init = (v_reset if hard else 0.0, 0.0)
    return cell_seq(ALIF_CELL, x_seq, state, ALIFState, params, surrogate=surrogate, backend=backend,
                    return_v=return_v, check_inputs=check_inputs, init=init)


def alif_step(x_t, state=None, **kw):
    """One ALIF step: ``x_t [B, ...]`` -> ``(s_t, ALIFState)``; keyword arguments as :func:`alif`."""
    check_step(x_t)
    s, st = alif(x_t.unsqueeze(0), state, **kw)
    return s.squeeze(0), st
