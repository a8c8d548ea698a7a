r"""Resonate-and-fire neuron (Izhikevich, "Resonate-and-fire neurons", Neural Networks 14(6-7):883-894, 2001): a
damped oscillator that fires when its oscillation grows past a threshold, so it responds to input that arrives at
its eigenfrequency and not to the same input off that frequency.

Izhikevich's model is :math:`\dot z = (b + i\omega) z + I(t)` with complex :math:`z = u + i w` and :math:`b < 0`.
Per time step (the exact solution of the homogeneous part over one step, the input added once per step), with
decay :math:`\lambda = e^{b} \in (0, 1]` and rotation :math:`\omega` in radians per step:

.. math::
    u'_t &= \lambda(\cos\omega\; u_{t-1} - \sin\omega\; w_{t-1}) + x_t \\
    w'_t &= \lambda(\sin\omega\; u_{t-1} + \cos\omega\; w_{t-1}) \\
    s_t &= H(w'_t - \vartheta) \\
    (u_t, w_t) &= (1 - s_t)\,(u'_t, w'_t)     &\text{(a spike resets } z \text{ to 0)}

An input pulse sets the phasor :math:`z` turning by :math:`\omega` per step while it shrinks by :math:`\lambda`;
pulses :math:`2\pi/\omega` steps apart add up in phase (the amplitude grows towards
:math:`1/(1-\lambda^{2\pi/\omega})`), pulses at another period partly cancel.  ``omega``, ``decay`` and
``v_threshold`` are floats or tensors broadcastable to ``[B, ...]``; gradients flow to every tensor that requires
one (through :math:`\lambda\cos\omega` and :math:`\lambda\sin\omega`).  The reset is not detached.

Example:
    >>> import torch, math
    >>> from spikeforge.functional import rf
    >>> x = torch.zeros(24, 2, 1)
    >>> x[::8, 0] = 1.0                  # pulses every 8 steps: the eigenperiod (omega = 2 pi / 8)
    >>> x[::5, 1] = 1.0                  # pulses every 5 steps: off resonance, more pulses
    >>> s, state = rf(x, omega=2 * math.pi / 8, decay=0.95, v_threshold=1.2)
    >>> s.sum(0).flatten().tolist()      # only the resonant input makes it fire
    [1.0, 0.0]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ._checks import check_number, check_step

__all__ = ["RFState", "rf", "rf_step"]


class RFState(NamedTuple):
    """``u``, ``w``: real and imaginary part of :math:`z` after the reset."""

    u: torch.Tensor
    w: torch.Tensor


# fmt: off
def rf_update(x, u, w, a, b, vth):
    u1 = a * u - b * w + x
    w1 = b * u + a * w
    s = spike(w1 - vth)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    return s, u1 * (ONE - s), w1 * (ONE - s)  # noqa: F821


def rf_update_vjp(gs, gu, gw, x, u, w, a, b, vth, alpha):
    u1 = a * u - b * w + x
    w1 = b * u + a * w
    s = heav(w1 - vth)  # noqa: F821
    d = dspike(w1 - vth, alpha)  # noqa: F821
    g_s = gs - gu * u1 - gw * w1
    g_u1 = gu * (ONE - s)  # noqa: F821
    g_w1 = gw * (ONE - s) + g_s * d  # noqa: F821
    return g_u1, g_u1 * a + g_w1 * b, g_w1 * a - g_u1 * b, g_u1 * u + g_w1 * w, g_w1 * u - g_u1 * w, -(g_s * d)
# fmt: on


# a = decay * cos(omega), b = decay * sin(omega): the rotation-and-decay of z per step
RF_CELL = Cell("rf", rf_update, rf_update_vjp, states=("u", "w"), params=("a", "b", "v_threshold"))


@register_cell(RF_CELL, help="resonate-and-fire: a damped oscillator that fires at its eigenfrequency "
                             "(Izhikevich 2001)")
def _rf_examples(dtype, g):
    T, B, C, M = 12, 2, 3, 5
    params = (uniform(g, dtype, (C, 1), 0.6, 0.9, grad=True), uniform(g, dtype, (C, 1), 0.2, 0.6, grad=True),
              torch.tensor(0.7, dtype=dtype).requires_grad_())
    states = (uniform(g, dtype, (B, C, M), -0.5, 0.5), uniform(g, dtype, (B, C, M), -0.5, 0.5))
    return CellExample(uniform(g, dtype, (T, B, C, M), -0.5, 1.5), states, params)


def rotation(omega, decay):
    r""":math:`(\lambda\cos\omega, \lambda\sin\omega)`, floats or tensors following the arguments."""
    if torch.is_tensor(omega) or torch.is_tensor(decay):
        omega, decay = torch.as_tensor(omega), torch.as_tensor(decay)
        return decay * torch.cos(omega), decay * torch.sin(omega)
    return decay * math.cos(omega), decay * math.sin(omega)


def rf(x_seq, state=None, *, omega=2 * math.pi / 8, decay=0.9, v_threshold=1.0, surrogate="atan", backend="auto",
       return_v=False, check_inputs=True):
    """Resonate-and-fire over ``x_seq [T, B, ...]``; returns ``(spikes, RFState)`` (plus ``u`` after the reset at
    every step with ``return_v``).  ``omega`` in [0, pi] is the eigenfrequency in radians per step (period
    ``2 pi / omega`` steps), ``decay`` in (0, 1] the damping per step, ``v_threshold > 0`` the threshold on ``w``."""
    check_number("omega", omega, low=0.0, high=math.pi)
    check_number("decay", decay, low=0.0, high=1.0, low_inclusive=False)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    a, b = rotation(omega, decay)
    return cell_seq(RF_CELL, x_seq, state, RFState, (a, b, v_threshold), surrogate=surrogate, backend=backend,
                    return_v=return_v, check_inputs=check_inputs)


def rf_step(x_t, state=None, **kw):
    """One resonate-and-fire step: ``x_t [B, ...]`` -> ``(s_t, RFState)``; keyword arguments as :func:`rf`."""
    check_step(x_t)
    s, st = rf(x_t.unsqueeze(0), state, **kw)
    return s.squeeze(0), st
