"""``bats``: exact event-based gradients of multi-spike SNNs (Bacho & Chu 2022; bats-multispike-fast-deep.md).

No time grid and no surrogate: the model (``bats_mlp``) computes every neuron's spike times in closed form from
the sorted input spikes and differentiates them exactly (:mod:`spikeforge.functional.bats`, fused numba
kernels, CPU only).  A step converts the batch to input spike times (``t = t_in_max * (1 - pixel)``), runs the
layers, and applies one of the card's losses to the output spikes:

- ``loss=count`` (default): ``0.5 * sum_i (n_target_i - n_i)^2`` with ``n_true`` spikes for the label and
  ``n_false`` for the others; each output spike gets the time error ``n_target - n`` (the code's heuristic);
- ``loss=ttfs``: cross-entropy of ``softmax(-t_first / tau_loss)`` (set ``model.kwargs.readout=first_spike``).

Spikes beyond a neuron's buffer (``model.kwargs.max_spikes``) are counted: each epoch's record holds
``bats_dropped`` (sample-neuron pairs whose extra spikes were not stored) and a warning gives the count.
Memory grows with the number of spikes, not with a time grid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..functional.bats import spike_count_loss, ttfs_loss
from .base import Method, StepContext, StepResult
from .registry import METHODS

LOSSES = ("count", "ttfs")


def _num(key, v, low=0.0, strict=False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and (v > low if strict else v >= low)
    if not ok:
        raise ValueError(f"method.kwargs.{key}: got {v!r}; allowed: a number {'>' if strict else '>='} {low}")


@dataclass(frozen=True)
class BATSOptions:
    """``loss``: ``count`` or ``ttfs``; ``n_true``/``n_false``: the count targets; ``tau_loss``: the TTFS softmax
    temperature (s)."""

    loss: str = "count"
    n_true: float = 15.0
    n_false: float = 3.0
    tau_loss: float = 0.005

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"method.kwargs.loss: got {self.loss!r}; allowed: {', '.join(LOSSES)}")
        _num("n_true", self.n_true)
        _num("n_false", self.n_false)
        _num("tau_loss", self.tau_loss, strict=True)


def spike_time_net(model):
    """The spike-time model inside ``model`` (unwrapping DistributedDataParallel)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


@METHODS.register("bats", help="exact multi-spike gradients, no time grid (Bacho & Chu 2022)")
class BATS(Method):
    name = "bats"
    card = "bats-multispike-fast-deep.md"
    Config = BATSOptions
    smoke_overrides = ("model.name=bats_mlp", "model.kwargs={hidden: [16]}", "data.normalize=false")

    def __init__(self, config=None):
        super().__init__(config)
        self._dropped = 0
        self._spikes = 0.0
        self._samples = 0

    def check(self, model, cfg) -> None:
        from ..models.spike_time import BATSMLP

        net = spike_time_net(model)
        if not isinstance(net, BATSMLP):
            raise ValueError(f"model.name: method bats trains BATS spike-time models (bats_mlp), got "
                             f"{cfg.model.name!r} ({type(net).__name__}), a time-grid model fed [T, B, ...]; "
                             "train it with bptt or another time-grid method")
        want = "first_spike" if self.config.loss == "ttfs" else "count"
        if net.readout != want:
            raise ValueError(f"model.kwargs.readout: {net.readout!r} does not match method.kwargs.loss="
                             f"{self.config.loss!r}; set model.kwargs.readout={want}")
        if cfg.run.amp != "off":
            raise ValueError(f"run.amp: {cfg.run.amp!r}; method bats computes spike times in float64 kernels, "
                             "allowed: off")

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        net = spike_time_net(model)
        outs = net.spike_times(net.encode(x))
        out = outs[-1]
        if self.config.loss == "count":
            loss = spike_count_loss(out, y, self.config.n_true, self.config.n_false)
        else:
            loss = ttfs_loss(out, y, self.config.tau_loss, net.t_max)
        (loss * ctx.loss_scale).backward()
        with torch.no_grad():
            self._dropped += int(sum(int(o.dropped.sum()) for o in outs))
            self._spikes += float(sum(float(o.counts.sum()) for o in outs))
            self._samples += len(y)
            logits = net.scores(outs).unsqueeze(0)
        return StepResult(loss.detach(), logits.detach(),
                          aux={"dropped": self._dropped, "spikes_per_sample": self._spikes / max(1, self._samples)})

    def epoch_metrics(self) -> dict:
        """This epoch's training-spike statistics (the loop adds them to the epoch record), then reset."""
        rec = {"bats_dropped": self._dropped,
               "bats_train_spikes_per_sample": self._spikes / max(1, self._samples)}
        if self._dropped:
            warnings.warn(f"bats: {self._dropped} sample-neuron pairs spiked more than max_spikes times this epoch; "
                          "their extra spikes were not stored (raise model.kwargs.max_spikes / max_spikes_out)",
                          RuntimeWarning, stacklevel=2)
        self._dropped, self._spikes, self._samples = 0, 0.0, 0
        return rec
