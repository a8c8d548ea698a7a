r"""Sigma-delta quantiser neuron: quantised activations with temporally diffused error (Voelker, Rasmussen and
Eliasmith 2020, arXiv 2002.03553; the quantiser of Nengo's ``pytorch-spiking`` ``SpikingActivation``).

Per time step and neuron, for the activation :math:`a_t = \mathrm{relu}(x_t)` and gain :math:`\omega > 0`
(spikes per unit activity per step):

.. math::
    v'_t = v_{t-1} + \omega\, a_t, \qquad n_t = \lfloor v'_t \rfloor, \qquad v_t = v'_t - n_t, \qquad
    y_t = n_t / \omega

A first-order sigma-delta modulator: :math:`\sum_{t\le T} y_t - \sum_{t\le T} a_t = (v_0 - v_T)/\omega`,
so for :math:`v_0 \in [0, 1)` the running sums never differ by more than :math:`1/\omega`.  Large
:math:`\omega` is non-spiking (full precision, :math:`|y_t - a_t| < 1/\omega`); :math:`\omega \max a \le 1`
gives 0/1 spikes.  Gradient (spiking-aware training): straight through the quantiser to the activation,
:math:`\partial y_t / \partial x_t = \mathrm{relu}'(x_t)`.  Train non-spiking first, then anneal
:math:`\omega` down (e.g. log-linearly; the paper's schedule is not known).  The state ``v`` starts at 0
unless given (pytorch-spiking draws :math:`v_0 \sim U(0, 1)`: pass ``SigmaDeltaState(torch.rand_like(x[0]))``).

Example:
    >>> import torch
    >>> from spikeforge.functional import sigma_delta, activation_bits
    >>> a = torch.full((4, 1, 1), 0.3)
    >>> y, state = sigma_delta(a, omega=2.0)       # n = floor(0.6), floor(1.2), floor(0.8), floor(1.4)
    >>> y.flatten().tolist()
    [0.0, 0.5, 0.0, 0.5]
    >>> activation_bits(y, omega=2.0)               # log2(1 + max n) averaged over neurons
    1.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ._checks import check_number, check_step


class SigmaDeltaState(NamedTuple):
    """``v``: the carried quantisation error in [0, 1) (for non-negative activity)."""

    v: torch.Tensor


# fmt: off
def sigma_delta_update(x, v, omega):
    a = relu(x)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    v1 = v + omega * a
    n = floor(v1)  # noqa: F821
    y = ste(n / omega, a)  # noqa: F821
    return y, v1 - n


def sigma_delta_update_vjp(gy, gv1, x, v, omega, alpha):
    a = relu(x)  # noqa: F821
    return (gy + gv1 * omega) * step(x), gv1, gv1 * a  # noqa: F821
# fmt: on


SIGMA_DELTA_CELL = Cell("sigma_delta", sigma_delta_update, sigma_delta_update_vjp, states=("v",),
                        params=("omega",))


@register_cell(SIGMA_DELTA_CELL, help="sigma-delta quantiser of relu(x) with diffused error, gain omega")
def _sigma_delta_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5
    params = (uniform(g, dtype, (C, 1), 0.5, 4.5, grad=True),)
    return CellExample(uniform(g, dtype, (T, B, C, M), -0.3, 1.5), (uniform(g, dtype, (B, C, M)),), params)


def sigma_delta(x_seq, state=None, *, omega=1.0, backend="auto", return_v=False, check_inputs=True):
    """Quantise ``relu(x_seq)`` (``[T, B, ...]``) with gain ``omega`` (> 0; float or tensor broadcastable to
    ``[B, ...]``); returns ``(y, SigmaDeltaState)`` with ``y = n / omega`` (plus the carried error at every
    step with ``return_v``)."""
    check_number("omega", omega, low=0.0, low_inclusive=False)
    return cell_seq(SIGMA_DELTA_CELL, x_seq, state, SigmaDeltaState, (omega,), surrogate="atan",
                    backend=backend, return_v=return_v, check_inputs=check_inputs)


def sigma_delta_step(x_t, state=None, **kw):
    """One quantiser step: ``x_t [B, ...]`` -> ``(y_t, SigmaDeltaState)``; keyword arguments as
    :func:`sigma_delta`."""
    check_step(x_t)
    y, st = sigma_delta(x_t.unsqueeze(0), state, **kw)
    return y.squeeze(0), st


def spike_counts(y_seq: torch.Tensor, omega) -> torch.Tensor:
    """The integer spike counts ``n = round(y * omega)`` behind a quantiser output."""
    return torch.round(y_seq * omega)


def activation_bits(y_seq: torch.Tensor, omega) -> float:
    r"""Average bits per activation: :math:`\log_2(1 + \max_t |n_t|)` per neuron (the width of an integer that
    holds every count the neuron emits), averaged over neurons (all of ``[B, ...]``)."""
    if not torch.is_tensor(y_seq) or y_seq.dim() < 2:
        raise ValueError(f"y_seq: expected a time-major tensor [T, B, ...], got {getattr(y_seq, 'shape', y_seq)!r}")
    check_number("omega", omega, low=0.0, low_inclusive=False)
    n = spike_counts(y_seq.detach(), omega).abs().amax(0)
    return float(torch.log2(1.0 + n.double()).mean())


def mean_bits_per_step(y_seq: torch.Tensor, omega) -> float:
    r""":math:`\log_2(1 + |n_t|)` averaged over neurons and time steps (the per-event view of the same counts)."""
    check_number("omega", omega, low=0.0, low_inclusive=False)
    n = spike_counts(y_seq.detach(), omega).abs()
    return float(torch.log2(1.0 + n.double()).mean())


def omega_schedule(epoch: int, epochs: int, omega_start: float = 1e3, omega_end: float = 1.0) -> float:
    """Anneal ``omega`` from non-spiking (``omega_start``) to spiking (``omega_end``), linearly in log space."""
    check_number("omega_start", omega_start, low=0.0, low_inclusive=False)
    check_number("omega_end", omega_end, low=0.0, low_inclusive=False)
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"epoch: expected 0 <= epoch < epochs with epochs >= 1, got epoch={epoch}, epochs={epochs}")
    f = epoch / max(epochs - 1, 1)
    return float(math.exp((1 - f) * math.log(omega_start) + f * math.log(omega_end)))
