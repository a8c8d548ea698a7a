"""Pooling for spike sequences: population voting.

``VotingPool(k)`` averages groups of ``k`` consecutive output neurons: ``[T, B, K*k] -> [T, B, K]`` (the
PLIF/SEW DVS nets: 110 spiking outputs voted down to 11 classes; SCTFA: groups of 5).

Example:
    >>> import torch
    >>> from spikeforge.layers import VotingPool
    >>> VotingPool(2)(torch.tensor([[[1.0, 0.0, 1.0, 1.0]]])).tolist()
    [[[0.5, 1.0]]]
"""

from __future__ import annotations

import torch
from torch import nn


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
