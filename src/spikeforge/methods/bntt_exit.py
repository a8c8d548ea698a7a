r"""``bntt``: BPTT with Batch Normalization Through Time, then a temporal early exit chosen from the learned
per-step scales (Kim and Panda, Frontiers in Neuroscience 2021, arXiv 2010.01729; card
``bntt-batchnorm-through-time.md``).

Training is BPTT's step on a model whose normalisation layers are :class:`~spikeforge.layers.BNTT` (one
:math:`\gamma_l^t`, running mean and variance per time step, no :math:`\beta`; e.g. ``sresnet`` or ``vgg11`` with
``norm=bntt``).  After training, :meth:`BNTTExit.finalize` reads the learned scales:

.. math::
    g[t] = \frac{1}{L}\sum_l \frac{1}{C_l}\sum_c |\gamma_{l,c}^t|, \qquad
    t_{exit} = \max\{t : g[t] \ge \alpha \max_{t'} g[t']\}

i.e. inference stops after the last step whose mean scale is at least ``threshold`` (:math:`\alpha`) times the
largest one: every later step hardly moves the membrane.  [inferred] The card gives an absolute
:math:`\alpha \approx 0.1` "to be re-tuned"; the threshold here is relative to the peak so that it does not depend
on the initialisation (:math:`\gamma = 1`) or the weight decay.  The deployed model is a copy that runs
:math:`t_{exit}` steps (each BNTT keeps its first :math:`t_{exit}` scales and statistics, which is exact: the
network is causal and the statistics are per step); the loop evaluates it and records it as ``finalized``.
:meth:`BNTTExit.write_artifacts` writes ``bntt_gamma.png`` (mean :math:`|\gamma[t]|` per layer and overall, with
the exit) and ``bntt_exit.json`` in the run folder.

Example:
    >>> import torch
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> net = create_model("sresnet", num_classes=10, in_channels=1, T=4, n=1, width=4)
    >>> from spikeforge.methods.bntt_exit import bntt_layers
    >>> with torch.no_grad():                      # as if trained: the scales fade after step 2
    ...     for m in bntt_layers(net).values():
    ...         _ = m.weight.copy_(torch.tensor([1.0, 0.8, 0.05, 0.01]).unsqueeze(1))
    >>> m = create_method("bntt", {"threshold": 0.1})
    >>> deployed = m.finalize(net)
    >>> m.t_exit, deployed.T
    (2, 2)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..layers import BNTT, TEBN
from .bptt import BPTT
from .registry import METHODS


@dataclass(frozen=True)
class BNTTExitConfig:
    """``threshold``: the exit threshold :math:`\\alpha` in (0, 1], relative to the peak of the mean
    :math:`|\\gamma[t]|`; the deployed network runs up to the last step at or above it."""

    threshold: float = 0.1

    def __post_init__(self):
        a = self.threshold
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a <= 1.0:
            raise ValueError(f"method.kwargs.threshold: {a!r}; allowed: a number in (0, 1] (the exit threshold "
                             "alpha as a fraction of the largest mean |gamma[t]|; 1 keeps only the steps at the peak)")


def bntt_layers(model: nn.Module) -> dict[str, BNTT]:
    """Every :class:`BNTT` of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, BNTT)}


