"""Pooling: a faster drop-in ``MaxPool2d`` and population voting.

``MaxPool2d`` is ``torch.nn.MaxPool2d`` (same arguments, same values and gradients, bit for bit) that runs the
fused kernel of :mod:`spikeforge.kernels.pool` on channels-last CPU input -- the layout of spikeforge's conv
models -- and ``torch``'s own kernel otherwise.  The fused kernel keeps a 1-byte window position per output
instead of an 8-byte index and writes the input gradient once instead of zero-filling it first.

``VotingPool(k)`` averages groups of ``k`` consecutive output neurons: ``[T, B, K*k] -> [T, B, K]`` (the
PLIF/SEW DVS nets: 110 spiking outputs voted down to 11 classes; SCTFA: groups of 5).

Example:
    >>> import torch
    >>> from spikeforge.layers import MaxPool2d, VotingPool
    >>> x = torch.rand(2, 8, 32, 32).to(memory_format=torch.channels_last)
    >>> torch.equal(MaxPool2d(2)(x), torch.nn.MaxPool2d(2)(x))
    True
    >>> VotingPool(2)(torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])).tolist()
    [[[0.5, 1.0]]]
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(v):
    """A square window/stride/padding/dilation as one int, or None when it is not square."""
    if isinstance(v, (tuple, list)):
        return v[0] if len(v) == 2 and v[0] == v[1] else None
    return v


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with a fused CPU kernel for channels-last float input (square windows, dilation 1,
    ``ceil_mode=False``, no ``return_indices``); every other case runs ``torch``'s kernel.  Identical values and
    gradients either way (see :mod:`spikeforge.kernels.pool`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..kernels import pool

        k, s, p, d = (_pair(v) for v in (self.kernel_size, self.stride, self.padding, self.dilation))
        if (not self.return_indices and None not in (k, s, p, d) and torch.is_tensor(x)
                and pool.supported(x, k, s, p, d, self.ceil_mode)):
            return pool.max_pool2d_cl(x, k, s, p)
        return super().forward(x)


class VotingPool(nn.Module):
    """Average consecutive groups of ``k`` features of the last axis."""

    def __init__(self, k: int):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1 (neurons per class), got {k!r}")
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.k:
            raise ValueError(f"x: last axis {x.shape[-1]} is not a multiple of the group size k={self.k}")
        return x.reshape(*x.shape[:-1], x.shape[-1] // self.k, self.k).mean(-1)

    def extra_repr(self) -> str:
        return f"k={self.k}"
