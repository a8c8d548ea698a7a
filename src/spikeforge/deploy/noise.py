r"""Device non-idealities of the weights and neurons: Gaussian weight noise and neuron-parameter mismatch.

Weight noise (seed 000's robustness scripts scale the noise to each layer's RMS weight):

.. math::
    \tilde W = \hat W + \sigma_{rel}\,\mathrm{RMS}(\hat W)\,\varepsilon,\qquad \varepsilon \sim \mathcal N(0, I)

where :math:`\hat W` is the weight the layer uses (after :func:`~spikeforge.deploy.quantize_`, when installed).
``per_step=False``: one draw :math:`\varepsilon`, fixed until the next :func:`weight_noise_` (a programmed
chip); ``per_step=True``: a new draw at every use of the weight, and stateless layers wrapped in
:class:`~spikeforge.layers.TimeFold` run one time step at a time, so every step sees its own draw (read noise).
A layer called outside a TimeFold gets one draw per call (per step for step-by-step models such as the LMU).

Neuron mismatch, per neuron :math:`i` (drawn once, on the neuron's first call, for its per-sample shape):
:math:`\tau_i = \tau\,(1 + \sigma_\tau \varepsilon_i)` (kept >= 1), :math:`\vartheta_i = \vartheta\,(1 +
\sigma_\vartheta \varepsilon'_i)` (kept >= 0.05 \vartheta).  The threshold is applied by scaling the input
by :math:`\vartheta/\vartheta_i` (exact for the LIF family with reset to 0 or soft reset: the membrane is then
held in units of the nominal threshold).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.deploy import weight_noise_, clear_noise_
    >>> net = nn.Sequential(nn.Linear(8, 4))
    >>> w0 = net[0].weight.detach().clone()
    >>> weight_noise_(net, 0.1, generator=torch.Generator().manual_seed(0))
    >>> rel = ((net[0].weight - w0).pow(2).mean().sqrt() / w0.pow(2).mean().sqrt()).item()
    >>> 0.05 < rel < 0.2
    True
    >>> clear_noise_(net); torch.equal(net[0].weight, w0)
    True
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn

from .quant import deploy_weight, raw_weight, select_layers, _drop_if_idle


def _check_sigma(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0 (relative standard deviation), got {value!r}")
    return float(value)


class NoiseSpec:
    """Weight noise of one layer: ``sigma_rel`` times the RMS of the weight it perturbs."""

    def __init__(self, sigma_rel: float, per_step: bool, generator: torch.Generator | None):
        self.sigma_rel, self.per_step, self.generator = sigma_rel, per_step, generator

    def draw(self, shape, like: torch.Tensor) -> torch.Tensor:
        dev = self.generator.device if self.generator is not None else like.device
        return torch.randn(shape, generator=self.generator, device=dev, dtype=like.dtype).to(like.device)

    def apply(self, p, w: torch.Tensor) -> torch.Tensor:
        eps = self.draw(w.shape, w) if self.per_step else p.noise_eps.to(w.dtype)
        rms = w.detach().pow(2).mean().sqrt()
        return w + (self.sigma_rel * rms) * eps

    def __repr__(self) -> str:
        return f"NoiseSpec(sigma_rel={self.sigma_rel}, per_step={self.per_step})"


def _per_step_hook(module, args, output):
    x_seq = args[0]
    return torch.stack([module.layer(x_seq[t]) for t in range(x_seq.shape[0])])


_per_step_hook.spikeforge_noise = True


def weight_noise_(model: nn.Module, sigma_rel: float, per_step: bool = False,
                  generator: torch.Generator | None = None, filter_fn=None) -> None:
    """Add Gaussian weight noise of ``sigma_rel`` x each layer's weight RMS to every Linear/Conv (or those
    ``filter_fn(module, name)`` selects), in place, through the weight parametrisation; a second call replaces
    the first.  ``clear_noise_`` removes it.  Gradients flow to the stored weights (noise-aware training)."""
    sigma = _check_sigma("sigma_rel", sigma_rel)
    if not isinstance(per_step, bool):
        raise ValueError(f"per_step: expected True or False, got {per_step!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    layers = select_layers(model, filter_fn, "weight_noise_")
    clear_noise_(model)
    for name, m in layers.items():
        p = deploy_weight(m, create=True)
        spec = NoiseSpec(sigma, per_step, generator)
        if not per_step:
            p.noise_eps = spec.draw(raw_weight(m).shape, raw_weight(m).detach())
        p.noise = spec
    if per_step:
        from ..layers import TimeFold

        noisy = {id(m) for m in layers.values()}
        for tf in model.modules():
            if isinstance(tf, TimeFold) and any(id(m) in noisy for m in tf.layer.modules()):
                tf.register_forward_hook(_per_step_hook)


def clear_noise_(model: nn.Module) -> None:
    """Remove the weight noise of :func:`weight_noise_` (quantisation stays)."""
    for m in list(model.modules()):
        for k, hook in list(m._forward_hooks.items()):
            if getattr(hook, "spikeforge_noise", False):
                del m._forward_hooks[k]
        p = deploy_weight(m)
        if p is None or p.noise is None:
            continue
        p.noise, p.noise_eps = None, None
        _drop_if_idle(m, p)


# --- neuron mismatch -----------------------------------------------------------------------------------------

def _mismatch_factors(neuron, x_seq):
    shape = tuple(x_seq.shape[2:])
    if neuron.mismatch_theta is None:
        g = torch.Generator().manual_seed(neuron._mismatch_seed)
        e_tau = torch.randn(shape, generator=g, dtype=torch.float64)
        e_th = torch.randn(shape, generator=g, dtype=torch.float64)
        tau = float(getattr(neuron, "tau", 1.0))
        tau_i = (tau * (1.0 + neuron._mismatch_sigma[0] * e_tau)).clamp_min(1.0)
        neuron.mismatch_k = (tau / tau_i).to(x_seq.device)          # k_i / k
        neuron.mismatch_theta = (1.0 + neuron._mismatch_sigma[1] * e_th).clamp_min(0.05).to(x_seq.device)
    elif tuple(neuron.mismatch_theta.shape) != shape:
        raise ValueError(f"neuron_mismatch_: the neuron's per-sample shape changed from "
                         f"{tuple(neuron.mismatch_theta.shape)} to {shape}; mismatch is drawn once per neuron")
    return neuron.mismatch_k.to(x_seq.dtype), neuron.mismatch_theta.to(x_seq.dtype)


def _mismatch_k(self, x_seq):
    k_rel, _ = _mismatch_factors(self, x_seq)
    return type(self)._k(self, x_seq) * k_rel


def _mismatch_seq(self, x_seq, state, return_v):
    _, f = _mismatch_factors(self, x_seq)
    out = type(self)._seq(self, x_seq / f, state, return_v)
    if return_v:
        s, st, v = out
        return s, st, v * f
    return out


def neuron_mismatch_(model: nn.Module, sigma_tau: float = 0.0, sigma_theta: float = 0.0, seed: int = 0) -> None:
    """Give every IF/LIF/PLIF neuron of ``model`` its own per-neuron time constant and threshold (relative
    Gaussian spread ``sigma_tau``, ``sigma_theta``), drawn on first use from ``seed`` (one stream per neuron
    module).  Other neuron types, and hard resets to a value other than 0, raise naming the layer."""
    from ..neurons.base import BaseNeuron
    from ..neurons.lif import IF, LIF, PLIF

    s_tau, s_th = _check_sigma("sigma_tau", sigma_tau), _check_sigma("sigma_theta", sigma_theta)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseNeuron)]
    if not neurons:
        raise ValueError("neuron_mismatch_: model has no neuron modules; allowed: a model with IF/LIF/PLIF neurons")
    for j, (name, m) in enumerate(neurons):
        if type(m) not in (IF, LIF, PLIF):
            raise ValueError(f"neuron_mismatch_: layer {name!r} ({type(m).__name__}) cannot be handled; allowed "
                             f"neuron types: IF, LIF, PLIF")
        if m.v_reset not in (None, 0.0):
            raise ValueError(f"neuron_mismatch_: layer {name!r} resets to v_reset={m.v_reset}; allowed: 0.0 or "
                             f"None (soft reset), where a threshold change equals an input scaling")
        if s_tau > 0 and type(m) is IF:
            raise ValueError(f"neuron_mismatch_: layer {name!r} is IF (no time constant); sigma_tau={s_tau}; "
                             f"allowed: 0 for IF neurons")
        m._mismatch_seed = int(seed) * 1_000_003 + j
        m._mismatch_sigma = (s_tau, s_th)
        m.mismatch_k = m.mismatch_theta = None
        m._seq = types.MethodType(_mismatch_seq, m)
        if type(m) is not IF:
            m._k = types.MethodType(_mismatch_k, m)


__all__ = ["weight_noise_", "clear_noise_", "neuron_mismatch_", "NoiseSpec"]
