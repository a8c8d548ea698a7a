r"""Noisy integrate-and-fire: an IF neuron (soft reset) whose membrane receives Gaussian noise, for training a
single-step (T = 1) SNN that is then run as a plain IF network at T = N (Jiang and Zhang, "A noise based
novel strategy for faster SNN training", arXiv 2211.05453; reconstruction, see docs/methods/noise_single_step.md).

.. math::
    h_t = v_{t-1} + x_t + \sigma\,\epsilon_t,\quad \epsilon_t \sim \mathcal N(0, 1),\qquad
    s_t = H(h_t - \vartheta),\qquad v_t = h_t - \vartheta\, s_t,\qquad v_0 = v_{init}

With :math:`\sigma = 0` this is the IF neuron of :func:`~spikeforge.functional.if_` with soft reset started at
:math:`v_{init}` (default :math:`\vartheta/2`), and it runs on the same backends (the noise is added to the
input, so the gradient with respect to ``x`` is the IF surrogate gradient).  At :math:`T = 1` the expected spike is

.. math::
    \mathbb E[s] = \Phi\!\left(\frac{x + v_{init} - \vartheta}{\sigma}\right)

(:func:`noisy_if_expectation`), while an IF neuron run for :math:`N` steps on a constant :math:`x` from
:math:`v_{init} = \vartheta/2` fires :math:`\lfloor N x/\vartheta + 1/2 \rfloor` times (for
:math:`0 \le x \le \vartheta`): its rate tends to :math:`\mathrm{clip}(x/\vartheta, 0, 1)`, a ramp that the noisy
expectation approximates for :math:`\sigma \approx 0.3\text{--}0.4\,\vartheta`.

Example:
    >>> import torch
    >>> from spikeforge.functional import noisy_if, noisy_if_expectation
    >>> x = torch.full((8, 1), 0.4)                     # constant drive, 8 steps, sigma = 0: plain IF
    >>> s, state = noisy_if(x)
    >>> s.mean().item()                                 # floor(8 * 0.4 + 1/2) / 8
    0.375
    >>> round(noisy_if_expectation(torch.tensor(0.4), sigma=0.4).item(), 4)   # Phi((0.4 - 0.5) / 0.4)
    0.4013
"""

from __future__ import annotations

import math

import torch

from ._checks import check_number, check_seq, check_step
from .lif import LIFState, if_


def _v_init(v_init, v_threshold) -> float:
    if v_init is None:
        return 0.5 * float(v_threshold)
    return check_number("v_init", v_init)


def noisy_if(x_seq, state=None, *, sigma=0.0, v_threshold=1.0, v_init=None, detach_reset=False, surrogate="atan",
             backend="auto", generator=None, return_v=False, check_inputs=True):
    """Noisy IF over ``x_seq [T, B, ...]``: ``(spikes, LIFState)`` (``+ v_seq`` with ``return_v``).

    ``sigma`` (>= 0) is the standard deviation of the membrane noise, drawn independently per step, sample and
    neuron (from ``generator`` if given, else torch's global generator); ``v_init`` (default ``v_threshold / 2``)
    is the membrane before the first step when ``state`` is None.
    """
    check_seq(x_seq)
    check_number("sigma", sigma, low=0.0, allow_tensor=False)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False, allow_tensor=False)
    v0 = _v_init(v_init, v_threshold)
    if sigma > 0:
        noise = torch.randn(x_seq.shape, generator=generator, dtype=x_seq.dtype, device=x_seq.device)
        x_seq = x_seq + sigma * noise
    if state is None:
        state = LIFState(x_seq.new_tensor(v0))
    return if_(x_seq, state, v_threshold=v_threshold, v_reset=None, detach_reset=detach_reset, surrogate=surrogate,
               backend=backend, return_v=return_v, check_inputs=check_inputs)


def noisy_if_step(x_t, state=None, **kw):
    """One noisy IF step: ``x_t [B, ...]`` -> ``(s_t, LIFState)``; keyword arguments as :func:`noisy_if`."""
    check_step(x_t)
    s, st = noisy_if(x_t.unsqueeze(0), state, **kw)
    return s.squeeze(0), st


def noisy_if_expectation(x, *, sigma, v_threshold=1.0, v_init=None) -> torch.Tensor:
    r"""Expected spike of one noisy step from ``v_init``: :math:`\Phi((x + v_{init} - \vartheta)/\sigma)`;
    with ``sigma = 0`` the step :math:`H(x + v_{init} - \vartheta)`."""
    check_number("sigma", sigma, low=0.0, allow_tensor=False)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False, allow_tensor=False)
    z = x + _v_init(v_init, v_threshold) - v_threshold
    if sigma == 0:
        return (z >= 0).to(x.dtype)
    return 0.5 * (1.0 + torch.erf(z / (sigma * math.sqrt(2.0))))
