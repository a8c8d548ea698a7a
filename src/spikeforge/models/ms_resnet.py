r"""MS-ResNet: membrane-shortcut residual SNN (Hu et al., TNNLS 2024).

Pre-activation blocks whose shortcut carries the real-valued membrane-level tensor, never spikes:

.. math::
    x_{l+1} = x_l + BN_b(Conv_b(SN(BN_a(Conv_a(SN(x_l))))))

Downsampling shortcut: conv1x1/stride + BN on :math:`x_l` (MS-ResNet-104: AvgPool 2, then conv1x1 + BN).
Every BN is tdBN-style (statistics over T and batch) with gamma initialised to the neuron threshold
:math:`V_{th}`, except the last BN of each branch, which starts at gamma = 0 (``zero_init_residual=True``,
the default), so every block starts as the exact identity.  As in the official code (``models/MS_ResNet.py``):
stem conv7x7/2 + BN without a neuron and without max-pooling, and the first stage strides by 2 (so it has a
downsampling shortcut); MS-ResNet-104 uses a stem of three conv3x3 (with bias) + BN, and dropout 0.2 before
the FC.  Head: SN on the final :math:`x`, global average pool, FC per step.

The paper's neuron: :math:`u_t = 0.25\,u_{t-1}(1 - s_{t-1}) + x_t`, :math:`V_{th} = 0.5`, detached hard reset —
``neuron="lif", neuron_kwargs=MS_LIF_KWARGS`` (the official code spikes on ``u > V_th``; spikeforge on ``>=``).

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("ms_resnet18", num_classes=10, in_channels=3, T=2, width=8)
    >>> tuple(net(torch.rand(2, 3, 32, 32)).shape)
    (2, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import TimeFold
from ._common import (NeuronFactory, NormFactory, PoolReadout, check_choice, check_width, conv1x1, conv3x3,
                      zero_norm_)
from .base import SpikingModel
from .registry import MODELS

#: The MS-ResNet paper's neuron for ``neuron="lif"``: decay 0.25 (tau 4/3, no input decay), V_th 0.5.
MS_LIF_KWARGS = {"tau": 4.0 / 3.0, "decay_input": False, "v_threshold": 0.5, "v_reset": 0.0, "detach_reset": True}


class MSBlock(nn.Module):
    """SN-conv3x3-BN-SN-conv3x3-BN(gamma 0) branch added to the (membrane-level) input."""

    def __init__(self, c_in: int, c: int, stride: int, neuron: NeuronFactory, norm: NormFactory,
                 avgpool_shortcut: bool = False):
        super().__init__()
        self.sn1, self.conv1, self.bn1 = neuron(), conv3x3(c_in, c, stride), norm(c)
        self.sn2, self.conv2, self.bn2 = neuron(), conv3x3(c, c), norm(c)
        self.shortcut = None
        if stride != 1 or c_in != c:
            if avgpool_shortcut and stride != 1:
                self.shortcut = nn.Sequential(TimeFold(nn.AvgPool2d(stride, stride)), conv1x1(c_in, c), norm(c))
            else:
                self.shortcut = nn.Sequential(conv1x1(c_in, c, stride), norm(c))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.sn2(self.bn1(self.conv1(self.sn1(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + (x if self.shortcut is None else self.shortcut(x))


class MSResNet(SpikingModel):
    """MS-ResNet with membrane shortcuts (basic blocks)."""

    def __init__(self, layers: tuple, num_classes: int = 1000, in_channels: int = 3, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, width: int = 64, stem: str = "imagenet",
                 norm: str = "tdbn", zero_init_residual: bool = True, dropout: float = 0.0,
                 avgpool_shortcut: bool = False, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        check_choice("stem", stem, ("imagenet", "imagenet3", "cifar"))
        width = check_width(width)
        sn = NeuronFactory(neuron, neuron_kwargs)
        bn = NormFactory(norm, T, **({"v_th": sn.v_threshold} if norm == "tdbn" else {}))
        if stem == "imagenet":
            self.stem = nn.Sequential(TimeFold(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)), bn(width))
        elif stem == "imagenet3":
            self.stem = nn.Sequential(conv3x3(in_channels, width, 2, bias=True), conv3x3(width, width, bias=True),
                                      conv3x3(width, width, bias=True), bn(width))
        else:
            self.stem = nn.Sequential(conv3x3(in_channels, width), bn(width))
        first_stride = 1 if stem == "cifar" else 2
        c_in, stages = width, []
        for i, n in enumerate(layers):
            c = width * 2 ** i
            stages.append(nn.Sequential(*[MSBlock(c_in if j == 0 else c, c,
                                                  (first_stride if i == 0 else 2) if j == 0 else 1, sn, bn,
                                                  avgpool_shortcut) for j in range(n)]))
            c_in = c
        self.layers = nn.Sequential(*stages)
        self.sn_out = sn()
        self.head = PoolReadout(c_in, num_classes, dropout)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, MSBlock):
                    zero_norm_(m.bn2)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.head(self.sn_out(self.layers(self.stem(x_seq))))


def ms_resnet18(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64,
                stem="imagenet", norm="tdbn", zero_init_residual=True, encoder="direct"):
    """MS-ResNet-18 (basic blocks [2, 2, 2, 2])."""
    return MSResNet((2, 2, 2, 2), num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm,
                    zero_init_residual, 0.0, False, encoder)


def ms_resnet34(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64,
                stem="imagenet", norm="tdbn", zero_init_residual=True, encoder="direct"):
    """MS-ResNet-34 (basic blocks [3, 4, 6, 3])."""
    return MSResNet((3, 4, 6, 3), num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm,
                    zero_init_residual, 0.0, False, encoder)


def ms_resnet104(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, width=64,
                 stem="imagenet3", norm="tdbn", zero_init_residual=True, dropout=0.2, encoder="direct"):
    """MS-ResNet-104 (basic blocks [3, 8, 32, 8], 3-conv stem, avg-pool shortcuts, dropout 0.2)."""
    return MSResNet((3, 8, 32, 8), num_classes, in_channels, neuron, neuron_kwargs, T, width, stem, norm,
                    zero_init_residual, dropout, True, encoder)


_IMAGENET = {"num_classes": 1000, "in_channels": 3}
MODELS.register("ms_resnet18", help="MS-ResNet-18, membrane shortcuts (Hu et al. 2024)", defaults=_IMAGENET,
                tiny={"width": 4, "stem": "cifar"})(ms_resnet18)
MODELS.register("ms_resnet34", help="MS-ResNet-34, membrane shortcuts (Hu et al. 2024)", heavy=True,
                defaults=_IMAGENET, tiny_input=(3, 8, 8), tiny={"width": 4, "stem": "cifar"})(ms_resnet34)
MODELS.register("ms_resnet104", help="MS-ResNet-104, membrane shortcuts (Hu et al. 2024)", heavy=True,
                defaults=_IMAGENET, tiny_input=(3, 8, 8), tiny={"width": 2, "stem": "cifar"})(ms_resnet104)
