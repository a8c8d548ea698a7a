r"""STCB: spatio-temporal conversion block of SLSSNN / STCSNN (Xu, Liu & Yang, arXiv 2307.07136; card
``slssnn-stcsnn.md``).  **LOW confidence**: no official code and only the abstract were available, so the block
below is the card's *inferred* reconstruction; every inferred choice is listed here.

[paper] Spike trains are processed at the spike-train level: convolution + ReLU are replaced by STCBs that keep
binary spikes and accumulate-only synapses, trained with an "equivalent gradient" of the block.

[inferred] One STCB, input spike train :math:`S_{l-1} \in \{0,1\}^{T \times C \times H \times W}`:

1. spatial conversion, per step: :math:`I_t = BN(Conv(S_{l-1}[t]))`;
2. temporal conversion, LIF with a fixed ``decay`` :math:`\lambda` (``decay=1`` is IF, the default) or a
   learnable one, :math:`\lambda = \sigma(w) \in (0, 1)` (``learn_decay=True``):
   hard reset :math:`u_t = \lambda u_{t-1}(1 - s_{t-1}) + I_t` (the card), or soft reset
   :math:`u_t = \lambda(u_{t-1} - \theta s_{t-1}) + I_t`; :math:`s_t = H(u_t - \theta)`;
3. equivalent gradient (``gradient="equivalent"``): the forward emits the exact spikes, the backward treats
   the block as the map from the mean current :math:`\bar I = \frac1T\sum_t I_t` to the expected spike count
   :math:`N(\bar I) = E_{v_0}[n]`, :math:`n = \sum_t s_t`, for a constant current :math:`\bar I` and an
   initial membrane jittered uniformly, :math:`v_0 \sim U(0, \theta)`:
   :math:`\partial L/\partial I_t = \frac{N'(\bar I)}{T}\cdot\frac{1}{T}\sum_{t'} \partial L/\partial s_{t'}`
   (for a loss on the count, :math:`(\partial L/\partial n)\,N'(\bar I)/T`).  The cost is independent of T
   (no BPTT).  [inferred] :math:`N` is computed exactly for hard reset (any :math:`\lambda \in (0, 1]`): before
   the first spike :math:`u_t = \lambda^t v_0 + \bar I S_t`,
   :math:`S_t = \sum_{j<t}\lambda^j`, so :math:`F_t = P(t_1 \le t) =
   \mathrm{clip}(1 - (\theta - \bar I S_t)/(\lambda^t\theta), 0, 1)`; after a spike the membrane
   restarts from 0 and fires again every :math:`p = \min\{j: \bar I S_j \ge \theta\}` steps, so
   :math:`N = \sum_t (F_t - F_{t-1})(1 + \lfloor (T - t)/p \rfloor)`.  :math:`N'` is its derivative
   (through :math:`F`; :math:`p` is piecewise constant, so the jumps of the finite-T staircase where :math:`p`
   changes carry no gradient), and the decay gets its gradient through :math:`F` too.  Soft reset with IF
   (:math:`\lambda = 1`): :math:`N = T\,\mathrm{clip}(\bar I/\theta, 0, 1)`, also exact.  Soft reset with
   :math:`\lambda < 1` has no closed form here and uses the continuous-rate slope of :func:`stcb_rate`
   (an approximation: it is not the derivative of the expected count).
   ``gradient="surrogate"`` instead backpropagates through time with the named surrogate (for comparison).

Defaults: IF with soft reset (``decay=1, learn_decay=False, reset="soft"``), not the card's leaky hard-reset
block.  Why: for hard reset the exact expected count is a staircase in :math:`\bar I` (the period :math:`p` is
an integer), so its derivative is zero on wide plateaus (T=8, :math:`\lambda=0.5`: every current in
[2/3, 1) gives exactly 4 spikes for every :math:`v_0`) and the equivalent gradient vanishes there; the card's
example slope :math:`g = T/\theta` inside the firing range is exactly the IF soft-reset one.  The card's block
stays available (``decay=0.5, learn_decay=True, reset="hard"``) with its exact gradient.

Readout [inferred]: spike counts of the last block -> FC -> CE.  Not verified against the paper's numbers.

Example:
    >>> import torch
    >>> from spikeforge.layers import STCB
    >>> block = STCB(3, 8, T=4)
    >>> s = block(torch.rand(4, 2, 3, 8, 8))
    >>> tuple(s.shape), bool(((s == 0) | (s == 1)).all())
    ((4, 2, 8, 8, 8), True)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..functional._checks import check_number
from ..surrogate import spike
from .norm import make_norm


def stcb_rate(i_bar: torch.Tensor, decay, theta: float = 1.0) -> torch.Tensor:
    """[inferred] Firing rate per step (0..1) of the STCB's LIF for a constant current ``i_bar``."""
    lam = decay if torch.is_tensor(decay) else torch.tensor(float(decay), dtype=i_bar.dtype, device=i_bar.device)
    if not torch.is_tensor(decay) and float(decay) == 1.0:
        return (i_bar / theta).clamp(0.0, 1.0)
    lam = lam.to(i_bar.dtype)
    c = theta * (1.0 - lam)                                   # the smallest current that ever fires
    fires = i_bar > c * (1.0 + 1e-6)
    safe_i = torch.where(fires, i_bar, torch.ones_like(i_bar) * (c * 2.0 + 1e-6))
    k = torch.log1p(-c / safe_i) / torch.log(lam)             # continuous firing period (steps)
    r = torch.where(fires, 1.0 / k.clamp(min=1.0), torch.zeros_like(i_bar))
    return r


