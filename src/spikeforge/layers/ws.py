r"""Scaled weight standardisation (Brock et al., "Characterizing signal propagation to close the performance gap
in unnormalized ResNets", ICLR 2021): the normalisation OTTT uses instead of BatchNorm (card
``ottt-online-training.md``).

Each output unit's weights are standardised over its fan-in :math:`N` (``in_channels * kernel`` for a
convolution, ``in_features`` for a linear layer) at every forward pass, and scaled by a learnable gain:

.. math::
    \hat W_i = g_i\,\frac{W_i - \mathrm{mean}(W_i)}{\sqrt{\mathrm{Var}(W_i)\,N + \epsilon}},\qquad \epsilon = 10^{-4}

(``Var`` unbiased, as ``torch.var`` in the official OTTT code).  Nothing depends on the batch or on time, so
every sample and every step is normalised alike: it fits online training per time step, where BatchNorm's
batch statistics over ``T*B`` do not exist.  There is no running state and no train/eval difference.

Example:
    >>> import torch
    >>> from spikeforge.layers import ScaledWSConv2d
    >>> conv = ScaledWSConv2d(3, 8, 3, padding=1)
    >>> w = conv.standardized_weight().detach()
    >>> bool(w.mean((1, 2, 3)).abs().max() < 1e-6), round(float((w.var((1, 2, 3)) * 27).mean()), 2)
    (True, 1.0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..functional._checks import check_number


def scaled_ws(weight: torch.Tensor, gain: torch.Tensor | None, eps: float = 1e-4) -> torch.Tensor:
    """``gain * (W - mean) / sqrt(var * fan_in + eps)`` per output unit (dim 0) over the other dims."""
    dims = tuple(range(1, weight.dim()))
    fan_in = math.prod(weight.shape[1:])
    mean = weight.mean(dims, keepdim=True)
    var = weight.var(dims, keepdim=True)
    w = (weight - mean) / torch.sqrt(var * fan_in + eps)
    return w if gain is None else w * gain


class ScaledWSConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is standardised per output channel (:func:`scaled_ws`) with a learnable gain
    ``[C_out, 1, 1, 1]`` (initialised to ``gain_init``; ``gain=False`` for none)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", *, gain=True, gain_init=1.0, eps=1e-4, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        check_number("eps", eps, low=0.0, low_inclusive=False)
        check_number("gain_init", gain_init)
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init), device=device,
                                            dtype=dtype)) if gain else None

    def standardized_weight(self) -> torch.Tensor:
        return scaled_ws(self.weight, self.gain, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gain={self.gain is not None}, eps={self.eps}"


class ScaledWSLinear(nn.Linear):
    """``nn.Linear`` whose weight is standardised per output feature (:func:`scaled_ws`) with a learnable gain
    ``[out_features, 1]`` (initialised to ``gain_init``; ``gain=False`` for none)."""

    def __init__(self, in_features, out_features, bias=True, *, gain=True, gain_init=1.0, eps=1e-4, device=None,
                 dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        check_number("eps", eps, low=0.0, low_inclusive=False)
        check_number("gain_init", gain_init)
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.full((out_features, 1), float(gain_init), device=device,
                                            dtype=dtype)) if gain else None

    def standardized_weight(self) -> torch.Tensor:
        return scaled_ws(self.weight, self.gain, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gain={self.gain is not None}, eps={self.eps}"