def gamma_profile(model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(g [T], {layer: mean |gamma[t]| over channels [T]})``: ``g`` averages the layers' profiles."""
    per_layer = {n: m.weight.detach().abs().mean(1).double().cpu() for n, m in bntt_layers(model).items()}
    if not per_layer:
        raise ValueError("bntt: the model has no BNTT layer (use a model with norm=bntt, e.g. sresnet or vgg11)")
    return torch.stack(list(per_layer.values())).mean(0), per_layer


def exit_time(g: torch.Tensor, threshold: float) -> int:
    """The last step ``t`` (1-based) with ``g[t] >= threshold * max(g)``."""
    keep = (g >= threshold * g.max()).nonzero()
    return int(keep.max()) + 1


@METHODS.register("bntt", help="BPTT with BNTT, then exit early at the step the learned gamma[t] fades "
                               "(Kim & Panda 2021)")
class BNTTExit(BPTT):
    """The step is BPTT's; :meth:`finalize` returns the network truncated to ``t_exit`` steps."""

    name = "bntt"
    card = "bntt-batchnorm-through-time.md"
    Config = BNTTExitConfig
    smoke_overrides = ("model.name=sresnet", "model.kwargs={}", "model.kwargs.n=1", "model.kwargs.width=4")

    def __init__(self, config=None):
        super().__init__(config)
        self.t_exit = None
        self.profile = None

    def check(self, model: nn.Module, cfg) -> None:
        layers = bntt_layers(model)
        if not layers:
            raise ValueError(f"bntt: model {getattr(getattr(cfg, 'model', None), 'name', type(model).__name__)!r} "
                             "has no BNTT layer; use a model with norm=bntt (e.g. model.name=sresnet, or vgg11 with "
                             "model.kwargs.norm=bntt)")
        for name, m in model.named_modules():
            if isinstance(m, TEBN) or (m.__class__.__name__ == "GLIF" and getattr(m, "T", None) is not None):
                raise ValueError(f"bntt: layer {name!r} ({type(m).__name__}) keeps parameters per time step for "
                                 "all T steps and cannot be truncated to the exit time")

    def finalize(self, model: nn.Module) -> nn.Module:
        """A copy that runs ``t_exit`` steps (the first ``t_exit`` scales and statistics of every BNTT)."""
        g, per_layer = gamma_profile(model)
        t_exit = exit_time(g, self.config.threshold)
        self.t_exit, self.profile = t_exit, (g, per_layer)
        deployed = copy.deepcopy(model)
        with torch.no_grad():
            for m in bntt_layers(deployed).values():
                m.weight = nn.Parameter(m.weight[:t_exit].clone())
                if m.bias is not None:
                    m.bias = nn.Parameter(m.bias[:t_exit].clone())
                m.running_mean = m.running_mean[:t_exit].clone()
                m.running_var = m.running_var[:t_exit].clone()
                m.T = t_exit
        deployed.T = t_exit
        return deployed

    def write_artifacts(self, run_dir, deployed=None) -> None:
        """``bntt_gamma.png`` and ``bntt_exit.json`` in ``run_dir`` (after :meth:`finalize`)."""
        if self.profile is None:
            return
        g, per_layer = self.profile
        T = len(g)
        out = Path(run_dir)
        (out / "bntt_exit.json").write_text(json.dumps({
            "threshold": self.config.threshold, "T": T, "t_exit": self.t_exit, "steps_saved": T - self.t_exit,
            "mean_gamma": g.tolist(), "layers": {n: v.tolist() for n, v in per_layer.items()}}, indent=1))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        t = list(range(1, T + 1))
        for i, (n, v) in enumerate(per_layer.items()):
            ax.plot(t, v.tolist(), color=plt.cm.viridis(i / max(len(per_layer) - 1, 1)), alpha=0.6, lw=1)
        ax.plot(t, g.tolist(), color="black", lw=2.5, label="mean over layers")
        ax.axhline(self.config.threshold * float(g.max()), color="red", ls="--", lw=1,
                   label=f"threshold {self.config.threshold:g} x peak")
        ax.axvline(self.t_exit, color="red", lw=1, label=f"t_exit = {self.t_exit}")
        ax.set_xlabel("time step t")
        ax.set_ylabel("mean |gamma[t]| per layer")
        ax.set_title(f"BNTT scales ({len(per_layer)} layers)")
        ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.14, right=0.86, bottom=0.14, top=0.9)
        fig.savefig(out / "bntt_gamma.png", dpi=100)
        plt.close(fig)
