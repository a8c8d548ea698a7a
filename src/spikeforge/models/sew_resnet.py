r"""SEW ResNet: spike-element-wise residual blocks (Fang et al., NeurIPS 2021).

The neuron sits inside the residual branch and spikes are merged element-wise:

.. math::
    A = SN(BN(Conv(SN(BN(Conv(S))))))\ \text{(basic; bottleneck: three conv-BN-SN stages)},\qquad
    O = g(A, S),\quad g \in \{A + S\ (\mathrm{ADD}),\ A\,S\ (\mathrm{AND}),\ (1 - A)\,S\ (\mathrm{IAND})\}

Downsampling shortcut :math:`S' = SN(BN(Conv1x1_{stride}(S)))`, then :math:`O = g(A, S')`.  ADD outputs can
exceed 1 (integer counts).  ImageNet stem: conv7x7/2 + BN + SN + MaxPool 3/2; ``stem="cifar"``: conv3x3/1 +
BN + SN.  Readout: global average pool per step, linear layer per step (mean over T of the outputs = the
paper's "mean over T, then FC").  ``zero_init_residual=True`` sets the last BN gamma of every branch to 0
(and its beta to ``and_bias`` for AND), so every block starts as the identity on spikes — for AND this needs a
neuron that fires at every step for a constant input ``and_bias`` (the paper's IF with threshold 1 and
bias 1; for LIF with ``decay_input`` use ``and_bias >= tau * v_threshold``).

The paper's neuron is IF with ``detach_reset=True`` (ATan surrogate): ``neuron="if",
neuron_kwargs={"detach_reset": True}``.  Parameter counts equal torchvision's ResNets (SEW-ResNet-18:
11,689,512 for 1000 classes).

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("sew_resnet18", num_classes=10, in_channels=3, T=2, width=8, cnf="ADD")
    >>> tuple(net(torch.rand(2, 3, 32, 32)).shape)
    (2, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import MaxPool2d, TimeFold
from ._common import (NeuronFactory, NormFactory, PoolReadout, check_choice, check_width, conv1x1, conv3x3,
                      zero_norm_)
from .base import SpikingModel
from .registry import MODELS

CONNECT_FUNCTIONS = ("ADD", "AND", "IAND")


def connect(a: torch.Tensor, s: torch.Tensor, cnf: str) -> torch.Tensor:
    """The SEW connect function ``g(A, S)``."""
    if cnf == "ADD":
        return a + s
    if cnf == "AND":
        return a * s
    if cnf == "IAND":
        return (1.0 - a) * s
    raise ValueError(f"cnf: unknown connect function {cnf!r}; available: {', '.join(CONNECT_FUNCTIONS)}")


class SEWBasicBlock(nn.Module):
    """conv3x3-BN-SN, conv3x3-BN-SN, then ``g(A, shortcut)``."""

    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int, cnf: str, neuron: NeuronFactory, norm: NormFactory):
        super().__init__()
        self.cnf = check_choice("cnf", cnf, CONNECT_FUNCTIONS)
        self.conv1, self.bn1, self.sn1 = conv3x3(c_in, c, stride), norm(c), neuron()
        self.conv2, self.bn2, self.sn2 = conv3x3(c, c), norm(c), neuron()
        self.downsample = None
        if stride != 1 or c_in != c * self.expansion:
            self.downsample = nn.Sequential(conv1x1(c_in, c * self.expansion, stride), norm(c * self.expansion),
                                            neuron())

    def last_norm(self) -> nn.Module:
        return self.bn2

    def branch(self, s: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(s))))))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        identity = s if self.downsample is None else self.downsample(s)
        return connect(self.branch(s), identity, self.cnf)


class SEWBottleneck(SEWBasicBlock):
    """conv1x1-BN-SN, conv3x3(stride)-BN-SN, conv1x1(x4)-BN-SN, then ``g(A, shortcut)``."""

    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int, cnf: str, neuron: NeuronFactory, norm: NormFactory):
        nn.Module.__init__(self)
        self.cnf = check_choice("cnf", cnf, CONNECT_FUNCTIONS)
        c_out = c * self.expansion
        self.conv1, self.bn1, self.sn1 = conv1x1(c_in, c), norm(c), neuron()
        self.conv2, self.bn2, self.sn2 = conv3x3(c, c, stride), norm(c), neuron()
        self.conv3, self.bn3, self.sn3 = conv1x1(c, c_out), norm(c_out), neuron()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv1x1(c_in, c_out, stride), norm(c_out), neuron())

    def last_norm(self) -> nn.Module:
        return self.bn3

    def branch(self, s: torch.Tensor) -> torch.Tensor:
        y = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(s))))))
        return self.sn3(self.bn3(self.conv3(y)))


def make_stem(stem: str, in_channels: int, width: int, neuron: NeuronFactory, norm: NormFactory,
              with_neuron: bool = True) -> nn.Sequential:
    """ImageNet stem (conv7x7/2, BN, [SN], MaxPool 3/2) or CIFAR stem (conv3x3/1, BN, [SN])."""
    check_choice("stem", stem, ("imagenet", "cifar"))
    if stem == "imagenet":
        layers = [TimeFold(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)), norm(width)]
        if with_neuron:
            layers.append(neuron())
        layers.append(TimeFold(MaxPool2d(3, stride=2, padding=1)))
    else:
        layers = [conv3x3(in_channels, width), norm(width)]
        if with_neuron:
            layers.append(neuron())
    return nn.Sequential(*layers)


class SEWResNet(SpikingModel):
    """SEW ResNet with ADD / AND / IAND connect functions (basic or bottleneck blocks)."""

    def __init__(self, block: type, layers: tuple, num_classes: int = 1000, in_channels: int = 3,
                 neuron: str = "lif", neuron_kwargs: dict | None = None, T: int = 4, cnf: str = "ADD",
                 width: int = 64, stem: str = "imagenet", norm: str = "bn", zero_init_residual: bool = False,
                 and_bias: float = 1.0, encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        self.cnf = check_choice("cnf", cnf, CONNECT_FUNCTIONS)
        width = check_width(width)
        sn = NeuronFactory(neuron, neuron_kwargs)
        bn = NormFactory(norm, T)
        self.stem = make_stem(stem, in_channels, width, sn, bn)
        c_in, stages = width, []
        for i, n in enumerate(layers):
            c = width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, c, 2 if (i > 0 and j == 0) else 1, cnf, sn, bn))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.head = PoolReadout(c_in, num_classes)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, SEWBasicBlock):
                    zero_norm_(m.last_norm(), and_bias if cnf == "AND" else 0.0)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x_seq)))


def _factory(block, layers, doc):
    def build(num_classes=1000, in_channels=3, neuron="lif", neuron_kwargs=None, T=4, cnf="ADD", width=64,
              stem="imagenet", norm="bn", zero_init_residual=False, and_bias=1.0, encoder="direct"):
        return SEWResNet(block, layers, num_classes, in_channels, neuron, neuron_kwargs, T, cnf, width, stem,
                         norm, zero_init_residual, and_bias, encoder)

    build.__doc__ = doc
    return build


sew_resnet18 = _factory(SEWBasicBlock, (2, 2, 2, 2), "SEW-ResNet-18 (basic blocks [2, 2, 2, 2])")
sew_resnet34 = _factory(SEWBasicBlock, (3, 4, 6, 3), "SEW-ResNet-34 (basic blocks [3, 4, 6, 3])")
sew_resnet50 = _factory(SEWBottleneck, (3, 4, 6, 3), "SEW-ResNet-50 (bottleneck blocks [3, 4, 6, 3])")

_TINY = {"width": 4, "stem": "cifar"}
_DEFAULT = {"num_classes": 1000, "in_channels": 3}
MODELS.register("sew_resnet18", help="SEW-ResNet-18, ADD/AND/IAND connect (Fang et al. 2021)",
                defaults=_DEFAULT, tiny=_TINY)(sew_resnet18)
MODELS.register("sew_resnet34", help="SEW-ResNet-34, ADD/AND/IAND connect (Fang et al. 2021)",
                heavy=True, defaults=_DEFAULT, tiny_input=(3, 8, 8), tiny=_TINY)(sew_resnet34)
MODELS.register("sew_resnet50", help="SEW-ResNet-50 (bottleneck), ADD/AND/IAND connect (Fang et al. 2021)",
                heavy=True, defaults=_DEFAULT, tiny_input=(3, 8, 8), tiny={"width": 2, "stem": "cifar"})(sew_resnet50)
