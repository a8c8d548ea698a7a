r"""Batch normalisation for time-major spike sequences ``[T, B, C, ...]``: tdBN, BNTT and TEBN.

- **tdBN** (Zheng et al., AAAI 2021, "Going Deeper With Directly-Trained Larger SNNs"): statistics over
  :math:`(T, B, H, W)`, shared by every step, and a fixed scale :math:`\alpha V_{th}`:
  :math:`y = \lambda\,\alpha V_{th}\,\frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta`.
  With :math:`\alpha V_{th} = 1` this is ordinary BatchNorm on the folded ``[T*B, C, ...]`` tensor (what
  SpikingJelly's ``SeqToANNContainer(BatchNorm2d)`` computes).
- **BNTT** (Kim & Panda 2021): one BN per time step, each with its own
  statistics, gamma and running estimates, and no beta:
  :math:`\mathrm{BNTT}^t(z) = \gamma^t \frac{z - \mu^t}{\sqrt{(\sigma^t)^2 + \epsilon}}`, eps 1e-4.
  Implemented as one ``batch_norm`` call over ``[B, T*C, ...]`` (every (t, c) pair is a channel), which is
  exactly T separate BNs.
- **TEBN** (Duan et al., NeurIPS 2022, "Temporal Effective Batch Normalization"): statistics over
  :math:`(T, B, H, W)` as in tdBN, then a learnable per-step scale :math:`p^t`: :math:`y^t = p^t\,\mathrm{BN}(x^t)`.
  As in the official code, :math:`p^t` is one scalar per step (``per_channel=True`` gives ``[T, C]``).

Running statistics are ordinary BatchNorm buffers (updated in training mode, used in eval mode); nothing
else is stored between calls.

Example:
    >>> import torch
    >>> from spikeforge.layers import BNTT, TdBN, TEBN
    >>> x = torch.randn(4, 2, 8, 5, 5)          # [T, B, C, H, W]
    >>> tuple(BNTT(8, T=4)(x).shape), tuple(TdBN(8)(x).shape), tuple(TEBN(8, T=4)(x).shape)
    ((4, 2, 8, 5, 5), (4, 2, 8, 5, 5), (4, 2, 8, 5, 5))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..functional._checks import check_number
from .timefold import repeat_step, repeats_one_step


def _check_count(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


def _check_seq(cls, x_seq, num_features, T=None):
    if not torch.is_tensor(x_seq) or x_seq.dim() < 3:
        raise ValueError(f"x_seq: {cls} expects a time-major tensor [T, B, C, ...], got shape "
                         f"{tuple(getattr(x_seq, 'shape', ()))}")
    if x_seq.shape[2] != num_features:
        raise ValueError(f"x_seq: {cls} expects C={num_features} channels at dim 2 of [T, B, C, ...], got shape "
                         f"{tuple(x_seq.shape)}")
    if T is not None and x_seq.shape[0] != T:
        raise ValueError(f"x_seq: {cls} was built for T={T} time steps (one set of statistics per step), got "
                         f"T={x_seq.shape[0]} in shape {tuple(x_seq.shape)}")


class _FoldedBN(nn.Module):
    """BatchNorm over the folded ``[T*B, C, ...]`` tensor (statistics shared by all steps)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 bias: bool = True):
        super().__init__()
        self.num_features = _check_count("num_features", num_features)
        self.eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0)
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if (affine and bias) else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _bn(self, x, weight):
        return F.batch_norm(x, self.running_mean, self.running_var, weight, self.bias, self.training,
                            self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class TdBN(_FoldedBN):
    r"""Threshold-dependent BN: statistics over (T, B, H, W), output scaled by ``alpha * v_th``.

    ``TdBN(C)`` (alpha = v_th = 1) is plain BatchNorm over time and batch.  ResNet-19 uses
    ``alpha = 1/sqrt(2)`` on the two BNs that meet at a residual addition.
    """

    def __init__(self, num_features: int, alpha: float = 1.0, v_th: float = 1.0, eps: float = 1e-5,
                 momentum: float = 0.1, affine: bool = True):
        super().__init__(num_features, eps, momentum, affine)
        self.alpha = check_number("alpha", alpha, low=0.0, low_inclusive=False)
        self.v_th = check_number("v_th", v_th, low=0.0, low_inclusive=False)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        _check_seq("TdBN", x_seq, self.num_features)
        scale = self.alpha * self.v_th
        w = self.weight
        if scale != 1.0:
            w = torch.full((self.num_features,), scale, dtype=x_seq.dtype, device=x_seq.device) if w is None \
                else w * scale
        T = x_seq.shape[0]
        if repeats_one_step(x_seq):  # one step repeated (direct coding): normalise it once (see TimeFold)
            y = self._bn(x_seq[0], w)
            return repeat_step(y, T)
        y = self._bn(x_seq.flatten(0, 1), w)
        return y.reshape(T, -1, *y.shape[1:])

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}, v_th={self.v_th}"


