"""Run stateless layers on time-major sequences by folding time into the batch.

``TimeFold(layer)`` maps ``[T, B, ...] -> [T*B, ...] -> layer -> [T, B, ...]``.  Any stateless module works
(Conv, Linear, BatchNorm — which then normalises over T*B, i.e. tdBN-style statistics — pooling, Dropout).

A sequence whose steps are all one tensor (stride 0 over time: what the ``direct`` encoder returns) is run
*once*: ``layer(x_seq[0])`` expanded over T, when every module in ``layer`` gives the same result for every copy
of a step (convolution, linear, BatchNorm, pooling, flatten, ReLU: see :data:`TIME_INVARIANT`).  Values and
gradients are those of the folded run (BatchNorm's batch mean and biased variance over T identical copies are
those of one copy); only the *unbiased* variance that updates ``running_var`` uses ``n = B*H*W`` instead of
``T*B*H*W`` samples, a relative difference of about ``1/(B*H*W)``.  This saves ``(T-1)/T`` of a direct-coded
network's first convolution and BatchNorm.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> conv = TimeFold(nn.Conv2d(2, 8, 3, padding=1))
    >>> tuple(conv(torch.zeros(4, 5, 2, 16, 16)).shape)
    (4, 5, 8, 16, 16)
"""

from __future__ import annotations

import torch
from torch import nn

from .pooling import MaxPool2d


TIME_INVARIANT = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                  nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                  nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity, nn.ReLU,
                  nn.Sequential, MaxPool2d)
"""Module types (exact, not subclasses) that give the same output for identical copies of a step in one batch."""


def repeats_one_step(x_seq: torch.Tensor) -> bool:
    """True when every step of ``x_seq [T, ...]`` is the same memory (stride 0 over time, T > 1)."""
    return x_seq.dim() >= 2 and x_seq.shape[0] > 1 and x_seq.stride(0) == 0


class _RepeatStep(torch.autograd.Function):
    """``y -> [T, *y.shape]``, every step the same memory as ``y`` (stride 0 over time); the backward sums the
    T step gradients into ``y``'s memory order.  A plain ``expand``'s backward returns a C-order sum, and a
    channels-last layer below (BatchNorm's backward is ~3.5x slower with mixed layouts) would pay for it."""

    @staticmethod
    def forward(ctx, y, T):
        ctx.like = (tuple(y.shape), y.stride())
        return y.unsqueeze(0).expand(T, *y.shape)

    @staticmethod
    def backward(ctx, g):
        if torch.compiler.is_compiling():  # the compiler plans the layout itself (and refuses a strided out=)
            return g.sum(0).contiguous(memory_format=torch.channels_last), None
        shape, stride = ctx.like
        out = torch.empty_strided(shape, stride, dtype=g.dtype, device=g.device)
        return torch.sum(g, dim=0, out=out), None


def repeat_step(y: torch.Tensor, T: int) -> torch.Tensor:
    """``y`` repeated over a new leading time axis of length ``T`` without a copy (an ``expand``), whose gradient
    keeps ``y``'s memory order (see :class:`_RepeatStep`)."""
    if y.requires_grad and torch.is_grad_enabled() and y.is_contiguous(memory_format=torch.channels_last) \
            and not y.is_contiguous():
        return _RepeatStep.apply(y, T)
    return y.unsqueeze(0).expand(T, *y.shape)


def fold(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [T*B, ...]`` (a view when possible)."""
    return x_seq.flatten(0, 1)


def unfold(y: torch.Tensor, T: int) -> torch.Tensor:
    """``[T*B, ...] -> [T, B, ...]``."""
    return y.reshape(T, y.shape[0] // T, *y.shape[1:])


class TimeFold(nn.Module):
    """Apply ``layer`` (or several, in order) to every time step at once."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        if not layers:
            raise ValueError("TimeFold: give at least one layer")
        self.layer = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        self.time_invariant = all(type(m) in TIME_INVARIANT for m in self.layer.modules())

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x_seq) or x_seq.dim() < 2:
            raise ValueError(
                f"x_seq: TimeFold expects a time-major tensor [T, B, ...], got shape {tuple(getattr(x_seq, 'shape', ()))}"
            )
        T = x_seq.shape[0]
        if self.time_invariant and repeats_one_step(x_seq):
            return repeat_step(self.layer(x_seq[0]), T)
        return unfold(self.layer(fold(x_seq)), T)
