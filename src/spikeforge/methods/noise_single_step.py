r"""``noise_single_step``: train a single-step (T = 1) SNN with Gaussian membrane noise, then run it as an IF
network for N steps (Jiang and Zhang, arXiv 2211.05453; card ``noise-single-step-snn.md``, LOW confidence — what
was inferred is listed in docs/methods/noise_single_step.md).

Training: every IF neuron of the model becomes a :class:`~spikeforge.neurons.NoisyIF` with
:math:`u = x + v_{init} + \sigma\epsilon`, :math:`s = H(u - \vartheta)` (one step, surrogate gradient), so the cost
of a step is that of BPTT at T = 1.  Deployment (:meth:`NoiseSingleStep.finalize`): the same weights, noise off,
the model run for ``eval_T`` = N steps on the repeated (direct-coded) input, soft-reset IF neurons starting at
:math:`v_{init}`; the output is averaged over the N steps.  ``sigma`` and ``v_init`` are in units of each neuron's
threshold :math:`\vartheta`.

Example:
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> m = create_method("noise_single_step", {"sigma": 0.3, "eval_T": 8})
    >>> net = m.prepare(create_model("mlp", T=1, input_size=8, hidden=(16,), neuron="if",
    ...                              neuron_kwargs={"v_reset": None}))
    >>> net.features[1]
    NoisyIF(sigma=0.3, v_init=0.5, v_threshold=1.0, ...)
    >>> m.finalize(net).T
    8
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ..neurons.base import BaseNeuron
from ..neurons.lif import IF
from ..neurons.noisy_if import NoisyIF
from .bptt import BPTT
from .registry import METHODS


@dataclass(frozen=True)
class NoiseSingleStepConfig:
    """``sigma``: membrane-noise std during T=1 training (x threshold); ``eval_T``: steps N of the deployed IF
    network; ``v_init``: initial membrane of the deployed network and offset of the training step (x threshold)."""

    sigma: float = 0.3
    eval_T: int = 8
    v_init: float = 0.5

    def __post_init__(self):
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < float("inf"):
            raise ValueError(f"method.kwargs.sigma: {s!r}; allowed: a finite number >= 0 (the membrane-noise std as "
                             "a multiple of the threshold; the card sweeps 0.1-0.5, 0 turns the noise off)")
        n = self.eval_T
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"method.kwargs.eval_T: {n!r}; allowed: an integer >= 1 (the number of steps N the "
                             "trained network runs for after training)")
        v = self.v_init
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"method.kwargs.v_init: {v!r}; allowed: a number in [0, 1) (initial membrane as a "
                             "fraction of the threshold; 0.5 centres the N-step rate on the noisy expectation)")


def _neurons(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BaseNeuron)]


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


@METHODS.register("noise_single_step", help="train at T=1 with Gaussian membrane noise, run as an IF network at "
                                            "T=N (Jiang & Zhang 2022)")
class NoiseSingleStep(BPTT):
    """The step is BPTT's (one forward and backward, here at T = 1); :meth:`prepare` makes the IF neurons noisy,
    :meth:`finalize` returns the noise-free network at ``T = eval_T``."""

    name = "noise_single_step"
    card = "noise-single-step-snn.md"
    Config = NoiseSingleStepConfig
    smoke_overrides = ("model.T=1", "model.neuron=if", "model.neuron_kwargs.v_reset=null")

    def check(self, model: nn.Module, cfg) -> None:
        T = cfg.model.T
        if T != 1:
            raise ValueError(f"model.T: {T}, but noise_single_step trains a single-step network (T=1) and runs it "
                             f"at T=N only after training; set model.T=1 and method.kwargs.eval_T={T}")
        mT = getattr(model, "T", None)
        if isinstance(mT, bool) or not isinstance(mT, int) or mT != 1:
            raise ValueError(f"model: {type(model).__name__} has T={mT!r}; noise_single_step needs a model built "
                             "with T=1 whose T attribute sets its number of steps (a spikeforge zoo model)")
        for name, m in model.named_modules():
            if name and isinstance(getattr(m, "T", None), int) and not isinstance(m, BaseNeuron):
                raise ValueError(f"{name}: {type(m).__name__} is built for T={m.T} steps (per-step parameters or "
                                 "statistics), so the network cannot run at T=N after training; use norm='bn' or "
                                 "method bptt")
        neurons = _neurons(model)
        if not neurons:
            raise ValueError(f"model: {type(model).__name__} has no spiking neurons; noise_single_step trains IF "
                             "neurons (set model.neuron=if)")
        for name, m in neurons:
            if type(m) is not IF:
                raise ValueError(f"{name}: {type(m).__name__} is not an IF neuron; noise_single_step trains IF "
                                 "neurons with membrane noise and runs them as IF at T=N; set model.neuron=if "
                                 "and model.neuron_kwargs.v_reset=null")
            if m.v_reset is not None:
                raise ValueError(f"{name}: IF with v_reset={m.v_reset} (hard reset); the T=N network of "
                                 "noise_single_step resets by subtraction so that its rate follows the noisy "
                                 "expectation; set model.neuron_kwargs.v_reset=null")
            if not isinstance(m.v_threshold, (int, float)):
                raise ValueError(f"{name}: IF with a tensor v_threshold; noise_single_step needs one number per "
                                 "layer (model.neuron_kwargs.v_threshold)")

    def prepare(self, model: nn.Module) -> nn.Module:
        """Every IF neuron becomes a :class:`NoisyIF` with ``sigma * v_threshold`` noise, from ``v_init``."""
        c = self.config
        for name, m in _neurons(model):
            if type(m) is IF:
                th = float(m.v_threshold)
                _replace(model, name, NoisyIF(sigma=c.sigma * th, v_threshold=th, v_init=c.v_init * th,
                                              detach_reset=m.detach_reset, surrogate=m.surrogate, backend=m.backend,
                                              check_inputs=m.check_inputs))
        return model

    def finalize(self, model: nn.Module) -> nn.Module:
        """A copy with the same weights, noise off, run for ``eval_T`` steps (IF, soft reset, from ``v_init``)."""
        deployed = copy.deepcopy(model)
        for name, m in _neurons(deployed):
            if isinstance(m, NoisyIF):
                m.sigma = 0.0
        deployed.T = self.config.eval_T
        return deployed
