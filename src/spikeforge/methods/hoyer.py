r"""``hoyer``: one-time-step SNN training with the Hoyer regulariser and the Hoyer-extremum threshold.

Datta, Liu, Beerel, "Hoyer regularizer is all you need for ultra low-latency spiking neural networks",
arXiv 2212.10170 (2022); card ``hoyer-one-step-snn.md``; the authors' code github.com/godatta/Ultra-Low-Latency-SNN
(``HoyerBiAct``).  The spike layer is :class:`~spikeforge.neurons.HoyerSpike` (equations in
:mod:`spikeforge.functional.hoyer`); this method adds what trains it.  For a site with input :math:`x` and
trainable clipping threshold :math:`v_{th}`, :math:`z = x/|v_{th}|`, :math:`z_c = \mathrm{clip}(z, 0, 1)`:

.. math::
    s = H\big(z - E(z_c)\big),\quad E(z_c) = \frac{\lVert z_c\rVert_2^2}{\lVert z_c\rVert_1}, \qquad
    L = L_{CE} + \lambda_H \sum_{\text{sites}} \frac{\lVert z_c\rVert_1^2}{\lVert z_c\rVert_2^2}

The regulariser carries gradient to the weights and to every :math:`v_{th}` (through :math:`z`); :math:`E` is the
batch value in training and a running average (EMA, momentum 0.1) in evaluation.  ``threshold="fixed"`` is the
card's ablation baseline: the spike fires at :math:`z \ge 1` (i.e. :math:`x \ge |v_{th}|`), with the same trainable
clipping threshold and surrogate, and no running estimate.

``prepare`` rebuilds every site with one Hoyer threshold per channel (``granularity="channel"``, the paper's
``cw`` used in its final runs; it needs one dry forward pass to learn the channel counts) or one per layer
(``"layer"``), keeping each site's ``v_th`` and momentum.  Options (``method.kwargs``): ``lambda_h`` (>= 0,
default 1e-8 as in the paper's scripts), ``threshold`` (``hoyer`` | ``fixed``), ``granularity``.

Example:
    >>> import torch
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> method = create_method("hoyer", {"lambda_h": 1e-6})
    >>> net = method.prepare(create_model("convnet", neuron="hoyer", T=1, input_size=16, channels=(4, 8)))
    >>> [tuple(m.running_extremum.shape) for m in net.modules() if hasattr(m, "running_extremum")]
    [(4,), (8,)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..functional.hoyer import hoyer_spike
from ..neurons.hoyer import HoyerSpike
from ._sites import as_number, check_site_types, dry_input, replace_module, site_input_shapes
from ._twin import unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS

THRESHOLDS = ("hoyer", "fixed")
GRANULARITIES = ("channel", "layer")


class FixedClipSpike(HoyerSpike):
    """The ablation baseline: ``s = [x / |v_th| >= 1]`` (a fixed threshold at the trainable clipping threshold),
    same surrogate as :class:`HoyerSpike`; the running extremum buffer is kept (unused) so checkpoints match."""

    def _seq(self, x_seq, state, return_v):
        s, _ = hoyer_spike(x_seq, self.v_th, 1.0, mode=self.mode)
        if return_v:
            return s, None, x_seq / self.v_th.abs()
        return s, None


@dataclass(frozen=True)
class HoyerConfig:
    """``lambda_h``: weight of the Hoyer regulariser (>= 0; 0 switches it off); ``threshold``: ``hoyer`` (the
    extremum, batch value in training, running value in evaluation) or ``fixed`` (1.0 on ``x / |v_th|``: the
    ablation); ``granularity``: one Hoyer threshold per ``channel`` or per ``layer``."""

    lambda_h: float = 1e-8
    threshold: str = "hoyer"
    granularity: str = "channel"

    def __post_init__(self):
        v = as_number(self.lambda_h)
        object.__setattr__(self, "lambda_h", v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"method.kwargs.lambda_h: got {v!r}; allowed: a finite number >= 0 (the paper uses "
                             "1e-8; 0 switches the regulariser off)")
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"method.kwargs.threshold: got {self.threshold!r}; allowed: {', '.join(THRESHOLDS)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"method.kwargs.granularity: got {self.granularity!r}; allowed: "
                             f"{', '.join(GRANULARITIES)}")


def hoyer_sites(model) -> list[tuple[str, HoyerSpike]]:
    """The Hoyer spike sites of ``model`` (after :meth:`Hoyer.prepare`)."""
    return [(p, m) for p, m in unwrap(model).named_modules() if isinstance(m, HoyerSpike)]


@METHODS.register("hoyer", help="one-time-step SNN: Hoyer-extremum threshold + Hoyer regulariser "
                           "(Datta et al. 2022)")
class Hoyer(Method):
    name = "hoyer"
    card = "hoyer-one-step-snn.md"
    Config = HoyerConfig
    smoke_overrides = ("model.neuron=hoyer", "model.T=1")

    def check(self, model, cfg) -> None:
        check_site_types(model, "hoyer", HoyerSpike, "hoyer")

    def prepare(self, model):
        found = check_site_types(model, "hoyer", HoyerSpike, "hoyer")
        shapes = site_input_shapes(model, dry_input(model, "hoyer")) if self.config.granularity == "channel" else {}
        kind = HoyerSpike if self.config.threshold == "hoyer" else FixedClipSpike
        for path, old in found:
            if self.config.granularity == "channel" and len(shapes[path]) < 1:
                raise ValueError(f"hoyer: the site {path} gets inputs without a channel dim; allowed: "
                                 "method.kwargs.granularity=layer for it")
            c = shapes[path][0] if self.config.granularity == "channel" else None
            new = kind(num_channels=c, v_th=float(old.v_th.detach().abs()), momentum=old.momentum,
                       check_inputs=old.check_inputs).to(old.v_th)
            replace_module(model, path, new)
        return model

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        lam = self.config.lambda_h
        terms, handles = [], []
        if lam > 0:
            for _, m in hoyer_sites(model):
                handles.append(m.register_forward_pre_hook(lambda mod, args: terms.append(mod.regularizer(args[0]))))
        try:
            with ctx.autocast():
                out = model(x)
        finally:
            for h in handles:
                h.remove()
        task = ctx.loss_fn(out, y)
        reg = torch.stack([t.float() for t in terms]).sum() if terms else task.new_zeros(())
        loss = task + lam * reg
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), out.detach(), {"task_loss": float(task.detach()),
                                                            "hoyer_reg": float(reg.detach())})
