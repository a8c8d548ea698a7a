r"""Spiking VGG-11/16 with CIFAR and ImageNet heads.

Features: for every entry of the configuration, conv3x3 - BN - SN (``"M"``: 2x2 pooling, max or average).
``stem="cifar"`` (32x32 inputs): global average pool, then one linear layer per step.  ``stem="imagenet"``
(224x224, SpikingJelly's ``spiking_vgg``): adaptive average pool to 7x7, then FC 4096 - SN - dropout - FC 4096
- SN - dropout - FC (``classifier_hidden`` sets 4096).  ``norm`` picks the sequence norm (``bn``, ``tdbn``,
``bntt`` as in the BNTT paper's VGG, or ``tebn``); ``batch_norm=False`` removes it.

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("vgg11", num_classes=10, in_channels=3, T=2, width=4)
    >>> tuple(net(torch.rand(2, 3, 32, 32)).shape)
    (2, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import MaxPool2d, TimeFold
from ._common import NeuronFactory, NormFactory, PoolReadout, SeqDropout, check_choice, check_width, conv3x3
from .base import SpikingModel
from .registry import MODELS

CFGS = {
    11: (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    16: (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),
}


class SpikingVGG(SpikingModel):
    """Spiking VGG; channel entries are multiples of ``width`` (64 in the paper)."""

    def __init__(self, depth: int = 11, num_classes: int = 10, in_channels: int = 3, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, width: int = 64, stem: str = "cifar",
                 norm: str = "bn", batch_norm: bool = True, pooling: str = "max", classifier_hidden: int = 4096,
                 dropout: float = 0.5, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        check_choice("depth", depth, tuple(CFGS))
        check_choice("stem", stem, ("cifar", "imagenet"))
        check_choice("pooling", pooling, ("max", "avg"))
        width = check_width(width)
        sn, bn = NeuronFactory(neuron, neuron_kwargs), NormFactory(norm, T)
        layers, c = [], in_channels
        for v in CFGS[depth]:
            if v == "M":
                layers.append(TimeFold(MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2)))
                continue
            c_out = v * width
            layers.append(conv3x3(c, c_out, bias=not batch_norm))
            if batch_norm:
                layers.append(bn(c_out))
            layers.append(sn())
            c = c_out
        self.features = nn.Sequential(*layers)
        self.stem_kind = stem
        if stem == "cifar":
            self.head = PoolReadout(c, num_classes)
        else:
            h = classifier_hidden
            self.pool = TimeFold(nn.AdaptiveAvgPool2d(7))
            self.head = nn.Sequential(TimeFold(nn.Linear(c * 49, h)), sn(), SeqDropout(dropout),
                                      TimeFold(nn.Linear(h, h)), sn(), SeqDropout(dropout),
                                      TimeFold(nn.Linear(h, num_classes)))
        self.n_pools = sum(v == "M" for v in CFGS[depth])

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        if min(x_seq.shape[-2:]) < 2 ** self.n_pools:
            raise ValueError(f"x: VGG needs spatial size >= {2 ** self.n_pools} ({self.n_pools} poolings), got "
                             f"{tuple(x_seq.shape[-2:])}")
        y = self.features(x_seq)
        if self.stem_kind == "cifar":
            return self.head(y)
        return self.head(self.pool(y).flatten(2))


def vgg11(num_classes=10, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64, stem="cifar", norm="bn",
          batch_norm=True, pooling="max", classifier_hidden=4096, dropout=0.5, encoder="direct"):
    """Spiking VGG-11."""
    return SpikingVGG(11, num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm, batch_norm,
                      pooling, classifier_hidden, dropout, encoder)


def vgg16(num_classes=10, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64, stem="cifar", norm="bn",
          batch_norm=True, pooling="max", classifier_hidden=4096, dropout=0.5, encoder="direct"):
    """Spiking VGG-16."""
    return SpikingVGG(16, num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm, batch_norm,
                      pooling, classifier_hidden, dropout, encoder)


_CIFAR = {"num_classes": 10, "in_channels": 3}
MODELS.register("vgg11", help="spiking VGG-11 (CIFAR or ImageNet head)", defaults=_CIFAR,
                tiny={"width": 2}, tiny_input=(3, 32, 32))(vgg11)
MODELS.register("vgg16", help="spiking VGG-16 (CIFAR or ImageNet head)", heavy=True, defaults=_CIFAR,
                tiny={"width": 2}, tiny_input=(3, 32, 32))(vgg16)
