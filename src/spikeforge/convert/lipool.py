r"""LIPool: lateral-inhibition max pooling, lossless on cumulative spike counts (SpiCalib paper, Li et al. 2022,
arXiv 2207.02702).

Per pooling window an accumulator :math:`S` (initially 0); every step

.. math::
    S \mathrel{+}= x_t,\qquad o_t = \mathrm{maxpool}(S),\qquad S \mathrel{-}= \mathrm{up}(o_t)

(``up`` copies each window's output back to every member).  Then
:math:`\sum_{\tau\le t} o_\tau = \mathrm{maxpool}(\sum_{\tau\le t} x_\tau)` at every :math:`t`: the pooled rate is
the ANN max of the input rates, where a max over each step's spikes (``maxpool="spiking"``) over-counts.
Non-overlapping windows (``stride == kernel_size``, no padding), as in BrainCog.

Example:
    >>> import torch
    >>> from spikeforge.convert.lipool import LIPool2d
    >>> x = torch.tensor([[1., 0.], [0., 1.]]).reshape(1, 1, 1, 2, 2).repeat(4, 1, 1, 1, 1)
    >>> x[1] = torch.tensor([[0., 1.], [1., 0.]])
    >>> LIPool2d(2)(x).flatten().tolist()      # spiking max pool: [1, 1, 1, 1]
    [1.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LIPool2d(nn.Module):
    """Lateral-inhibition max pooling over a sequence ``[T, B, C, H, W]`` (kernel = stride, no padding)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size: {kernel_size!r}; allowed: an integer >= 1 (square windows, stride = "
                             "kernel_size)")
        self.kernel_size = kernel_size

    @classmethod
    def from_maxpool(cls, pool: nn.Module, name: str) -> "LIPool2d":
        k, s, p = pool.kernel_size, pool.stride, pool.padding
        k = k if isinstance(k, int) else (k[0] if len(set(k)) == 1 else None)
        s = s if isinstance(s, int) else (s[0] if s and len(set(s)) == 1 else k)
        p = p if isinstance(p, int) else max(p)
        if k is None or s != k or p != 0 or getattr(pool, "dilation", 1) not in (1, (1, 1)) or pool.ceil_mode:
            raise ValueError(f"maxpool: lipool supports square non-overlapping windows (stride = kernel_size, no "
                             f"padding, dilation 1); {name} is {pool}")
        return cls(k)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 5:
            raise ValueError(f"x_seq: LIPool2d expects [T, B, C, H, W], got shape {tuple(x_seq.shape)}")
        k = self.kernel_size
        T, B, C, H, W = x_seq.shape
        Hc, Wc = (H // k) * k, (W // k) * k
        x_seq = x_seq[..., :Hc, :Wc]
        S = torch.zeros_like(x_seq[0])
        out = []
        for t in range(T):
            S = S + x_seq[t]
            o = F.max_pool2d(S, k)
            S = S - o.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
            out.append(o)
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


__all__ = ["LIPool2d"]
