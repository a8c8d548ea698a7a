r"""``tbptt``: truncated backpropagation through time with window ``K`` (Williams & Peng 1990; no card).

The ``T`` steps are cut into windows :math:`[t_0, t_0 + K)` (the last one shorter when ``K`` does not divide
``T``).  Each window runs forward from the neuron state the previous window ended with — the state is carried,
its graph is cut (detached) — and is backpropagated at once with its share of the loss,

.. math::
    \mathcal{L}_w = \tfrac{K_w}{T}\,\mathcal{L}(O_{t_0 : t_0 + K_w}, y),\qquad
    \nabla = \sum_w \nabla_{\text{within } w}\,\mathcal{L}_w ,

so gradients flow through time only inside a window, and only one window's activations are alive at a time
(memory grows with ``K``, not ``T``).  ``K = T`` is one window: exactly ``bptt``.  For a loss that is a mean
over steps (``tet``) the window losses sum to the full loss; for ``ce`` / ``mse`` (loss of the time-averaged
output) each window's average output is scored on its own.  Stateless layers see only a window's steps, so a
BatchNorm folded over time normalises over ``K*B`` samples and updates its running statistics once per window.

How the model runs window by window: :mod:`spikeforge.methods._stepwise` (``forward_seq`` per window, neuron
state carried by hooks for one step, never stored on the modules).

Example:
    >>> import torch
    >>> from spikeforge.config import TrainConfig
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> m = create_method("tbptt", {"window": 8})
    >>> m.check(create_model("convnet", T=4, input_size=16, channels=(4, 8)), TrainConfig())
    Traceback (most recent call last):
    ...
    ValueError: method.kwargs.window: 8 is larger than model.T=4; allowed: an integer in 1..4
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._stepwise import CarryState, broadcast_buffers, check_windowed, sync_gradients, unwrap, windows
from .base import Method, StepContext, StepResult
from .registry import METHODS


@dataclass(frozen=True)
class TBPTTConfig:
    """``window``: steps K between graph cuts (K = T is bptt)."""

    window: int = 2

    def __post_init__(self):
        k = self.window
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"method.kwargs.window: {k!r}; allowed: an integer in 1..model.T (the steps between "
                             "graph cuts; window = model.T is bptt)")


@METHODS.register("tbptt", help="truncated BPTT: state carried across windows of K steps, graph cut between them")
class TBPTT(Method):
    name = "tbptt"
    Config = TBPTTConfig
    smoke_overrides = ("method.kwargs.window=1",)

    def check(self, model, cfg) -> None:
        T, K = cfg.model.T, self.config.window
        if K > T:
            raise ValueError(f"method.kwargs.window: {K} is larger than model.T={T}; allowed: an integer in 1..{T}")
        check_windowed(unwrap(model), self.name)

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        net = unwrap(model)
        broadcast_buffers(model)
        with ctx.autocast():
            x_seq = net.to_sequence(x)
        T = x_seq.shape[0]
        losses, outs = [], []
        with CarryState(net, self.name) as carry:
            for t0, t1 in windows(T, self.config.window):
                with ctx.autocast():
                    out = net.forward_seq(x_seq[t0:t1])
                carry.end_window()
                loss = ctx.loss_fn(out, y) * ((t1 - t0) / T)
                (loss * ctx.loss_scale).backward()
                losses.append(loss.detach())
                outs.append(out.detach())
        sync_gradients(model)
        total = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        return StepResult(total, outs[0] if len(outs) == 1 else torch.cat(outs), backward_passes=len(losses))
