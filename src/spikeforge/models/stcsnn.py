r"""STCSNN (SLSSNN): a conv net of spatio-temporal conversion blocks (Xu, Liu & Yang, arXiv 2307.07136; card
``slssnn-stcsnn.md``, LOW confidence: the block and the net are inferred, see :mod:`spikeforge.layers.stcb`).

Per block: :math:`I_t = BN(Conv3x3(S_{l-1}[t]))`, then the STCB's temporal conversion to spikes (IF with soft
reset by default) trained with the spike-count equivalent gradient, then 2x2 max pooling (spikes stay binary).
The first block reads the analog image (direct encoding, repeated ``T`` times); the readout is a linear layer
on the last block's spikes at every step, so its time average is the linear map of the spike counts.

``neuron="lif"`` (default) runs the STCB's own temporal conversion (options ``decay``, ``learn_decay``,
``reset``, ``gradient``; ``neuron_kwargs`` may set ``v_threshold``, ``surrogate`` and ``backend`` = auto or
reference, the one torch loop); any other registered
neuron replaces it after the same conv + BN (a same-size zoo-neuron ablation, trained by BPTT).
``gradient="surrogate"`` keeps the STCB's LIF but trains it by BPTT with a surrogate: the same-size
surrogate-gradient LIF baseline of card check 3.

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("stcsnn", num_classes=10, in_channels=1, T=2, input_size=8, channels=(4, 8))
    >>> tuple(net(torch.rand(3, 1, 8, 8)).shape)
    (2, 3, 10)
"""

from __future__ import annotations

from torch import nn

from ..layers import STCB, MaxPool2d, TimeFold
from .base import SpikingModel, make_neuron
from .registry import MODELS

_STCB_NEURON_KWARGS = ("v_threshold", "surrogate")


class STCSNN(SpikingModel):
    """[STCB (conv3x3 -> BN -> temporal conversion) -> MaxPool2] per channel entry, flatten, Linear readout."""

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=4, input_size=28,
                 channels=(32, 64), decay=1.0, learn_decay=False, reset="soft", gradient="equivalent",
                 encoder="direct"):
        super().__init__(num_classes, in_channels, T, encoder)
        if not isinstance(channels, (tuple, list)) or not channels or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels: expected a non-empty list of integers >= 1, got {channels!r}")
        nkw = dict(neuron_kwargs or {})
        if neuron == "lif":
            backend = nkw.pop("backend", "auto")
            if backend not in ("auto", "reference"):
                raise ValueError(f"neuron_kwargs.backend: {backend!r}; the STCB runs one torch loop, allowed: auto, "
                                 "reference")
            bad = [k for k in nkw if k not in _STCB_NEURON_KWARGS]
            if bad:
                raise ValueError(f"neuron_kwargs.{bad[0]}: {nkw[bad[0]]!r} is not an option of the STCB's temporal "
                                 f"conversion (neuron='lif'); allowed: {', '.join(_STCB_NEURON_KWARGS)}; set decay, "
                                 "learn_decay, reset, gradient in model.kwargs")
        blocks, c, size = [], in_channels, input_size
        for c_out in channels:
            if neuron == "lif":
                blocks.append(STCB(c, c_out, T, decay=decay, learn_decay=learn_decay, reset=reset,
                                   gradient=gradient, **nkw))
            else:
                blocks += [TimeFold(nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)),
                           make_neuron(neuron, nkw)]
            blocks.append(TimeFold(MaxPool2d(2)))
            c, size = c_out, size // 2
        if size < 1:
            raise ValueError(f"input_size: {input_size} is too small for {len(channels)} pooling stages")
        self.features = nn.Sequential(*blocks)
        self.readout = TimeFold(nn.Linear(c * size * size, num_classes))
        self.input_size = input_size

    def forward_seq(self, x_seq):
        if x_seq.shape[-1] != self.input_size or x_seq.shape[-2] != self.input_size:
            raise ValueError(f"x: expected spatial size {self.input_size}x{self.input_size} (input_size), got "
                             f"{tuple(x_seq.shape[-2:])}")
        return self.readout(self.features(x_seq).flatten(2))


MODELS.register("stcsnn", help="STCSNN/SLSSNN: STCB conv net with the spike-count equivalent gradient "
                               "(Xu et al. 2023, inferred)",
                defaults={"num_classes": 10, "in_channels": 1},
                tiny={"input_size": 16, "channels": (4, 8)})(STCSNN)
