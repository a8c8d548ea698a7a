"""Shared pieces of the neuron-zoo modules (GLIF, ALIF, STL, LIFB, sigma-delta, multi-level, Hoyer)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..functional._checks import check_bool, check_number
from ..kernels.dispatch import check_backend_name
from ..surrogate import get_surrogate
from .base import BaseNeuron


def logit(p: float) -> float:
    """Inverse sigmoid of ``p`` in (0, 1)."""
    return math.log(p / (1.0 - p))


def check_num_channels(num_channels):
    if num_channels is None:
        return None
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels: expected None or an integer >= 1, got {num_channels!r}")
    return num_channels


def channel_view(p: torch.Tensor, x_seq: torch.Tensor, num_channels, owner: str) -> torch.Tensor:
    """A per-channel parameter ``[C]`` reshaped to ``[C, 1, ...]`` so it broadcasts over ``[B, C, ...]``
    (channel = dim 2 of ``x_seq [T, B, C, ...]``); a scalar parameter is returned as is."""
    p = p.to(x_seq.dtype)
    if num_channels is None:
        return p
    if x_seq.dim() < 3 or x_seq.shape[2] != num_channels:
        raise ValueError(f"x_seq: {owner} with num_channels={num_channels} expects [T, B, C, ...] with "
                         f"C={num_channels}, got shape {tuple(x_seq.shape)}")
    return p.reshape(num_channels, *([1] * (x_seq.dim() - 3)))


class ZooNeuron(BaseNeuron):
    """Base of the zoo modules: surrogate, backend and input checking; parameters are the subclass's."""

    def __init__(self, surrogate="atan", backend="auto", check_inputs=True):
        nn.Module.__init__(self)
        self.surrogate = get_surrogate(surrogate)
        self.backend = check_backend_name(backend)
        self.check_inputs = check_bool("check_inputs", check_inputs)

    def extra_repr(self) -> str:
        return (f"surrogate={self.surrogate.name}(alpha={self.surrogate.alpha}), backend={self.backend!r}")


__all__ = ["ZooNeuron", "channel_view", "check_num_channels", "check_number", "logit"]
