r"""``hybrid_spiking``: spiking-aware training of sigma-delta (quantised, temporally diffused error) activations
with the gain :math:`\omega` annealed from non-spiking to spiking (Voelker, Rasmussen and Eliasmith, arXiv
2002.03553; card ``hybrid-spiking-lmu.md``), e.g. the hybrid spiking LMU (``model.name=lmu``,
``model.neuron=sigma_delta``).

Each :class:`~spikeforge.neurons.SigmaDelta` quantises :math:`a_t = \mathrm{relu}(x_t)` with gain
:math:`\omega` (:math:`v \leftarrow v + \omega a_t`, :math:`n_t = \lfloor v \rfloor`, :math:`v \leftarrow v - n_t`,
:math:`y_t = n_t / \omega`); the forward pass is quantised and the backward pass goes straight through to the
ReLU.  The method sets :math:`\omega` of every sigma-delta neuron before each training step, falling linearly
in :math:`\log\omega` from ``omega_start`` (non-spiking) to ``omega_end`` over the first ``anneal_fraction`` of
the training steps and holding ``omega_end`` after that, so the weights adapt to each precision in turn
[inferred: the paper's schedule is not known; the card suggests log-linear].  Evaluation after every epoch uses
the current :math:`\omega`; the trained model keeps ``omega_end``.

Activation bits: per training batch, :math:`\log_2(1 + \max_t |n_t|)` per neuron averaged over neurons
(:func:`~spikeforge.functional.sigma_delta.activation_bits`; all sigma-delta layers pooled), averaged per epoch;
:meth:`HybridSpiking.write_artifacts` writes them with :math:`\omega` to ``hybrid_bits.json`` and
``hybrid_bits.png`` in the run folder (card check 3: the bits fall as :math:`\omega` falls).

Example:
    >>> from spikeforge.methods import create_method
    >>> m = create_method("hybrid_spiking", {"omega_start": 100.0, "omega_end": 1.0, "anneal_fraction": 0.5})
    >>> m.total_steps = 10
    >>> [round(m.omega_at(s), 2) for s in (0, 2, 4, 9)]
    [100.0, 10.0, 1.0, 1.0]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..functional.sigma_delta import spike_counts
from ..neurons.sigma_delta import SigmaDelta
from .base import Method, StepContext, StepResult
from .registry import METHODS


def _positive(key, v, allowed):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"method.kwargs.{key}: {v!r}; allowed: {allowed}")


@dataclass(frozen=True)
class HybridSpikingConfig:
    """``omega_start`` -> ``omega_end`` (both > 0, start >= end): the sigma-delta gain at the first training step
    and from ``anneal_fraction`` (in (0, 1]) of the training steps on."""

    omega_start: float = 1000.0
    omega_end: float = 2.0
    anneal_fraction: float = 0.75

    def __post_init__(self):
        _positive("omega_start", self.omega_start, "a finite number > 0 (the gain omega at the first step; large "
                                                   "= non-spiking)")
        _positive("omega_end", self.omega_end, "a finite number > 0 and <= omega_start (the final gain omega; "
                                               "omega * max activity <= 1 gives 0/1 spikes)")
        if self.omega_end > self.omega_start:
            raise ValueError(f"method.kwargs.omega_end: {self.omega_end!r}; allowed: a number <= omega_start "
                             f"({self.omega_start!r}): omega is annealed down, from non-spiking to spiking")
        f = self.anneal_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise ValueError(f"method.kwargs.anneal_fraction: {f!r}; allowed: a number in (0, 1] (the fraction of "
                             "the training steps over which log omega falls linearly)")


def sigma_delta_layers(model: nn.Module) -> dict[str, SigmaDelta]:
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {n: m for n, m in model.named_modules() if isinstance(m, SigmaDelta)}


def total_train_steps(cfg) -> int | None:
    """Optimiser steps of a run of ``cfg`` (as the loop counts them), or None when the dataset size is unknown."""
    from ..data import get_info

    try:
        n = get_info(cfg.data.name).num_samples.get("train")
    except (KeyError, ValueError):
        n = None
    if cfg.data.train_subset:
        n = min(n, cfg.data.train_subset) if n else cfg.data.train_subset
    if not n:
        return None
    bs = cfg.data.batch_size
    steps = n // bs if cfg.data.drop_last else -(-n // bs)
    if cfg.run.max_steps_per_epoch:
        steps = min(steps, cfg.run.max_steps_per_epoch)
    return max(1, steps) * cfg.run.epochs


class _BitsTap:
    """Largest |n_t| per neuron of every sigma-delta layer over one forward pass (``.step`` calls included)."""

    def __init__(self, layers: dict[str, SigmaDelta]):
        from ..analysis.monitor import NeuronTap

        self.maxn: dict[str, torch.Tensor] = {}
        self.tap = NeuronTap(layers, self._fn)

    def _fn(self, name, module, x_seq, s_seq, t0):
        n = spike_counts(s_seq.detach(), module.omega).abs().amax(0)
        self.maxn[name] = n if t0 == 0 or name not in self.maxn else torch.maximum(self.maxn[name], n)

    def bits(self) -> float:
        self.tap.close()
        if not self.maxn:
            return float("nan")
        b = torch.cat([torch.log2(1.0 + v.double()).flatten() for v in self.maxn.values()])
        return float(b.mean())


@METHODS.register("hybrid_spiking", help="hybrid-spiking training: anneal the sigma-delta gain omega from "
                                         "non-spiking to spiking; activation-bits report (Voelker et al. 2020)")
class HybridSpiking(Method):
    """BPTT through the quantised forward pass with ``omega`` set from the global step."""

    name = "hybrid_spiking"
    card = "hybrid-spiking-lmu.md"
    Config = HybridSpikingConfig
    smoke_overrides = ("model.name=lmu", "model.kwargs={}", "model.neuron=sigma_delta", "model.kwargs.order=4",
                       "model.kwargs.hidden=8", "model.kwargs.pool=2", "model.T=1")

    def __init__(self, config=None):
        super().__init__(config)
        self.total_steps = None
        self.epochs = None
        self.history: dict[int, dict] = {}

    def check(self, model: nn.Module, cfg) -> None:
        if not sigma_delta_layers(model):
            raise ValueError(f"hybrid_spiking: model {cfg.model.name!r} has no sigma-delta neuron to anneal; set "
                             "model.neuron=sigma_delta (e.g. with model.name=lmu)")
        self.total_steps = total_train_steps(cfg)
        self.epochs = cfg.run.epochs

    def omega_at(self, global_step: int, epoch: int | None = None) -> float:
        """Log-linear from ``omega_start`` to ``omega_end`` over ``anneal_fraction`` of the steps, then flat (by
        epochs when the number of steps is unknown)."""
        c = self.config
        if self.total_steps is not None:
            span = max(1.0, c.anneal_fraction * self.total_steps - 1)
            f = min(1.0, global_step / span)
        else:
            f = min(1.0, (epoch - 1) / max(1.0, c.anneal_fraction * self.epochs - 1))
        return float(math.exp((1 - f) * math.log(c.omega_start) + f * math.log(c.omega_end)))

    def set_omega(self, model: nn.Module, omega: float) -> None:
        for m in sigma_delta_layers(model).values():
            m.omega = omega

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        omega = self.omega_at(ctx.global_step, ctx.epoch)
        self.set_omega(model, omega)
        tap = _BitsTap(sigma_delta_layers(model))
        try:
            with ctx.autocast():
                out = model(x)
        finally:
            bits = tap.bits()
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        h = self.history.setdefault(ctx.epoch, {"bits_sum": 0.0, "steps": 0})
        h["bits_sum"] += bits
        h["steps"] += 1
        h["omega_last"] = omega
        h.setdefault("omega_first", omega)
        return StepResult(loss.detach(), out.detach(), aux={"omega": omega, "bits": bits})

    def finalize(self, model: nn.Module) -> nn.Module:
        self.set_omega(model, self.config.omega_end)
        return model

    def bits_per_epoch(self) -> list[dict]:
        return [{"epoch": e, "omega_first": h["omega_first"], "omega_last": h["omega_last"],
                 "mean_bits": h["bits_sum"] / h["steps"]} for e, h in sorted(self.history.items())]

    def write_artifacts(self, run_dir, deployed=None) -> None:
        """``hybrid_bits.json`` and ``hybrid_bits.png``: mean activation bits and omega per epoch."""
        rows = self.bits_per_epoch()
        if not rows:
            return
        out = Path(run_dir)
        (out / "hybrid_bits.json").write_text(json.dumps({"config": self.config.__dict__, "epochs": rows},
                                                         indent=1))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r["epoch"] for r in rows], [r["mean_bits"] for r in rows], "o-", label="mean bits (train)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean activation bits")
        ax2 = ax.twinx()
        ax2.semilogy([r["epoch"] for r in rows], [r["omega_last"] for r in rows], "s--", color="gray")
        ax2.set_ylabel("omega at epoch end (log)")
        fig.subplots_adjust(left=0.14, right=0.86, bottom=0.14, top=0.9)
        fig.savefig(out / "hybrid_bits.png", dpi=100)
        plt.close(fig)
