r"""Fused CPU backend (numba): forward and hand-written backward of the LIF family over a whole sequence.

Same recurrence as :mod:`spikeforge.kernels.reference`, written with the same floating-point operation order
(and no ``fastmath``), so spikes and membrane potentials are bit-identical to it.

Layout: the input is viewed as ``x[T, N]`` (``N`` = every non-time element, C order).  The kernels are
parallel over blocks of ``block`` neurons (``prange``) and sequential in time; inside a block the neuron
loop is contiguous, so LLVM vectorises it, and the block's state stays in L1.

Memory: the forward writes only the spikes (and ``v_seq`` when asked); it saves for backward the *input*
``x`` (4 B/element in float32, and nothing new is allocated for it) plus the initial state.  The backward
re-runs the forward of one block of neurons into the gradient buffer itself (``T x block`` values, which
stay in cache), then walks back in time, overwriting each :math:`h_t` with :math:`\partial L/\partial x_t`.
The surrogate derivative is the very function written in :mod:`spikeforge.surrogate`, bound to scalar math.

Why numba: it ships as a wheel (no compiler at install time), runs the loops multi-threaded without the GIL
and can inline the surrogate source.  The forward compiles once per dtype (cached on disk); the backward once
per (surrogate, dtype) in a process.  Compilation happens on first use and is excluded from benchmarks.
See docs/kernels.md.

Example:
    >>> import torch
    >>> from spikeforge.kernels.cpu import lif_cpu
    >>> from spikeforge.surrogate import get_surrogate
    >>> x = torch.full((3, 1, 2), 0.6, requires_grad=True)   # [T, B, N]
    >>> s, v_T, _ = lif_cpu(x, torch.zeros(1, 2), 0.5, 1.0, 0.0, False, False, get_surrogate("atan"))
    >>> s.flatten().tolist()                                   # h = 0.6, 0.9, 1.05
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    >>> s.sum().backward(); tuple(x.grad.shape)
    (3, 1, 2)
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import torch

from ..surrogate import Surrogate, bind
from ._layout import is_const as _is_const
from ._layout import param_vec as _param_vec
from ._layout import state_vec as _state_vec

L2_BYTES = 256 * 1024  # per-block working set target of the backward (T x block values)
_lock = threading.Lock()
_FWD = None
_BWD: dict = {}
_ROWS: dict = {}


def _numba():
    import numba

    return numba


def _scalar_math():
    nb = _numba()

    @nb.njit(inline="always")
    def relu(x):
        return x if x > 0.0 else 0.0  # not 0 * x: that is NaN for x = -inf

    @nb.njit(inline="always")
    def step(x):
        return 1.0 if x > 0.0 else 0.0

    return {"exp": math.exp, "absf": abs, "relu": relu, "step": step, "PI": math.pi,
            "SQRT_PI": math.sqrt(math.pi)}


def _build_forward():
    nb = _numba()

    @nb.njit(parallel=True, nogil=True, cache=True, error_model="numpy")
    def lif_fwd(x, v0, k, vth, v_reset, hard, decay_input, save_v, block, s, v_seq, v_last, bad):
        # v_reset is v_r^0: the reset value for hard reset, 0 for soft reset (the caller passes 0).
        T, N = x.shape
        nblk = (N + block - 1) // block
        one = v_reset - v_reset + 1
        zero = v_reset - v_reset
        for b in nb.prange(nblk):
            n0 = b * block
            n1 = min(n0 + block, N)
            m = n1 - n0
            v = v0[n0:n1].copy() if v0.shape[0] > 1 else np.full(m, v0[0])
            kb = k[n0:n1].copy() if k.shape[0] > 1 else np.full(m, k[0])
            thb = vth[n0:n1].copy() if vth.shape[0] > 1 else np.full(m, vth[0])
            acc = np.zeros(m, dtype=x.dtype)
            for t in range(T):
                xr = x[t, n0:n1]
                sr = s[t, n0:n1]
                if decay_input:
                    for j in range(m):
                        vj = v[j]
                        xt = xr[j]
                        h = vj + (xt - (vj - v_reset)) * kb[j]
                        fired = h >= thb[j]
                        sr[j] = one if fired else zero
                        v[j] = (v_reset if hard else h - thb[j]) if fired else h
                        acc[j] += xt * zero  # NaN iff some x was NaN or inf
                else:
                    for j in range(m):
                        vj = v[j]
                        xt = xr[j]
                        h = vj - (vj - v_reset) * kb[j] + xt
                        fired = h >= thb[j]
                        sr[j] = one if fired else zero
                        v[j] = (v_reset if hard else h - thb[j]) if fired else h
                        acc[j] += xt * zero
                if save_v:
                    v_seq[t, n0:n1] = v
            v_last[n0:n1] = v
            for j in range(m):
                if acc[j] != zero:
                    bad[b] = 1

    return lif_fwd


def _types(dtype):
    nb = _numba()
    f = nb.from_dtype(np.dtype(dtype))
    row_sig = nb.types.void(f[::1], f, f[::1])
    return nb.types, f, row_sig


def _build_surrogate_row(grad_src, dtype):
    """``row(u, alpha, out)``: ``out[j] = g'(u[j])`` with the derivative source bound to scalar math, compiled
    as a C callback and wrapped so the backward driver receives its address without a per-call lookup."""
    nb = _numba()
    _, _, row_sig = _types(dtype)
    sg = nb.njit(inline="always", error_model="numpy")(bind(grad_src, _scalar_math()))

    @nb.cfunc(row_sig, nopython=True, error_model="numpy", fastmath={"contract", "arcp"})
    def surrogate_row(u, alpha, out):
        for j in range(u.shape[0]):
            out[j] = sg(u[j], alpha)

    class RowFn(nb.types.WrapperAddressProtocol):
        def __wrapper_address__(self):
            return surrogate_row.address

        def signature(self):
            return row_sig

    return RowFn()


def _build_trampoline(dtype):
    nb = _numba()
    types, f, row_sig = _types(dtype)

    @nb.njit(types.void(types.FunctionType(row_sig), f[::1], f, f[::1]))
    def call_row(row, u, alpha, out):
        row(u, alpha, out)

    return call_row


def surrogate_derivative(surrogate: Surrogate, u: np.ndarray) -> np.ndarray:
    """The surrogate derivative exactly as the compiled backward evaluates it, on a 1-D float32/float64 array."""
    u = np.ascontiguousarray(u)
    key = ("trampoline", u.dtype)
    with _lock:
        if key not in _ROWS:
            _ROWS[key] = _build_trampoline(u.dtype)
    out = np.empty_like(u)
    _ROWS[key](_surrogate_row(surrogate, u.dtype), u, u.dtype.type(surrogate.alpha), out)
    return out


def _build_backward(dtype):
    """The backward driver for one dtype; the surrogate is a function-pointer argument (``surrogate_row``),
    so this compiles once per dtype (and is cached on disk), not once per surrogate."""
    nb = _numba()
    types, f, row_sig = _types(dtype)
    v1, v2 = f[::1], f[:, ::1]
    d1 = types.float64[::1]
    sig = types.void(v2, v2, types.boolean, v2, v1, v1, v1, v1, f, types.boolean, types.boolean, types.boolean,
                     types.FunctionType(row_sig), f, types.intp, v2, v1, d1, d1)

    # No "contract": the recomputed h_t must stay bit-identical to the forward's (no FMA).
    @nb.njit(sig, parallel=True, nogil=True, cache=True, error_model="numpy")
    def lif_bwd(x, gs, gs_const, gvseq, gvlast, v0, k, vth, v_reset, hard, decay_input, detach, surrogate_row,
                alpha, block, gx, gv0, gk, gth):
        # gs: [T, N], or (1, 1) holding one value for every element when gs_const; gvseq / gvlast: [T, N] / [N]
        # or empty for "no gradient".  gx doubles as scratch: it first receives u_t = h_t - th, which the
        # reverse sweep overwrites with dL/dx_t.
        T, N = x.shape
        nblk = (N + block - 1) // block
        has_gvseq = gvseq.shape[0] > 0
        has_gvlast = gvlast.shape[0] > 0
        need_k = gk.shape[0] > 0
        need_th = gth.shape[0] > 0
        need_par = need_k or need_th
        one = v_reset - v_reset + 1
        zero = v_reset - v_reset
        nd = zero if detach else one  # 1 iff the reset carries gradient
        for b in nb.prange(nblk):
            n0 = b * block
            n1 = min(n0 + block, N)
            m = n1 - n0
            vinit = v0[n0:n1].copy() if v0.shape[0] > 1 else np.full(m, v0[0])
            kb = k[n0:n1].copy() if k.shape[0] > 1 else np.full(m, k[0])
            thb = vth[n0:n1].copy() if vth.shape[0] > 1 else np.full(m, vth[0])
            # 1. recompute u_t = h_t - th (bit-identical to the forward, so s_t = [u_t >= 0]) into gx[t, block]
            v = vinit.copy()
            for t in range(T):
                xr = x[t, n0:n1]
                ur = gx[t, n0:n1]
                if decay_input:
                    for j in range(m):
                        vj = v[j]
                        h = vj + (xr[j] - (vj - v_reset)) * kb[j]
                        uj = h - thb[j]
                        ur[j] = uj
                        v[j] = (v_reset if hard else uj) if h >= thb[j] else h
                else:
                    for j in range(m):
                        vj = v[j]
                        h = vj - (vj - v_reset) * kb[j] + xr[j]
                        uj = h - thb[j]
                        ur[j] = uj
                        v[j] = (v_reset if hard else uj) if h >= thb[j] else h
            # 2. reverse sweep; dv holds dL/dv_t
            dv = gvlast[n0:n1].copy() if has_gvlast else np.zeros(m, dtype=x.dtype)
            dk = np.zeros(m, dtype=np.float64)  # parameter gradients are sums over T (and later N):
            dth = np.zeros(m, dtype=np.float64)  # accumulate them in float64
            gsrow = np.full(m, gs[0, 0]) if gs_const else np.zeros(m, dtype=x.dtype)
            zrow = np.zeros(m, dtype=x.dtype)
            g = np.empty(m, dtype=x.dtype)
            vprow = np.empty(m, dtype=x.dtype)
            for t in range(T - 1, -1, -1):
                gsr = gsrow if gs_const else gs[t, n0:n1]
                gvr = gvseq[t, n0:n1] if has_gvseq else zrow
                ur = gx[t, n0:n1]  # u_t on entry, dL/dx_t on exit
                surrogate_row(ur, alpha, g)
                # hard: v = h (1 - s) + v_r s;  soft: v = h - th s;  s carries g unless detached.
                # dv_t/dh_t = base + nd c g with base = 1 - s (hard) or 1 (soft), c = v_r - h (hard) or -th (soft)
                if not need_par:  # the common case: gradients for x and v0 only
                    for j in range(m):
                        uj = ur[j]
                        gj = g[j]
                        c = (v_reset - (uj + thb[j])) if hard else -thb[j]
                        base = (zero if uj >= zero else one) if hard else one
                        dh = gsr[j] * gj + (dv[j] + gvr[j]) * (base + nd * c * gj)
                        ur[j] = dh * kb[j] if decay_input else dh
                        dv[j] = dh * (one - kb[j])
                    continue
                if t > 0:  # v_{t-1} from u_{t-1}
                    upr = gx[t - 1, n0:n1]
                    for j in range(m):
                        up = upr[j]
                        vprow[j] = (v_reset if hard else up) if up >= zero else up + thb[j]
                else:
                    vprow[:] = vinit
                xr = x[t, n0:n1]
                for j in range(m):
                    uj = ur[j]
                    gj = g[j]
                    sj = one if uj >= zero else zero
                    dvj = dv[j] + gvr[j]
                    c = (v_reset - (uj + thb[j])) if hard else -thb[j]
                    base = (one - sj) if hard else one
                    ngc = nd * c * gj
                    gsg = gsr[j] * gj
                    dh = gsg + dvj * (base + ngc)
                    dth[j] += -dvj * ngc - (zero if hard else dvj * sj) - gsg
                    dk[j] += dh * ((xr[j] if decay_input else zero) - (vprow[j] - v_reset))
                    ur[j] = dh * kb[j] if decay_input else dh
                    dv[j] = dh * (one - kb[j])
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


def _backward_kernel(dtype):
    with _lock:
        fn = _BWD.get(dtype)
        if fn is None:
            fn = _BWD[dtype] = _build_backward(dtype)
    return fn


def _surrogate_row(surrogate: Surrogate, dtype):
    key = (surrogate.grad_source, dtype)
    with _lock:
        fn = _ROWS.get(key)
        if fn is None:
            fn = _ROWS[key] = _build_surrogate_row(surrogate.grad_source, dtype)
    return fn


def is_available() -> bool:
    try:
        _numba()
    except ImportError:
        return False
    return True


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this a second thread costs more (wake-up, barrier) than it saves


def _sync_threads(numel: int) -> None:
    """Run numba's loops on as many threads as torch uses (``torch.set_num_threads`` is honoured), but on one
    thread for small inputs."""
    nb = _numba()
    n = max(1, min(torch.get_num_threads(), nb.config.NUMBA_NUM_THREADS, numel // PARALLEL_MIN_ELEMENTS))
    if nb.get_num_threads() != n:
        nb.set_num_threads(n)


def _block(T: int, N: int, itemsize: int) -> int:
    """Neurons per parallel block: the backward's ``T x block`` working set fits in L2, at least 4 blocks
    per thread when there is enough work, and a multiple of 16 (whole SIMD vectors)."""
    b = max(64, min(4096, L2_BYTES // max(1, T * itemsize)))
    per_thread = -(-N // (4 * max(1, torch.get_num_threads())))
    b = min(b, max(64, per_thread))
    return max(16, (b // 16) * 16)


class _BufferPool:
    """Reuse of large output buffers (spikes, v_seq, dL/dx), like a caching allocator.

    glibc returns allocations above 32 MB to the OS on free, so every fresh 33 MB tensor costs ~8k page faults
    (about as long as the whole kernel).  Buffers of at least ``min_bytes`` are handed out as tensors viewing a
    numpy array; when the last tensor sharing that storage dies, the array goes back to the pool (a buffer is
    never reused while anything still refers to it).  At most ``max_free_bytes`` of free buffers are kept;
    :func:`empty_cache` releases them.
    """

    def __init__(self, min_bytes: int = 1 << 20, max_free_bytes: int = 1 << 30):
        self.min_bytes, self.max_free_bytes = min_bytes, max_free_bytes
        self.free: dict = {}
        self.free_bytes = 0
        self.lock = threading.Lock()

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        n = math.prod(shape)
        npdt = np.dtype(str(dtype).removeprefix("torch."))
        nbytes = n * npdt.itemsize
        if nbytes < self.min_bytes:
            return torch.empty(shape, dtype=dtype)
        key = (n, npdt)
        with self.lock:
            bufs = self.free.get(key)
            base = bufs.pop() if bufs else None
            if base is not None:
                self.free_bytes -= nbytes
        if base is None:
            base = np.empty(n, dtype=npdt)
        view = base[:]  # the tensor's storage holds this view; when it dies, base is free again
        weakref.finalize(view, self._release, key, base)
        return torch.from_numpy(view).view(shape)

    def _release(self, key, base) -> None:
        with self.lock:
            if self.free_bytes + base.nbytes <= self.max_free_bytes:
                self.free.setdefault(key, []).append(base)
                self.free_bytes += base.nbytes

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.free_bytes = 0


_POOL = _BufferPool()


def empty_cache() -> None:
    """Release the free output buffers the CPU kernels keep for reuse."""
    _POOL.clear()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()




def _saveable(p):
    return p.detach() if torch.is_tensor(p) else None


def _grad_arg(g, T, N, like, *, seq: bool) -> np.ndarray:
    """An incoming gradient as a C array ([T, N] or [N]), or empty for None."""
    if g is None:
        return np.empty((0, 0) if seq else (0,), dtype=_np(like).dtype)
    return _np(g.reshape((T, N) if seq else (N,)).contiguous())



class LIFFamilyCpuFn(torch.autograd.Function):
    """Fused forward/backward. ``k`` and ``v_th`` are floats or tensors broadcastable to ``x_seq.shape[1:]``."""

    @staticmethod
    def forward(ctx, x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
        T = x_seq.shape[0]
        shape = x_seq.shape[1:]
        N = math.prod(shape)
        x2 = x_seq.detach().reshape(T, N).contiguous()
        v0f = _state_vec(v0, N)
        kv = _param_vec(k, x2, N, shape)
        tv = _param_vec(v_th, x2, N, shape)
        hard = v_reset is not None
        vr = float(v_reset) if hard else 0.0
        block = _block(T, N, x2.element_size())
        s = _POOL.empty(x2.shape, x2.dtype)
        v_seq = _POOL.empty(x2.shape, x2.dtype) if return_v else x2.new_empty((0, 0))
        v_last = torch.empty(N, dtype=x2.dtype)
        bad = np.zeros((N + block - 1) // block, dtype=np.uint8)
        xa = _np(x2)
        _sync_threads(x2.numel())
        _forward_kernel()(xa, _np(v0f), _np(kv), _np(tv), xa.dtype.type(vr), hard, decay_input, return_v, block,
                          _np(s), _np(v_seq), _np(v_last), bad)
        if check and bad.any():
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        # Saved: the input itself (no new memory), the initial state and the parameters as given.
        ctx.save_for_backward(x_seq, v0f, _saveable(k), _saveable(v_th))
        ctx.cfg = (T, N, shape, hard, vr, decay_input, detach_reset, surrogate, float(k) if not torch.is_tensor(k)
                   else None, float(v_th) if not torch.is_tensor(v_th) else None)
        ctx.v0_shape = v0.shape
        return s.reshape(x_seq.shape), v_last.reshape(v0.shape), (v_seq.reshape(x_seq.shape) if return_v else None)

    @staticmethod
    def backward(ctx, gs, gvlast, gvseq):
        x_seq, v0f, k_t, th_t = ctx.saved_tensors
        T, N, shape, hard, vr, decay_input, detach, surrogate, k_f, th_f = ctx.cfg
        x2 = x_seq.detach().reshape(T, N).contiguous()
        dt = _np(x2).dtype
        kv = _param_vec(k_t if k_t is not None else k_f, x2, N, shape)
        tv = _param_vec(th_t if th_t is not None else th_f, x2, N, shape)
        need_k = bool(ctx.needs_input_grad[2])
        need_th = bool(ctx.needs_input_grad[3])
        gx = _POOL.empty(x2.shape, x2.dtype)
        gv0 = torch.empty(N, dtype=x2.dtype)
        gk = torch.empty(N if need_k else 0, dtype=torch.float64)
        gth = torch.empty(N if need_th else 0, dtype=torch.float64)
        if gs is None:  # only v_T / v_seq are used: the spikes' gradient is 0
            gs_const, gs_a = True, np.zeros((1, 1), dtype=dt)
        elif _is_const(gs):
            gs_const, gs_a = True, np.full((1, 1), gs[(0,) * gs.dim()].item(), dtype=dt)
        else:
            gs_const, gs_a = False, _grad_arg(gs, T, N, x2, seq=True)
        _sync_threads(x2.numel())
        _backward_kernel(dt)(
            _np(x2), gs_a, gs_const, _grad_arg(gvseq, T, N, x2, seq=True), _grad_arg(gvlast, T, N, x2, seq=False),
            _np(v0f), _np(kv), _np(tv), dt.type(vr), hard, decay_input, detach, _surrogate_row(surrogate, dt),
            dt.type(surrogate.alpha),
            _block(T, N, x2.element_size()), _np(gx), _np(gv0), _np(gk), _np(gth),
        )
        grad_v0 = None
        if ctx.needs_input_grad[1]:
            grad_v0 = gv0.reshape(shape).sum_to_size(ctx.v0_shape) if ctx.v0_shape != shape else gv0.reshape(shape)
        grad_k = _reduce_param(gk, shape, k_t) if need_k else None
        grad_th = _reduce_param(gth, shape, th_t) if need_th else None
        return (gx.reshape((T, *shape)), grad_v0, grad_k, grad_th, None, None, None, None, None, None)


def _reduce_param(g_per_neuron: torch.Tensor, shape, p: torch.Tensor) -> torch.Tensor:
    """Sum the per-neuron (float64) gradient over the axes the parameter ``p`` is broadcast along."""
    g = g_per_neuron.reshape(shape)
    g = g.sum_to_size(p.shape) if p.dim() else g.sum()
    return g.to(p.dtype)


def lif_cpu(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v=False, check=True):
    """Run the fused CPU LIF family; returns ``(spikes [T, ...], v_T, v_seq or None)``."""
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
