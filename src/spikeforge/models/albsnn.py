"""ALBSNN's network shape: a VGG-style conv SNN whose head is global average pooling, no hidden FC layers.

Pei, Xu, Wu, Liu, Yang, "ALBSNN", Frontiers in Neuroscience 17:1225871 (2023): global average pooling replaces
the fully connected layers.  ``channels`` lists the conv stages (conv3x3 -> BN -> neuron each), ``pools`` the
stages followed by a 2x2 max pooling.  The head averages the last feature map over space at every step and applies
one linear layer (the same function as a 1x1 conv to the classes followed by the average), giving per-step logits
``[T, B, num_classes]``.  The paper's exact layer list was not retrieved; the default is a small network for
28x28 inputs (``method.name=albsnn`` chooses which of its layers to binarise).

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("albsnn_net", num_classes=10, in_channels=1, T=1)
    >>> tuple(net(torch.rand(2, 1, 28, 28)).shape)
    (1, 2, 10)
"""

from __future__ import annotations

from torch import nn

from ..layers import MaxPool2d, TimeFold
from ._common import PoolReadout
from .base import SpikingModel, make_neuron
from .registry import MODELS


class ALBNet(SpikingModel):
    """conv3x3 -> BN -> neuron per ``channels`` entry (max pooling after the ``pools`` stages), then a global
    average pool and a linear layer per step."""

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=1, input_size=28,
                 channels=(32, 64, 128, 128), pools=(0, 1), encoder="direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        channels, pools = tuple(channels), tuple(pools)
        if not channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            raise ValueError(f"channels: expected a non-empty list of integers >= 1 (one conv stage each), got "
                             f"{channels!r}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(channels) for i in pools):
            raise ValueError(f"pools: expected indices of conv stages (0..{len(channels) - 1}) followed by 2x2 max "
                             f"pooling, got {pools!r}")
        blocks, c, size = [], in_channels, input_size
        for i, v in enumerate(channels):
            blocks += [TimeFold(nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v)),
                       make_neuron(neuron, neuron_kwargs)]
            c = v
            if i in pools:
                blocks.append(TimeFold(MaxPool2d(2)))
                size //= 2
        if size < 1:
            raise ValueError(f"input_size: {input_size} is too small for {len(set(pools))} pooling stages")
        self.features = nn.Sequential(*blocks)
        self.head = PoolReadout(c, num_classes)
        self.input_size = input_size

    def forward_seq(self, x_seq):
        if tuple(x_seq.shape[-2:]) != (self.input_size, self.input_size):
            raise ValueError(f"x: expected spatial size {self.input_size}x{self.input_size} (input_size), got "
                             f"{tuple(x_seq.shape[-2:])}")
        return self.head(self.features(x_seq))


MODELS.register("albsnn_net", help="VGG-style conv SNN with a global-average-pooling head (ALBSNN, Pei et al. 2023)",
                defaults={"num_classes": 10, "in_channels": 1},
                tiny={"input_size": 16, "channels": (4, 8)})(ALBNet)
