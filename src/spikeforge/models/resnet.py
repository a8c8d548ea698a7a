r"""Spiking ResNets with the neuron after the addition, ResNet-19, and the S-ResNet of "Keys to accurate feature
extraction using residual SNNs" (Vicente-Sola et al., Neuromorphic Computing and Engineering 2022).

- ``spiking_resnet18/34`` (the "old" Spiking ResNet that SEW compares against; SpikingJelly's
  ``spiking_resnet``): :math:`O = SN(BN(Conv(SN(BN(Conv(S))))) + \mathrm{shortcut}(S))`, shortcut = identity or
  conv1x1/stride + BN.  Stem conv7x7/2-BN-SN-MaxPool (``stem="cifar"``: conv3x3/1-BN-SN).
- ``resnet19`` (tdBN, Zheng et al. AAAI 2021; also used by TET and GLIF): CIFAR stem conv3x3(128)-tdBN-SN,
  basic blocks [3, 3, 2] at 128/256/512 channels (strides 1, 2, 2), tdBN everywhere with
  :math:`\alpha = 1/\sqrt{2}` on the two BNs that meet at each addition, then avg-pool, FC 256, SN, FC.
- ``sresnet`` (Vicente-Sola et al. 2022): stem conv3x3-BNTT-SN, then 3 stages of ``n`` blocks (2n conv
  layers each, widths w, 2w, 4w; 6n + 2 layers with stem and FC), BNTT (per-step statistics, no beta) on
  every conv, FC without bias.  ``skip`` chooses where the shortcut joins:

  * ``"spike"`` (the paper's code): :math:`O = SN(BN(Conv(s_1))) + \mathrm{skip}`, a spike *sum* (can exceed 1),
  * ``"membrane"``: the skip is added to the last neuron's input, :math:`O = SN(BN(Conv(s_1)) + \mathrm{skip})`,
  * ``"none"``: no shortcut (the plain network of the ablation).

  Downsampling skips: conv1x1/2 + BNTT.  The paper's neuron: leak 0.95, soft reset, threshold 1 —
  ``neuron_kwargs=KEYS_LIF_KWARGS`` with ``neuron="lif"``.

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("resnet19", num_classes=10, in_channels=3, T=2, width=8)
    >>> tuple(net(torch.rand(2, 3, 16, 16)).shape)
    (2, 2, 10)
    >>> net = create_model("sresnet", num_classes=10, in_channels=3, T=2, n=1, width=4, skip="spike")
    >>> tuple(net(torch.rand(2, 3, 16, 16)).shape)
    (2, 2, 10)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import TimeFold
from ._common import (NeuronFactory, NormFactory, PoolReadout, check_choice, check_width, conv1x1, conv3x3,
                      zero_norm_)
from .base import SpikingModel
from .registry import MODELS
from .sew_resnet import make_stem

#: The S-ResNet paper's neuron (leak 0.95, reset by subtraction, threshold 1) for ``neuron="lif"``.
KEYS_LIF_KWARGS = {"tau": 20.0, "decay_input": False, "v_reset": None, "v_threshold": 1.0}

SKIPS = ("spike", "membrane", "none")


class SpikingBasicBlock(nn.Module):
    """conv3x3-BN-SN, conv3x3-BN, add the shortcut, then SN (neuron after the addition)."""

    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int, neuron: NeuronFactory, norm: NormFactory,
                 residual_alpha: float = 1.0):
        super().__init__()
        self.conv1, self.bn1, self.sn1 = conv3x3(c_in, c, stride), norm(c), neuron()
        self.conv2, self.bn2 = conv3x3(c, c), norm(c, alpha=residual_alpha, v_th=neuron.v_threshold)
        self.downsample = None
        if stride != 1 or c_in != c:
            self.downsample = nn.Sequential(conv1x1(c_in, c, stride),
                                            norm(c, alpha=residual_alpha, v_th=neuron.v_threshold))
        self.sn2 = neuron()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        identity = s if self.downsample is None else self.downsample(s)
        return self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(s))))) + identity)


class SpikingResNet(SpikingModel):
    """Spiking ResNet with the neuron after the residual addition (basic blocks)."""

    def __init__(self, layers: tuple, num_classes: int = 1000, in_channels: int = 3, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, width: int = 64, stem: str = "imagenet",
                 norm: str = "bn", zero_init_residual: bool = False, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        width = check_width(width)
        sn, bn = NeuronFactory(neuron, neuron_kwargs), NormFactory(norm, T)
        self.stem = make_stem(stem, in_channels, width, sn, bn)
        c_in, stages = width, []
        for i, n in enumerate(layers):
            c = width * 2 ** i
            stages.append(nn.Sequential(*[SpikingBasicBlock(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0)
                                                            else 1, sn, bn) for j in range(n)]))
            c_in = c
        self.layers = nn.Sequential(*stages)
        self.head = PoolReadout(c_in, num_classes)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, SpikingBasicBlock):
                    zero_norm_(m.bn2)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x_seq)))


class ResNet19(SpikingModel):
    """ResNet-19 for CIFAR (tdBN paper): 128/256/512 channels, blocks [3, 3, 2], FC 256 - SN - FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, width: int = 128, norm: str = "tdbn",
                 hidden: int = 256, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        width = check_width(width)
        sn = NeuronFactory(neuron, neuron_kwargs)
        bn = NormFactory(norm, T, **({"v_th": sn.v_threshold} if norm == "tdbn" else {}))
        self.stem = nn.Sequential(conv3x3(in_channels, width), bn(width), sn())
        alpha = 1.0 / math.sqrt(2.0)
        c_in, stages = width, []
        for i, n in enumerate((3, 3, 2)):
            c = width * 2 ** i
            stages.append(nn.Sequential(*[SpikingBasicBlock(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0)
                                                            else 1, sn, bn, residual_alpha=alpha)
                                          for j in range(n)]))
            c_in = c
        self.layers = nn.Sequential(*stages)
        self.fc1 = TimeFold(nn.Linear(c_in, hidden))
        self.sn_fc = sn()
        self.fc2 = TimeFold(nn.Linear(hidden, num_classes))

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.stem(x_seq)).mean(dim=(-2, -1))
        return self.fc2(self.sn_fc(self.fc1(y)))


