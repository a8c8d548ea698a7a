"""The interface every training method plugs into.

A method changes only what its paper changes: how one optimisation step computes gradients (and,
optionally, how the model is rewired before training or turned into its deployed form after it). The
training loop (:mod:`spikeforge.training.trainer`) keeps owning epochs, batches, the optimiser and its
learning-rate schedule, mixed precision, DDP, divergence checks, checkpoints, resume and logging.

A method is a class with

- ``Config``: a frozen dataclass of its options (``method.kwargs`` in the run config), validated in
  ``__post_init__`` with errors naming ``method.kwargs.<key>``;
- ``check(model, cfg)``: raise one ``ValueError`` naming the layer and why, before anything is trained,
  when the method cannot handle the model or the config (e.g. a time-window larger than ``model.T``);
- ``prepare(model) -> model``: wrap or rewire (may return a new module; the loop trains, evaluates and
  checkpoints what it returns);
- ``train_step(model, x, y, ctx) -> StepResult``: forward and backward of one batch. Gradients are left in
  ``.grad`` (the loop has zeroed them and steps the optimiser afterwards); a method may run several
  backward passes (one per time step, say) and says so in ``StepResult.backward_passes``;
- ``finalize(model) -> model``: the deployed form after training (e.g. run at another T); the loop
  evaluates it when it is a different module and records it in ``summary.json``.

Example:
    >>> from spikeforge.methods import METHODS, create_method
    >>> "bptt" in METHODS
    True
    >>> create_method("bptt", {"nope": 1})
    Traceback (most recent call last):
    ...
    ValueError: method.kwargs.nope: unknown option of method 'bptt'; valid: (none)
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class StepContext:
    """What the loop tells a method about the current step.

    ``loss_fn(out, y)`` is the configured loss (``loss.*``) on per-step outputs ``[T, B, K]``;
    ``loss_scale`` multiplies the loss before ``backward`` so that DDP's gradient average is the global
    mean; ``autocast()`` is the configured mixed-precision context.  ``update()`` (when the loop gives it) clips,
    steps the optimiser at the current learning rate and zeroes the gradients now, for a method that updates
    several times per batch (OTTT_O: once per time step); the loop still steps once after ``train_step``.
    """

    epoch: int
    step: int
    global_step: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_scale: float = 1.0
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    T: int = 1
    update: Callable[[], None] | None = None


@dataclass
class StepResult:
    """``loss``: the (unscaled, detached) batch loss; ``logits``: outputs ``[T, B, K]`` or ``[B, K]`` used
    for the training accuracy; ``aux``: anything the method wants logged; ``backward_passes`` run."""

    loss: torch.Tensor
    logits: torch.Tensor
    aux: dict = field(default_factory=dict)
    backward_passes: int = 1


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class Method(abc.ABC):
    """Base class: pass-through defaults for every hook but :meth:`train_step`."""

    name: str = ""
    card: str | None = None  # the name of the method card it implements (the paper summary it follows)
    Config: type = NoOptions

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def check(self, model: torch.nn.Module, cfg) -> None:
        """Raise ``ValueError`` naming the layer/key when this method cannot train ``model`` under ``cfg``."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @abc.abstractmethod
    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        """Forward and backward of one batch; gradients are left in ``.grad``."""

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


def build_config(method_cls, kwargs: dict):
    """``method_cls.Config(**kwargs)``; an unknown key is one ``ValueError`` listing the valid ones."""
    valid = [f.name for f in dataclasses.fields(method_cls.Config)]
    for k in kwargs:
        if k not in valid:
            raise ValueError(f"method.kwargs.{k}: unknown option of method {method_cls.name!r}; valid: "
                             f"{', '.join(valid) or '(none)'}")
    try:
        return method_cls.Config(**kwargs)
    except TypeError as e:  # pragma: no cover - dataclass signature errors are caught above
        raise ValueError(f"method.kwargs: {e}") from None
