r"""Temporal-coded non-leaky integrate-and-fire (NIF) neurons with closed-form spike times (Zhou et al., AAAI
2021, arXiv 1909.10837; the official TensorFlow code).

Each neuron fires at most once.  Input spike :math:`i` at time :math:`t_i \ge 0` injects the current
:math:`w_i e^{-(t - t_i)}`, so :math:`V(t) = \sum_{i: t_i < t} w_i (1 - e^{-(t - t_i)})`; threshold
:math:`\vartheta` (1).  In the exponential domain :math:`z = e^t`, for the causal set :math:`C` of inputs that
arrive before the output spike:

.. math::
    z_{out} = \frac{\sum_{i \in C} w_i z_i}{\sum_{i \in C} w_i - \vartheta}

:math:`C` is found as in the code: append a bias input (:math:`z = 1`, its own weight), sort the inputs by
:math:`z`, form prefix sums :math:`W_k, P_k`; candidate :math:`\hat z_k = P_k / (W_k - \vartheta)` is valid iff
:math:`W_k > \vartheta` and :math:`z_k \le \hat z_k \le z_{k+1}` (:math:`z_{N+1} = \infty`).  The output is the
smallest valid candidate, or the sentinel :math:`10^5` (silent).  Gradients are those of the closed form inside
the selected set (:math:`\partial z_{out}/\partial w_i = (z_i - z_{out})/(W_C - \vartheta)`,
:math:`\partial z_{out}/\partial z_i = w_i/(W_C - \vartheta)`); the choice of set is piecewise constant.

Example:
    >>> import torch
    >>> from spikeforge.functional import nif_spike_time
    >>> z = torch.tensor([[1.0, 2.0]])                  # inputs at t = 0 and t = log 2
    >>> w = torch.tensor([[1.5, 1.0]])                  # one output neuron
    >>> nif_spike_time(z, w).item()                     # (1.5*1) / (1.5 - 1) = 3 > 2: needs the 2nd input too
    2.3333332538604736
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_number

SENTINEL = 1e5  # z of a neuron that never fires (t = ln 1e5 ~ 11.5)


def _check_z(z_in: torch.Tensor, name="z_in"):
    if not torch.is_tensor(z_in) or not z_in.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of z = exp(t), got {type(z_in).__name__}")
    if torch.compiler.is_compiling():  # values are data: checked in eager runs only
        return
    if bool((z_in.detach() < 1.0).any()) or not bool(torch.isfinite(z_in.detach()).all()):
        raise ValueError(f"{name}: every z = exp(t) must be finite and >= 1 (spike times t >= 0); got min "
                         f"{z_in.detach().min().item():g} (a negative time)")


def encode_time(x: torch.Tensor, scale: float = 3.0) -> torch.Tensor:
    """Input coding of the code's CIFAR scripts: ``z = exp(scale * x)`` (``x >= 0``; larger x = later spike)."""
    check_number("scale", scale, low=0.0)
    if bool((x.detach() < 0).any()):
        raise ValueError(f"x: encode_time needs x >= 0 (spike times scale * x must not be negative), got min "
                         f"{x.detach().min().item():g}")
    return torch.exp(scale * x)


