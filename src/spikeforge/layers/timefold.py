"""Run stateless layers on time-major sequences by folding time into the batch.

``TimeFold(layer)`` maps ``[T, B, ...] -> [T*B, ...] -> layer -> [T, B, ...]``.  Any stateless module works
(Conv, Linear, BatchNorm — which then normalises over T*B, i.e. tdBN-style statistics — pooling, Dropout).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> conv = TimeFold(nn.Conv2d(2, 8, 3, padding=1))
    >>> tuple(conv(torch.zeros(4, 5, 2, 16, 16)).shape)
    (4, 5, 8, 16, 16)
"""

from __future__ import annotations

import torch
from torch import nn


def fold(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view when possible)."""
    return x_seq.flatten(0, 1)


def unfold(y: torch.Tensor, T: int) -> torch.Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    return y.reshape(T, y.shape[0] // T, *y.shape[1:])


class TimeFold(nn.Module):
    """Apply ``layer`` (or several, in order) to every time step at once."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        if not layers:
            raise ValueError("TimeFold: give at least one layer")
        self.layer = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x_seq) or x_seq.dim() < 2:
            raise ValueError(
                f"x_seq: TimeFold expects a time-major tensor [T, B, ...], got shape {tuple(getattr(x_seq, 'shape', ()))}"
            )
        T = x_seq.shape[0]
        return unfold(self.layer(fold(x_seq)), T)