def stcb_temporal(i_seq: torch.Tensor, decay, theta: float = 1.0, reset: str = "hard",
                  gradient: str = "equivalent", surrogate: str = "atan", v0: torch.Tensor | None = None):
    """Temporal conversion of a current sequence ``[T, B, ...]`` to spikes, with the chosen gradient."""
    if reset not in ("hard", "soft"):
        raise ValueError(f"reset: unknown value {reset!r}; available: hard, soft")
    if gradient not in ("equivalent", "surrogate"):
        raise ValueError(f"gradient: unknown value {gradient!r}; available: equivalent, surrogate")
    if not torch.is_tensor(i_seq) or i_seq.dim() < 2 or not i_seq.is_floating_point():
        raise ValueError(f"i_seq: expected a floating-point [T, B, ...] tensor, got "
                         f"{tuple(getattr(i_seq, 'shape', ()))}")
    T = i_seq.shape[0]
    lam = decay.to(i_seq.dtype) if torch.is_tensor(decay) else float(decay)

    def run(x, lam_):
        u = torch.zeros_like(x[0]) if v0 is None else v0.to(x.dtype).expand_as(x[0])
        s = torch.zeros_like(x[0])
        out = []
        for t in range(T):
            u = lam_ * (u * (1.0 - s) if reset == "hard" else u - theta * s) + x[t]
            s = spike(u - theta, surrogate) if gradient == "surrogate" else (u >= theta).to(x.dtype)
            out.append(s)
        return torch.stack(out)

    if gradient == "surrogate":
        return run(i_seq, lam)
    with torch.no_grad():
        s = run(i_seq, lam.detach() if torch.is_tensor(lam) else lam)
    n = stcb_expected_count(i_seq.mean(0), decay, T, theta, reset)
    return s + ((n - n.detach()) / T).unsqueeze(0)           # value: the exact spikes; gradient: via E[n]


