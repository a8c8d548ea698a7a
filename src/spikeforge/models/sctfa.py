r"""The SCTFA paper's MNIST-DVS network (Cai et al., TNNLS 2023).

conv7x7/2(``in -> 32``) - BN - SCTFA, AvgPool 2; conv3x3(32 -> 64) - BN - SCTFA, AvgPool 2;
conv3x3(64 -> 128) - BN - SCTFA, AvgPool 2; FC -> 512 - SN; FC -> ``num_classes * 5`` - SN; population vote
(mean of groups of 5).  ``attention`` selects the variant of the paper's ablation: ``"sctfa"``, ``"spatial"``,
``"channel"``, or ``"none"`` (the baseline BL-SNN: the plain neuron, no attention).  ``width`` scales 32/64/128.
The paper's neuron: ``neuron="lif", neuron_kwargs=SCTFA_LIF_KWARGS`` (decay 0.5, V_th 0.8).

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("sctfa_net", num_classes=10, in_channels=2, T=3, input_size=32, width=4, hidden=16)
    >>> tuple(net(torch.rand(3, 2, 2, 32, 32)).shape)
    (3, 2, 10)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import TimeFold
from ..layers.attention import SCTFA, SCTFA_LIF_KWARGS  # noqa: F401  (re-exported for users)
from ..layers.pooling import VotingPool
from ._common import NeuronFactory, NormFactory, check_choice, check_width
from .base import SpikingModel, check_frame_size
from .registry import MODELS


class SCTFANet(SpikingModel):
    """Three conv-BN-SCTFA-AvgPool stages, two spiking FC layers, population voting."""

    def __init__(self, num_classes: int = 10, in_channels: int = 2, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 20, input_size: int = 128, width: int = 32,
                 hidden: int = 512, population: int = 5, attention: str = "sctfa", reduction: int = 4,
                 norm: str = "bn", encoder: str = "direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        check_choice("attention", attention, ("sctfa", "spatial", "channel", "none"))
        width = check_width(width)
        size = input_size // 16
        if size < 1:
            raise ValueError(f"input_size: expected >= 16 (one stride-2 conv and three poolings), got {input_size}")
        sn, bn = NeuronFactory(neuron, neuron_kwargs), NormFactory(norm, T)

        def act(c):
            return sn() if attention == "none" else SCTFA(sn(), c, reduction, attention)

        c1, c2, c3 = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            TimeFold(nn.Conv2d(in_channels, c1, 7, stride=2, padding=3, bias=False)), bn(c1), act(c1),
            TimeFold(nn.AvgPool2d(2)),
            TimeFold(nn.Conv2d(c1, c2, 3, padding=1, bias=False)), bn(c2), act(c2), TimeFold(nn.AvgPool2d(2)),
            TimeFold(nn.Conv2d(c2, c3, 3, padding=1, bias=False)), bn(c3), act(c3), TimeFold(nn.AvgPool2d(2)),
        )
        self.head = nn.Sequential(TimeFold(nn.Linear(c3 * size * size, hidden)), sn(),
                                  TimeFold(nn.Linear(hidden, num_classes * population)), sn(),
                                  VotingPool(population))
        self.input_size = input_size

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_frame_size(x_seq, self.input_size)
        return self.head(self.features(x_seq).flatten(2))


MODELS.register("sctfa_net", help="SCTFA attention SNN for DVS frames (Cai et al. 2023)",
                defaults={"num_classes": 10, "in_channels": 2},
                tiny={"input_size": 16, "width": 4, "hidden": 8}, tiny_input=(2, 16, 16), needs_step=True)(SCTFANet)