def nif_spike_time(z_in: torch.Tensor, weight: torch.Tensor, bias_weight: torch.Tensor | None = None,
                   theta: float = 1.0, *, check_inputs: bool = True) -> torch.Tensor:
    """Output spike times ``z_out [..., M]`` of NIF neurons with weights ``weight [M, N]`` for input times
    ``z_in [..., N]`` (``z = exp(t) >= 1``); ``bias_weight [M]`` is the weight of the bias input at ``z = 1``."""
    check_number("theta", theta, low=0.0, low_inclusive=False, allow_tensor=False)
    if check_inputs:
        _check_z(z_in)
    if weight.dim() != 2 or weight.shape[1] != z_in.shape[-1]:
        raise ValueError(f"weight: expected [M, N] with N = z_in.shape[-1] = {z_in.shape[-1]}, got "
                         f"{tuple(weight.shape)}")
    lead = z_in.shape[:-1]
    z = z_in.reshape(-1, z_in.shape[-1])
    M = weight.shape[0]
    bw = torch.zeros(M, dtype=weight.dtype, device=weight.device) if bias_weight is None else bias_weight
    z = torch.cat([torch.ones_like(z[:, :1]), z], dim=1)  # bias input at z = 1
    w = torch.cat([bw.reshape(M, 1).to(weight.dtype), weight], dim=1)  # [M, N+1]
    z_sorted, idx = torch.sort(z, dim=1, stable=True)  # ties keep order; the bias comes first among z=1
    w_sorted = w.t()[idx]  # [B, N+1, M]
    W = torch.cumsum(w_sorted, dim=1)
    P = torch.cumsum(w_sorted * z_sorted.unsqueeze(-1), dim=1)
    ok = W > theta
    zhat = P / torch.where(ok, W - theta, torch.ones_like(W))
    z_next = torch.cat([z_sorted[:, 1:], torch.full_like(z_sorted[:, :1], float("inf"))], dim=1).unsqueeze(-1)
    valid = ok & (zhat >= z_sorted.unsqueeze(-1)) & (zhat <= z_next)
    cand = torch.where(valid, zhat, torch.full_like(zhat, float("inf")))
    z_out, _ = cand.min(dim=1)
    z_out = torch.where(torch.isfinite(z_out), z_out, torch.full_like(z_out, SENTINEL))
    return z_out.reshape(*lead, M)


def nif_conv2d(z_in: torch.Tensor, weight: torch.Tensor, bias_weight: torch.Tensor | None = None, theta=1.0,
               stride=1, padding=0, *, check_inputs: bool = True) -> torch.Tensor:
    """NIF neurons on im2col patches of ``z_in [B, C, H, W]`` with ``weight [M, C, kh, kw]`` shared over positions;
    padding inputs never arrive before the sentinel (``z = 1e5``).  Returns ``z_out [B, M, H', W']``."""
    if check_inputs:
        _check_z(z_in)
    if z_in.dim() != 4 or weight.dim() != 4 or weight.shape[1] != z_in.shape[1]:
        raise ValueError(f"weight: expected [M, C, kh, kw] with C = {z_in.shape[1] if z_in.dim() == 4 else '?'} "
                         f"for z_in [B, C, H, W], got weight {tuple(weight.shape)}, z_in {tuple(z_in.shape)}")
    B, C, H, W_ = z_in.shape
    M, _, kh, kw = weight.shape
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    if ph or pw:
        z_in = F.pad(z_in, (pw, pw, ph, ph), value=SENTINEL)
    cols = F.unfold(z_in, (kh, kw), stride=(sh, sw))  # [B, C*kh*kw, L]
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W_ + 2 * pw - kw) // sw + 1
    z_out = nif_spike_time(cols.transpose(1, 2), weight.reshape(M, -1), bias_weight, theta, check_inputs=False)
    return z_out.transpose(1, 2).reshape(B, M, Ho, Wo)


def weight_sum_penalty(weight: torch.Tensor, theta: float = 1.0) -> torch.Tensor:
    r"""The code's :math:`\mathrm{mean}_j \max(0, \vartheta - \sum_i w_{ij})` (weighted by K = 100 in the loss): keeps
    every neuron's weight sum above threshold so it can fire.  ``weight [M, ...]``: one row per neuron."""
    return torch.relu(theta - weight.reshape(weight.shape[0], -1).sum(1)).mean()


def nif_loss(z_out: torch.Tensor, target: torch.Tensor, weights=(), K: float = 100.0, K2: float = 1e-2):
    """Cross-entropy on ``-z_out`` (first to fire wins) + ``K`` x weight-sum penalty + ``K2`` x mean squared
    weight, summed over ``weights`` (the official CIFAR-10 script's loss)."""
    loss = F.cross_entropy(-z_out, target)
    for w in weights:
        loss = loss + K * weight_sum_penalty(w) + K2 * (w * w).mean()
    return loss
