"""``bptt``: backpropagation through time with surrogate gradients (the default method).

One forward pass over all ``T`` steps, the configured loss on the per-step outputs ``[T, B, K]``, one
backward pass through the unrolled network. Memory grows with ``T`` (every step's activations are kept).
"""

from __future__ import annotations

from .base import Method, StepContext, StepResult
from .registry import METHODS


@METHODS.register("bptt", help="backpropagation through time with surrogate gradients (default)")
class BPTT(Method):
    name = "bptt"

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        with ctx.autocast():
            out = model(x)
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        return StepResult(loss.detach(), out.detach())