class SResNetBlock(nn.Module):
    """Two conv-BNTT-SN layers with a spike-sum (or membrane, or no) skip."""

    def __init__(self, c_in: int, c: int, stride: int, skip: str, neuron: NeuronFactory, norm: NormFactory):
        super().__init__()
        self.skip = check_choice("skip", skip, SKIPS)
        self.conv1, self.bn1, self.sn1 = conv3x3(c_in, c, stride), norm(c), neuron()
        self.conv2, self.bn2, self.sn2 = conv3x3(c, c), norm(c), neuron()
        self.downsample = None
        if skip != "none" and (stride != 1 or c_in != c):
            self.downsample = nn.Sequential(conv1x1(c_in, c, stride), norm(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        if self.skip == "none":
            return self.sn2(u)
        identity = x if self.downsample is None else self.downsample(x)
        if self.skip == "membrane":
            return self.sn2(u + identity)
        return self.sn2(u) + identity


class SResNet(SpikingModel):
    """S-ResNet (Vicente-Sola et al. 2022): 6n + 2 layers, BNTT, spike-sum skips every two convs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, n: int = 6, width: int = 32, skip: str = "spike",
                 norm: str = "bntt", stem_stride: int = 1, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected an integer >= 1 (blocks per stage; depth 6n + 2), got {n!r}")
        check_choice("skip", skip, SKIPS)
        check_choice("stem_stride", stem_stride, (1, 2))
        width = check_width(width)
        sn, bn = NeuronFactory(neuron, neuron_kwargs), NormFactory(norm, T)
        self.stem = nn.Sequential(conv3x3(in_channels, width, stem_stride), bn(width), sn())
        c_in, stages = width, []
        for i in range(3):
            c = width * 2 ** i
            stages.append(nn.Sequential(*[SResNetBlock(c_in if j == 0 else c, c, 2 if (i > 0 and j == 0) else 1,
                                                       skip, sn, bn) for j in range(n)]))
            c_in = c
        self.layers = nn.Sequential(*stages)
        self.fc = TimeFold(nn.Linear(c_in, num_classes, bias=False))

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x_seq)).mean(dim=(-2, -1)))


def spiking_resnet18(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64,
                     stem="imagenet", norm="bn", zero_init_residual=False, encoder="direct"):
    """Spiking ResNet-18 (neuron after the addition)."""
    return SpikingResNet((2, 2, 2, 2), num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm,
                         zero_init_residual, encoder)


def spiking_resnet34(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64,
                     stem="imagenet", norm="bn", zero_init_residual=False, encoder="direct"):
    """Spiking ResNet-34 (neuron after the addition)."""
    return SpikingResNet((3, 4, 6, 3), num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm,
                         zero_init_residual, encoder)


_IMAGENET = {"num_classes": 1000, "in_channels": 3}
_CIFAR = {"num_classes": 10, "in_channels": 3}
MODELS.register("spiking_resnet18", help="Spiking ResNet-18, neuron after the addition (SEW's baseline)",
                defaults=_IMAGENET, tiny={"width": 4, "stem": "cifar"})(spiking_resnet18)
MODELS.register("spiking_resnet34", help="Spiking ResNet-34, neuron after the addition (SEW's baseline)",
                heavy=True, defaults=_IMAGENET, tiny_input=(3, 8, 8),
                tiny={"width": 4, "stem": "cifar"})(spiking_resnet34)
MODELS.register("resnet19", help="ResNet-19 for CIFAR with tdBN (Zheng et al. 2021)", defaults=_CIFAR,
                tiny={"width": 4, "hidden": 8})(ResNet19)
MODELS.register("sresnet", help="S-ResNet 6n+2 with BNTT and spike-sum/membrane/no skips (Vicente-Sola 2022)",
                defaults=_CIFAR, tiny={"n": 1, "width": 4})(SResNet)
