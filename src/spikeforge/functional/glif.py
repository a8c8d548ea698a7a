r"""GLIF: the unified gated leaky integrate-and-fire neuron (Yao et al., NeurIPS 2022, arXiv 2210.13768).

Per time step, with gates :math:`\alpha, \beta, \gamma \in [0, 1]` mixing pairs of biological features
(the update of the official ``LIFSpike_CW``):

.. math::
    I_t &= x_t\,(1 - \beta\,(1 - c_t))                              &\text{(constant vs time-dependent conductance)}\\
    u_t &= \big((1-\alpha) + \alpha\,\tau\big)\,u_{t-1}\,(1 - \gamma\,o_{t-1})
           - (1-\alpha)\,l + I_t - (1-\gamma)\,V_{re}\,o_{t-1}      &\text{(exp. decay vs linear leak; hard vs soft reset)}\\
    o_t &= H(u_t - V_{th})

:math:`(1-\alpha) + \alpha\tau` is the card's :math:`1 - \alpha(1-\tau)` written so that the reductions are
exact: gates (1, 0, 1) give LIF with decay :math:`\tau` and hard reset bit for bit
(:math:`u_t = \tau u_{t-1}(1-o_{t-1}) + x_t`), (1, 0, 0) LIF with soft reset
(:math:`u_t = \tau u_{t-1} + x_t - V_{re} o_{t-1}`; the reset is applied at the next update, undecayed), and
:math:`\alpha = 0` a non-decaying IF with linear leak :math:`l`.  The state is ``GLIFState(u, o)``: the
membrane *before* reset and the last spikes (the reset uses :math:`o_{t-1}` at the next update).

``tau``, ``leak``, ``v_reset``, ``alpha``, ``gamma`` and ``v_threshold`` are floats or tensors broadcastable to
``[B, ...]`` (per channel: shape ``[C, 1, ...]``); ``beta`` and ``conductance`` broadcast to ``x_seq``
(``conductance`` per time step and channel: ``[T, 1, C, 1, ...]``).  Surrogate default: rectangle of width 1
(:math:`[|u - V_{th}| < 0.5]`), as in the official code.

Example:
    >>> import torch
    >>> from spikeforge.functional import glif
    >>> x = torch.full((4, 1, 1), 0.3)
    >>> s, state = glif(x, tau=0.5, v_threshold=0.5, alpha=1.0, beta=0.0, gamma=1.0)
    >>> s.flatten().tolist()          # u = 0.3, 0.45, 0.525 (spike), then hard reset: 0.3
    [0.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ._checks import check_number, check_step


class GLIFState(NamedTuple):
    """``u``: membrane before reset, ``o``: spikes of the last step (both ``[B, ...]``)."""

    u: torch.Tensor
    o: torch.Tensor


# fmt: off
def glif_update(x, u, o, tau, vth, leak, vre, alpha, gamma, beta, c):
    I = x * (ONE - beta * (ONE - c))  # noqa: E741, F821  (names bound by spikeforge.kernels.cell)
    decay = (ONE - alpha) + alpha * tau  # noqa: F821
    u1 = decay * u * (ONE - gamma * o) - (ONE - alpha) * leak + I - (ONE - gamma) * vre * o  # noqa: F821
    o1 = spike(u1 - vth)  # noqa: F821
    return o1, u1, o1


def glif_update_vjp(go, gu1, go1, x, u, o, tau, vth, leak, vre, alpha, gamma, beta, c, alpha_sg):
    f = ONE - beta * (ONE - c)  # noqa: F821
    I = x * f  # noqa: E741
    decay = (ONE - alpha) + alpha * tau  # noqa: F821
    r = ONE - gamma * o  # noqa: F821
    u1 = decay * u * r - (ONE - alpha) * leak + I - (ONE - gamma) * vre * o  # noqa: F821
    d = dspike(u1 - vth, alpha_sg)  # noqa: F821
    gs = go + go1
    du = gu1 + gs * d
    g_u = du * decay * r
    g_o = du * (-(decay * u * gamma) - (ONE - gamma) * vre)  # noqa: F821
    g_tau = du * alpha * u * r
    g_vth = -(gs * d)
    g_leak = -(du * (ONE - alpha))  # noqa: F821
    g_vre = -(du * (ONE - gamma) * o)  # noqa: F821
    g_alpha = du * ((tau - ONE) * u * r + leak)  # noqa: F821
    g_gamma = du * (vre * o - decay * u * o)
    gxb = du * x
    return (du * f, g_u, g_o, g_tau, g_vth, g_leak, g_vre, g_alpha, g_gamma, -(gxb * (ONE - c)),  # noqa: F821
            gxb * beta)
# fmt: on


# beta and the conductance broadcast to the whole input [T, B, ...] (the conductance changes every step)
GLIF_CELL = Cell("glif", glif_update, glif_update_vjp, states=("u", "o"),
                 params=("tau", "v_threshold", "leak", "v_reset", "alpha", "gamma", "beta", "conductance"),
                 seq_params=("beta", "conductance"))


@register_cell(GLIF_CELL, help="gated LIF: learnable gates mix decay, reset and input (Yao et al. 2022)")
def _glif_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5
    ch = lambda lo, hi: uniform(g, dtype, (C, 1), lo, hi, grad=True)  # noqa: E731
    params = (ch(0.1, 0.9), ch(0.3, 0.6), ch(0.0, 0.1), ch(0.2, 0.6), ch(0.2, 0.9), ch(0.1, 0.9), ch(0.1, 0.9),
              uniform(g, dtype, (T, 1, C, 1), grad=True))
    states = (uniform(g, dtype, (B, C, M), 0.0, 0.5), (uniform(g, dtype, (B, C, M)) > 0.5).to(dtype))
    return CellExample(uniform(g, dtype, (T, B, C, M), 0.0, 0.9), states, params, surrogate="rectangle")


def _check_unit(name, value):
    return check_number(name, value, low=0.0, high=1.0)


def glif(x_seq, state=None, *, tau=0.25, v_threshold=0.5, leak=0.0625, v_reset=0.5, alpha=0.55, beta=0.65,
         gamma=0.55, conductance=0.5, surrogate="rectangle", backend="auto", return_v=False, check_inputs=True):
    """Gated LIF over ``x_seq [T, B, ...]``; returns ``(spikes, GLIFState)`` (plus the membrane ``u`` at every
    step with ``return_v``).  Gates and ``tau``/``conductance`` must lie in [0, 1]; defaults are the card's init
    (tau 0.25, V_th 0.5, V_re = V_th, l = V_th / 2T at T = 4, c 0.5, gates 0.6/0.8/0.6 mapped to 0.55/0.65/0.55)."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("tau", tau),
                        ("conductance", conductance)):
        _check_unit(name, value)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    check_number("leak", leak)
    check_number("v_reset", v_reset)
    params = (tau, v_threshold, leak, v_reset, alpha, gamma, beta, conductance)
    return cell_seq(GLIF_CELL, x_seq, state, GLIFState, params, surrogate=surrogate, backend=backend,
                    return_v=return_v, check_inputs=check_inputs)


def glif_step(x_t, state=None, **kw):
    """One GLIF step: ``x_t [B, ...]`` -> ``(o_t, GLIFState)``; keyword arguments as :func:`glif`
    (a per-step ``conductance`` must then be the value for this step)."""
    check_step(x_t)
    s, st = glif(x_t.unsqueeze(0), state, **kw)
    return s.squeeze(0), st
