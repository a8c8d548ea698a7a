"""Hoyer spike module: one-time-step spiking with a running Hoyer-extremum threshold for evaluation (equations in
:mod:`spikeforge.functional.hoyer`).

``running_extremum`` is a buffer updated in training mode like BatchNorm's running statistics (momentum 0.1);
in eval mode it is the threshold.  :meth:`HoyerSpike.regularizer` gives the Hoyer loss term of an input.

Example:
    >>> import torch
    >>> from spikeforge.neurons import HoyerSpike
    >>> layer = HoyerSpike(num_channels=8)
    >>> s = layer(torch.randn(1, 4, 8, 6, 6))          # T = 1
    >>> tuple(s.shape), tuple(layer.running_extremum.shape)
    ((1, 4, 8, 6, 6), (8,))
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.hoyer import hoyer_regularizer, hoyer_spike
from ._zoo import ZooNeuron, check_num_channels, check_number
from .registry import NEURONS


class HoyerSpike(ZooNeuron):
    """Hoyer-threshold spikes (Datta et al. 2022): per channel with ``num_channels`` ("cw"), else per layer."""

    def __init__(self, num_channels=None, v_th=1.0, momentum=0.1, check_inputs=True):
        super().__init__("atan", "auto", check_inputs)
        self.num_channels = check_num_channels(num_channels)
        check_number("v_th", v_th, low=0.0, low_inclusive=False, allow_tensor=False)
        check_number("momentum", momentum, low=0.0, high=1.0, low_inclusive=False, allow_tensor=False)
        self.mode = "sum" if num_channels is None else "cw"
        self.momentum = momentum
        self.v_th = nn.Parameter(torch.tensor(float(v_th)))
        shape = () if num_channels is None else (num_channels,)
        self.register_buffer("running_extremum", torch.ones(shape))

    def _seq(self, x_seq, state, return_v):
        if self.num_channels is not None and (x_seq.dim() < 3 or x_seq.shape[2] != self.num_channels):
            raise ValueError(f"x_seq: HoyerSpike with num_channels={self.num_channels} expects [T, B, C, ...], got "
                             f"shape {tuple(x_seq.shape)}")
        if self.training:
            s, e = hoyer_spike(x_seq, self.v_th, None, mode=self.mode)
            with torch.no_grad():
                self.running_extremum.mul_(1.0 - self.momentum).add_(self.momentum * e.to(self.running_extremum))
        else:
            s, e = hoyer_spike(x_seq, self.v_th, self.running_extremum, mode=self.mode)
        if return_v:
            return s, None, x_seq / self.v_th.abs()
        return s, None

    def regularizer(self, x_seq) -> torch.Tensor:
        """Hoyer loss term ``||z_c||_1^2 / ||z_c||_2^2`` of ``z = x_seq / |v_th|`` (with gradient)."""
        return hoyer_regularizer(x_seq / self.v_th.abs())

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, mode={self.mode!r}, momentum={self.momentum}"


NEURONS.register("hoyer", help="one-time-step spikes, threshold = Hoyer extremum of the clipped activation "
                               "(Datta et al. 2022)")(HoyerSpike)
