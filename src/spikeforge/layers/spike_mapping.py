r"""Spike mapping units: ANN-branch activations that stand for an IF layer's spikes (SNN2ANN), and the exact
straight-through value swap of ANN-proxy training.

An IF neuron with soft reset (``v_reset=None``), threshold :math:`\vartheta` and zero initial potential, driven
for :math:`T` steps by a constant current :math:`z`, fires :math:`n = \mathrm{clip}(\lfloor T z/\vartheta\rfloor,
0, T)` spikes (it spikes when :math:`v \ge \vartheta`).  The units map an ANN-branch pre-activation :math:`z` to a
firing rate in spikes per step (spikes are 0/1 in spikeforge, so the next layer sees the rate itself):

.. math::
    \text{ReSU:}\quad a = \mathrm{clip}\big(\lfloor T z/\vartheta \rfloor / T,\ 0,\ 1\big) \qquad
    \text{STSU:}\quad a = r \ \text{(the rate the SNN layer fired, measured)}

    \text{both:}\quad \partial a/\partial z = \tfrac{1}{\vartheta}\,\mathbb{1}[0 < z < \vartheta]
    \quad\text{(straight-through derivative of } \mathrm{clip}(z/\vartheta, 0, 1))

``straight_through(a, c)`` returns ``c`` exactly and passes the gradient to ``a`` unchanged: proxy learning's
``y_ann.data.copy_(c)`` (Kheradpisheh et al., IEEE Access 2022) as an autograd function.

Paper: J. Tang et al., "SNN2ANN: A Fast and Memory-Efficient Training Framework for Spiking Neural Networks",
arXiv 2206.09449 (2022).  The unit formulas are a reconstruction (the card is LOW confidence): see
``docs/methods/snn2ann.md``.

Example:
    >>> import torch
    >>> from spikeforge.layers import ReSU, STSU, straight_through
    >>> z = torch.tensor([-0.5, 0.3, 0.5, 2.0], requires_grad=True)
    >>> ReSU(T=4, v_threshold=1.0)(z).tolist()
    [0.0, 0.25, 0.5, 1.0]
    >>> a = STSU(v_threshold=1.0)(z, torch.tensor([0.25, 0.25, 0.5, 1.0]))
    >>> a.sum().backward(); z.grad.tolist()
    [0.0, 1.0, 1.0, 0.0]
    >>> straight_through(torch.zeros(2, requires_grad=True), torch.tensor([0.1, 0.7])).tolist()
    [0.10000000149011612, 0.699999988079071]
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_threshold(v_threshold) -> float:
    if isinstance(v_threshold, bool) or not isinstance(v_threshold, (int, float)) or not v_threshold > 0 \
            or not math.isfinite(v_threshold):
        raise ValueError(f"v_threshold: expected a finite number > 0, got {v_threshold!r}")
    return float(v_threshold)


def _clip_grad(g: torch.Tensor, inside: torch.Tensor, v_threshold: float) -> torch.Tensor:
    return g * inside.to(g.dtype) / v_threshold


class ReSUFn(torch.autograd.Function):
    """``clip(floor(T z / v_th) / T, 0, 1)`` forward, ``1/v_th * 1[0 < z < v_th]`` backward."""

    @staticmethod
    def forward(ctx, z, T, v_threshold):
        ctx.v_threshold = v_threshold
        ctx.save_for_backward((z > 0) & (z < v_threshold))
        return (torch.floor(z * (T / v_threshold)) / T).clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return _clip_grad(g, inside, ctx.v_threshold), None, None


class STSUFn(torch.autograd.Function):
    """Value ``r`` (the measured SNN rate), gradient ``1/v_th * 1[0 < z < v_th]`` to ``z``."""

    @staticmethod
    def forward(ctx, z, r, v_threshold):
        ctx.v_threshold = v_threshold
        ctx.save_for_backward((z > 0) & (z < v_threshold))
        return r.to(z.dtype).clone()

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return _clip_grad(g, inside, ctx.v_threshold), None, None


class StraightThroughFn(torch.autograd.Function):
    """Value ``value`` (exactly), gradient passed unchanged to ``a``."""

    @staticmethod
    def forward(ctx, a, value):
        return value.to(a.dtype).clone()

    @staticmethod
    def backward(ctx, g):
        return g, None


def resu(z: torch.Tensor, T: int, v_threshold: float = 1.0) -> torch.Tensor:
    """ReSU: the soft-reset IF rate for a constant drive ``z`` over ``T`` steps (straight-through gradient)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    return ReSUFn.apply(z, T, _check_threshold(v_threshold))


def stsu(z: torch.Tensor, r: torch.Tensor, v_threshold: float = 1.0) -> torch.Tensor:
    """STSU: the measured SNN rate ``r`` as value, the clipped-ReLU derivative at ``z`` as gradient."""
    if tuple(r.shape) != tuple(z.shape):
        raise ValueError(f"r: the SNN rate has shape {tuple(r.shape)}, expected the pre-activation's {tuple(z.shape)}")
    return STSUFn.apply(z, r.detach(), _check_threshold(v_threshold))


def straight_through(a: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` exactly, with the gradient flowing to ``a`` unchanged (``a + (value - a).detach()``, no rounding)."""
    if tuple(a.shape) != tuple(value.shape):
        raise ValueError(f"value: shape {tuple(value.shape)} differs from the graph tensor's {tuple(a.shape)}")
    return StraightThroughFn.apply(a, value.detach())


class ReSU(nn.Module):
    """ReSU spike mapping unit (module form of :func:`resu`)."""

    def __init__(self, T: int, v_threshold: float = 1.0):
        super().__init__()
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T: expected an integer >= 1, got {T!r}")
        self.T = T
        self.v_threshold = _check_threshold(v_threshold)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ReSUFn.apply(z, self.T, self.v_threshold)

    def extra_repr(self) -> str:
        return f"T={self.T}, v_threshold={self.v_threshold}"


class STSU(nn.Module):
    """STSU spike mapping unit (module form of :func:`stsu`): ``forward(z, r)``."""

    def __init__(self, v_threshold: float = 1.0):
        super().__init__()
        self.v_threshold = _check_threshold(v_threshold)

    def forward(self, z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return stsu(z, r, self.v_threshold)

    def extra_repr(self) -> str:
        return f"v_threshold={self.v_threshold}"


__all__ = ["ReSU", "STSU", "ReSUFn", "STSUFn", "StraightThroughFn", "resu", "stsu", "straight_through"]
