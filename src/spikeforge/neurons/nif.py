"""Spike-time layers of NIF neurons (Zhou et al. 2021): dense and conv, trained like a DNN on the closed form
(equations in :mod:`spikeforge.functional.nif`).

They map input spike times ``z = exp(t)`` to output spike times, not ``[T, B, ...]`` spike trains, so they are
layers rather than entries of the ``NEURONS`` registry.  Init as in the code: ``w ~ U(0, 8 / N_in)``, bias weight 0.

Example:
    >>> import torch
    >>> from spikeforge.functional import encode_time
    >>> from spikeforge.neurons import NIFConv2d, NIFLinear
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> conv = NIFConv2d(1, 4, 5, stride=2)
    >>> fc = NIFLinear(4 * 6 * 6, 10)
    >>> z = conv(encode_time(torch.rand(2, 1, 16, 16)))      # [B, 4, 6, 6] spike times
    >>> z_out = fc(z.flatten(1))
    >>> tuple(z_out.shape), bool((z_out >= 1).all())
    ((2, 10), True)
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.nif import nif_conv2d, nif_spike_time, weight_sum_penalty
from ._zoo import check_number


def _check_int(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")


class NIFLinear(nn.Module):
    """Dense layer of single-spike NIF neurons: ``z_in [B, in_features] -> z_out [B, out_features]``."""

    def __init__(self, in_features, out_features, theta=1.0):
        super().__init__()
        _check_int("in_features", in_features)
        _check_int("out_features", out_features)
        check_number("theta", theta, low=0.0, low_inclusive=False, allow_tensor=False)
        self.theta = theta
        self.weight = nn.Parameter(torch.rand(out_features, in_features) * (8.0 / in_features))
        self.bias_weight = nn.Parameter(torch.zeros(out_features))

    def forward(self, z_in):
        return nif_spike_time(z_in, self.weight, self.bias_weight, self.theta)

    def penalty(self):
        """Weight-sum penalty of this layer (see :func:`spikeforge.functional.nif.weight_sum_penalty`)."""
        return weight_sum_penalty(self.weight, self.theta)


class NIFConv2d(nn.Module):
    """Conv layer of NIF neurons on im2col patches: ``z_in [B, C, H, W] -> z_out [B, M, H', W']``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, theta=1.0):
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("out_channels", out_channels)
        _check_int("kernel_size", kernel_size)
        check_number("theta", theta, low=0.0, low_inclusive=False, allow_tensor=False)
        self.stride, self.padding, self.theta = stride, padding, theta
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.rand(out_channels, in_channels, kernel_size, kernel_size) * (8.0 / fan_in))
        self.bias_weight = nn.Parameter(torch.zeros(out_channels))

    def forward(self, z_in):
        return nif_conv2d(z_in, self.weight, self.bias_weight, self.theta, self.stride, self.padding)

    def penalty(self):
        return weight_sum_penalty(self.weight, self.theta)