def stcb_expected_count(i_bar: torch.Tensor, decay, T: int, theta: float = 1.0, reset: str = "hard") -> torch.Tensor:
    """The expected spike count over ``T`` steps of the STCB's LIF for a constant current ``i_bar`` and an initial
    membrane ``v0 ~ U(0, theta)`` (exact for hard reset and for soft-reset IF; see the module docstring), as a
    differentiable function of ``i_bar`` and ``decay``: its gradient is the block's equivalent gradient."""
    if reset not in ("hard", "soft"):
        raise ValueError(f"reset: unknown value {reset!r}; available: hard, soft")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    if reset == "soft":
        return T * stcb_rate(i_bar, decay, theta)
    lam = decay.to(i_bar.dtype) if torch.is_tensor(decay) else torch.tensor(float(decay), dtype=i_bar.dtype,
                                                                             device=i_bar.device)
    j = torch.arange(T, dtype=i_bar.dtype, device=i_bar.device)
    lam_j = lam ** j                                          # lambda^0 .. lambda^(T-1)
    S = lam_j.cumsum(0)                                       # S_t = sum_{j<t} lambda^j, t = 1..T
    lam_t = lam_j * lam                                       # lambda^t
    view = (T,) + (1,) * i_bar.dim()
    i = i_bar.unsqueeze(0)
    # P(u_t >= theta) before any spike, u_t = lambda^t v0 + I S_t, v0 ~ U(0, theta); F_t = P(first spike <= t)
    # (u_t rises with t whenever v0 < theta <= I / (1 - lambda), and never fires otherwise, so P(u_t >= theta) is
    # already the cumulative P(t1 <= t))
    F = (1.0 - (theta - i * S.view(view)) / (lam_t.view(view) * theta)).clamp(0.0, 1.0)
    dF = torch.diff(F, dim=0, prepend=torch.zeros_like(F[:1]))
    with torch.no_grad():                                     # spikes after the first: every p steps
        hits = i * S.view(view) >= theta
        period = torch.where(hits.any(0), hits.to(torch.int8).argmax(0) + 1, torch.full_like(i_bar, T + 1,
                                                                                             dtype=torch.long))
        t = torch.arange(1, T + 1, device=i_bar.device).view(view)
        after = 1 + torch.div(T - t, period.unsqueeze(0), rounding_mode="floor")
    return (dF * after.to(dF.dtype)).sum(0)


class STCB(nn.Module):
    """Spatial conversion (conv + BN per step) then temporal conversion (IF/LIF, optionally learnable decay) ->
    spikes."""

    def __init__(self, in_channels: int, out_channels: int, T: int, kernel_size: int = 3, stride: int = 1,
                 decay: float = 1.0, learn_decay: bool = False, v_threshold: float = 1.0, reset: str = "soft",
                 gradient: str = "equivalent", surrogate: str = "atan", norm: str = "bn"):
        super().__init__()
        check_number("decay", decay, low=0.0, low_inclusive=False, high=1.0)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
        if learn_decay and decay >= 1.0:
            raise ValueError("decay: a learnable decay is sigmoid(w) < 1; use learn_decay=False for decay=1 (IF)")
        stcb_temporal(torch.zeros(1, 1), 0.5, reset=reset, gradient=gradient)  # validate names early
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.norm = make_norm(norm, out_channels, T)
        self.T, self.v_threshold, self.reset, self.gradient, self.surrogate = T, v_threshold, reset, gradient, \
            surrogate
        self.learn_decay = bool(learn_decay)
        if self.learn_decay:
            self.w = nn.Parameter(torch.tensor(math.log(decay / (1.0 - decay))))
        else:
            self.fixed_decay = float(decay)

    @property
    def decay(self):
        return torch.sigmoid(self.w) if self.learn_decay else self.fixed_decay

    def forward(self, s_seq: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(s_seq) or s_seq.dim() != 5:
            raise ValueError(f"s_seq: STCB expects [T, B, C, H, W], got shape {tuple(getattr(s_seq, 'shape', ()))}")
        T = s_seq.shape[0]
        i = self.conv(s_seq.flatten(0, 1))
        i = self.norm(i.reshape(T, -1, *i.shape[1:]))
        return stcb_temporal(i, self.decay, self.v_threshold, self.reset, self.gradient, self.surrogate)

    def extra_repr(self) -> str:
        return (f"T={self.T}, v_threshold={self.v_threshold}, reset={self.reset!r}, gradient={self.gradient!r}, "
                f"learn_decay={self.learn_decay}")
