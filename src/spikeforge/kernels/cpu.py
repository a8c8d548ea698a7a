r"""Fused CPU backend (numba): forward and hand-written backward of the LIF family over a whole sequence.

Same recurrence as :mod:`spikeforge.kernels.reference`, written with the same floating-point operation order
(and no ``fastmath``), so spikes and membrane potentials are bit-identical to it.

Layout: the input is viewed as ``x[T, N]`` (``N`` = every non-time element, C order).  The kernels are
parallel over blocks of neurons (``prange``) and sequential in time; inside a block the neuron loop is
contiguous, so LLVM vectorises it, and the block's state stays in cache.

Memory: the forward writes only the spikes (and ``v_seq`` when asked); it saves for backward the *input*
``x`` (4 B/element in float32, and nothing new is allocated for it) plus the initial state.  The backward
re-runs the forward of one sub-block of neurons into a local buffer (``T x sub`` values, which stay in cache),
then walks back in time writing :math:`\partial L/\partial x_t`, while it prefetches the next sub-block's input
(so memory traffic overlaps the arithmetic).  Outputs too large for the cache are written with non-temporal
stores (see :func:`_stream`).

Compilation: the kernels are generated as source (:func:`_module`) with the flags' row loops specialised and
the surrogate derivative -- the very function written in :mod:`spikeforge.surrogate` -- inlined into the
backward's reverse loop; everything is typed like the data (float32 kernels compute in float32).  The drivers
compile once per dtype, the reverse loops once per (dtype, surrogate), both cached on disk.

Why numba: it ships as a wheel (no compiler at install time), runs the loops multi-threaded without the GIL
and can inline the surrogate source.  See docs/kernels.md.

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

import ast
import functools
import inspect
import math
import textwrap
import threading
import types

import numpy as np
import torch
import torch.autograd.forward_ad as _fw_ad

from ..surrogate import Surrogate, bind
from .runtime import POOL as _POOL
from .runtime import STORE_NT_SOURCE, cache_dir, empty_cache, is_available, load_generated, new_tensor as _new
from .runtime import start_numba as _numba
from .runtime import sync_threads as _sync_threads
from ._layout import is_const as _is_const
from ._layout import param_vec as _param_vec
from ._layout import state_vec as _state_vec

PF_LOCALITY = 2  # software prefetches go to L2 (llvm.prefetch locality 2)
PF_CHUNK = 1024  # row loops run in chunks of this many elements, each after prefetching its share of the next row
SUB_BYTES = 256 * 1024  # a backward sub-block's T x sub history: half of L2, the other half takes the prefetches
FWD_BLOCK = 16384  # neurons per block of the forward: its working set is one row of v (long streams of x, s)
_lock = threading.Lock()
_MODULES: dict = {}  # (dtype, None) or (dtype, derivative function) -> generated module


# --- kernel source --------------------------------------------------------------------------------------------
# Two generated modules (see _module):
# * per dtype, the parallel drivers lif_fwd / lif_bwd and the forward's and the replay's row loops, one per
#   (hard/soft reset, decay_input) so no flag is tested per element, each with shared (scalar) or per-neuron k
#   and threshold.  The drivers take the row loops as function pointers: they compile once per dtype, whatever
#   the flags or the surrogate.
# * per (dtype, surrogate), the reverse row loops of the backward with the surrogate derivative inlined (one per
#   hard/soft reset, for shared parameters without parameter gradients and for per-neuron parameters with
#   dL/dth and optionally dL/dk), and the derivative alone on a row (surrogate_derivative()).
# Every literal is typed like the data, so float32 kernels compute in float32.  Shared k and threshold without
# parameter gradients take the scalar row loops; per-neuron parameters or parameter gradients (PLIF, a learnable
# threshold, a per-channel tau) the per-neuron ones (a shared value is then a block-length row of it).
_PRELUDE = '''\
import math

import numba as nb
import numpy as np
from numba import prange

DT = np.{dtype}
ONE = DT(1.0)
ZERO = DT(0.0)
PI = DT(math.pi)
SQRT_PI = DT(math.sqrt(math.pi))
exp = math.exp
U = nb.uint64  # an index known to be >= 0: no wraparound code, so LLVM vectorises loops that start anywhere
absf = abs
CACHE = {cache}
PF_LOCALITY = {pf_locality}
PF_CHUNK = {pf_chunk}
f = nb.from_dtype(DT)
v1 = f[::1]
v2 = f[:, ::1]
d1 = nb.types.float64[::1]
JIT = dict(nogil=True, cache=CACHE, error_model="numpy")  # no fastmath: h_t must match the reference bit for bit


''' + STORE_NT_SOURCE + '''

@nb.extending.intrinsic
def prefetch(typingctx, arr, idx):
    # a software prefetch of the line holding arr[idx] into L2 (llvm.prefetch: read, locality 2, data)
    from llvmlite import ir
    from numba.core import cgutils

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(PF_LOCALITY), i32(1)])
        return context.get_dummy_value()

    return nb.types.void(arr, idx), codegen


@nb.njit(inline="always")
def relu(x):
    return x if x > ZERO else ZERO  # not 0 * x: that is NaN for x = -inf


@nb.njit(inline="always")
def step(x):
    return ONE if x > ZERO else ZERO
'''

# h_t for decay_input True / False, v_t for hard / soft reset
_H = {True: "h = vj + (xt - (vj - v_reset)) * {k}", False: "h = vj - (vj - v_reset) * {k} + xt"}
_V = {True: "v_reset if h >= {th} else h", False: "h - {th} if h >= {th} else h"}
_VARIANTS = [(True, True), (True, False), (False, True), (False, False)]  # (hard, decay_input)


def _tag(hard, decay=None):
    return ("hard" if hard else "soft") + ("" if decay is None else "_decay" if decay else "_nodecay")


# (x_t, s_t, v, k, th, v_reset, stream, pf) -> 1 if some x is not finite, else 0; stream: s_t by non-temporal
# stores; pf: the row read next (prefetched while x_t is read; empty for none)
_FWD_ROW_SIG = "nb.types.intp(v1, v1, v1, f, f, f, nb.types.boolean, v1)"
_REPLAY_ROW_SIG = "nb.types.void(v1, v1, v1, f, f, f)"  # (x_t, h_t, v, k, th, v_reset)
# the same with per-neuron k and th (rows of the block): (x_t, s_t, v, k, th, v_reset, stream, pf); the replay also
# writes e_t = dh_t/dk (x_t - (v_{t-1} - v_reset), or -(v_{t-1} - v_reset) without decay_input) when need_e: (x_t,
# h_t, e_t, v, k, th, v_reset, need_e)
_FWD_ROW_P_SIG = "nb.types.intp(v1, v1, v1, v1, v1, f, nb.types.boolean, v1)"
_REPLAY_ROW_P_SIG = "nb.types.void(v1, v1, v1, v1, v1, v1, f, nb.types.boolean)"
# (h_t, dL/dx_t, dL/ds_t, dL/dv_t -> dL/dv_{t-1}, th, kx, 1 - k, nd, v_reset, alpha, stream, pf, pf2); dL/dv_t
# from v_seq is added to dL/dv_t by the driver; pf, pf2: rows read next (the next sub-block's x_t, the next dL/ds_t
# row), prefetched while this row is processed
_REVERSE_ROW_SIG = "nb.types.void(v1, v1, v1, v1, f, f, f, f, f, f, nb.types.boolean, v1, v1)"
# per-neuron parameters and parameter gradients: (h_t, e_t, dL/dx_t, dL/ds_t, dL/dv_t -> dL/dv_{t-1}, k, kx, th,
# dL/dk_t, dL/dth_t (this step's terms, which the driver adds up in float64), v_reset, nd, hf (1: hard reset, 0:
# soft), alpha, need_k, need_th, stream, pf, pf2)
_REVERSE_ROW_P_SIG = ("nb.types.void(v1, v1, v1, v1, v1, v1, v1, v1, v1, v1, f, f, f, f, nb.types.boolean, "
                      "nb.types.boolean, nb.types.boolean, v1, v1)")
_SG_ROW_SIG = "nb.types.void(v1, f, v1)"  # (u, alpha, out)


def _rows_source():
    """Forward and replay row loops for each (hard, decay_input), with shared (scalar) or per-neuron k and th."""
    a = []
    for hard, decay in _VARIANTS:
        for per in (False, True):
            p = "_p" if per else ""
            load = ["kk = kb[j]", "th = thb[j]"] if per else []  # per-neuron parameters: rows of the block
            args = "kb, thb" if per else "kk, th"
            a += [
                f"@nb.cfunc({_FWD_ROW_P_SIG if per else _FWD_ROW_SIG}, **JIT)",
                f"def fwd_row{p}_{_tag(hard, decay)}(xr, sr, v, {args}, v_reset, stream, pf):",
                "    bad = False",
                *_chunk_loop("xr", ("pf",)),
            ]
            for stream in (True, False):
                ind = " " * 16
                a += [
                    f"        {'if stream' if stream else 'else'}:",
                    "            for jj in range(c, ce):",
                    ind + "j = U(jj)",
                    *(ind + ln for ln in load),
                    ind + "vj = v[j]",
                    ind + "xt = xr[j]",
                    ind + _H[decay].format(k="kk"),
                    ind + "store_nt(sr, j, ONE if h >= th else ZERO)" if stream else
                    ind + "sr[j] = ONE if h >= th else ZERO",
                    ind + "v[j] = " + _V[hard].format(th="th"),
                    ind + "bad |= (xt - xt) != ZERO  # NaN iff x is NaN or inf; a bool OR keeps 16 lanes",
                ]
            # the replay with per-neuron parameters also writes e_t = dh_t/dk, with the operations of h_t
            ek = (["e = xt - (vj - v_reset)", "h = vj + e * kk"] if decay else
                  ["e = ZERO - (vj - v_reset)", _H[decay].format(k="kk")])
            a += [
                "    return 1 if bad else 0",
                "",
                "",
                f"@nb.cfunc({_REPLAY_ROW_P_SIG if per else _REPLAY_ROW_SIG}, **JIT)",
                f"def replay_row{p}_{_tag(hard, decay)}(xr, hr, {'er, ' if per else ''}v, {args}, v_reset"
                f"{', need_e' if per else ''}):",
            ]
            for need_e in ((True, False) if per else (False,)):
                ind = " " * (12 if per else 8)
                a += [
                    *([f"    {'if need_e' if need_e else 'else'}:"] if per else []),
                    ind[4:] + "for j in range(xr.shape[0]):",
                    *(ind + ln for ln in load),
                    ind + "vj = v[j]",
                    ind + "xt = xr[j]",
                    *(ind + ln for ln in (ek if need_e else [_H[decay].format(k="kk")])),
                    ind + "hr[j] = h",
                    *([ind + "er[j] = e"] if need_e else []),
                    ind + "v[j] = " + _V[hard].format(th="th"),
                ]
            a += ["", ""]
    return "\n".join(a)


def _chunk_loop(row: str, pfs: tuple) -> list:
    """Source lines that open a row loop in chunks of ``PF_CHUNK`` neurons (``c`` .. ``ce``), each chunk first
    prefetching its part of the rows ``pfs`` (rows read later, e.g. the next sub-block's x_t)."""
    lines = [f"    n = {row}.shape[0]", *(f"    n{p} = {p}.shape[0]" for p in pfs),
             "    for c in range(0, n, PF_CHUNK):", "        ce = min(c + PF_CHUNK, n)"]
    for p in pfs:
        lines += [f"        for q in range(c, min(ce, n{p}), 64 // {p}.itemsize):", f"            prefetch({p}, q)"]
    return lines


def _reverse_source():
    """The reverse row loops (one per reset kind) and the derivative on a row, for the module's surrogate."""
    a = []
    for hard in (True, False):
        # dv_t/dh_t = base + nd c g': hard: base = 1 - s, c = v_r - h; soft: base = 1, c = -th
        dvdh = "((ZERO if u >= ZERO else ONE) + nd * (v_reset - h) * g)" if hard else "(ONE + cs * g)"
        a += [
            f"@nb.cfunc({_REVERSE_ROW_SIG}, **JIT)",
            f"def reverse_row_{_tag(hard)}(hr, gxr, gsr, dv, th, kx, omk, nd, v_reset, alpha, stream, pf, pf2):",
            "    cs = nd * -th",
            *_chunk_loop("hr", ("pf", "pf2")),
        ]
        for stream in (True, False):
            a += [
                f"        {'if stream' if stream else 'else'}:",
                "            for jj in range(c, ce):",
                "                j = U(jj)",
                "                h = hr[j]",
                "                u = h - th",
                "                g = _sg(u, alpha)",
                f"                dh = gsr[j] * g + dv[j] * {dvdh}",
                "                store_nt(gxr, j, dh * kx)" if stream else
                "                gxr[j] = dh * kx  # kx = k (decay_input) or 1",
                "                dv[j] = dh * omk",
            ]
        a += ["", ""]
    # the reverse loop of the parameter path: per-neuron k and th, dL/dth when need_th, dL/dk when need_k.  One
    # function for both reset kinds (few compiled variants): hf = 1 for hard reset, 0 for soft, each use exact
    # (c = v_r - h or -th; base = 1 - s or 1).  The parameter gradients are sums over T (and later N): this loop
    # writes the step's float32 terms, the driver adds them up in float64 (a float64 accumulator here would halve
    # the vector width of the whole loop).
    a += [
        f"@nb.cfunc({_REVERSE_ROW_P_SIG}, **JIT)",
        "def reverse_row_p(hr, er, gxr, gsr, dv, kb, kxb, thb, ck, cth, v_reset, nd, hf, alpha, need_k, need_th,",
        "                  stream, pf, pf2):",
        "    sf = ONE - hf",
        *_chunk_loop("hr", ("pf", "pf2")),
    ]
    # six loops: (dL/dk and dL/dth, dL/dk only (PLIF), dL/dth (or no parameter gradient)) x streamed or plain stores
    conds = {(True, True, True): "if need_k and need_th and stream", (True, True, False): "elif need_k and need_th",
             (True, False, True): "elif need_k and stream", (True, False, False): "elif need_k",
             (False, True, True): "elif stream", (False, True, False): "else"}
    for (need_k, need_th, stream), cond in conds.items():
        ind = " " * 16
        a += [
            f"        {cond}:",
            "            for jj in range(c, ce):",
            ind + "j = U(jj)",
            ind + "h = hr[j]",
            ind + "th = thb[j]",
            ind + "u = h - th",
            ind + "g = _sg(u, alpha)",
            ind + "sj = ONE if u >= ZERO else ZERO",
            ind + "dvj = dv[j]",
            ind + "ngc = nd * (hf * (v_reset - h) - sf * th) * g",
            ind + "gsg = gsr[j] * g",
            ind + "dh = gsg + dvj * ((ONE - hf * sj) + ngc)",
        ]
        if need_th:
            a += [ind + "cth[j] = -dvj * ngc - sf * dvj * sj - gsg"]
        if need_k:
            a += [ind + "ck[j] = dh * er[j]"]
        a += [
            ind + ("store_nt(gxr, j, dh * kxb[j])" if stream else "gxr[j] = dh * kxb[j]  # kx = k or 1"),
            ind + "dv[j] = dh * (ONE - kb[j])",
        ]
    a += ["", ""]
    a += [
        f"@nb.cfunc({_SG_ROW_SIG}, **JIT)",
        "def sg_row(u, alpha, out):",
        "    for j in range(u.shape[0]):",
        "        out[j] = _sg(u[j], alpha)",
        "",
    ]
    return "\n".join(a)


def _drivers_source():
    fn = "nb.types.FunctionType({})"
    a = [
        f"FWD_ROW = {fn.format(_FWD_ROW_SIG)}",
        f"FWD_ROW_P = {fn.format(_FWD_ROW_P_SIG)}",
        f"REPLAY_ROW = {fn.format(_REPLAY_ROW_SIG)}",
        f"REPLAY_ROW_P = {fn.format(_REPLAY_ROW_P_SIG)}",
        f"REVERSE_ROW = {fn.format(_REVERSE_ROW_SIG)}",
        f"REVERSE_ROW_P = {fn.format(_REVERSE_ROW_P_SIG)}",
        f"SG_ROW = {fn.format(_SG_ROW_SIG)}",
        "b_ = nb.types.boolean",
        "FWD_SIG = nb.types.intp(v2, v1, v1, v1, f, b_, nb.types.intp, v2, v2, v1, b_, FWD_ROW, FWD_ROW_P)",
        "i_ = nb.types.intp",
        "BWD_SIG = nb.types.void(v2, v2, b_, v2, v1, v1, v1, v1, f, b_, b_, b_, f, i_, i_, v2, v1, d1, d1, b_,",
        "                        REPLAY_ROW, REVERSE_ROW, REPLAY_ROW_P, REVERSE_ROW_P)",
        "",
        "",
        "@nb.njit(nb.types.void(SG_ROW, v1, f, v1), **JIT)",
        "def call_sg_row(row, u, alpha, out):",
        "    row(u, alpha, out)",
        "",
        "",
        "@nb.njit(inline='always')",
        "def load_row(dst, src, c0):",
        "    # dst = the neurons c0:c0 + len(dst) of a parameter given as src: one value for all (length 1), or",
        "    # per neuron, periodic with period len(src) (N is a multiple of it: a parameter of the trailing",
        "    # dims, the same for every sample, is passed once, not repeated over the batch)",
        "    P = src.shape[0]",
        "    if P == 1:",
        "        for j in range(dst.shape[0]):",
        "            dst[j] = src[0]",
        "    elif c0 + dst.shape[0] <= P:",
        "        for j in range(dst.shape[0]):",
        "            dst[j] = src[U(c0 + j)]",
        "    else:",
        "        for j in range(dst.shape[0]):",
        "            dst[j] = src[U((c0 + j) % P)]",
        "",
        "",
        "@nb.njit(FWD_SIG, parallel=True, **JIT)",
        "def lif_fwd(x, v0, k, vth, v_reset, save_v, block, s, v_seq, v_last, stream, fwd_row, fwd_row_p):",
        "    # v_reset is v_r^0: the reset value for hard reset, 0 for soft reset (the caller passes 0).",
        "    # fwd_row / fwd_row_p: the row loop for (hard, decay_input) with k and vth shared (length 1) / per",
        "    # neuron; stream: write the spikes with non-temporal stores (rows of s 64-byte aligned, checked by the",
        "    # caller).  Returns 0 iff every input is finite.  x is [T, N], or [1, N]: one step repeated T times.",
        "    T, N = s.shape",
        "    xs = 1 if x.shape[0] > 1 else 0  # x's row of step t is t * xs",
        "    nblk = (N + block - 1) // block",
        "    shared = k.shape[0] == 1 and vth.shape[0] == 1",
        "    nbad_all = 0",
        "    for b in prange(nblk):",
        "        n0 = b * block",
        "        n1 = min(n0 + block, N)",
        "        m = n1 - n0",
        "        n2 = min(n1 + block, N)  # the next block: the row after x_t's is prefetched while x_t is read",
        "        v = v0[n0:n1].copy() if v0.shape[0] > 1 else np.full(m, v0[0])",
        "        nbad = 0",
        "        if shared:",
        "            for t in range(T):",
        "                nbad += fwd_row(x[t * xs, n0:n1], s[t, n0:n1], v, k[0], vth[0], v_reset, stream,",
        "                                 x[(t + 1) * xs, n0:n1] if t + 1 < T else x[0, n1:n2])",
        "                if save_v:",
        "                    v_seq[t, n0:n1] = v",
        "        else:",
        "            kb = np.empty(m, dtype=x.dtype)",
        "            thb = np.empty(m, dtype=x.dtype)",
        "            load_row(kb, k, n0)",
        "            load_row(thb, vth, n0)",
        "            for t in range(T):",
        "                nbad += fwd_row_p(x[t * xs, n0:n1], s[t, n0:n1], v, kb, thb, v_reset, stream,",
        "                                 x[(t + 1) * xs, n0:n1] if t + 1 < T else x[0, n1:n2])",
        "                if save_v:",
        "                    v_seq[t, n0:n1] = v",
        "        v_last[n0:n1] = v",
        "        nbad_all += nbad",
        "    return nbad_all",
        "",
        "",
        "@nb.njit(inline='always')",
        "def store_row(dst, src, c0):  # dst[c0:c0 + len(src)] = src",
        "    for j in range(src.shape[0]):",
        "        dst[U(c0 + j)] = src[j]",
        "",
        "",
        "@nb.njit(inline='always')",
        "def fill(dst, value):",
        "    for j in range(dst.shape[0]):",
        "        dst[j] = value",
        "",
        "",
        "@nb.njit(**JIT)",
        "def bwd_block(n0, n1, x, gs, gs_const, gvseq, gvlast, v0, k, vth, v_reset, hard, decay_input, detach, alpha,",
        "              sub, gx, gv0, gk, gth, stream, replay_row, reverse_row, replay_row_p, reverse_row_p):",
        "    # the neurons n0:n1 of lif_bwd: one parallel block",
        "    T = gx.shape[0]",
        "    xs = 1 if x.shape[0] > 1 else 0  # x [1, N]: one step repeated T times",
        "    has_gvseq = gvseq.shape[0] > 0",
        "    has_gvlast = gvlast.shape[0] > 0",
        "    has_gv0 = gv0.shape[0] > 0",
        "    need_k = gk.shape[0] > 0",
        "    need_th = gth.shape[0] > 0",
        "    fast = k.shape[0] == 1 and vth.shape[0] == 1 and not (need_k or need_th)",
        "    nd = ZERO if detach else ONE  # 1 iff the reset carries gradient",
        "    hf = ONE if hard else ZERO",
        "    gsc = gs[0, 0] if gs_const else ZERO",
        "    nogs = gs[0, 0:0]  # an empty row: nothing to prefetch",
        "    w = min(sub, n1 - n0)",
        "    pw = 0 if fast else w  # the per-neuron path's buffers",
        "    hb = np.empty((T, w), dtype=x.dtype)  # h_t of the sub-block (stays in cache)",
        "    vbuf = np.empty(w, dtype=x.dtype)",
        "    dvbuf = np.empty(w, dtype=x.dtype)  # dL/dv_t",
        "    gsbuf = np.empty(w if gs_const else 0, dtype=x.dtype)  # dL/ds_t as a row when it is one number",
        "    fill(gsbuf, gsc)",
        "    eb = np.empty((T if need_k else 1, pw), dtype=x.dtype)  # e_t = dh_t/dk, kept when need_k",
        "    kbuf = np.empty(pw, dtype=x.dtype)",
        "    kxbuf = np.empty(pw, dtype=x.dtype)  # dh_t/dx_t: k (decay_input) or 1",
        "    fill(kxbuf, ONE)",
        "    thbuf = np.empty(pw, dtype=x.dtype)",
        "    ckbuf = np.empty(pw, dtype=x.dtype)  # this step's terms of dL/dk and dL/dth",
        "    cthbuf = np.empty(pw, dtype=x.dtype)",
        "    dkbuf = np.empty(pw, dtype=np.float64)  # parameter gradients are sums over T (and later N):",
        "    dthbuf = np.empty(pw, dtype=np.float64)  # accumulate them in float64",
        "    for c0 in range(n0, n1, sub):",
        "        c1 = min(c0 + sub, n1)",
        "        c2 = min(c1 + sub, n1)  # the next sub-block: its x rows are prefetched",
        "        m = c1 - c0",
        "        v = vbuf[:m]",
        "        dv = dvbuf[:m]",
        "        load_row(v, v0, c0)",
        "        if has_gvlast:",
        "            load_row(dv, gvlast, c0)",
        "        else:",
        "            fill(dv, ZERO)",
        "        if fast:",
        "            kk = k[0]",
        "            kx = kk if decay_input else ONE",
        "            omk = ONE - kk",
        "            for t in range(T):  # 1. replay the forward: h_t, bit-identical to the forward's",
        "                replay_row(x[t * xs, c0:c1], hb[t, :m], v, kk, vth[0], v_reset)",
        "            for t in range(T - 1, -1, -1):  # 2. reverse sweep",
        "                if has_gvseq:  # dL/dv_t from v_seq joins the running dL/dv_t",
        "                    for j in range(m):",
        "                        dv[j] += gvseq[t, U(c0 + j)]",
        "                gsr = gsbuf[:m] if gs_const else gs[t, c0:c1]",
        "                pf2 = nogs if gs_const else (gs[t - 1, c0:c1] if t > 0 else gs[T - 1, c1:c2])",
        "                reverse_row(hb[t, :m], gx[t, c0:c1], gsr, dv, vth[0], kx, omk, nd, v_reset, alpha,",
        "                            stream, x[t * xs, c1:c2], pf2)",
        "        else:",
        "            kb = kbuf[:m]",
        "            thb = thbuf[:m]",
        "            load_row(kb, k, c0)",
        "            load_row(thb, vth, c0)",
        "            kxb = kb if decay_input else kxbuf[:m]",
        "            ck = ckbuf[:m]",
        "            cth = cthbuf[:m]",
        "            dk = dkbuf[:m]",
        "            dth = dthbuf[:m]",
        "            fill(dk, 0.0)",
        "            fill(dth, 0.0)",
        "            for t in range(T):  # 1. replay the forward",
        "                replay_row_p(x[t * xs, c0:c1], hb[t, :m], eb[t if need_k else 0, :m], v, kb, thb,",
        "                             v_reset, need_k)",
        "            for t in range(T - 1, -1, -1):  # 2. reverse sweep",
        "                if has_gvseq:  # dL/dv_t from v_seq joins the running dL/dv_t",
        "                    for j in range(m):",
        "                        dv[j] += gvseq[t, U(c0 + j)]",
        "                gsr = gsbuf[:m] if gs_const else gs[t, c0:c1]",
        "                pf2 = nogs if gs_const else (gs[t - 1, c0:c1] if t > 0 else gs[T - 1, c1:c2])",
        "                reverse_row_p(hb[t, :m], eb[t if need_k else 0, :m], gx[t, c0:c1], gsr, dv, kb, kxb,",
        "                              thb, ck, cth, v_reset, nd, hf, alpha, need_k, need_th, stream,",
        "                              x[t * xs, c1:c2], pf2)",
        "                if need_th:",
        "                    for j in range(m):",
        "                        dth[j] += cth[j]",
        "                if need_k:",
        "                    for j in range(m):",
        "                        dk[j] += ck[j]",
        "            if need_k:",
        "                store_row(gk, dk, c0)",
        "            if need_th:",
        "                store_row(gth, dth, c0)",
        "        if has_gv0:",
        "            store_row(gv0, dv, c0)",
        "",
        "",
        "@nb.njit(BWD_SIG, parallel=True, **JIT)",
        "def lif_bwd(x, gs, gs_const, gvseq, gvlast, v0, k, vth, v_reset, hard, decay_input, detach, alpha,",
        "            block, sub, gx, gv0, gk, gth, stream, replay_row, reverse_row, replay_row_p, reverse_row_p):",
        "    # gs: [T, N], or (1, 1) holding one value for every element when gs_const; gvseq / gvlast / gv0:",
        "    # [T, N] / [N] / [N] or empty for 'no gradient' ('not needed').  The parallel blocks (block",
        "    # neurons, buffers allocated once per block) are cut into sub-blocks of sub neurons whose T x sub",
        "    # history stays in cache.  Each sub-block replays h_t into that buffer (replay_row / replay_row_p:",
        "    # the row loops for (hard, decay_input) with shared / per-neuron k and vth), then walks back in",
        "    # time writing dL/dx_t once (stream: by non-temporal stores, rows of gx 64-byte aligned) with",
        "    # reverse_row (shared k and vth, no parameter gradient) or reverse_row_p (per-neuron k and vth;",
        "    # the step's terms of dL/dth and, when gk is not empty, of dL/dk from e_t = dh_t/dk, which the",
        "    # replay keeps next to h_t; summed here in float64), the row loops for (hard, surrogate).  While",
        "    # a reverse row runs it prefetches the next sub-block's x_t and the dL/ds row read next.",
        "    N = x.shape[1]",
        "    nblk = (N + block - 1) // block",
        "    for b in prange(nblk):",
        "        n0 = b * block",
        "        bwd_block(n0, min(n0 + block, N), x, gs, gs_const, gvseq, gvlast, v0, k, vth, v_reset, hard,",
        "                  decay_input, detach, alpha, sub, gx, gv0, gk, gth, stream, replay_row, reverse_row,",
        "                  replay_row_p, reverse_row_p)",
        "",
    ]
    return "\n".join(a)


class _TypedLiterals(ast.NodeTransformer):
    """Number literals ``c`` -> ``DT(c)``: in numba a float literal is float64 and would widen float32 math."""

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Call(ast.Name("DT", ast.Load()), [node], []), node)
        return node


