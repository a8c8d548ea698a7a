r"""Hoyer spike layer: one-time-step spiking with a threshold from the Hoyer extremum of the clipped
activation (Datta, Liu and Beerel 2022, arXiv 2212.10170; the code's ``HoyerBiAct``).

For a pre-activation :math:`x` (conv + BN output) and a trainable clipping threshold :math:`v_{th}`:

.. math::
    z = x / |v_{th}|, \qquad z_c = \mathrm{clip}(z, 0, 1)\ \text{(detached)}, \qquad
    E(z_c) = \frac{\lVert z_c\rVert_2^2}{\lVert z_c\rVert_1}, \qquad s = H(z - E(z_c))

:math:`E` is taken over the whole layer (``mode="sum"``) or per channel (``"cw"``, dim 2 of ``[T, B, C, ...]``;
time is folded into the batch).  Training uses the batch value; evaluation a running average (EMA, momentum
0.1, like BN statistics).  :math:`0 \le E \le \max z_c \le 1`, so the effective threshold :math:`E\,v_{th}` is at
most :math:`v_{th}`.  No membrane, no reset.  Surrogate (straight-through box): :math:`\partial s/\partial z = 0.5`
on :math:`0 < z \le 2`; :math:`E` gets no gradient; :math:`v_{th}` gets gradient through :math:`z`.
The regulariser :math:`H(z) = \lVert z_c\rVert_1^2 / \lVert z_c\rVert_2^2` (with gradient) is added to the loss with
weight :math:`\lambda_H` (1e-8 in the paper's scripts).

Example:
    >>> import torch
    >>> from spikeforge.functional import hoyer_extremum
    >>> hoyer_extremum(torch.tensor([0.0, 0.0, 0.7, 0.0])).item()     # one-hot: the max
    0.699999988079071
    >>> round(hoyer_extremum(torch.tensor([0.5, 0.5, 1.0, 3.0])).item(), 4)   # clipped to [0, 1]
    0.8333
"""

from __future__ import annotations

import torch

from ._checks import check_seq


def _reduce_dims(z: torch.Tensor, mode: str, channel_dim: int):
    if mode == "sum":
        return tuple(range(z.dim()))
    if mode == "cw":
        if z.dim() <= channel_dim:
            raise ValueError(f"mode='cw': input of shape {tuple(z.shape)} has no channel dim {channel_dim}")
        return tuple(d for d in range(z.dim()) if d != channel_dim)
    raise ValueError(f"mode: unknown value {mode!r}; allowed: 'sum' (whole layer), 'cw' (per channel)")


def hoyer_extremum(z: torch.Tensor, mode: str = "sum", channel_dim: int = 1) -> torch.Tensor:
    r""":math:`\lVert z_c\rVert_2^2 / \lVert z_c\rVert_1` of ``z_c = clip(z, 0, 1)`` (detached); 0 where all of
    ``z_c`` is 0.  ``mode="cw"`` gives one value per index of ``channel_dim``."""
    zc = z.detach().clamp(0.0, 1.0)
    dims = _reduce_dims(zc, mode, channel_dim)
    l1 = zc.sum(dim=dims)
    l2 = (zc * zc).sum(dim=dims)
    return torch.where(l1 > 0, l2 / torch.where(l1 > 0, l1, torch.ones_like(l1)), torch.zeros_like(l1))


def hoyer_regularizer(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\lVert z_c\rVert_1^2 / \lVert z_c\rVert_2^2` of ``z_c = clip(z, 0, 1)`` with gradient (in [1, n]; 0 if
    all of ``z_c`` is 0)."""
    zc = z.clamp(0.0, 1.0)
    l1 = zc.sum()
    l2 = (zc * zc).sum()
    return torch.where(l2 > 0, l1 * l1 / torch.where(l2 > 0, l2, torch.ones_like(l2)), torch.zeros_like(l2))


class HoyerSpikeFn(torch.autograd.Function):
    """``s = [z >= thr]``; backward: 0.5 on ``0 < z <= 2`` (box straight-through), no gradient to ``thr``."""

    @staticmethod
    def forward(ctx, z, thr):
        ctx.save_for_backward(z)
        return (z >= thr).to(z.dtype)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * 0.5 * ((z > 0) & (z <= 2)).to(g.dtype), None


def hoyer_spike(x_seq: torch.Tensor, v_th, threshold=None, *, mode: str = "cw"):
    """Spikes of ``x_seq [T, B, C, ...]`` (T is usually 1) with the Hoyer-extremum threshold.

    ``threshold`` (a float or a tensor ``[C]`` for ``cw``) overrides the batch extremum (evaluation with the
    running estimate).  Returns ``(s, E)`` where ``E`` is the extremum computed on this batch (detached).
    """
    check_seq(x_seq)
    if not torch.is_tensor(v_th):
        v_th = torch.tensor(float(v_th), dtype=x_seq.dtype, device=x_seq.device)
    if not torch.compiler.is_compiling() and bool((v_th.detach() == 0).any()):  # eager only: values are data
        raise ValueError("v_th: the clipping threshold must be non-zero (z = x / |v_th|)")
    z = x_seq / v_th.abs()
    e = hoyer_extremum(z, mode, channel_dim=2)
    thr = e if threshold is None else torch.as_tensor(threshold, dtype=z.dtype, device=z.device)
    if mode == "cw" and thr.dim() == 1:
        thr = thr.reshape(-1, *([1] * (z.dim() - 3)))
    return HoyerSpikeFn.apply(z, thr), e
