"""Small SNNs for MNIST-size data: a spiking MLP and a conv SNN (the pipeline's default model).

``convnet``: [conv3x3 -> BN -> neuron -> maxpool2] per entry of ``channels``, then flatten -> Linear readout.
``norm="ws"`` replaces conv3x3 -> BN by a scaled weight-standardised conv3x3 with bias (no batch statistics: what
online training per time step, ``method.name=ottt``, needs).
The readout is a non-spiking linear layer applied at every step, so outputs are per-step logits
``[T, B, num_classes]`` (average over T for the prediction, or use every step with TET).

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("convnet", num_classes=10, in_channels=1, T=4, input_size=28)
    >>> tuple(net(torch.rand(2, 1, 28, 28)).shape)
    (4, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import MaxPool2d, ScaledWSConv2d, TimeFold
from .base import SpikingModel, make_neuron
from .registry import MODELS


class SpikingMLP(SpikingModel):
    """Flatten -> [Linear -> neuron] x len(hidden) -> Linear readout."""

    channels_last = False  # no convolutions: C order is what the flatten needs

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=4, input_size=28,
                 hidden=(256,), encoder="direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        layers, width = [], in_channels * input_size * input_size
        for h in hidden:
            layers += [TimeFold(nn.Linear(width, h)), make_neuron(neuron, neuron_kwargs)]
            width = h
        self.features = nn.Sequential(*layers)
        self.readout = TimeFold(nn.Linear(width, num_classes))
        self.input_size = input_size

    def forward_seq(self, x_seq):
        return self.readout(self.features(x_seq.flatten(2)))


class ConvSNN(SpikingModel):
    """[Conv3x3 -> BN -> neuron -> MaxPool2] per channel entry, flatten, Linear readout.  ``norm``: ``"bn"``
    (BatchNorm2d after each conv) or ``"ws"`` (:class:`~spikeforge.layers.ScaledWSConv2d`, no BatchNorm)."""

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=4, input_size=28,
                 channels=(32, 64), hidden=0, encoder="direct", norm="bn"):
        super().__init__(num_classes, in_channels, T, encoder)
        if norm not in ("bn", "ws"):
            raise ValueError(f"norm: unknown value {norm!r}; allowed: 'bn' (BatchNorm2d after each conv), 'ws' "
                             "(scaled weight standardisation, no batch statistics)")
        blocks, c, size = [], in_channels, input_size
        for c_out in channels:
            conv = TimeFold(nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)) if norm == "bn" \
                else TimeFold(ScaledWSConv2d(c, c_out, 3, padding=1))
            blocks += [conv, make_neuron(neuron, neuron_kwargs), TimeFold(MaxPool2d(2))]
            c, size = c_out, size // 2
        if size < 1:
            raise ValueError(f"input_size: {input_size} is too small for {len(channels)} pooling stages")
        self.features = nn.Sequential(*blocks)
        width = c * size * size
        head = []
        if hidden:
            head += [TimeFold(nn.Linear(width, hidden)), make_neuron(neuron, neuron_kwargs)]
            width = hidden
        self.head = nn.Sequential(*head)
        self.readout = TimeFold(nn.Linear(width, num_classes))
        self.input_size = input_size

    def forward_seq(self, x_seq):
        if x_seq.shape[-1] != self.input_size or x_seq.shape[-2] != self.input_size:
            raise ValueError(f"x: expected spatial size {self.input_size}x{self.input_size} (input_size), got "
                             f"{tuple(x_seq.shape[-2:])}")
        y = self.features(x_seq).flatten(2)
        return self.readout(self.head(y))


MODELS.register("mlp", help="spiking MLP for MNIST-size inputs", defaults={"num_classes": 10, "in_channels": 1},
                tiny={"input_size": 16, "hidden": (16,)})(SpikingMLP)
MODELS.register("convnet", help="2-3 layer conv SNN (default model of the training pipeline)",
                defaults={"num_classes": 10, "in_channels": 1},
                tiny={"input_size": 16, "channels": (4, 8)})(ConvSNN)