def _derivative_source(grad_src) -> str | None:
    """The surrogate derivative's source as ``def _sg(u, alpha)`` with typed literals; None where the source is
    not available (e.g. a function defined in a doctest or a REPL)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(grad_src)))
    except (OSError, TypeError, SyntaxError):
        return None
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, ast.FunctionDef):
        return None
    fn.name, fn.decorator_list = "_sg", []
    return ast.unparse(ast.fix_missing_locations(_TypedLiterals().visit(tree))) + "\n"


def _module(dtype: np.dtype, grad_src=None):
    """The generated module of ``dtype``'s drivers and forward/replay rows (``grad_src`` None), or of the
    reverse rows for (``dtype``, surrogate derivative ``grad_src``).  Compiled on first use, once per process.

    With the sources available, the module is written to ``$SPIKEFORGE_CACHE_DIR/cpu`` (default
    ``~/.cache/spikeforge/cpu``) under a name holding its content hash, and numba caches its compiled code next to
    it, so a later process loads it instead of compiling (the hash makes a stale cache impossible).  Otherwise
    it is compiled from memory, with the derivative bound to scalar math by :func:`spikeforge.surrogate.bind`."""
    key = (dtype, grad_src)
    mod = _MODULES.get(key)
    if mod is None:
        with _lock:
            mod = _MODULES.get(key)
            if mod is None:
                mod = _MODULES[key] = _load_module(dtype, grad_src)
    return mod


def _load_module(dtype: np.dtype, grad_src):
    nb = _numba()
    kind = "lif" if grad_src is None else "reverse"
    sg_src = "" if grad_src is None else _derivative_source(grad_src)
    cache = cache_dir("cpu") if sg_src is not None else None
    prelude = _PRELUDE.format(dtype=dtype.name, cache=cache is not None, pf_locality=PF_LOCALITY, pf_chunk=PF_CHUNK)
    if grad_src is None:
        parts = [prelude, _rows_source(), _drivers_source()]
    else:
        parts = [prelude, sg_src or "", '_sg = nb.njit(inline="always")(_sg)\n' if sg_src else "", _reverse_source()]
    if cache is None:  # the derivative's source is unknown: bind the function itself to this module's scalar math
        g: dict = {}
        exec(compile(prelude, f"<spikeforge.kernels.cpu:{kind}>", "exec"), g)  # noqa: S102
        g["_sg"] = nb.njit(inline="always")(bind(grad_src, g))
        exec(compile(_reverse_source(), f"<spikeforge.kernels.cpu:{kind}>", "exec"), g)  # noqa: S102
        return types.SimpleNamespace(**g)
    return load_generated(cache, f"{kind}_{dtype.name}", "\n\n".join(parts), "spikeforge_cpu")


_ROW_FN = None


def _row_fn_class():
    """The class of row-loop arguments: a numba WrapperAddressProtocol whose numba type is computed once (numba's
    generic typeof of such an object costs ~10 us per argument and call)."""
    global _ROW_FN
    if _ROW_FN is None:
        nb = _numba()
        from numba.core.typing.typeof import typeof_impl

        class RowFn(nb.types.WrapperAddressProtocol):
            def __init__(self, cf):
                self.cf = cf
                self.numba_type = nb.types.FunctionType(cf._sig)
                self._numba_type_ = self.numba_type  # read by the dispatcher's C fast path: no Python typeof call

            def __wrapper_address__(self):
                return self.cf.address

            def signature(self):
                return self.cf._sig

        @typeof_impl.register(RowFn)
        def _typeof_row_fn(val, c):
            return val.numba_type

        _ROW_FN = RowFn
    return _ROW_FN


def _row(mod, name: str):
    """``mod.name`` as a driver argument (made once per module)."""
    args = vars(mod).setdefault("_row_args", {})
    fn = args.get(name)
    if fn is None:
        fn = args[name] = _row_fn_class()(getattr(mod, name))
    return fn


def surrogate_derivative(surrogate: Surrogate, u: np.ndarray) -> np.ndarray:
    """The surrogate derivative exactly as the compiled backward evaluates it, on a 1-D float32/float64 array."""
    u = np.ascontiguousarray(u)
    out = np.empty_like(u)
    _module(u.dtype).call_sg_row(_row(_module(u.dtype, surrogate.grad_source), "sg_row"), u,
                                 u.dtype.type(surrogate.alpha), out)
    return out


def _block(T: int, N: int, itemsize: int) -> tuple[int, int]:
    """(neurons per parallel block, per sub-block) of the backward.  A sub-block's ``T x sub`` history (h_t, and
    e_t for dL/dk) fits in ``SUB_BYTES``; the parallel blocks hold whole sub-blocks, at least 4 blocks per thread
    when there is enough work.  Both are multiples of 16 (whole SIMD vectors, 64-byte aligned rows)."""
    sub = max(64, min(16384, SUB_BYTES // max(1, T * itemsize)))
    per_thread = -(-N // (4 * max(1, torch.get_num_threads())))
    sub = min(sub, max(64, per_thread))
    sub = max(16, (sub // 16) * 16)
    block = max(sub, -(-per_thread // sub) * sub)
    return block, sub


STREAM_MIN_BYTES = 16 << 20  # outputs at least this large are written by non-temporal stores (see _stream)


def _stream(out: np.ndarray) -> bool:
    """Whether a kernel writes ``out`` ([T, N]) by non-temporal stores.  For outputs too large to stay in the
    last-level cache, that saves the read of each line before it is written (a third of the forward's memory
    traffic).  The stores claim 64-byte alignment, so every row must start 64-byte aligned: the buffer does (the
    pool aligns its buffers), N must be a multiple of 64 bytes, and blocks are multiples of 16 neurons."""
    return out.nbytes >= STREAM_MIN_BYTES and out.ctypes.data % 64 == 0 and (out.shape[1] * out.itemsize) % 64 == 0


def _fwd_block(N: int) -> int:
    """Neurons per parallel block of the forward: at most ``FWD_BLOCK`` (the block's state stays in L2 while the
    rows of x and s stream), and the same number of blocks on every thread."""
    threads = max(1, torch.get_num_threads())
    nblk = threads * -(-N // (threads * FWD_BLOCK))
    return max(16, -(-N // (nblk * 16)) * 16)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


_EMPTY: dict = {}  # never written: an absent gradient or output, shared by every call


def _empty(dt: np.dtype, ndim: int) -> np.ndarray:
    key = (dt, ndim)
    e = _EMPTY.get(key)
    if e is None:
        e = _EMPTY[key] = np.empty((0,) * ndim, dtype=dt)
    return e


@functools.lru_cache(maxsize=1024)
def _shared(value: float, dt: np.dtype) -> np.ndarray:
    """A parameter given as a number, as the length-1 array the kernels take (shared: the kernels never write it)."""
    return np.full(1, value, dtype=dt)


def _param_arg(p, x2: torch.Tensor, N: int, shape, dt: np.dtype) -> np.ndarray:
    """A parameter as the kernels take it: one value (length 1), or per neuron with a period that divides N
    (:func:`_periodic`), or all N values."""
    if not torch.is_tensor(p):
        return _shared(float(p), dt)
    q = _periodic(p, shape)
    if q is not None:
        return _np(q.to(dtype=x2.dtype).reshape(-1).contiguous())
    return _param_vec(p, x2, N, shape).numpy()


def _periodic(p: torch.Tensor, shape) -> torch.Tensor | None:
    """``p`` without its leading broadcast dims when it spans the trailing dims of ``shape`` exactly (e.g. a
    per-neuron threshold ``[C, H, W]`` for input ``[B, C, H, W]``): its flat values then repeat with period
    ``p.numel()`` along the flat neurons, and the kernels index them modulo that period instead of receiving an
    N-long copy.  None otherwise (e.g. a per-channel ``[C, 1, 1]``)."""
    q = p.detach()
    while q.dim() > 0 and q.shape[0] == 1 and q.numel() > 1:
        q = q[0]
    if q.numel() <= 1 or q.dim() > len(shape) or tuple(q.shape) != tuple(shape[len(shape) - q.dim():]):
        return None
    return q


def _saveable(p):
    return p.detach() if torch.is_tensor(p) else None


def _grad_arg(g, T, N, dt, *, seq: bool) -> np.ndarray:
    """An incoming gradient as a C array ([T, N] or [N]), or empty for None."""
    if g is None:
        return _empty(dt, 2 if seq else 1)
    return _np(g.reshape((T, N) if seq else (N,)).contiguous())


def _spike_grad_arg(gs, T, N, dt) -> tuple[bool, np.ndarray]:
    """dL/ds as the kernels take it: (True, one value as a (1, 1) array) when it is the same everywhere (None,
    or broadcast as from ``s.sum().backward()``), else (False, a C array [T, N])."""
    if gs is None:  # only v_T / v_seq are used: the spikes' gradient is 0
        return True, np.zeros((1, 1), dtype=dt)
    if _is_const(gs):
        g = np.empty((1, 1), dtype=dt)
        g[0, 0] = _np(gs).flat[0]
        return True, g
    return False, _grad_arg(gs, T, N, dt, seq=True)


def _x_arg(x_seq: torch.Tensor, T: int, N: int) -> np.ndarray:
    """The input as a C array ``[T, N]``, or ``[1, N]`` when every step is the same memory (stride 0 over time,
    e.g. a direct-coded first layer): the kernels then read that one step T times instead of a T-fold copy."""
    if T > 1 and x_seq.stride(0) == 0:
        return _np(x_seq[:1].reshape(1, N).contiguous())
    if x_seq.is_contiguous():  # the common case: a numpy view, without torch's (slower) reshape
        return _np(x_seq).reshape(T, N)
    return _np(x_seq.reshape(T, N).contiguous())


def _state_arg(v0, N: int, dt: np.dtype) -> tuple[np.ndarray, torch.Tensor | None]:
    """The initial state as the kernels take it (length 1 for one value everywhere, else N) and the tensor to
    save for backward; ``v0`` is a tensor or a number (one value everywhere: nothing to save)."""
    if not torch.is_tensor(v0):
        return _shared(float(v0), dt), None
    v0f = _state_vec(v0, N)
    return v0f.numpy(), v0f


_FWD_ROWS: dict = {}
_BWD_ROWS: dict = {}


def _fwd_rows(dt: np.dtype, hard: bool, decay_input: bool) -> tuple:
    """(module, row loop for shared parameters, for per-neuron parameters) of a forward variant; looked up once
    (the lookups cost several microseconds per call otherwise)."""
    key = (dt, hard, decay_input)
    rows = _FWD_ROWS.get(key)
    if rows is None:
        mod, tag = _module(dt), _tag(hard, decay_input)
        rows = _FWD_ROWS[key] = (mod, _row(mod, f"fwd_row_{tag}"), _row(mod, f"fwd_row_p_{tag}"))
    return rows


def _bwd_rows(dt: np.dtype, grad_src, hard: bool, decay_input: bool) -> tuple:
    """(module, replay row, reverse row, per-neuron replay row, per-neuron reverse row) of a backward variant."""
    key = (dt, grad_src, hard, decay_input)
    rows = _BWD_ROWS.get(key)
    if rows is None:
        mod, rev, tag = _module(dt), _module(dt, grad_src), _tag(hard, decay_input)
        rows = _BWD_ROWS[key] = (mod, _row(mod, f"replay_row_{tag}"), _row(rev, f"reverse_row_{_tag(hard)}"),
                                 _row(mod, f"replay_row_p_{tag}"), _row(rev, "reverse_row_p"))
    return rows


def _lif_fwd(x_seq, v0, k, v_th, v_reset, decay_input, return_v, check):
    """Run the forward kernel; returns ``(spikes, v_T, v_seq or None, v0 to save for backward or None, x as the
    kernel read it)``."""
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    N = math.prod(shape)
    xa = _x_arg(x_seq, T, N)
    dt = xa.dtype
    hard = v_reset is not None
    s = _POOL.empty(x_seq.shape, x_seq.dtype)
    sa = s.numpy().reshape(T, N)
    v_seq = _POOL.empty(x_seq.shape, x_seq.dtype) if return_v else None
    v_last = _new(v0.shape if torch.is_tensor(v0) else shape, x_seq.dtype)
    v0a, v0_saved = _state_arg(v0, N, dt)
    mod, fwd_row, fwd_row_p = _fwd_rows(dt, hard, decay_input)
    _sync_threads(T * N)
    nbad = mod.lif_fwd(xa, v0a, _param_arg(k, x_seq, N, shape, dt), _param_arg(v_th, x_seq, N, shape, dt),
                       dt.type(float(v_reset) if hard else 0.0), return_v, _fwd_block(N), sa,
                       _empty(dt, 2) if v_seq is None else v_seq.numpy().reshape(T, N), v_last.numpy().reshape(N),
                       _stream(sa), fwd_row, fwd_row_p)
    if check and nbad:
        raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
    return s, v_last, v_seq, v0_saved, xa


def _number(p):
    return None if torch.is_tensor(p) else float(p)


class LIFFamilyCpuFn(torch.autograd.Function):
    """Fused forward/backward. ``k`` and ``v_th`` are floats or tensors broadcastable to ``x_seq.shape[1:]``;
    ``v0`` is a tensor of N elements or a float (the same value everywhere)."""

    @staticmethod
    def forward(ctx, x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check):
        s, v_last, v_seq, v0_saved, xa = _lif_fwd(x_seq, v0, k, v_th, v_reset, decay_input, return_v, check)
        # Saved: the input itself (no new memory), the initial state and the parameters as given.
        ctx.save_for_backward(x_seq, v0_saved, _saveable(k), _saveable(v_th))
        shape = x_seq.shape[1:]
        ctx.cfg = (x_seq.shape[0], math.prod(shape), shape, v_reset is not None,
                   0.0 if v_reset is None else float(v_reset), decay_input, detach_reset, surrogate,
                   _number(k), _number(v_th), _number(v0), v_last.shape)
        # x as the kernel read it, when that is a view of x (no memory of its own), for the first backward to
        # reuse; dropped there, so that it does not keep x alive after autograd has freed the saved x.
        ctx.xa = xa if x_seq.is_contiguous() else None
        # an unused output's gradient stays None instead of a tensor of zeros: the kernel reads none
        ctx.set_materialize_grads(False)
        return s, v_last, v_seq

    @staticmethod
    def backward(ctx, gs, gvlast, gvseq):
        x_seq, v0_t, k_t, th_t = ctx.saved_tensors  # (raises if any was modified in place since the forward)
        T, N, shape, hard, vr, decay_input, detach, surrogate, k_f, th_f, v0_f, v0_shape = ctx.cfg
        xa, ctx.xa = ctx.xa, None
        if xa is None:
            xa = _x_arg(x_seq, T, N)
        dt = xa.dtype
        _, need_v0, need_k, need_th = ctx.needs_input_grad[:4]
        gx = _POOL.empty(x_seq.shape, x_seq.dtype)
        gxa = gx.numpy().reshape(T, N)
        gv0 = torch.empty(N, dtype=x_seq.dtype) if need_v0 else None
        gk = torch.empty(N, dtype=torch.float64) if need_k else None
        gth = torch.empty(N, dtype=torch.float64) if need_th else None
        gs_const, gs_a = _spike_grad_arg(gs, T, N, dt)
        mod, replay_row, reverse_row, replay_row_p, reverse_row_p = _bwd_rows(dt, surrogate.grad_source, hard,
                                                                               decay_input)
        _sync_threads(T * N)
        mod.lif_bwd(
            xa, gs_a, gs_const, _grad_arg(gvseq, T, N, dt, seq=True), _grad_arg(gvlast, T, N, dt, seq=False),
            _shared(v0_f, dt) if v0_t is None else v0_t.numpy(),
            _param_arg(k_f if k_t is None else k_t, x_seq, N, shape, dt),
            _param_arg(th_f if th_t is None else th_t, x_seq, N, shape, dt), dt.type(vr), hard, decay_input, detach,
            dt.type(surrogate.alpha), *_block(T, N, dt.itemsize * (2 if need_k else 1)), gxa,
            _empty(dt, 1) if gv0 is None else gv0.numpy(),
            _empty(_F64, 1) if gk is None else gk.numpy(),
            _empty(_F64, 1) if gth is None else gth.numpy(), _stream(gxa),
            replay_row, reverse_row, replay_row_p, reverse_row_p,
        )
        grad_v0 = None
        if need_v0:
            grad_v0 = gv0.view(shape).sum_to_size(v0_shape) if v0_shape != shape else gv0.view(shape)
        grad_k = _reduce_param(gk, shape, k_t) if need_k else None
        grad_th = _reduce_param(gth, shape, th_t) if need_th else None
        return gx, grad_v0, grad_k, grad_th, None, None, None, None, None, None


_F64 = np.dtype(np.float64)


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
    if not x_seq.is_cpu:
        raise ValueError(f"backend='cpu': x_seq is on {x_seq.device}; the cpu backend needs CPU tensors")
    if torch.compiler.is_compiling():  # numba cannot be traced: the same kernels as opaque operators (ops.py)
        from .ops import lif_cpu_op

        return lif_cpu_op(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, check)
    differentiable = torch.is_grad_enabled() and (x_seq.requires_grad or _requires_grad(v0, k, v_th))
    if differentiable or _fw_ad._current_level >= 0:
        return LIFFamilyCpuFn.apply(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v,
                                    check)
    # nothing to differentiate (inference, or no_grad, and no forward-mode AD level open, where the Function would
    # say it has no jvp): the forward alone, without autograd's bookkeeping
    return _lif_fwd(x_seq, v0, k, v_th, v_reset, decay_input, return_v, check)[:3]


def _requires_grad(*args) -> bool:
    return any(torch.is_tensor(a) and a.requires_grad for a in args)
