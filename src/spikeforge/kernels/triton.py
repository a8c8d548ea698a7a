r"""Triton backend (CUDA): fused forward and hand-written backward of the LIF family.

The same algorithm as :mod:`spikeforge.kernels.cpu`: one program per block of ``BLOCK`` neurons, sequential in
time.  The forward writes only the spikes (and ``v_seq`` when asked) and saves the input ``x`` for backward
(4 B/element in float32, no new memory); the backward re-runs the forward of its block into the gradient
buffer, then walks back in time overwriting each :math:`h_t` with :math:`\partial L/\partial x_t`.

Bit-identical spikes: every operation is written in the reference's order and the kernels are compiled with
``enable_fp_fusion=False`` (no FMA contraction).  Only float32 and float64 are supported (the reference rounds
half-precision per torch op, in float32 "opmath", which a fused kernel would not reproduce); ``auto`` sends
half precision to the reference.

The surrogate derivative is the very function written in :mod:`spikeforge.surrogate`, bound by
:func:`spikeforge.surrogate.bind` to ``tl`` math (``exp -> tl.exp``, constants as ``tl.constexpr``) and passed
to the backward kernel as a ``tl.constexpr`` function.

Tensors must be on a CUDA device; under ``TRITON_INTERPRET=1`` (Triton's interpreter) CPU tensors are
accepted too, which is how the tests run without a GPU.  See docs/kernels.md.

Example (needs a CUDA device and triton):
    >>> import torch
    >>> from spikeforge.functional import lif
    >>> x = torch.rand(8, 32, 1024, device="cuda")          # doctest: +SKIP
    >>> s, state = lif(x, backend="triton")                  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import threading

import torch

from ..surrogate import Surrogate, bind
from ._layout import is_const as _is_const
from ._layout import param_vec as _param_vec
from ._layout import state_vec as _state_vec

BLOCK = 256
_lock = threading.Lock()
_KERNELS: dict = {}
_SG: dict = {}


def is_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# fmt: off
def _tl_exp(x):
    return tl.exp(x)  # noqa: F821  (tl is bound by _tl_math, like every kernel below)


def _tl_abs(x):
    return tl.abs(x)  # noqa: F821


def _tl_relu(x):
    return tl.where(x > 0.0, x, 0.0)  # noqa: F821  (not 0 * x: NaN at -inf)


def _tl_step(x):
    return tl.where(x > 0.0, 1.0, 0.0)  # noqa: F821
# fmt: on


def _tl_math() -> dict:
    """The names a surrogate derivative may use (see :mod:`spikeforge.surrogate`), bound to Triton."""
    import triton
    import triton.language as tl

    ns = {"tl": tl}
    jit = {name: triton.jit(bind(fn, ns)) for name, fn in
           (("exp", _tl_exp), ("absf", _tl_abs), ("relu", _tl_relu), ("step", _tl_step))}
    return {**jit, "PI": tl.constexpr(math.pi), "SQRT_PI": tl.constexpr(math.sqrt(math.pi)), "tl": tl}


def surrogate_fn(surrogate: Surrogate):
    """The surrogate's derivative source as a ``triton.jit`` function ``(u, alpha) -> g'(u)``."""
    import triton

    key = (surrogate.grad_source, _interpret())
    with _lock:
        fn = _SG.get(key)
        if fn is None:
            mkey = ("math", _interpret())
            if mkey not in _KERNELS:
                _KERNELS[mkey] = _tl_math()
            fn = _SG[key] = triton.jit(bind(surrogate.grad_source, _KERNELS[mkey]))
    return fn


# The kernels are plain functions here, compiled by _build(): like the surrogates, their global names (tl, the
# helpers) are bound with surrogate.bind, so this module imports without triton and the interpreter/compiler
# choice (made by triton.jit at decoration) follows TRITON_INTERPRET at first use.
# fmt: off
def _charge(v, x, kk, vr, DECAY: tl.constexpr):
    # h_t: the same operation order as kernels/reference.py, so spikes are bit-identical
    if DECAY:
        h = v + (x - (v - vr)) * kk
    else:
        h = v - (v - vr) * kk + x
    return h


def _vec_or_scalar(ptr, offs, mask, zero, VEC: tl.constexpr):
    if VEC:
        out = tl.load(ptr + offs, mask=mask, other=0.0)
    else:
        out = zero + tl.load(ptr)
    return out


def lif_fwd(x_ptr, v0_ptr, k_ptr, th_ptr, vr_ptr, s_ptr, vseq_ptr, vlast_ptr, bad_ptr, T, N,
            HARD: tl.constexpr, DECAY: tl.constexpr, SAVE_V: tl.constexpr, V0_VEC: tl.constexpr,
            K_VEC: tl.constexpr, TH_VEC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.full([BLOCK], 0.0, dtype=x_ptr.dtype.element_ty)
    vr = tl.load(vr_ptr)
    v = _vec_or_scalar(v0_ptr, offs, mask, zero, V0_VEC)
    kk = _vec_or_scalar(k_ptr, offs, mask, zero, K_VEC)
    th = _vec_or_scalar(th_ptr, offs, mask, zero, TH_VEC)
    acc = zero
    for t in range(T):
        row = tl.cast(t, tl.int64) * N
        x = tl.load(x_ptr + row + offs, mask=mask, other=0.0)
        h = _charge(v, x, kk, vr, DECAY)
        fired = h >= th
        tl.store(s_ptr + row + offs, tl.where(fired, 1.0, 0.0).to(x.dtype), mask=mask)
        if HARD:
            v = tl.where(fired, vr + zero, h)
        else:
            v = tl.where(fired, h - th, h)
        if SAVE_V:
            tl.store(vseq_ptr + row + offs, v, mask=mask)
        acc += x * 0.0  # NaN iff some x was NaN or inf
    tl.store(vlast_ptr + offs, v, mask=mask)
    tl.store(bad_ptr + offs, (acc != 0.0).to(tl.int8), mask=mask)

def _bwd_step(x_ptr, gs_ptr, gvseq_ptr, gx_ptr, row, offs, mask, h, vp, dv, dk, dth, kk, th, vr, alpha, gs_c,
              zero, SG: tl.constexpr, HARD: tl.constexpr, DECAY: tl.constexpr, DETACH: tl.constexpr,
              GS_CONST: tl.constexpr, HAS_GVSEQ: tl.constexpr):
    """One step of the reverse sweep at time t (row = t * N): returns dL/dv_{t-1} and the accumulators."""
    x = tl.load(x_ptr + row + offs, mask=mask, other=0.0)
    if GS_CONST:
        gs = gs_c
    else:
        gs = tl.load(gs_ptr + row + offs, mask=mask, other=0.0)
    if HAS_GVSEQ:
        dv += tl.load(gvseq_ptr + row + offs, mask=mask, other=0.0)
    u = h - th
    g = SG(u, alpha).to(x.dtype)
    sj = tl.where(u >= 0.0, 1.0, 0.0).to(x.dtype)
    # hard: v = h (1 - s) + v_r s;  soft: v = h - th s;  s carries g unless detached
    if DETACH:
        ngc = zero
    elif HARD:
        ngc = (vr - h) * g
    else:
        ngc = -th * g
    gsg = gs * g
    if HARD:
        dh = gsg + dv * ((1.0 - sj) + ngc)
        dth += -dv * ngc - gsg
    else:
        dh = gsg + dv * (1.0 + ngc)
        dth += -dv * ngc - dv * sj - gsg
    if DECAY:
        dk += dh * (x - (vp - vr))
        tl.store(gx_ptr + row + offs, dh * kk, mask=mask)
    else:
        dk -= dh * (vp - vr)
        tl.store(gx_ptr + row + offs, dh, mask=mask)
    return dh * (1.0 - kk), dk, dth


def lif_bwd(x_ptr, gs_ptr, gvseq_ptr, gvlast_ptr, v0_ptr, k_ptr, th_ptr, sc_ptr, gx_ptr, gv0_ptr, gk_ptr,
            gth_ptr, T, N, SG: tl.constexpr, HARD: tl.constexpr, DECAY: tl.constexpr,
            DETACH: tl.constexpr, GS_CONST: tl.constexpr, HAS_GVSEQ: tl.constexpr,
            HAS_GVLAST: tl.constexpr, NEED_K: tl.constexpr, NEED_TH: tl.constexpr,
            V0_VEC: tl.constexpr, K_VEC: tl.constexpr, TH_VEC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    zero = tl.full([BLOCK], 0.0, dtype=x_ptr.dtype.element_ty)
    vr = tl.load(sc_ptr)
    alpha = tl.load(sc_ptr + 1)
    vinit = _vec_or_scalar(v0_ptr, offs, mask, zero, V0_VEC)
    kk = _vec_or_scalar(k_ptr, offs, mask, zero, K_VEC)
    th = _vec_or_scalar(th_ptr, offs, mask, zero, TH_VEC)
    # 1. recompute h_t (bit-identical to the forward) into gx
    v = vinit
    for t in range(T):
        row = tl.cast(t, tl.int64) * N
        x = tl.load(x_ptr + row + offs, mask=mask, other=0.0)
        h = _charge(v, x, kk, vr, DECAY)
        tl.store(gx_ptr + row + offs, h, mask=mask)
        if HARD:
            v = tl.where(h >= th, vr + zero, h)
        else:
            v = tl.where(h >= th, h - th, h)
    tl.debug_barrier()
    # 2. reverse sweep; dv holds dL/dv_t
    if HAS_GVLAST:
        dv = tl.load(gvlast_ptr + offs, mask=mask, other=0.0)
    else:
        dv = zero
    dk = zero.to(tl.float64)  # parameter gradients are sums over T (and later N): float64
    dth = zero.to(tl.float64)
    if GS_CONST:
        gs_c = zero + tl.load(gs_ptr)
    else:
        gs_c = zero
    h = tl.load(gx_ptr + tl.cast(T - 1, tl.int64) * N + offs, mask=mask, other=0.0)
    for i in range(T - 1):
        t = T - 1 - i
        hp = tl.load(gx_ptr + tl.cast(t - 1, tl.int64) * N + offs, mask=mask, other=0.0)
        if HARD:  # v_{t-1} from h_{t-1}
            vp = tl.where(hp >= th, vr + zero, hp)
        else:
            vp = tl.where(hp >= th, hp - th, hp)
        dv, dk, dth = _bwd_step(x_ptr, gs_ptr, gvseq_ptr, gx_ptr, tl.cast(t, tl.int64) * N, offs, mask, h, vp,
                                dv, dk, dth, kk, th, vr, alpha, gs_c, zero, SG, HARD, DECAY, DETACH, GS_CONST,
                                HAS_GVSEQ)
        h = hp
    dv, dk, dth = _bwd_step(x_ptr, gs_ptr, gvseq_ptr, gx_ptr, tl.cast(0, tl.int64) * N, offs, mask, h, vinit,
                            dv, dk, dth, kk, th, vr, alpha, gs_c, zero, SG, HARD, DECAY, DETACH, GS_CONST,
                            HAS_GVSEQ)
    tl.store(gv0_ptr + offs, dv, mask=mask)
    if NEED_K:
        tl.store(gk_ptr + offs, dk, mask=mask)
    if NEED_TH:
        tl.store(gth_ptr + offs, dth, mask=mask)
# fmt: on


def _build():
    import triton
    import triton.language as tl

    ns = {"tl": tl}
    ns["_vec_or_scalar"] = triton.jit(bind(_vec_or_scalar, ns))
    ns["_charge"] = triton.jit(bind(_charge, ns))
    ns["_bwd_step"] = triton.jit(bind(_bwd_step, ns))
    return triton.jit(bind(lif_fwd, ns)), triton.jit(bind(lif_bwd, ns))


def _kernels():
    key = ("lif", _interpret())  # triton.jit decides at decoration time whether to interpret
    with _lock:
        if key not in _KERNELS:
            _KERNELS[key] = _build()
        return _KERNELS[key]





def _compile_opts() -> dict:
    # Triton's interpreter takes no compile options; on the GPU, forbid FMA contraction (exact forward).
    return {} if _interpret() else {"enable_fp_fusion": False}


class LIFFamilyTritonFn(torch.autograd.Function):
    """Fused Triton forward/backward; arguments as :class:`spikeforge.kernels.cpu.LIFFamilyCpuFn`."""

    @staticmethod
    def forward(ctx, x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
        import triton

        fwd, _ = _kernels()
        T = x_seq.shape[0]
        shape = x_seq.shape[1:]
        N = math.prod(shape)
        x2 = x_seq.detach().reshape(T, N).contiguous()
        v0f = _state_vec(v0, N).to(x2.dtype)
        kv = _param_vec(k, x2, N, shape)
        tv = _param_vec(v_th, x2, N, shape)
        hard = v_reset is not None
        vr = float(v_reset) if hard else 0.0
        s = torch.empty_like(x2)
        v_seq = torch.empty_like(x2) if return_v else x2.new_empty(1)
        v_last = torch.empty(N, dtype=x2.dtype, device=x2.device)
        nprog = triton.cdiv(N, BLOCK)
        bad = torch.zeros(N, dtype=torch.int8, device=x2.device)
        vr_t = torch.full((1,), vr, dtype=x2.dtype, device=x2.device)
        if N > 0:
            fwd[(nprog,)](x2, v0f, kv, tv, vr_t, s, v_seq, v_last, bad, T, N, HARD=hard, DECAY=decay_input,
                          SAVE_V=return_v, V0_VEC=v0f.numel() > 1, K_VEC=kv.numel() > 1, TH_VEC=tv.numel() > 1,
                          BLOCK=BLOCK, **_compile_opts())
        if check and bool(bad.any()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        ctx.save_for_backward(x_seq, v0f, k.detach() if torch.is_tensor(k) else None,
                              v_th.detach() if torch.is_tensor(v_th) else None)
        ctx.cfg = (T, N, shape, hard, vr, decay_input, detach_reset, surrogate,
                   None if torch.is_tensor(k) else float(k), None if torch.is_tensor(v_th) else float(v_th))
        ctx.v0_shape = v0.shape
        return s.reshape(x_seq.shape), v_last.reshape(v0.shape), (v_seq.reshape(x_seq.shape) if return_v else None)

    @staticmethod
    def backward(ctx, gs, gvlast, gvseq):
        import triton

        _, bwd = _kernels()
        x_seq, v0f, k_t, th_t = ctx.saved_tensors
        T, N, shape, hard, vr, decay_input, detach, surrogate, k_f, th_f = ctx.cfg
        x2 = x_seq.detach().reshape(T, N).contiguous()
        kv = _param_vec(k_t if k_t is not None else k_f, x2, N, shape)
        tv = _param_vec(th_t if th_t is not None else th_f, x2, N, shape)
        need_k = bool(ctx.needs_input_grad[2])
        need_th = bool(ctx.needs_input_grad[3])
        dev, dt = x2.device, x2.dtype
        gx = torch.empty_like(x2)
        gv0 = torch.empty(N, dtype=dt, device=dev)
        gk = torch.empty(N if need_k else 1, dtype=torch.float64, device=dev)  # sums over T: float64
        gth = torch.empty(N if need_th else 1, dtype=torch.float64, device=dev)
        if gs is None:
            gs_const, gs_a = True, torch.zeros(1, dtype=dt, device=dev)
        elif _is_const(gs):
            gs_const, gs_a = True, gs[(0,) * gs.dim()].reshape(1).contiguous()
        else:
            gs_const, gs_a = False, gs.reshape(T, N).contiguous()
        gvs = gvseq.reshape(T, N).contiguous() if gvseq is not None else x2.new_empty(1)
        gvl = gvlast.reshape(N).contiguous() if gvlast is not None else x2.new_empty(1)
        sc = torch.tensor([vr, surrogate.alpha], dtype=dt, device=dev)
        if N > 0:
            bwd[(triton.cdiv(N, BLOCK),)](
                x2, gs_a, gvs, gvl, v0f, kv, tv, sc, gx, gv0, gk, gth, T, N, SG=surrogate_fn(surrogate),
                HARD=hard, DECAY=decay_input, DETACH=detach, GS_CONST=gs_const, HAS_GVSEQ=gvseq is not None,
                HAS_GVLAST=gvlast is not None, NEED_K=need_k, NEED_TH=need_th, V0_VEC=v0f.numel() > 1,
                K_VEC=kv.numel() > 1, TH_VEC=tv.numel() > 1, BLOCK=BLOCK, **_compile_opts())
        grad_v0 = None
        if ctx.needs_input_grad[1]:
            grad_v0 = gv0.reshape(shape)
            if ctx.v0_shape != shape:
                grad_v0 = grad_v0.sum_to_size(ctx.v0_shape)
        grad_k = _reduce(gk, shape, k_t) if need_k else None
        grad_th = _reduce(gth, shape, th_t) if need_th else None
        return (gx.reshape((T, *shape)), grad_v0, grad_k, grad_th, None, None, None, None, None, None)


def _reduce(g: torch.Tensor, shape, p: torch.Tensor) -> torch.Tensor:
    g = g.reshape(shape)
    return (g.sum_to_size(p.shape) if p.dim() else g.sum()).to(p.dtype)


def lif_triton(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v=False, check=True):
    """Run the fused Triton LIF family; returns ``(spikes [T, ...], v_T, v_seq or None)``."""
    if not is_available():
        raise ValueError("backend='triton' needs triton, which is not installed (pip install 'spikeforge[triton]')")
    if x_seq.device.type != "cuda" and not _interpret():
        raise ValueError(f"backend='triton': x_seq is on {x_seq.device}; the triton backend needs CUDA tensors "
                         "(or TRITON_INTERPRET=1 for Triton's CPU interpreter)")
    if x_seq.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend='triton': dtype {x_seq.dtype} is not supported (float32, float64); "
                         "use backend='reference' or 'auto' for half precision")
    for name, p in (("k", k), ("v_threshold", v_th), ("state", v0)):
        if torch.is_tensor(p) and p.device != x_seq.device:
            raise ValueError(f"backend='triton': {name} is on {p.device} but x_seq on {x_seq.device}")
    s, v_last, v_seq = LIFFamilyTritonFn.apply(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset,
                                                surrogate, return_v, check)
    return s, v_last, v_seq
