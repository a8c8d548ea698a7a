"""Building blocks shared by the conv model families: conv helpers, norms, neurons, readouts, dropout.

Everything here works on time-major ``[T, B, ...]`` tensors and holds parameters only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import TimeFold
from ..layers.norm import make_norm
from .base import make_neuron


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> TimeFold:
    return TimeFold(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias))


def conv1x1(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> TimeFold:
    return TimeFold(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias))


def check_width(width) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width: expected an integer >= 1 (channels of the first stage), got {width!r}")
    return width


def check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; available: {', '.join(map(str, allowed))}")
    return value


def neuron_threshold(neuron: nn.Module, default: float = 1.0) -> float:
    """The neuron's firing threshold when it has a scalar one (tdBN scales by it), else ``default``."""
    v = getattr(neuron, "v_threshold", default)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else default


class NeuronFactory:
    """``factory()`` builds a fresh neuron for every site (no sharing, so each site has its own parameters)."""

    def __init__(self, neuron: str, neuron_kwargs: dict | None):
        self.neuron = neuron
        self.neuron_kwargs = dict(neuron_kwargs or {})
        self.v_threshold = neuron_threshold(self())

    def __call__(self, **overrides) -> nn.Module:
        return make_neuron(self.neuron, self.neuron_kwargs, **overrides)


class NormFactory:
    """``factory(C)`` builds the configured sequence norm (``bn``, ``tdbn``, ``bntt``, ``tebn``)."""

    def __init__(self, kind: str, T: int, **defaults):
        make_norm(kind, 1, T, **defaults)  # validate once, early
        self.kind, self.T, self.defaults = kind, T, defaults

    def __call__(self, num_features: int, **overrides) -> nn.Module:
        kw = dict(self.defaults)
        if self.kind in ("bn", "bntt", "tebn"):
            overrides = {k: v for k, v in overrides.items() if k not in ("alpha", "v_th")}
        kw.update(overrides)
        return make_norm(self.kind, num_features, self.T, **kw)


def zero_norm_(norm: nn.Module, bias: float = 0.0) -> None:
    """Set a norm's gamma to 0 (and its beta to ``bias``) so its output is the constant ``bias``."""
    with torch.no_grad():
        if getattr(norm, "weight", None) is None:
            raise ValueError(f"zero_init: {type(norm).__name__} has no learnable gamma to zero")
        norm.weight.zero_()
        if bias != 0.0:
            if getattr(norm, "bias", None) is None:
                raise ValueError(f"zero_init: {type(norm).__name__} has no beta; AND blocks need one for bias "
                                 f"{bias} (use norm='bn' or 'tdbn')")
            norm.bias.fill_(bias)
        elif getattr(norm, "bias", None) is not None:
            norm.bias.zero_()


class SeqDropout(nn.Module):
    """Dropout with one mask shared by every time step (SpikingJelly's multi-step ``layer.Dropout``)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not (0.0 <= p < 1.0):
            raise ValueError(f"p: dropout probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x_seq
        mask = torch.empty_like(x_seq[0]).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x_seq * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PoolReadout(nn.Module):
    """Global average pool per step, then a (non-spiking) linear layer per step: ``[T, B, C, H, W] -> [T, B, K]``.

    Averaging the per-step logits over T equals the papers' "mean over T, then FC" readout (FC is linear).
    """

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = SeqDropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x_seq.mean(dim=(-2, -1))))


def spatial_check(x_seq: torch.Tensor, min_size: int, model: str) -> None:
    if x_seq.shape[-1] < min_size or x_seq.shape[-2] < min_size:
        raise ValueError(f"x: {model} needs spatial size >= {min_size}x{min_size} in [T, B, C, H, W], got "
                         f"{tuple(x_seq.shape[-2:])}")


__all__ = ["conv3x3", "conv1x1", "check_width", "check_choice", "NeuronFactory", "NormFactory", "zero_norm_",
           "SeqDropout", "PoolReadout", "spatial_check", "neuron_threshold"]
