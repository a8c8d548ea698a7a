r"""LIFB: leaky integrate-and-fire-or-burst neuron (Shen, Zhao and Zeng 2023, arXiv 2301.12356) and its lossless
decoupling into a pair of binary LIF units.

**Confidence LOW**: only the paper's abstract was available; the update below is the card's reconstruction
(see docs/neurons.md for what was inferred).  Per time step, with decay factor :math:`\tau`, regular threshold
:math:`\vartheta`, burst threshold :math:`\vartheta_b > \vartheta` and burst density :math:`\beta \ge 1`:

.. math::
    h_t &= \tau\, u_{t-1} + I_t\\
    s^r_t &= H(h_t - \vartheta), \qquad s^b_t = H(h_t - \vartheta_b)\\
    o_t &= s^r_t + (\beta - 1)\, s^b_t          &\text{(0 rest, 1 regular spike, } \beta \text{ burst)}\\
    u_t &= h_t - \vartheta\, o_t                 &\text{(soft reset by what was emitted)}

The surrogate is the sum of two bumps, at :math:`\vartheta` (weight 1) and :math:`\vartheta_b` (weight
:math:`\beta - 1`), and :math:`\partial o/\partial\beta = s^b`.

Decoupling (why it is lossless): downstream, :math:`W o = W s^r + (\beta - 1) W s^b`.  So one LIFB equals two
binary LIF units with one membrane trajectory: a *regular* unit (threshold :math:`\vartheta`, out-weights
:math:`W`) and a *burst* unit (threshold :math:`\vartheta_b`, out-weights :math:`(\beta-1)W`), both fed the same
input and both inhibited by :math:`\vartheta(s^r + (\beta-1)s^b)` (self and lateral inhibition).
:func:`lifb_pair` runs that pair; :func:`spikeforge.neurons.lifb.decouple_lifb` rewrites a trained model.

Example:
    >>> import torch
    >>> from spikeforge.functional import lifb
    >>> x = torch.tensor([[[0.5]], [[1.2]], [[2.6]]])
    >>> o, state = lifb(x, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=2.0)
    >>> o.flatten().tolist()          # h = 0.5 (rest), 1.45 (regular), 2.825 (burst)
    [0.0, 1.0, 2.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ._cell import cell_seq
from ..surrogate import spike
from ._checks import check_number, check_seq, check_step


class LIFBState(NamedTuple):
    """``u``: membrane after the soft reset."""

    u: torch.Tensor


# fmt: off
def lifb_update(x, u, tau, vth, vth_b, beta):
    h = tau * u + x
    sr = spike(h - vth)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    sb = spike(h - vth_b)  # noqa: F821
    o = sr + (beta - ONE) * sb  # noqa: F821
    return o, h - vth * o


def lifb_update_vjp(go, gu1, x, u, tau, vth, vth_b, beta, alpha):
    h = tau * u + x
    sr = heav(h - vth)  # noqa: F821
    sb = heav(h - vth_b)  # noqa: F821
    dr = dspike(h - vth, alpha)  # noqa: F821
    db = dspike(h - vth_b, alpha)  # noqa: F821
    bm1 = beta - ONE  # noqa: F821
    o = sr + bm1 * sb
    g_o = go - gu1 * vth
    gh = gu1 + g_o * (dr + bm1 * db)
    return gh, gh * tau, gh * u, -(gu1 * o) - g_o * dr, -(g_o * bm1 * db), g_o * sb
# fmt: on


LIFB_CELL = Cell("lifb", lifb_update, lifb_update_vjp, states=("u",),
                 params=("tau", "v_threshold", "burst_threshold", "beta"))


@register_cell(LIFB_CELL, help="LIF-or-burst: rest, a regular spike or a burst of density beta")
def _lifb_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5
    params = (uniform(g, dtype, (C, 1), 0.3, 0.9, grad=True), torch.tensor(1.0, dtype=dtype).requires_grad_(),
              uniform(g, dtype, (C, 1), 1.5, 2.5, grad=True), uniform(g, dtype, (C, 1), 1.0, 3.0, grad=True))
    return CellExample(uniform(g, dtype, (T, B, C, M), 0.0, 2.5), (uniform(g, dtype, (B, C, M)),), params)


def _check(tau, v_threshold, burst_threshold, beta):
    check_number("tau", tau, low=0.0, high=1.0)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    check_number("burst_threshold", burst_threshold, low=0.0, low_inclusive=False)
    check_number("beta", beta, low=1.0)
    gap = torch.as_tensor(burst_threshold) - torch.as_tensor(v_threshold)
    if not torch.compiler.is_compiling() and bool((gap.detach() <= 0).any()):  # eager only: values are data
        raise ValueError(f"burst_threshold: must be above v_threshold (a burst needs more than a regular spike), "
                         f"got burst_threshold={burst_threshold!r}, v_threshold={v_threshold!r}")


def lifb(x_seq, state=None, *, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=2.0, surrogate="atan",
         backend="auto", return_v=False, check_inputs=True):
    """LIFB over ``x_seq [T, B, ...]``: outputs in {0, 1, beta}; returns ``(o, LIFBState)`` (plus the membrane
    after reset at every step with ``return_v``).  Parameters are floats or tensors broadcastable to
    ``[B, ...]``; ``tau`` in [0, 1], ``burst_threshold > v_threshold > 0``, ``beta >= 1``."""
    _check(tau, v_threshold, burst_threshold, beta)
    return cell_seq(LIFB_CELL, x_seq, state, LIFBState, (tau, v_threshold, burst_threshold, beta),
                    surrogate=surrogate, backend=backend, return_v=return_v, check_inputs=check_inputs)


def lifb_step(x_t, state=None, **kw):
    """One LIFB step: ``x_t [B, ...]`` -> ``(o_t, LIFBState)``; keyword arguments as :func:`lifb`."""
    check_step(x_t)
    o, st = lifb(x_t.unsqueeze(0), state, **kw)
    return o.squeeze(0), st


class LIFBPairState(NamedTuple):
    """Membranes of the regular and the burst unit (equal at every step when started equal)."""

    u_regular: torch.Tensor
    u_burst: torch.Tensor


def lifb_pair(x_seq, state=None, *, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=2.0, surrogate="atan"):
    r"""The decoupled form of :func:`lifb`: two binary LIF units per neuron.

    Each unit integrates the same input with its own membrane, :math:`h = \tau u + I`, spikes on its own
    threshold (:math:`\vartheta` for the regular unit, :math:`\vartheta_b` for the burst unit), and both receive
    the inhibition :math:`\vartheta\,(s^r + (\beta - 1)\,s^b)` from the pair's spikes (self + lateral weights
    :math:`\vartheta` and :math:`(\beta-1)\vartheta`).  Returns ``(s_regular, s_burst, LIFBPairState)``: binary
    spike trains; the downstream current of weights ``W`` is ``W s_regular + (beta - 1) W s_burst``.
    """
    check_seq(x_seq)
    _check(tau, v_threshold, burst_threshold, beta)
    if state is None:
        state = LIFBPairState(torch.zeros_like(x_seq[0]), torch.zeros_like(x_seq[0]))
    u_r, u_b = state
    out_r, out_b = [], []
    for x in x_seq.unbind(0):
        h_r = tau * u_r + x
        h_b = tau * u_b + x
        s_r = spike(h_r - v_threshold, surrogate)
        s_b = spike(h_b - burst_threshold, surrogate)
        inhibition = v_threshold * (s_r + (beta - 1.0) * s_b)
        u_r = h_r - inhibition
        u_b = h_b - inhibition
        out_r.append(s_r)
        out_b.append(s_b)
    return torch.stack(out_r), torch.stack(out_b), LIFBPairState(u_r, u_b)
