r"""``albsnn``: adaptive local binarisation, chosen per layer by an accuracy-loss estimator (ALBSNN).

Pei, Xu, Wu, Liu, Yang, "ALBSNN: ultra-low latency adaptive local binary spiking neural network with accuracy
loss estimator", Frontiers in Neuroscience 17:1225871 (2023); card ``albsnn-binary-snn.md`` (LOW-MEDIUM
confidence; no official code: what is inferred is marked in ``docs/methods/albsnn.md``).

Binariser (per output channel, :func:`spikeforge.deploy.quant.fake_quant` with ``QuantConfig(bits=1,
scheme="binary")``), straight-through to the latent float weights:

.. math::
    W_b = \alpha\,\mathrm{sign}(W), \qquad \alpha_c = \mathrm{mean}|W_c|

Accuracy-loss estimator per candidate layer :math:`l` (``estimator``):

* ``loss`` (default): :math:`e_l = L(\text{net with } l \text{ binary}) - L(\text{net with } l \text{ float})` on the
  current training batch, the other layers as they are (a direct estimate of the accuracy cost);
* ``weight``: :math:`e_l = \lVert W_l - W_{b,l}\rVert_2^2 / \lVert W_l\rVert_2^2` (relative binarisation error).

Selection, at the first step of every epoch from epoch ``warmup_epochs + 1`` on: the candidates with
:math:`e_l \le \tau_e` are binarised; then, in increasing :math:`e_l`, more are binarised until the weight
storage saved is at least ``min_saving``; the rest stay float.  Candidates are ``layers`` (names of Conv/Linear
modules) or, by default, every Conv/Linear but the first and the last.  Storage (card check 1):
:math:`\sum_{binary} (1 \cdot n_w + 32 \cdot C_{out}) + \sum_{float} 32 \cdot n_w` bits
(:func:`spikeforge.deploy.quant.storage_bits`).  ``write_artifacts`` writes ``albsnn.json`` (the selection per
epoch, the estimates, the storage) to the run folder.

Example:
    >>> import torch
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> method = create_method("albsnn", {"estimator": "weight"})
    >>> net = method.prepare(create_model("albsnn_net", T=1, input_size=16, channels=(4, 8, 8)))
    >>> method.candidates
    ['features.3.layer.0', 'features.6.layer.0']
    >>> _ = method.select(net, torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,)))
    >>> method.storage(net)["saving"] > 0.2
    True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..deploy.quant import QuantConfig, deploy_weight, fake_quant, raw_weight, storage_bits
from ._sites import as_number
from ._twin import unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS

ESTIMATORS = ("loss", "weight")
BINARY = QuantConfig(bits=1, scheme="binary", per_channel=True, mode="qat")
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of every Conv/Linear of ``model`` in definition order (parametrisations skipped)."""
    return {n: m for n, m in unwrap(model).named_modules()
            if isinstance(m, LAYER_TYPES) and ".parametrizations." not in f".{n}."}


def binary_error(w: torch.Tensor) -> float:
    """``||W - W_b||^2 / ||W||^2`` with ``W_b`` the per-channel binarised ``W``."""
    w = w.detach()
    return float((w - fake_quant(w, BINARY)).pow(2).sum() / w.pow(2).sum().clamp_min(1e-30))


@dataclass(frozen=True)
class ALBSNNConfig:
    """``layers``: candidate layer names (Conv/Linear modules; empty: all but the first and last);
    ``estimator``: ``loss`` or ``weight``; ``tau_e``: binarise a candidate whose estimate is <= this (>= 0);
    ``min_saving``: then binarise more, cheapest first, until this fraction of weight storage is saved (in
    [0, 1)); ``warmup_epochs``: full-precision epochs before the first selection (>= 0)."""

    layers: tuple = ()
    estimator: str = "loss"
    tau_e: float = 0.0
    min_saving: float = 0.2
    warmup_epochs: int = 0

    def __post_init__(self):
        layers = self.layers
        if isinstance(layers, str):
            layers = (layers,)
        if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) and n for n in layers):
            raise ValueError(f"method.kwargs.layers: got {self.layers!r}; allowed: a list of Conv/Linear layer "
                             "names (empty: every one but the first and the last)")
        object.__setattr__(self, "layers", tuple(layers))
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"method.kwargs.estimator: got {self.estimator!r}; allowed: {', '.join(ESTIMATORS)}")
        t = as_number(self.tau_e)
        object.__setattr__(self, "tau_e", t)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"method.kwargs.tau_e: got {t!r}; allowed: a finite number >= 0")
        s = as_number(self.min_saving)
        object.__setattr__(self, "min_saving", s)
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise ValueError(f"method.kwargs.min_saving: got {s!r}; allowed: a number in [0, 1)")
        w = self.warmup_epochs
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"method.kwargs.warmup_epochs: got {w!r}; allowed: an integer >= 0")


def set_binary(module: nn.Module, on: bool) -> None:
    """Binarise ``module``'s weight (per-channel ``alpha * sign``, straight-through) or make it float again."""
    deploy_weight(module, create=True).set_quant(BINARY if on else None)


def is_binary(module: nn.Module) -> bool:
    p = deploy_weight(module)
    return p is not None and p.quant is not None


@METHODS.register("albsnn", help="adaptive local binarisation chosen by an accuracy-loss estimator "
                             "(ALBSNN, Pei et al. 2023; inferred parts documented)")
