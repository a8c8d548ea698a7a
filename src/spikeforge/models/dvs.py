r"""Event-data nets for N-MNIST / DVS Gesture frames: the PLIF paper's DVS networks (Fang et al., ICCV 2021;
also the SEW paper's DVS baselines; SpikingJelly's ``parametric_lif_net``).

Input: frames ``[T, B, 2, H, W]`` (two polarities) — or a static batch, which is then encoded.
Network: ``num_convs`` x (conv3x3(``channels``) - BN - SN - MaxPool 2), flatten, dropout 0.5 (one mask for all
steps), FC ``hidden`` - SN, dropout 0.5, FC ``num_classes * voting`` - SN, then voting: the mean of each group
of ``voting`` spiking outputs (the firing rate of a class population).  ``readout="linear"`` replaces the last
FC - SN - voting by one non-spiking linear layer (per-step logits).

- ``dvs_gesture_net``: 128x128 input, 5 conv stages, hidden 512, 11 classes x 10 voters (the PLIF paper).
- ``nmnist_net``: 34x34 input, 2 conv stages, hidden 2048, 10 classes x 10 voters.

The papers use PLIF neurons: ``neuron="plif"``, ``neuron_kwargs={"detach_reset": True}``.

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("nmnist_net", num_classes=10, in_channels=2, T=3, channels=8, hidden=16)
    >>> tuple(net(torch.rand(3, 2, 2, 34, 34)).shape)
    (3, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import MaxPool2d, TimeFold
from ..layers.pooling import VotingPool
from ._common import NeuronFactory, NormFactory, SeqDropout, check_choice, check_width, conv3x3
from .base import SpikingModel, check_frame_size
from .registry import MODELS


class DVSNet(SpikingModel):
    """[conv3x3 - BN - SN - MaxPool2] x num_convs, dropout, FC - SN, dropout, FC - SN, voting."""

    def __init__(self, num_classes: int = 11, in_channels: int = 2, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 16, input_size: int = 128, num_convs: int = 5,
                 channels: int = 128, hidden: int = 512, voting: int = 10, dropout: float = 0.5,
                 readout: str = "vote", norm: str = "bn", encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        check_choice("readout", readout, ("vote", "linear"))
        channels = check_width(channels)
        size = input_size // 2 ** num_convs
        if size < 1:
            raise ValueError(f"input_size: {input_size} is too small for {num_convs} pooling stages")
        sn, bn = NeuronFactory(neuron, neuron_kwargs), NormFactory(norm, T)
        layers, c = [], in_channels
        for _ in range(num_convs):
            layers += [conv3x3(c, channels), bn(channels), sn(), TimeFold(MaxPool2d(2))]
            c = channels
        self.features = nn.Sequential(*layers)
        head = [SeqDropout(dropout), TimeFold(nn.Linear(c * size * size, hidden)), sn(), SeqDropout(dropout)]
        if readout == "vote":
            head += [TimeFold(nn.Linear(hidden, num_classes * voting)), sn(), VotingPool(voting)]
        else:
            head += [TimeFold(nn.Linear(hidden, num_classes))]
        self.head = nn.Sequential(*head)
        self.input_size = input_size

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_frame_size(x_seq, self.input_size)
        return self.head(self.features(x_seq).flatten(2))


def dvs_gesture_net(num_classes=11, in_channels=2, neuron="lif", neuron_kwargs=None, T=16, input_size=128,
                    num_convs=5, channels=128, hidden=512, voting=10, dropout=0.5, readout="vote", norm="bn",
                    encoder="direct"):
    """PLIF paper's DVS128 Gesture net (5 conv stages on 128x128 frames)."""
    return DVSNet(num_classes, in_channels, neuron, neuron_kwargs, T, input_size, num_convs, channels, hidden,
                  voting, dropout, readout, norm, encoder)


def nmnist_net(num_classes=10, in_channels=2, neuron="lif", neuron_kwargs=None, T=16, input_size=34, num_convs=2,
               channels=128, hidden=2048, voting=10, dropout=0.5, readout="vote", norm="bn", encoder="direct"):
    """PLIF paper's N-MNIST net (2 conv stages on 34x34 frames)."""
    return DVSNet(num_classes, in_channels, neuron, neuron_kwargs, T, input_size, num_convs, channels, hidden,
                  voting, dropout, readout, norm, encoder)


MODELS.register("dvs_gesture_net", help="PLIF paper's DVS128 Gesture net (conv x5, FC, voting)",
                defaults={"num_classes": 11, "in_channels": 2},
                tiny={"input_size": 32, "channels": 4, "hidden": 8}, tiny_input=(2, 32, 32))(dvs_gesture_net)
MODELS.register("nmnist_net", help="PLIF paper's N-MNIST net (conv x2, FC, voting)",
                defaults={"num_classes": 10, "in_channels": 2},
                tiny={"channels": 4, "hidden": 8}, tiny_input=(2, 34, 34))(nmnist_net)
