r"""Losses on per-step outputs ``out [T, B, K]`` (logits, or output firing rates for a spiking readout).

- ``ce``  : :math:`\mathcal{L} = \mathrm{CE}(\tfrac{1}{T}\sum_t O_t,\ y)` — cross-entropy of the time average.
- ``tet`` : :math:`\mathcal{L} = (1-\lambda)\tfrac{1}{T}\sum_t \mathrm{CE}(O_t, y)
  + \lambda\,\tfrac{1}{T}\sum_t \mathrm{MSE}(O_t, \phi)` — temporal efficient training (Deng et al., ICLR 2022):
  every step is pushed to classify on its own, which keeps accuracy at small t (the latency curve).
- ``mse`` : :math:`\mathcal{L} = \mathrm{MSE}(\tfrac{1}{T}\sum_t O_t,\ \tilde y)` with :math:`\tilde y` the
  (smoothed) one-hot target — the rate-coded loss of SpikingJelly's tutorials.

Label smoothing :math:`\epsilon` replaces the one-hot target by :math:`(1-\epsilon)\,\mathrm{onehot} + \epsilon/K`.

Example:
    >>> import torch
    >>> from spikeforge.training.losses import compute_loss
    >>> out = torch.zeros(4, 2, 10)
    >>> round(float(compute_loss("ce", out, torch.tensor([1, 2]))), 4)   # log(10)
    2.3026
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_NAMES = ("ce", "tet", "mse")


def _check_out(out, y):
    if not torch.is_tensor(out) or out.dim() != 3:
        raise ValueError(f"out: expected per-step outputs [T, B, K], got shape {tuple(getattr(out, 'shape', ()))}")
    if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != out.shape[1]:
        raise ValueError(f"y: expected labels [B] with B={out.shape[1]}, got shape {tuple(getattr(y, 'shape', ()))}")


def ce_mean_loss(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the time-averaged output."""
    _check_out(out, y)
    return F.cross_entropy(out.float().mean(0), y, label_smoothing=label_smoothing)


def tet_loss(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0, lam: float = 0.0,
             phi: float = 1.0) -> torch.Tensor:
    """TET: per-step cross-entropy averaged over T, plus ``lam`` x MSE of each step's output to ``phi``."""
    _check_out(out, y)
    T, B, K = out.shape
    o = out.float()
    ce = F.cross_entropy(o.reshape(T * B, K), y.repeat(T), label_smoothing=label_smoothing)
    if lam == 0:
        return ce
    return (1 - lam) * ce + lam * F.mse_loss(o, torch.full_like(o, phi))


def mse_rate_loss(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """MSE between the time-averaged output (firing rate) and the (smoothed) one-hot target."""
    _check_out(out, y)
    K = out.shape[2]
    target = F.one_hot(y, K).float()
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / K
    return F.mse_loss(out.float().mean(0), target)


def compute_loss(name: str, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                 tet_lambda: float = 0.0, tet_phi: float = 1.0) -> torch.Tensor:
    """The loss ``name`` (``ce``, ``tet`` or ``mse``) of per-step outputs ``out [T, B, K]`` for labels ``y``."""
    if name == "ce":
        return ce_mean_loss(out, y, label_smoothing)
    if name == "tet":
        return tet_loss(out, y, label_smoothing, tet_lambda, tet_phi)
    if name == "mse":
        return mse_rate_loss(out, y, label_smoothing)
    raise ValueError(f"loss: unknown value {name!r}; allowed: {', '.join(LOSS_NAMES)}")