class ALBSNN(Method):
    name = "albsnn"
    card = "albsnn-binary-snn.md"
    Config = ALBSNNConfig
    smoke_overrides = ("model.name=albsnn_net", "model.kwargs={channels: [4, 8, 8]}", "model.T=1")

    def __init__(self, config=None):
        super().__init__(config)
        self.candidates: list[str] = []
        self.history: list[dict] = []
        self._selected_epoch = 0

    # ------------------------------------------------------------------------------------------ set-up
    def _candidates(self, model) -> list[str]:
        layers = weight_layers(model)
        names = list(layers)
        if not self.config.layers:
            if len(names) < 3:
                raise ValueError(f"albsnn: {type(model).__name__} has {len(names)} Conv/Linear layers; with the "
                                 "first and last kept float there is nothing to binarise; allowed: name them in "
                                 "method.kwargs.layers")
            return names[1:-1]
        for n in self.config.layers:
            if n not in layers:
                raise ValueError(f"method.kwargs.layers: {n!r} is not a Conv/Linear layer of "
                                 f"{type(model).__name__}; allowed: {', '.join(names)}")
        return list(dict.fromkeys(self.config.layers))

    def check(self, model, cfg) -> None:
        self._candidates(model)

    def prepare(self, model):
        self.candidates = self._candidates(model)
        layers = weight_layers(model)
        for n in self.candidates:  # installed on every candidate so that the state_dict keys never change
            set_binary(layers[n], False)
        return model

    # ------------------------------------------------------------------------------------------ estimator
    def estimate(self, model, x, y, loss_fn=None) -> dict[str, float]:
        """``{layer: e_l}`` for every candidate (see the module docstring), on the batch ``(x, y)``."""
        if self.config.estimator == "weight":
            layers = weight_layers(model)
            return {n: binary_error(raw_weight(layers[n])) for n in self.candidates}
        loss_fn = loss_fn or (lambda out, t: nn.functional.cross_entropy(out.float().mean(0), t))
        twin = copy.deepcopy(unwrap(model))  # batch statistics as in training; the model's own stay untouched
        twin.train()
        layers = weight_layers(twin)
        out = {}
        with torch.no_grad():
            for n in self.candidates:
                was = is_binary(layers[n])
                set_binary(layers[n], True)
                on = float(loss_fn(twin(x), y))
                set_binary(layers[n], False)
                off = float(loss_fn(twin(x), y))
                set_binary(layers[n], was)
                out[n] = on - off
        return out

    def storage(self, model) -> dict:
        """Weight storage in bits (binary: 1 bit per weight + 32 per output channel; float: 32 per weight), the
        full-precision total and the fraction saved."""
        bits = storage_bits(unwrap(model))
        full = sum(32 * raw_weight(m).numel() for m in weight_layers(model).values())
        total = sum(bits.values())
        return {"bits": total, "full_precision_bits": full, "saving": 1.0 - total / full, "per_layer": bits}

    def select(self, model, x, y, loss_fn=None) -> list[str]:
        """Estimate every candidate on ``(x, y)`` and binarise the chosen ones (the others become float).  Under
        DDP the estimates are averaged over the processes first, so that every process chooses the same layers."""
        e = self.estimate(model, x, y, loss_fn)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            p = next(unwrap(model).parameters())
            t = torch.tensor([e[n] for n in self.candidates], dtype=torch.float64, device=p.device)
            torch.distributed.all_reduce(t)
            t /= torch.distributed.get_world_size()
            e = dict(zip(self.candidates, t.tolist()))
        layers = weight_layers(model)
        order = sorted(self.candidates, key=lambda n: e[n])
        chosen = [n for n in order if e[n] <= self.config.tau_e]
        full = sum(32 * raw_weight(m).numel() for m in layers.values())

        def saving(names):
            saved = 0
            for n in names:
                w = raw_weight(layers[n])
                saved += 32 * w.numel() - (w.numel() + 32 * w.shape[0])
            return saved / full

        for n in order:
            if saving(chosen) >= self.config.min_saving:
                break
            if n not in chosen:
                chosen.append(n)
        for n in self.candidates:
            set_binary(layers[n], n in chosen)
        self.history.append({"estimates": e, "binary": [n for n in self.candidates if n in chosen],
                             "saving": self.storage(model)["saving"]})
        return self.history[-1]["binary"]

    # ------------------------------------------------------------------------------------------ training
    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        if ctx.epoch > self.config.warmup_epochs and ctx.epoch != self._selected_epoch:
            self._selected_epoch = ctx.epoch
            self.select(model, x, y, ctx.loss_fn)
            self.history[-1]["epoch"] = ctx.epoch
        with ctx.autocast():
            out = model(x)
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), out.detach())

    def epoch_metrics(self) -> dict:
        if not self.history:
            return {"albsnn_binary": [], "albsnn_saving": 0.0}
        return {"albsnn_binary": self.history[-1]["binary"], "albsnn_saving": self.history[-1]["saving"]}

    def write_artifacts(self, run_dir, deployed=None) -> None:
        """``albsnn.json``: the selections (epoch, estimates, binary layers, saving) and the final storage."""
        import json

        rec = {"candidates": self.candidates, "history": self.history}
        if deployed is not None:
            st = self.storage(deployed)
            rec["storage"] = {k: v for k, v in st.items()}
        (Path(run_dir) / "albsnn.json").write_text(json.dumps(rec, indent=1))
