r"""Fused CPU backend (numba): forward and hand-written backward of the LIF family over a whole sequence.

Same recurrence as :mod:`spikeforge.kernels.reference` (written with the same floating-point operation
order, so spikes are bit-identical).  The kernels are parallel over blocks of neurons (``prange``) and
sequential in time; inside a block the neuron loop is contiguous so LLVM vectorises it.

Memory: the forward saves only the pre-reset membrane :math:`h_t` (4 B/element in float32) plus the initial
state; the backward recomputes :math:`s_t = [h_t \ge \vartheta]`, :math:`v_{t-1}` and the surrogate from it.

Why numba: it ships as a wheel (no compiler at install time), JIT-compiles on first use, runs the loops
multi-threaded without the GIL, and the surrogate derivative is the very function written in
:mod:`spikeforge.surrogate`, bound to scalar math.  Compilation happens lazily on the first call of each
(surrogate, dtype) and is excluded from benchmarks.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from ..surrogate import Surrogate, bind

BLOCK = 256
_lock = threading.Lock()
_FWD = None
_BWD: dict = {}


def _numba():
    import numba

    return numba


def _scalar_math():
    nb = _numba()

    @nb.njit(inline="always")
    def relu(x):
        return x if x > 0.0 else 0.0 * x

    @nb.njit(inline="always")
    def step(x):
        return 1.0 if x > 0.0 else 0.0

    return {"exp": math.exp, "absf": abs, "relu": relu, "step": step, "PI": math.pi,
            "SQRT_PI": math.sqrt(math.pi)}


def _build_forward():
    nb = _numba()

    @nb.njit(parallel=True, nogil=True, cache=True)
    def lif_fwd(x, v0, k, vth, v_reset, hard, decay_input, save_h, save_v, s, h_out, v_seq, v_last, bad):
        # vr0 = v_reset for hard reset; the caller passes 0 for soft reset, so v_reset is vr0 here.
        T, N = x.shape
        nblk = (N + BLOCK - 1) // BLOCK
        one = v_reset - v_reset + 1
        zero = v_reset - v_reset
        for b in nb.prange(nblk):
            n0 = b * BLOCK
            n1 = min(n0 + BLOCK, N)
            m = n1 - n0
            v = v0[n0:n1].copy()
            kb = k[n0:n1].copy() if k.shape[0] > 1 else np.full(m, k[0])
            thb = vth[n0:n1].copy() if vth.shape[0] > 1 else np.full(m, vth[0])
            acc = np.zeros(m, dtype=x.dtype)
            scratch_h = np.empty(m, dtype=x.dtype)
            scratch_v = np.empty(m, dtype=x.dtype)
            for t in range(T):
                xr = x[t, n0:n1]
                sr = s[t, n0:n1]
                hr = h_out[t, n0:n1] if save_h else scratch_h
                vsr = v_seq[t, n0:n1] if save_v else scratch_v
                for j in range(m):
                    xt = xr[j]
                    vj = v[j]
                    kk = kb[j]
                    th = thb[j]
                    h_di = vj + (xt - (vj - v_reset)) * kk
                    h_nd = vj - (vj - v_reset) * kk + xt
                    hj = h_di if decay_input else h_nd
                    fired = hj >= th
                    sr[j] = one if fired else zero
                    hr[j] = hj
                    vr = v_reset if hard else hj - th
                    vj = vr if fired else hj
                    v[j] = vj
                    vsr[j] = vj
                    acc[j] += xt * zero  # NaN iff some x was NaN or inf
            v_last[n0:n1] = v
            for j in range(m):
                if acc[j] != zero:
                    bad[b] = 1

    return lif_fwd


def _build_backward(grad_src):
    nb = _numba()
    sg = nb.njit(inline="always")(bind(grad_src, _scalar_math()))

    @nb.njit(parallel=True, nogil=True)
    def lif_bwd(gs, gvseq, gvlast, h, v0, k, vth, v_reset, hard, decay_input, detach, alpha,
                need_k, need_th, gx, gv0, gk, gth):
        T, N = gs.shape
        nblk = (N + BLOCK - 1) // BLOCK
        has_gvseq = gvseq.shape[0] > 0
        one = v_reset - v_reset + 1
        zero = v_reset - v_reset
        hf = one if hard else zero  # hard-reset flag as a number
        nd = zero if detach else one  # reset carries gradient
        di = one if decay_input else zero
        for b in nb.prange(nblk):
            n0 = b * BLOCK
            n1 = min(n0 + BLOCK, N)
            m = n1 - n0
            kb = k[n0:n1].copy() if k.shape[0] > 1 else np.full(m, k[0])
            thb = vth[n0:n1].copy() if vth.shape[0] > 1 else np.full(m, vth[0])
            dv = gvlast[n0:n1].copy()
            dk = np.zeros(m, dtype=h.dtype)
            dth = np.zeros(m, dtype=h.dtype)
            zrow = np.zeros(m, dtype=h.dtype)
            for t in range(T - 1, -1, -1):
                gsr = gs[t, n0:n1]
                gvr = gvseq[t, n0:n1] if has_gvseq else zrow
                hr = h[t, n0:n1]
                hpr = h[t - 1, n0:n1] if t > 0 else hr
                gxr = gx[t, n0:n1]
                for j in range(m):
                    kk = kb[j]
                    th = thb[j]
                    hj = hr[j]
                    g = sg(hj - th, alpha)
                    sj = one if hj >= th else zero
                    dvj = dv[j] + gvr[j]
                    # dv_t/dh_t and dv_t/dth through the reset (hard: v = h(1-s) + vr s; soft: v = h - th s)
                    dvdh = hf * ((one - sj) + nd * (v_reset - hj) * g) + (one - hf) * (one - nd * th * g)
                    dvdth = hf * (-nd * (v_reset - hj) * g) + (one - hf) * (nd * th * g - sj)
                    dh = gsr[j] * g + dvj * dvdh
                    dth[j] += dvj * dvdth - gsr[j] * g
                    # v_{t-1}, recomputed from h_{t-1} (or the initial state)
                    hp = hpr[j]
                    vp_reset = v_reset if hard else hp - th
                    vp = (vp_reset if hp >= th else hp) if t > 0 else v0[n0 + j]
                    gxr[j] = dh * (di * kk + (one - di))
                    kdiv = kk if decay_input else one
                    dk[j] += dh * (di * ((hj - vp) / kdiv) - (one - di) * (vp - v_reset))
                    dv[j] = dh * (one - kk)
            gv0[n0:n1] = dv
            if need_k:
                gk[n0:n1] = dk
            if need_th:
                gth[n0:n1] = dth

    return lif_bwd


def _forward_kernel():
    global _FWD
    with _lock:
        if _FWD is None:
            _FWD = _build_forward()
    return _FWD


def _backward_kernel(surrogate: Surrogate):
    key = surrogate.grad_source
    with _lock:
        fn = _BWD.get(key)
        if fn is None:
            fn = _BWD[key] = _build_backward(surrogate.grad_source)
    return fn


def is_available() -> bool:
    try:
        _numba()
    except ImportError:
        return False
    return True


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _param_vec(p, like: torch.Tensor, N: int, shape) -> torch.Tensor:
    """A parameter as a flat vector of length 1 (shared) or N (per neuron, broadcast over [B, ...])."""
    if not torch.is_tensor(p):
        return torch.full((1,), float(p), dtype=like.dtype)
    p = p.detach().to(like.dtype)
    if p.numel() == 1:
        return p.reshape(1).contiguous()
    return p.expand(shape).reshape(N).contiguous()


class LIFFamilyCpuFn(torch.autograd.Function):
    """Fused forward/backward. ``k`` and ``v_th`` are floats or tensors broadcastable to ``x_seq.shape[1:]``."""

    @staticmethod
    def forward(ctx, x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
        T = x_seq.shape[0]
        shape = x_seq.shape[1:]
        N = int(np.prod(shape)) if len(shape) else 1
        x2 = x_seq.detach().reshape(T, N).contiguous()
        v0f = v0.detach().reshape(N).contiguous()
        kv = _param_vec(k, x2, N, shape)
        tv = _param_vec(v_th, x2, N, shape)
        hard = v_reset is not None
        vr = float(v_reset) if hard else 0.0
        need_grad = torch.is_grad_enabled() or any(ctx.needs_input_grad)
        s = torch.empty_like(x2)
        h = torch.empty_like(x2) if need_grad else x2.new_empty((0, 0))
        v_seq = torch.empty_like(x2) if return_v else x2.new_empty((0, 0))
        v_last = torch.empty_like(v0f)
        bad = np.zeros((N + BLOCK - 1) // BLOCK, dtype=np.uint8)
        vr_arr = np.array(vr, dtype=_np(x2).dtype)[()]
        _forward_kernel()(_np(x2), _np(v0f), _np(kv), _np(tv), vr_arr, hard, decay_input, need_grad,
                          return_v, _np(s), _np(h), _np(v_seq), _np(v_last), bad)
        if check and bad.any():
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        ctx.save_for_backward(h, v0f, kv, tv)
        ctx.cfg = (T, N, shape, hard, vr, decay_input, detach_reset, surrogate, return_v)
        ctx.k_shape = k.shape if torch.is_tensor(k) else None
        ctx.th_shape = v_th.shape if torch.is_tensor(v_th) else None
        outs = [s.reshape(x_seq.shape), v_last.reshape(v0.shape)]
        outs.append(v_seq.reshape(x_seq.shape) if return_v else None)
        return tuple(outs)

    @staticmethod
    def backward(ctx, gs, gvlast, gvseq):
        h, v0f, kv, tv = ctx.saved_tensors
        T, N, shape, hard, vr, decay_input, detach, surrogate, return_v = ctx.cfg
        gs2 = (gs if gs is not None else h.new_zeros(T, N)).reshape(T, N).contiguous()
        gvl = (gvlast if gvlast is not None else h.new_zeros(N)).reshape(N).contiguous()
        gvs = gvseq.reshape(T, N).contiguous() if (return_v and gvseq is not None) else h.new_empty((0, 0))
        need_k = bool(ctx.needs_input_grad[2])
        need_th = bool(ctx.needs_input_grad[3])
        gx = torch.empty_like(gs2)
        gv0 = torch.empty_like(gvl)
        gk = torch.empty(N if need_k else 0, dtype=h.dtype)
        gth = torch.empty(N if need_th else 0, dtype=h.dtype)
        dt = _np(h).dtype
        _backward_kernel(surrogate)(
            _np(gs2), _np(gvs), _np(gvl), _np(h), _np(v0f), _np(kv), _np(tv), np.array(vr, dtype=dt)[()],
            hard, decay_input, detach, np.array(surrogate.alpha, dtype=dt)[()], need_k, need_th,
            _np(gx), _np(gv0), _np(gk), _np(gth),
        )
        grad_k = _reduce_param(gk, shape, ctx.k_shape) if need_k else None
        grad_th = _reduce_param(gth, shape, ctx.th_shape) if need_th else None
        return (gx.reshape((T, *shape)), gv0.reshape(shape), grad_k, grad_th,
                None, None, None, None, None, None)


def _reduce_param(g_per_neuron: torch.Tensor, shape, p_shape) -> torch.Tensor:
    g = g_per_neuron.reshape(shape)
    return g.sum_to_size(p_shape) if len(p_shape) else g.sum()


def lif_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v=False, check=True):
    if x_seq.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"backend='cpu': dtype {x_seq.dtype} is not supported (float32, float64); "
            "use backend='reference' or 'auto' for half precision"
        )
    if x_seq.device.type != "cpu":
        raise ValueError(f"backend='cpu': x_seq is on {x_seq.device}; the cpu backend needs CPU tensors")
    s, v_last, v_seq = LIFFamilyCpuFn.apply(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset,
                                             surrogate, return_v, check)
    return s, v_last, v_seq
