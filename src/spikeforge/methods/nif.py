"""``nif``: temporal-coded SNN of single-spike NIF neurons trained on its closed form (Zhou et al., AAAI 2021;
temporal-coded-nif-snn.md).

The model (``nif_mlp``, ``nif_convnet``) maps input spike times ``z = exp(t)``, ``t = scale * (1 - pixel)``, to
output spike times in closed form (:mod:`spikeforge.functional.nif`); no time grid, no surrogate.  The loss is the
official script's

    L = CE(softmax(-z_out), y) + K * sum_layers mean_j max(0, theta - sum_i w_ij) + K2 * sum_layers mean(w^2)

(K = 100 keeps every neuron able to fire, K2 = 0.01), and the prediction is the first output neuron to fire.

``quant_bits`` (2..8) trains with the weights fake-quantised (symmetric uniform, per output neuron, straight-through
gradient; :mod:`spikeforge.deploy.quant`): the paper's robustness to 8/4/2-bit weights.  The same-shape ReLU ANN
is ``model.kwargs.mode=relu`` trained with ``bptt`` (plain backprop: it has no time axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Method, StepContext, StepResult
from .bats import spike_time_net
from .registry import METHODS


def _num(key, v, low=0.0):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= low:
        raise ValueError(f"method.kwargs.{key}: got {v!r}; allowed: a number >= {low}")


@dataclass(frozen=True)
class NIFOptions:
    """``K``: weight-sum penalty weight; ``K2``: weight-decay weight; ``quant_bits``: 0 (float) or 2..8 (QAT)."""

    K: float = 100.0
    K2: float = 1e-2
    quant_bits: int = 0

    def __post_init__(self):
        _num("K", self.K)
        _num("K2", self.K2)
        q = self.quant_bits
        if isinstance(q, bool) or not isinstance(q, int) or not (q == 0 or 2 <= q <= 8):
            raise ValueError(f"method.kwargs.quant_bits: got {q!r}; allowed: 0 (float weights) or an integer "
                             "in 2..8")


def nif_layers(model) -> dict:
    """``{name: layer}`` of the NIF layers (``NIFLinear``/``NIFConv2d``) of a spike-time model."""
    from ..neurons.nif import NIFConv2d, NIFLinear

    return {n: m for n, m in spike_time_net(model).named_modules() if isinstance(m, (NIFLinear, NIFConv2d))}


def quantize_nif_(model, cfg) -> None:
    """Fake-quantise every NIF layer's weight with :class:`spikeforge.deploy.QuantConfig` ``cfg`` in place (the
    deploy module's weight parametrisation; ``quantize_`` itself acts on Linear/Conv modules only)."""
    from ..deploy.quant import deploy_weight, raw_weight

    for name, m in nif_layers(model).items():
        p = deploy_weight(m, create=True)
        if p.quant is not None:
            raise ValueError(f"quantize_nif_: layer {name!r} is already quantised ({p.quant})")
        p.set_quant(cfg, raw_weight(m))


def nif_weight_noise_(model, sigma_rel: float, generator=None) -> None:
    """Gaussian noise of ``sigma_rel`` x each NIF layer's weight RMS, one fixed draw (the deploy module's
    :class:`~spikeforge.deploy.noise.NoiseSpec` on the same weight parametrisation; ``clear_noise_`` removes it)."""
    from ..deploy.noise import NoiseSpec, _check_sigma
    from ..deploy.quant import deploy_weight, raw_weight

    sigma = _check_sigma("sigma_rel", sigma_rel)
    for m in nif_layers(model).values():
        p = deploy_weight(m, create=True)
        spec = NoiseSpec(sigma, False, generator)
        p.noise_eps = spec.draw(raw_weight(m).shape, raw_weight(m).detach())
        p.noise = spec


@METHODS.register("nif", help="temporal-coded NIF SNN trained on its closed-form spike times (Zhou et al. 2021)")
class NIF(Method):
    name = "nif"
    card = "temporal-coded-nif-snn.md"
    Config = NIFOptions
    smoke_overrides = ("model.name=nif_mlp", "model.kwargs={hidden: [16]}", "data.normalize=false")

    def check(self, model, cfg) -> None:
        from ..models.spike_time import NIFConvNet, NIFMLP

        net = spike_time_net(model)
        if not isinstance(net, (NIFMLP, NIFConvNet)):
            raise ValueError(f"model.name: method nif trains NIF spike-time models (nif_mlp, nif_convnet), got "
                             f"{cfg.model.name!r} ({type(net).__name__}), a time-grid model fed [T, B, ...]; "
                             "train it with bptt or another time-grid method")
        if net.mode != "nif":
            raise ValueError(f"model.kwargs.mode: {net.mode!r} is the ReLU ANN of the same shape; train it with "
                             "method.name=bptt, or set model.kwargs.mode=nif")

    def prepare(self, model):
        if self.config.quant_bits:
            from ..deploy import QuantConfig

            quantize_nif_(model, QuantConfig(bits=self.config.quant_bits))
        return model

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        net = spike_time_net(model)
        with ctx.autocast():
            z_out = net.spike_times(net.encode(x))
        loss = F.cross_entropy(-z_out.float(), y)
        for m in net.penalty_layers():
            w = m.weight
            loss = loss + self.config.K * m.penalty() + self.config.K2 * (w * w).mean()
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), (-z_out).detach().unsqueeze(0))
