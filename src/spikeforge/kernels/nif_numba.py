r"""Fused CPU kernels (numba) of the NIF closed form: :func:`nif_spike_time_numba` computes what
:func:`spikeforge.functional.nif.nif_spike_time` (the definition of truth) computes, with its gradients.

The reference forms every prefix candidate of every (sample, neuron) pair at once (``[B, N, M]`` tensors: the
weights gathered in each sample's input order), which is memory-bound on CPU.  Here each (row, neuron) pair walks
its row's inputs in time order once and stops at the first valid candidate (candidates live in disjoint,
increasing intervals ``[z_k, z_{k+1}]``, so the first valid one is the smallest); the backward walks only the
causal set.  float64 inside (one compiled variant), results in the input's dtype; CPU tensors only.

Rows: a sample (dense layer) or an im2col patch (conv layer, see :func:`nif_conv2d_numba`).
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

_lock = threading.Lock()
_MOD = None

SOURCE = '''\
import numba as nb
import numpy as np
from numba import prange

JIT = dict(nogil=True, cache=CACHE, error_model="numpy")


@nb.njit(parallel=True, **JIT)
def nif_fwd(z_s, src, W, bw, theta, sentinel, z_out, n_caus, wsum):
    R = z_s.shape[0]
    N = z_s.shape[1]
    M = W.shape[0]
    for p in prange(R * M):
        r = p // M
        m = p - r * M
        Wk = bw[m]
        Pk = bw[m]  # the bias input at z = 1
        best = sentinel
        kk = 0
        ws = 0.0
        for k in range(N + 1):
            if k > 0:
                w = W[m, src[r, k - 1]]
                zk = z_s[r, k - 1]
                Wk += w
                Pk += w * zk
            else:
                zk = 1.0
            znext = z_s[r, k] if k < N else np.inf
            if Wk > theta:
                zh = Pk / (Wk - theta)
                if zh >= zk and zh <= znext:
                    best = zh
                    kk = k
                    ws = Wk
                    break
        z_out[r, m] = best
        n_caus[r, m] = kk
        wsum[r, m] = ws


@nb.njit(parallel=True, **JIT)
def nif_bwd_weight(g, z_s, src, z_out, n_caus, wsum, theta, dW, dbw):
    R = g.shape[0]
    M = g.shape[1]
    for m in prange(M):
        for r in range(R):
            if wsum[r, m] == 0.0:
                continue
            d = g[r, m] / (wsum[r, m] - theta)
            zo = z_out[r, m]
            dbw[m] += d * (1.0 - zo)
            for i in range(n_caus[r, m]):
                dW[m, src[r, i]] += d * (z_s[r, i] - zo)


@nb.njit(parallel=True, **JIT)
def nif_bwd_input(g, src, W, n_caus, wsum, theta, dz):
    R = g.shape[0]
    M = g.shape[1]
    for r in prange(R):
        for m in range(M):
            if wsum[r, m] == 0.0:
                continue
            d = g[r, m] / (wsum[r, m] - theta)
            for i in range(n_caus[r, m]):
                dz[r, i] += d * W[m, src[r, i]]
'''


def kernels():
    global _MOD
    if _MOD is None:
        with _lock:
            if _MOD is None:
                from .runtime import load_fixed_source, start_numba
                start_numba()
                _MOD = load_fixed_source("nif", "nif_float64", SOURCE, "spikeforge_nif")
    return _MOD


class NIFSpikeTimeFn(torch.autograd.Function):
    """``z_in [R, N]``, ``weight [M, N]``, ``bias_weight [M]`` -> ``z_out [R, M]`` (fused; float64 inside)."""

    @staticmethod
    def forward(ctx, z_in, weight, bias_weight, theta):
        from ..functional.nif import SENTINEL
        from .runtime import sync_threads

        K = kernels()
        z_s, perm = torch.sort(z_in.detach().double(), dim=1, stable=True)
        W = weight.detach().double().contiguous()
        bw = bias_weight.detach().double().contiguous()
        R, M = z_s.shape[0], W.shape[0]
        z_out = torch.empty((R, M), dtype=torch.float64)
        n_caus = torch.empty((R, M), dtype=torch.int64)
        wsum = torch.empty((R, M), dtype=torch.float64)
        sync_threads(R * M * 16)
        K.nif_fwd(z_s.numpy(), perm.numpy(), W.numpy(), bw.numpy(), float(theta), SENTINEL, z_out.numpy(),
                  n_caus.numpy(), wsum.numpy())
        ctx.save_for_backward(z_s, perm, W, z_out, n_caus, wsum)
        ctx.consts = (float(theta), z_in.dtype, weight.dtype, bias_weight.dtype)
        return z_out.to(z_in.dtype)

    @staticmethod
    def backward(ctx, g):
        K = kernels()
        z_s, perm, W, z_out, n_caus, wsum = ctx.saved_tensors
        theta, z_dtype, w_dtype, b_dtype = ctx.consts
        g = g.double().contiguous()
        d_z = d_w = d_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dW = torch.zeros_like(W)
            dbw = torch.zeros(W.shape[0], dtype=torch.float64)
            K.nif_bwd_weight(g.numpy(), z_s.numpy(), perm.numpy(), z_out.numpy(), n_caus.numpy(), wsum.numpy(),
                             theta, dW.numpy(), dbw.numpy())
            d_w, d_b = dW.to(w_dtype), dbw.to(b_dtype)
        if ctx.needs_input_grad[0]:
            dz_s = torch.zeros_like(z_s)
            K.nif_bwd_input(g.numpy(), perm.numpy(), W.numpy(), n_caus.numpy(), wsum.numpy(), theta, dz_s.numpy())
            d_z = torch.zeros_like(dz_s).scatter_(1, perm, dz_s).to(z_dtype)
        return d_z, d_w, d_b, None


def nif_spike_time_numba(z_in: torch.Tensor, weight: torch.Tensor, bias_weight: torch.Tensor | None = None,
                         theta: float = 1.0) -> torch.Tensor:
    """:func:`spikeforge.functional.nif.nif_spike_time` on the fused kernels (same arguments and checks)."""
    from ..functional._checks import check_number
    from ..functional.nif import _check_z

    check_number("theta", theta, low=0.0, low_inclusive=False, allow_tensor=False)
    _check_z(z_in)
    if weight.dim() != 2 or weight.shape[1] != z_in.shape[-1]:
        raise ValueError(f"weight: expected [M, N] with N = z_in.shape[-1] = {z_in.shape[-1]}, got "
                         f"{tuple(weight.shape)}")
    for name, v in (("z_in", z_in), ("weight", weight)):
        if v.device.type != "cpu":
            raise ValueError(f"{name}: on {v.device}; the fused NIF kernels are CPU-only (use backend='reference')")
    M = weight.shape[0]
    bw = torch.zeros(M, dtype=weight.dtype) if bias_weight is None else bias_weight
    lead = z_in.shape[:-1]
    fn = NIFSpikeTimeFn.apply
    if torch.compiler.is_compiling():  # numba cannot be traced: the same kernels as opaque operators
        from .ops import nif_spike_time_op as fn
    out = fn(z_in.reshape(-1, z_in.shape[-1]), weight, bw, float(theta))
    return out.reshape(*lead, M)


def nif_conv2d_numba(z_in, weight, bias_weight=None, theta=1.0, stride=1, padding=0) -> torch.Tensor:
    """:func:`spikeforge.functional.nif.nif_conv2d` on the fused kernels: the same im2col patches (padding never
    fires before the sentinel), each patch a row of :func:`nif_spike_time_numba`."""
    from ..functional.nif import SENTINEL, _check_z

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
    z_out = nif_spike_time_numba(cols.transpose(1, 2), weight.reshape(M, -1), bias_weight, theta)
    return z_out.transpose(1, 2).reshape(B, M, Ho, Wo)


__all__ = ["nif_spike_time_numba", "nif_conv2d_numba", "NIFSpikeTimeFn"]
