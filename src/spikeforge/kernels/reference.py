r"""Plain-torch reference of the LIF family (IF, LIF, PLIF, learnable-threshold LIF): the definition of truth.

Per time step, with :math:`k = 1/\tau` and :math:`v_r^0 = v_{reset}` (hard reset) or 0 (soft reset):

.. math::
    h_t &= v_{t-1} + k\,(x_t - (v_{t-1} - v_r^0))          &\text{(decay\_input)}\\
    h_t &= v_{t-1} - k\,(v_{t-1} - v_r^0) + x_t             &\text{(otherwise; IF is } k=0)\\
    s_t &= H(h_t - \vartheta)                                 &\text{(spike iff } h_t \ge \vartheta)\\
    v_t &= h_t (1 - s_t) + v_{reset}\, s_t                   &\text{(hard reset)}\\
    v_t &= h_t - \vartheta\, s_t                              &\text{(soft reset, } v_{reset}=\text{None)}

``detach_reset`` uses a detached :math:`s_t` in the reset.  The loop iterates ``x_seq.unbind(0)`` (never
``x[t]``, whose backward is O(T^2)).  Autograd saves three tensors per step here (12 B/element in float32);
the fused backends save only :math:`h_t` (4 B/element) and recompute the rest.
"""

from __future__ import annotations

import torch

from ..surrogate import Surrogate, spike


def lif_reference(
    x_seq: torch.Tensor,
    v0: torch.Tensor,
    k,
    v_th,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    return_v: bool = False,
):
    """Run the recurrence; returns ``(spikes [T,...], v_T, v_seq or None)``."""
    hard = v_reset is not None
    vr0 = v_reset if hard else 0.0
    v = v0
    spikes, vs = [], []
    for x in x_seq.unbind(0):
        if decay_input:
            h = v + (x - (v - vr0)) * k
        else:
            h = v - (v - vr0) * k + x
        s = spike(h - v_th, surrogate)
        sr = s.detach() if detach_reset else s
        if hard:
            v = h * (1.0 - sr) + v_reset * sr
        else:
            v = h - sr * v_th
        spikes.append(s)
        if return_v:
            vs.append(v)
    return torch.stack(spikes), v, (torch.stack(vs) if return_v else None)
