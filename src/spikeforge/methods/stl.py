r"""``stl``: synapse-threshold synergistic learning, weights and one threshold per neuron trained together.

Sun, Cai, Yang, Cui, Xia, Yao, Guo, "A Synapse-Threshold Synergistic Learning Approach for Spiking Neural
Networks", IEEE TCDS (2023), arXiv 2206.06129; card ``stl-snn-threshold-learning.md``; official code
github.com/sunhongze/STL-SNN.  The neuron is :class:`~spikeforge.neurons.STL` (equations in
:mod:`spikeforge.functional.stl`):

.. math::
    u_t = \lambda v_{t-1} + I_t, \qquad s_t = H(u_t - \vartheta), \qquad v_t = (1 - s_t) u_t,
    \qquad \frac{\partial L}{\partial \vartheta} = -\sum_t \frac{\partial L}{\partial s_t} g'(u_t - \vartheta)
    + \text{(reset paths)}

A model built from ``model.neuron=stl`` alone has one threshold per layer; ``prepare`` rebuilds every site with
a threshold tensor of the site's own shape: one per neuron (``granularity="neuron"``, the paper: e.g.
``[48, 28, 28]`` after a conv) or one per channel (``"channel"``: ``[C, 1, 1]``), initialised at the site's
threshold plus the card's heterogeneity ``h * N(0, 1) / 100``.  ``learn`` picks what is trained: ``stl`` (weights
and thresholds), ``sl`` (weights only: thresholds frozen) or ``tl`` (thresholds only: every other parameter
frozen), the paper's ablation.

After training, :meth:`STLMethod.write_artifacts` writes ``stl_theta.png`` (a histogram of the thresholds per
layer) and ``stl_theta.json`` (their mean, std, min and max) to the run folder.

Example:
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> net = create_method("stl").prepare(create_model("convnet", neuron="stl", T=2, input_size=16,
    ...                                                 channels=(4, 8), hidden=16))
    >>> [tuple(m.theta.shape) for m in net.modules() if hasattr(m, "theta")]
    [(4, 16, 16), (8, 8, 8), (16,)]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..functional.stl import stl, stl_threshold_init
from ..neurons.stl import STL
from ._sites import as_number, check_site_types, dry_input, replace_module, site_input_shapes
from ._twin import unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS

LEARN = ("stl", "sl", "tl")
GRANULARITIES = ("neuron", "channel")


class ChannelSTL(STL):
    """STL with one threshold per channel (``theta`` of shape ``[C, 1, ...]``, broadcast over the positions)."""

    def __init__(self, num_channels: int, spatial_dims: int = 0, **kw):
        super().__init__(shape=None, **kw)
        theta0 = float(self.theta.detach())
        self.num_channels = num_channels
        self.theta = nn.Parameter(stl_threshold_init((num_channels,) + (1,) * spatial_dims, theta0,
                                                     kw.get("heterogeneity", 0.01)))

    def _seq(self, x_seq, state, return_v):
        if x_seq.dim() != self.theta.dim() + 2 or x_seq.shape[2] != self.num_channels:
            raise ValueError(f"x_seq: per-channel STL thresholds have shape {tuple(self.theta.shape)}, expected "
                             f"[T, B, {self.num_channels}, ...] with {self.theta.dim() - 1} spatial dims, got "
                             f"{tuple(x_seq.shape)}")
        theta = self.theta.clamp(min=torch.finfo(self.theta.dtype).tiny)
        return stl(x_seq, theta, state, decay=self.decay, surrogate=self.surrogate, backend=self.backend,
                   return_v=return_v, check_inputs=self.check_inputs)


@dataclass(frozen=True)
class STLConfig:
    """``learn``: ``stl`` (weights + thresholds), ``sl`` (weights only) or ``tl`` (thresholds only);
    ``granularity``: a threshold per ``neuron`` or per ``channel``; ``heterogeneity``: ``h`` of the init
    ``theta0 + h * N(0, 1) / 100`` (>= 0; the card's 0.01)."""

    learn: str = "stl"
    granularity: str = "neuron"
    heterogeneity: float = 0.01

    def __post_init__(self):
        if self.learn not in LEARN:
            raise ValueError(f"method.kwargs.learn: got {self.learn!r}; allowed: {', '.join(LEARN)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"method.kwargs.granularity: got {self.granularity!r}; allowed: "
                             f"{', '.join(GRANULARITIES)}")
        h = as_number(self.heterogeneity)
        object.__setattr__(self, "heterogeneity", h)
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h < 0:
            raise ValueError(f"method.kwargs.heterogeneity: got {h!r}; allowed: a finite number >= 0")


def stl_sites(model) -> list[tuple[str, STL]]:
    """The STL sites of ``model``."""
    return [(p, m) for p, m in unwrap(model).named_modules() if isinstance(m, STL)]


def theta_stats(model) -> dict[str, dict[str, float]]:
    """``{site: {mean, std, min, max, numel}}`` of the thresholds."""
    out = {}
    for path, m in stl_sites(model):
        t = m.theta.detach().float().reshape(-1)
        out[path] = {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0,
                     "min": float(t.min()), "max": float(t.max()), "numel": t.numel()}
    return out


@METHODS.register("stl", help="weights and per-neuron thresholds trained together; sl/tl ablations "
                         "(Sun et al. 2023)")
class STLMethod(Method):
    name = "stl"
    card = "stl-snn-threshold-learning.md"
    Config = STLConfig
    smoke_overrides = ("model.neuron=stl",)

    def check(self, model, cfg) -> None:
        check_site_types(model, "stl", STL, "stl")

    def prepare(self, model):
        found = check_site_types(model, "stl", STL, "stl")
        shapes = site_input_shapes(model, dry_input(model, "stl"))
        h = self.config.heterogeneity
        for path, old in found:
            shape = shapes[path]
            theta0 = float(old.theta.detach().float().mean())
            kw = dict(decay=old.decay, theta0=theta0, heterogeneity=h, backend=old.backend,
                      check_inputs=old.check_inputs)
            if self.config.granularity == "neuron":
                new = STL(shape=shape, **kw)
            else:
                if len(shape) < 1:
                    raise ValueError(f"stl: the site {path} gets inputs without a channel dim; allowed: "
                                     "method.kwargs.granularity=neuron")
                new = ChannelSTL(shape[0], len(shape) - 1, **kw)
            new.surrogate = old.surrogate
            replace_module(model, path, new.to(old.theta))
        thetas = {id(m.theta) for _, m in stl_sites(model)}
        for p in model.parameters():
            if self.config.learn == "sl" and id(p) in thetas:
                p.requires_grad_(False)
            if self.config.learn == "tl" and id(p) not in thetas:
                p.requires_grad_(False)
        return model

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        with ctx.autocast():
            out = model(x)
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), out.detach())

    def write_artifacts(self, run_dir, deployed=None) -> None:
        """``stl_theta.json`` (per-layer threshold statistics) and ``stl_theta.png`` (their histograms)."""
        if deployed is None:
            return
        run_dir = Path(run_dir)
        stats = theta_stats(deployed)
        (run_dir / "stl_theta.json").write_text(json.dumps(stats, indent=1))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sites = stl_sites(deployed)
        fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 2.6), squeeze=False)
        for ax, (path, m) in zip(axes[0], sites):
            ax.hist(m.theta.detach().float().reshape(-1).cpu().numpy(), bins=40)
            ax.set_title(f"{path} ({self.config.learn})", fontsize=8)
            ax.set_xlabel("threshold")
        fig.tight_layout()
        fig.savefig(run_dir / "stl_theta.png", dpi=90)
        plt.close(fig)
