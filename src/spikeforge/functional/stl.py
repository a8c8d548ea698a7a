r"""STL neuron: LIF with a learnable threshold per neuron, trained jointly with the weights (Sun et al.,
"A Synapse-Threshold Synergistic Learning Approach for Spiking Neural Networks", TCDS 2023, arXiv 2206.06129).

Per element and time step (the official ``STL-SNN`` code; :math:`\lambda` is the decay *factor*, 0.5):

.. math::
    u_t = \lambda\, v_{t-1} + I_t, \qquad s_t = H(u_t - \vartheta), \qquad v_t = (1 - s_t)\, u_t

with :math:`\vartheta` a tensor holding one threshold per neuron (shape of the layer's output, e.g.
``[C, H, W]``; it broadcasts over the batch).  The reset is not detached.  Gradient: BPTT with the atan
surrogate (alpha 2) on :math:`u - \vartheta`, so
:math:`\partial L/\partial\vartheta = -\sum_t \partial L/\partial s_t\, g'(u_t - \vartheta)` plus the paths
through the reset.  This is the LIF family of :mod:`spikeforge.functional.lif` with ``k = 1 - lambda``,
``decay_input=False``, hard reset to 0 and a tensor threshold, so it runs on every LIF backend (the fused CPU
kernel computes the threshold gradient itself).

Example:
    >>> import torch
    >>> from spikeforge.functional import stl
    >>> theta = torch.tensor([1.0, 2.0], requires_grad=True)   # one threshold per neuron
    >>> s, state = stl(torch.full((3, 1, 2), 1.0), theta)
    >>> s[:, 0].tolist()                                        # u = 1.0 | 1.0, 1.5, 1.75
    [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    >>> s.sum().backward(); theta.grad.shape
    torch.Size([2])
"""

from __future__ import annotations

import torch

from ._checks import check_number, check_step
from .lif import lif_family_seq


def stl_threshold_init(shape, theta0: float = 2.0, heterogeneity: float = 0.01, generator=None,
                       dtype=torch.float32) -> torch.Tensor:
    """The card's init: ``theta0 + heterogeneity * N(0, 1) / 100`` per neuron (small heterogeneity)."""
    check_number("theta0", theta0, low=0.0, low_inclusive=False)
    check_number("heterogeneity", heterogeneity, low=0.0)
    noise = torch.randn(tuple(shape), generator=generator, dtype=dtype)
    return theta0 + heterogeneity * noise / 100.0


def stl(x_seq, v_threshold, state=None, *, decay=0.5, surrogate="atan", backend="auto", return_v=False,
        check_inputs=True):
    """LIF with per-neuron threshold ``v_threshold`` (a float or a tensor broadcastable to ``[B, ...]``, > 0)
    and decay factor ``decay`` in [0, 1]; returns ``(spikes, LIFState)`` like :func:`~spikeforge.functional.lif`."""
    check_number("decay", decay, low=0.0, high=1.0)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    k = 1.0 - decay if not torch.is_tensor(decay) else (1.0 - decay).to(x_seq.dtype)
    if torch.is_tensor(v_threshold):
        v_threshold = v_threshold.to(x_seq.dtype)
    return lif_family_seq(x_seq, state, k=k, v_threshold=v_threshold, v_reset=0.0, decay_input=False,
                          detach_reset=False, surrogate=surrogate, backend=backend, return_v=return_v,
                          check_inputs=check_inputs)


def stl_step(x_t, v_threshold, state=None, **kw):
    """One STL step: ``x_t [B, ...]`` -> ``(s_t, LIFState)``; keyword arguments as :func:`stl`."""
    check_step(x_t)
    s, st = stl(x_t.unsqueeze(0), v_threshold, state, **kw)
    return s.squeeze(0), st
