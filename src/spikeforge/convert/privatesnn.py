r"""``privatesnn``: data-free conversion from images synthesised by inverting the ANN (Kim, Venkatesha, Panda, AAAI
2022; steps 2-4 checked against the official code), then optionally the weight
"encryption" fine-tune.

1. Class similarity from the last linear layer's weights, :math:`C_{ij} = \cos(w_i, w_j)`, min-max normalised per
   row to [0, 1].
2. For class k, soft targets :math:`\tilde y \sim \mathrm{Dir}(\beta C_k + \epsilon)` (``beta`` = 1, as the
   code's default scale; :math:`\epsilon` = 1e-3 keeps the concentration positive).
3. Images start as uniform noise in [0, 1) and minimise :math:`\mathrm{CE}_{soft}(f(x)/\tau, \tilde y)`, τ = 20,
   with Adam (the paper: lr 1e-3, 1500 iterations for MNIST; defaults here: lr 5e-3, 300 iterations, the same
   total step size).
4. The thresholds are calibrated on the synthetic images (any ``ConversionConfig``; default channel-wise 99.99th
   percentile and θ/2).  [inferred: PrivateSNN balances each threshold on the max pre-activation of the simulated
   SNN layer by layer; here the ANN activations of the synthetic images are used, as for every recipe.]
5. ``encrypt_epochs`` > 0: the converted SNN is fine-tuned with BPTT on the synthetic images and their argmax
   targets (the paper trains on Poisson-coded synthetic data with a spike-time surrogate; here the model's own
   encoder and surrogate are used) so its weights no longer equal the ANN's.

:func:`synthesize` returns ``(x, y_soft)``; :func:`threshold_ratio` compares thresholds found on synthetic and real
data (the card's check 1).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert.privatesnn import synthesize
    >>> ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = synthesize(ann, (1, 4, 4), n_per_class=2, steps=5)
    >>> tuple(x.shape), tuple(y.shape)
    ((6, 1, 4, 4), (6, 3))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core import calibrate, prepare_ann
from .registry import RECIPES, convert_with, make_config


def _last_linear(ann: nn.Module) -> nn.Linear:
    last = None
    for m in ann.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError(f"ann: {type(ann).__name__} has no linear layer; privatesnn reads the class similarity from "
                         "the last linear layer's weights")
    return last


def class_similarity(ann: nn.Module) -> torch.Tensor:
    """``[K, K]`` cosine similarity of the last linear layer's class weights, min-max normalised per row."""
    w = _last_linear(ann).weight.detach().float()
    c = F.normalize(w, dim=1) @ F.normalize(w, dim=1).T
    lo, hi = c.min(1, keepdim=True).values, c.max(1, keepdim=True).values
    return (c - lo) / (hi - lo).clamp_min(1e-12)


def _input_shape(ann, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    c, s = getattr(ann, "in_channels", None), getattr(ann, "input_size", None)
    if c is None or s is None:
        raise ValueError("input_shape: None; a data-free conversion of a non-zoo ANN needs the input shape "
                         "(C, H, W) of one sample")
    return (c, s, s)


def synthesize(ann: nn.Module, input_shape, n_per_class: int = 32, steps: int = 300, lr: float = 5e-3,
               temperature: float = 20.0, beta: float = 1.0, seed: int = 0):
    """``(x [K*n, *input_shape], y_soft [K*n, K])``: images inverted from ``ann`` (module docstring, steps 1-3)."""
    for name, v in (("n_per_class", n_per_class), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {v!r}; allowed: an integer >= 1")
    g = torch.Generator().manual_seed(seed)
    sim = class_similarity(ann)
    K = sim.shape[0]
    targets = []
    for k in range(K):
        d = torch.distributions.Dirichlet(beta * sim[k] + 1e-3)
        torch.manual_seed(seed + k)
        targets.append(d.sample((n_per_class,)))
    y = torch.cat(targets)
    x = torch.rand(K * n_per_class, *input_shape, generator=g).requires_grad_()
    was = ann.training
    ann.eval()
    for p in ann.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([x], lr=lr)
    try:
        for _ in range(steps):
            out = ann(x)
            out = out.mean(0) if out.dim() == 3 else out
            loss = -(y * F.log_softmax(out / temperature, dim=1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in ann.parameters():
            p.requires_grad_(True)
        ann.train(was)
    return x.detach(), y


def threshold_ratio(ann: nn.Module, synthetic: torch.Tensor, real: torch.Tensor, **options) -> dict[str, float]:
    """``{site: mean theta(synthetic) / mean theta(real)}`` under the same calibration options."""
    cfg, _ = make_config("privatesnn", {"norm": "percentile", "percentile": 99.99}, options)
    net, zoo = prepare_ann(ann)
    a, b = calibrate(net, zoo, synthetic, cfg), calibrate(net, zoo, real, cfg)
    return {k: float(a[k].mean() / b[k].mean()) for k in a}


@RECIPES.register("privatesnn", smoke={"n_per_class": 2, "steps": 3},
                  help="data-free: thresholds from images synthesised by inverting the ANN, optional encryption "
                       "fine-tune (Kim et al. 2022)")
def privatesnn(ann, calibration_data=None, *, n_per_class: int = 32, steps: int = 300, lr: float = 5e-3,
               temperature: float = 20.0, input_shape=None, encrypt_epochs: int = 0, encrypt_lr: float = 1e-4,
               seed: int = 0, **options):
    """``calibration_data`` is not used (data-free); the input shape comes from a zoo ANN or ``input_shape``."""
    shape = _input_shape(ann, input_shape)
    x, y = synthesize(ann, shape, n_per_class, steps, lr, temperature, seed=seed)
    options.setdefault("per_channel", True)
    options.setdefault("v_init", 0.5)
    if encrypt_epochs:
        return convert_with("hybrid", ann, (x, y.argmax(1)), epochs=encrypt_epochs, lr=encrypt_lr, seed=seed,
                            **options)
    return convert_with("channelwise", ann, x, **options)


__all__ = ["privatesnn", "synthesize", "class_similarity", "threshold_ratio"]
