r"""``proxy``: an IF SNN trained through a ReLU ANN that shares its weights (proxy learning).

Kheradpisheh, Mirsadeghi, Masquelier, "Spiking neural networks trained via proxy", IEEE Access 10 (2022);
arXiv 2109.13208; card ``proxy-learning.md``; official notebook github.com/SRKH/ProxyLearning.

Per batch: the ANN (the model with ReLU at every IF site, the same weight tensors) runs once on the static input
with autograd, :math:`y_{ann} = f_{ReLU}(x; W)`; the SNN runs its ``T`` steps without autograd,
:math:`c = f_{IF}(x; W)` (``[T, B, K]``); the loss is computed on :math:`y = c` with the gradient flowing
through the ANN (``y_ann.data.copy_(c)`` in the notebook):

.. math::
    y = \mathrm{st}(y_{ann}, c) \;(= c), \qquad
    \frac{\partial L}{\partial W} = \frac{\partial L}{\partial y}\Big|_{y=c}\,\frac{\partial y_{ann}}{\partial W}.

``ann_activation``: ``relu`` (the paper) or ``clip``, :math:`\mathrm{clamp}(z/\vartheta, 0, 1)`, the IF
neuron's rate for a constant drive, whose zero slope above threshold tells the weights that a saturated neuron
cannot fire more (with ReLU, training on the full Fashion-MNIST set collapsed: docs/methods/proxy.md).

``prepare`` returns a :class:`ProxyNet`: ``net(x)`` is the SNN (what is evaluated and deployed) and
``net(x, proxy=True)`` the straight-through pass; its ``state_dict`` is the plain model's.  BatchNorm: the SNN
pass uses batch statistics and updates the running ones (what evaluation uses); the ANN pass normalises with
its own batch statistics and leaves the running ones alone.  From epoch ``bn_eval_from_epoch`` on, the SNN's
BatchNorms run on their running statistics during training too (the notebook freezes them after its first
epoch); the ANN keeps batch statistics (the notebook's ANN has running statistics of its own, which the plain
model's checkpoint has no place for; reading the SNN's instead made training collapse).

Example:
    >>> import torch
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> method = create_method("proxy")
    >>> net = method.prepare(create_model("convnet", neuron="if", T=4, input_size=16, channels=(4, 8)))
    >>> all(a.data_ptr() == s.data_ptr() for a, s in zip(net.ann.parameters(), net.snn.parameters()))
    True
    >>> tuple(net(torch.rand(2, 1, 16, 16), proxy=True).shape)
    (4, 2, 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.spike_mapping import straight_through
from ..neurons import IF
from ._twin import BATCHNORMS, TwinNet, neuron_sites, unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS


ANN_ACTIVATIONS = ("relu", "clip")


class ClipRate(nn.Module):
    """``clamp(z / v_th, 0, 1)``: the IF neuron's firing rate (spikes per step) for a constant drive ``z``."""

    def __init__(self, v_threshold: float):
        super().__init__()
        self.v_threshold = float(v_threshold)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z / self.v_threshold).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}"


@dataclass(frozen=True)
class ProxyConfig:
    """``bn_eval_from_epoch``: from this epoch on (epochs count from 1) the SNN's BatchNorms use their running
    statistics during training too; 0 keeps batch statistics throughout.  ``ann_activation``: the ANN's unit
    at each IF site, ``relu`` (the paper) or ``clip`` (``clamp(z / v_th, 0, 1)``, the IF rate curve)."""

    bn_eval_from_epoch: int = 2
    ann_activation: str = "relu"

    def __post_init__(self):
        if self.ann_activation not in ANN_ACTIVATIONS:
            raise ValueError(f"method.kwargs.ann_activation: got {self.ann_activation!r}; allowed: "
                             f"{', '.join(ANN_ACTIVATIONS)}")
        v = self.bn_eval_from_epoch
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"method.kwargs.bn_eval_from_epoch: got {v!r}; allowed: an integer >= 0 (0 = never)")


class ProxyNet(TwinNet):
    """An IF SNN and its ReLU (or clipped-rate) twin on the same weights."""

    def __init__(self, snn, ann_activation: str = "relu"):
        if ann_activation not in ANN_ACTIVATIONS:
            raise ValueError(f"ann_activation: got {ann_activation!r}; allowed: {', '.join(ANN_ACTIVATIONS)}")
        super().__init__(snn, lambda path, neuron: nn.ReLU() if ann_activation == "relu" else
                         ClipRate(neuron.v_threshold))

    def _follow_modes(self) -> None:
        super()._follow_modes()
        for _, twin in self._pairs:  # the ANN normalises with its own batch statistics whenever it trains
            if isinstance(twin, BATCHNORMS):
                twin.training = self.training

    def forward(self, x: torch.Tensor, proxy: bool = False) -> torch.Tensor:
        """The SNN's output ``[T, B, K]``; with ``proxy=True`` its value with the ReLU ANN's gradient."""
        if not proxy:
            return self.snn(x)
        y_ann = self.ann_forward(x)
        with torch.no_grad():
            c = self.snn(x)
        return straight_through(y_ann.expand_as(c), c)


def _check_neuron(path: str, neuron) -> None:
    if type(neuron) is not IF:
        raise ValueError(f"proxy: {type(neuron).__name__} at {path} is not an IF neuron; the ReLU proxy stands "
                         "for the IF firing rate (set model.neuron=if)")


@METHODS.register("proxy", help="IF SNN trained through a weight-sharing ReLU ANN, straight-through "
                           "(Kheradpisheh et al. 2022)")
class Proxy(Method):
    name = "proxy"
    card = "proxy-learning.md"
    Config = ProxyConfig
    smoke_overrides = ("model.neuron=if",)

    def check(self, model, cfg) -> None:
        neuron_sites(model, "proxy", _check_neuron)

    def prepare(self, model):
        neuron_sites(model, "proxy", _check_neuron)
        return ProxyNet(model, self.config.ann_activation)

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        start = self.config.bn_eval_from_epoch
        if start and ctx.epoch >= start:
            for m in unwrap(model).modules():
                if isinstance(m, BATCHNORMS):
                    m.eval()
        with ctx.autocast():
            out = model(x, proxy=True)
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), out.detach())
