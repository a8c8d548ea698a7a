r"""BATS: exact spike times of multi-spike current-based LIF neurons and their exact gradients (Bacho & Chu,
"Exact Error Backpropagation Through Spikes for Precise Training of Spiking Neural Networks", arXiv 2212.09500;
the official code's CUDA kernels, commit d8dce59).

Neuron (the Fast & Deep case :math:`\tau = 2\tau_s`), in the code's units: an input spike at :math:`t_j` with
weight :math:`w_j` and every own earlier spike :math:`t_k` give

.. math::
    u(t) = \sum_{t_j < t} w_j \big(e^{-(t - t_j)/\tau} - e^{-(t - t_j)/\tau_s}\big)
           - \frac{\Delta\vartheta}{\tau} \sum_{t_k < t} e^{-(t - t_k)/\tau}

and the neuron spikes when :math:`u \ge c = \vartheta/\tau` (reset by subtraction: each spike subtracts the
:math:`\Delta\vartheta` term).  With :math:`z = e^{t/\tau}` (so :math:`e^{t/\tau_s} = z^2`),
:math:`u = b/z - a/z^2` with :math:`a = \sum_j w_j e^{t_j/\tau_s}`,
:math:`b = \sum_j w_j e^{t_j/\tau} - \frac{\Delta\vartheta}{\tau}\sum_k z_k`.  After each sorted input spike the
next crossing is the smaller root

.. math::
    x = \sqrt{b^2 - 4ac}, \qquad z^* = \frac{2a}{b + x}, \qquad t^* = \tau \ln z^*,

accepted iff :math:`x` is real, :math:`z^* > 0` and :math:`t_j < t^* \le \min(t_{j+1}, T_{max})`; then
:math:`b \leftarrow b - \frac{\Delta\vartheta}{\tau} z^*` and the same interval is searched again.  At most
``max_spikes`` spikes per neuron are stored (padded with ``+inf``, with a count); a further spike is *counted*
in ``dropped`` (the simulation goes on to find it), never silently lost.

Gradients (implicit function theorem at each spike): :math:`\partial t_k/\partial a = f_1 = \tau/(z_k x_k)`,
:math:`\partial t_k/\partial b = -f_2 = -\tau/x_k`.  A spike's reset moves every later spike of its neuron,
:math:`\partial t_k/\partial t_m = \frac{\Delta\vartheta}{\tau} z_m / x_k` (:math:`m < k`), so the error of
spike :math:`m` is :math:`G_m = g_m + z_m \sum_{k>m} G_k \frac{\Delta\vartheta}{\tau x_k}` (the code's
``propagate_recurrent_errors``); then
:math:`\partial L/\partial w_j = \sum_{k: t_k > t_j} G_k (f_1 e^{t_j/\tau_s} - f_2 e^{t_j/\tau})` and
:math:`\partial L/\partial t_j = w_j \sum_{k: t_k > t_j} G_k (f_1 e^{t_j/\tau_s}/\tau_s - f_2 e^{t_j/\tau}/\tau)`.

:func:`bats_layer_reference` is the definition of truth: the event loop in plain Python with the closed form
written as torch operations, so autograd differentiates it exactly (the set of causal inputs is piecewise
constant).  :func:`bats_layer` runs the fused numba kernels (:mod:`spikeforge.kernels.bats_numba`, CPU only)
with the hand-written backward above; the tests check that the two agree, that the times equal a fine-grid
clock-driven simulation, and that the gradients equal finite differences.

Spike times are tensors ``[B, N, S]``: per sample and neuron a padded list of ``S`` times, ``+inf`` = no spike.
They need not be sorted (the layer sorts every sample's spikes once); NaN, ``-inf`` and negative times raise.

Example:
    >>> import torch
    >>> from spikeforge.functional.bats import bats_layer
    >>> t_in = torch.tensor([[[0.0], [0.01]]], dtype=torch.float64)        # B=1, 2 inputs, one spike each
    >>> w = torch.tensor([[60.0, 60.0]], dtype=torch.float64)              # one neuron
    >>> out = bats_layer(t_in, w, tau_s=0.01, theta=0.2, t_max=0.1, max_spikes=4)
    >>> out.counts.tolist(), [round(t, 5) for t in out.times[0, 0].tolist()]
    ([[4]], [0.00475, 0.01096, 0.01444, 0.02033])
    >>> bats_layer(t_in, w, tau_s=0.01, theta=0.2, t_max=0.1, max_spikes=1).dropped.tolist()  # spike 2 is counted
    [[True]]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["BATSOutput", "bats_layer", "bats_layer_reference", "check_spike_times", "check_bats_params",
           "sort_spikes", "spike_count_loss", "ttfs_loss"]


class BATSOutput(NamedTuple):
    """``times [B, M, S]`` (``+inf`` padding, ascending), ``counts [B, M]`` (int64) and ``dropped [B, M]``
    (bool: the neuron would have spiked more than ``S = max_spikes`` times; the extra spikes are not stored)."""

    times: torch.Tensor
    counts: torch.Tensor
    dropped: torch.Tensor


def check_bats_params(tau_s, theta, delta_theta, t_max, max_spikes) -> None:
    """One ``ValueError`` naming the argument, its value and what is allowed."""
    def num(name, v, low=0.0, strict=True):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v > low if strict else v >= low)
        if not ok:
            raise ValueError(f"{name}: got {v!r}; allowed: a finite number {'>' if strict else '>='} {low}")

    num("tau_s", tau_s)
    num("theta", theta)
    num("delta_theta", delta_theta, strict=False)
    num("t_max", t_max)
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, int) or max_spikes < 1:
        raise ValueError(f"max_spikes: got {max_spikes!r}; allowed: an integer >= 1 (the per-neuron spike buffer)")


def check_spike_times(t: torch.Tensor, name: str = "t_in") -> None:
    """Padded spike times ``[B, N, S]``: finite and >= 0, or ``+inf`` (no spike); one ``ValueError`` otherwise."""
    if not torch.is_tensor(t) or not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor of spike times [B, N, S], got "
                         f"{getattr(t, 'dtype', type(t).__name__)}")
    if t.dim() != 3:
        hint = " (a [T, B, ...] spike train? BATS layers take spike times, not a time grid)" if t.dim() > 3 else ""
        raise ValueError(f"{name}: expected spike times [B, N, S] (S spikes per neuron, +inf padding), got shape "
                         f"{tuple(t.shape)}{hint}")
    if torch.compiler.is_compiling():  # values are data: checked in eager runs only
        return
    d = t.detach()
    bad = torch.isnan(d) | (d < 0)  # -inf is < 0
    if bool(bad.any()):
        v = d[bad][0].item()
        raise ValueError(f"{name}: got a spike time of {v!r}; allowed: finite times >= 0, or +inf for 'no spike'")


def sort_spikes(t_in: torch.Tensor):
    """Every sample's input spikes sorted by time: ``(t_sorted [B, L], perm [B, L], n_in [B])`` with
    ``L = N * S``, ``perm`` the flat index ``n * S + s`` of each sorted spike and ``n_in`` the finite ones."""
    B = t_in.shape[0]
    t_sorted, perm = torch.sort(t_in.reshape(B, -1), dim=1, stable=True)
    n_in = torch.isfinite(t_sorted).sum(1)
    return t_sorted, perm, n_in


# ---------------------------------------------------------------------------------------------- reference
def bats_layer_reference(t_in: torch.Tensor, weight: torch.Tensor, tau_s: float, theta: float,
                         delta_theta: float | None = None, t_max: float = 1.0, max_spikes: int = 30, *,
                         recurrent_grad: bool = True) -> BATSOutput:
    """The definition of truth (slow: a Python loop over samples, neurons and input spikes).

    ``weight [M, N]``; ``theta``/``delta_theta`` are the code's hatted values (divided by ``tau = 2 tau_s``
    here; ``delta_theta`` defaults to ``theta``).  Differentiable in ``t_in`` and ``weight`` by autograd.
    ``recurrent_grad=False`` detaches the resets (drops the errors through a neuron's own earlier spikes): only
    for the test that shows they are needed.
    """
    delta_theta = theta if delta_theta is None else delta_theta
    check_bats_params(tau_s, theta, delta_theta, t_max, max_spikes)
    check_spike_times(t_in)
    _check_weight(weight, t_in)
    tau = 2.0 * tau_s
    c, delta = theta / tau, delta_theta / tau
    B, M, S = t_in.shape[0], weight.shape[0], max_spikes
    t_sorted, perm, n_in = sort_spikes(t_in)
    src = perm // t_in.shape[2]
    t_fin = torch.where(torch.isfinite(t_sorted), t_sorted, torch.zeros_like(t_sorted))  # no inf * 0 in backward
    A = torch.exp(t_fin / tau_s)
    E = torch.exp(t_fin / tau)
    inf = torch.full((), math.inf, dtype=t_in.dtype, device=t_in.device)
    rows, counts, dropped = [], [], []
    for b in range(B):
        nb = int(n_in[b])
        ts = t_sorted[b, :nb].tolist()
        for m in range(M):
            w = weight[m, src[b, :nb]]
            ca = torch.zeros((), dtype=t_in.dtype, device=t_in.device)
            cb = torch.zeros_like(ca)
            spikes, drop = [], False
            for i in range(nb):
                ca = ca + w[i] * A[b, i]
                cb = cb + w[i] * E[b, i]
                lo = ts[i]
                nxt = ts[i + 1] if i + 1 < nb else math.inf
                while True:
                    disc = cb * cb - 4.0 * ca * c
                    if disc.item() < 0.0:
                        break
                    x = torch.sqrt(disc)
                    den = x + cb
                    if den.item() == 0.0:
                        break
                    z = 2.0 * ca / den
                    if z.item() <= 0.0:
                        break
                    t = tau * torch.log(z)
                    tv = t.item()
                    if tv <= lo or tv > t_max or tv > nxt:
                        break
                    if len(spikes) == S:
                        drop = True
                        break
                    spikes.append(t)
                    lo = tv
                    cb = cb - delta * (z if recurrent_grad else z.detach())
                if drop:
                    break
            counts.append(len(spikes))
            dropped.append(drop)
            rows.append(torch.stack(spikes + [inf] * (S - len(spikes))))
    times = torch.stack(rows).reshape(B, M, S)
    return BATSOutput(times, torch.tensor(counts, device=t_in.device).reshape(B, M),
                      torch.tensor(dropped, device=t_in.device).reshape(B, M))


def _check_weight(weight, t_in):
    if not torch.is_tensor(weight) or weight.dim() != 2 or weight.shape[1] != t_in.shape[1]:
        raise ValueError(f"weight: expected [M, N] with N = {t_in.shape[1]} input neurons, got "
                         f"{tuple(getattr(weight, 'shape', ()))}")


# ---------------------------------------------------------------------------------------------- fused (numba)
class BATSLayerFn(torch.autograd.Function):
    """Forward and exact backward of one BATS layer on the fused numba kernels (float64 inside)."""

    @staticmethod
    def forward(ctx, t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes):
        from ..kernels.bats_numba import kernels, sync_threads

        K = kernels()
        tau = 2.0 * tau_s
        B, M, S = t_in.shape[0], weight.shape[0], max_spikes
        t_sorted, perm, n_in = sort_spikes(t_in.detach().double())
        L = int(n_in.max()) if B else 0  # the padding (+inf) sorts last and is never read
        t_sorted, perm = t_sorted[:, :L].contiguous(), perm[:, :L].contiguous()
        src = perm // t_in.shape[2]
        A = torch.exp(t_sorted / tau_s)
        E = torch.exp(t_sorted / tau)
        W = weight.detach().double().contiguous()
        out_t = torch.full((B, M, S), math.inf, dtype=torch.float64)
        out_z = torch.zeros((B, M, S), dtype=torch.float64)
        out_x = torch.ones((B, M, S), dtype=torch.float64)
        out_n = torch.zeros((B, M, S), dtype=torch.int64)
        count = torch.zeros((B, M), dtype=torch.int64)
        dropped = torch.zeros((B, M), dtype=torch.uint8)
        sync_threads(B * M * max(1, L))
        K.bats_fwd(t_sorted.numpy(), A.numpy(), E.numpy(), src.numpy(), n_in.numpy(), W.numpy(), theta / tau,
                   delta_theta / tau, tau, float(t_max), out_t.numpy(), out_z.numpy(), out_x.numpy(),
                   out_n.numpy(), count.numpy(), dropped.numpy())
        ctx.save_for_backward(perm, A, E, src, n_in, W, out_z, out_x, out_n, count)
        ctx.consts = (tau_s, tau, delta_theta / tau, tuple(t_in.shape), t_in.dtype, weight.dtype)
        ctx.mark_non_differentiable(count, dropped)
        return out_t.to(t_in.dtype), count, dropped.bool()

    @staticmethod
    def backward(ctx, g_t, _g_count=None, _g_dropped=None):
        from ..kernels.bats_numba import kernels, sync_threads

        K = kernels()
        perm, A, E, src, n_in, W, out_z, out_x, out_n, count = ctx.saved_tensors
        tau_s, tau, delta, in_shape, in_dtype, w_dtype = ctx.consts
        g = g_t.double()
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g)).contiguous()  # padding carries no error
        P = torch.zeros_like(g)
        Q = torch.zeros_like(g)
        B, M = g.shape[0], g.shape[1]
        sync_threads(B * M * max(1, int(n_in.max()) if B else 1))
        K.bats_bwd_spikes(g.numpy(), out_z.numpy(), out_x.numpy(), count.numpy(), delta, tau, P.numpy(),
                          Q.numpy())
        d_in = d_w = None
        if ctx.needs_input_grad[1]:
            dW = torch.zeros_like(W)
            K.bats_bwd_weight(P.numpy(), Q.numpy(), out_n.numpy(), count.numpy(), A.numpy(), E.numpy(),
                              src.numpy(), dW.numpy())
            d_w = dW.to(w_dtype)
        if ctx.needs_input_grad[0]:
            dt_sorted = torch.zeros_like(A)
            K.bats_bwd_input(P.numpy(), Q.numpy(), out_n.numpy(), count.numpy(), A.numpy(), E.numpy(),
                             src.numpy(), W.numpy(), tau_s, tau, dt_sorted.numpy())
            d_flat = dt_sorted.new_zeros(in_shape[0], in_shape[1] * in_shape[2]).scatter_(1, perm, dt_sorted)
            d_in = d_flat.reshape(in_shape).to(in_dtype)
        return d_in, d_w, None, None, None, None, None


def bats_layer(t_in: torch.Tensor, weight: torch.Tensor, tau_s: float, theta: float,
               delta_theta: float | None = None, t_max: float = 1.0, max_spikes: int = 30) -> BATSOutput:
    """Output spike times of a layer of BATS neurons (fused numba kernels, CPU tensors).

    ``t_in [B, N, S_in]`` padded input spike times (any order, ``+inf`` = none); ``weight [M, N]``;
    ``theta``, ``delta_theta`` (default ``theta``) the code's hatted threshold and reset; ``t_max`` the end of
    the simulation.  Returns :class:`BATSOutput` (times in ``t_in``'s dtype, differentiable in ``t_in`` and
    ``weight``).  The same neuron as :func:`bats_layer_reference`, computed in float64.
    """
    delta_theta = theta if delta_theta is None else delta_theta
    check_bats_params(tau_s, theta, delta_theta, t_max, max_spikes)
    check_spike_times(t_in)
    _check_weight(weight, t_in)
    for name, v in (("t_in", t_in), ("weight", weight)):
        if v.device.type != "cpu":
            raise ValueError(f"{name}: on {v.device}; the BATS kernels are CPU-only (numba): move the model and "
                             "data to the CPU (run.device=cpu)")
    fn = BATSLayerFn.apply
    if torch.compiler.is_compiling():  # numba cannot be traced: the same kernels as opaque operators
        from ..kernels.ops import bats_layer_op as fn
    times, counts, dropped = fn(t_in, weight, float(tau_s), float(theta), float(delta_theta), float(t_max),
                                int(max_spikes))
    return BATSOutput(times, counts, dropped)


# ---------------------------------------------------------------------------------------------- losses
def spike_count_loss(out: BATSOutput, y: torch.Tensor, n_true: float = 15.0, n_false: float = 3.0) -> torch.Tensor:
    r"""The code's spike-count loss :math:`\frac{1}{B}\sum_b \frac12 \sum_i (n^{target}_{bi} - n_{bi})^2`
    (``n_true`` spikes for the label, ``n_false`` for the others).  Its gradient is the code's heuristic: each
    output spike of neuron :math:`i` gets the time error :math:`\partial L/\partial t = (n^{target} - n)/B`
    (too few spikes: move them earlier, which makes room for more)."""
    n = out.counts.to(out.times.dtype)
    target = torch.full_like(n, float(n_false))
    target[torch.arange(len(y), device=y.device), y] = float(n_true)
    err = (target - n) / len(y)
    value = 0.5 * ((target - n) ** 2).sum() / len(y)
    fin = torch.isfinite(out.times)
    t = torch.where(fin, out.times, torch.zeros_like(out.times))
    surrogate = (t * err.unsqueeze(-1) * fin).sum()
    return value + (surrogate - surrogate.detach())


def ttfs_loss(out: BATSOutput, y: torch.Tensor, tau: float = 0.005, t_silent: float = 1.0) -> torch.Tensor:
    r"""Time-to-first-spike cross-entropy (the code's ``TTFSSoftmaxCrossEntropy``): softmax over
    :math:`-t^{(1)}_i/\tau`.  A silent output neuron counts as a first spike at ``t_silent`` (the end of the
    simulation; no gradient), where the code's :math:`e^{-\infty} = 0` would make an all-silent sample's loss
    infinite."""
    t1 = out.times[..., 0]
    t1 = torch.where(torch.isfinite(t1), t1, torch.full_like(t1, float(t_silent)))
    return torch.nn.functional.cross_entropy(-t1 / tau, y)