class TEBN(_FoldedBN):
    r"""Temporal effective BN: shared statistics over (T, B, H, W), then a learnable scale ``p[t]`` per step."""

    def __init__(self, num_features: int, T: int, eps: float = 1e-5, momentum: float = 0.1,
                 per_channel: bool = False):
        super().__init__(num_features, eps, momentum, affine=True)
        self.T = _check_count("T", T)
        self.per_channel = bool(per_channel)
        self.p = nn.Parameter(torch.ones(T, num_features) if per_channel else torch.ones(T))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        _check_seq("TEBN", x_seq, self.num_features, self.T)
        T = x_seq.shape[0]
        y = self._bn(x_seq.flatten(0, 1), self.weight)
        y = y.reshape(T, -1, *y.shape[1:])
        p = self.p.to(y.dtype)
        p = p.reshape(T, 1, self.num_features, *([1] * (y.dim() - 3))) if self.per_channel else \
            p.reshape(T, *([1] * (y.dim() - 1)))
        return y * p

    def extra_repr(self) -> str:
        return super().extra_repr() + f", T={self.T}, per_channel={self.per_channel}"


class BNTT(nn.Module):
    r"""Batch normalisation through time: separate statistics, gamma (and running stats) per step; no beta.

    ``weight`` has shape ``[T, C]``; ``bias=True`` adds a per-step beta (not in the paper).
    """

    def __init__(self, num_features: int, T: int, eps: float = 1e-4, momentum: float = 0.1, bias: bool = False):
        super().__init__()
        self.num_features = _check_count("num_features", num_features)
        self.T = _check_count("T", T)
        self.eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0)
        self.weight = nn.Parameter(torch.ones(T, num_features))
        self.bias = nn.Parameter(torch.zeros(T, num_features)) if bias else None
        self.register_buffer("running_mean", torch.zeros(T, num_features))
        self.register_buffer("running_var", torch.ones(T, num_features))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        _check_seq("BNTT", x_seq, self.num_features, self.T)
        T, B = x_seq.shape[:2]
        rest = x_seq.shape[3:]
        # [T, B, C, ...] -> [B, T*C, ...]: channel index t*C + c, so each (t, c) has its own statistics
        y = x_seq.transpose(0, 1).reshape(B, T * self.num_features, *rest)
        y = F.batch_norm(y, self.running_mean.view(-1), self.running_var.view(-1), self.weight.reshape(-1),
                         None if self.bias is None else self.bias.reshape(-1), self.training, self.momentum,
                         self.eps)
        return y.reshape(B, T, self.num_features, *rest).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, T={self.T}, eps={self.eps}, momentum={self.momentum}, " \
               f"bias={self.bias is not None}"


NORMS = ("bn", "tdbn", "bntt", "tebn")


def make_norm(kind: str, num_features: int, T: int | None = None, **kwargs) -> nn.Module:
    """A sequence norm by name: ``"bn"`` (shared statistics, = ``TdBN`` with alpha*v_th = 1), ``"tdbn"``,
    ``"bntt"`` or ``"tebn"`` (the last two need ``T``)."""
    if kind == "bn":
        return TdBN(num_features, **kwargs)
    if kind == "tdbn":
        return TdBN(num_features, **kwargs)
    if kind in ("bntt", "tebn"):
        if T is None:
            raise ValueError(f"norm: {kind!r} keeps per-time-step parameters and needs T")
        return (BNTT if kind == "bntt" else TEBN)(num_features, T, **kwargs)
    raise ValueError(f"norm: unknown value {kind!r}; available: {', '.join(NORMS)}")
