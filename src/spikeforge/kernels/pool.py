r"""Fused CPU max pooling for channels-last tensors (numba): the same values and gradients as ``nn.MaxPool2d``.

Why: in a conv SNN the pooling runs on the spikes at full resolution, where ``torch.nn.functional.max_pool2d``
writes an ``int64`` index per output (8 B) and its backward zero-fills the whole input gradient before scattering
into it.  Here the forward keeps the winner's position inside its window as one ``uint8`` (1 B per output), and
the backward *gathers*: every input gradient element is written once, with the sum of the output gradients of
the windows that chose it (zero for the others).

Semantics, identical to PyTorch's CPU kernel: window ``(oh, ow)`` covers rows ``oh*s - p .. oh*s - p + k - 1``
(clipped to the input), the running maximum starts at ``-inf`` on the window's first valid element and is
replaced by ``v`` iff ``v > max or v is NaN`` (so the first maximum wins a tie, and a NaN propagates).  The
backward adds the output gradients of the windows that chose an element in ascending ``(oh, ow)`` order, as
PyTorch's scatter does, so gradients are bit-identical, overlapping windows (``k > s``) included.

Scope: 4-D float32/float64 CPU input in channels-last memory order, dilation 1, ``ceil_mode=False``, ``k <= 16``;
:class:`spikeforge.layers.MaxPool2d` uses :func:`max_pool2d_cl` for those and ``torch``'s kernel otherwise.
"""

from __future__ import annotations

import threading
import types

import torch

from .runtime import cache_dir, load_generated, start_numba, sync_threads

MAX_KERNEL = 16  # the window position is kept in one uint8: k * k <= 256
MIN_ELEMENTS = 1 << 15  # below this torch's kernel is as fast (no thread start-up)

_SOURCE = '''\
import numba as nb
import numpy as np
from numba import prange

JIT = dict(nogil=True, cache={cache}, error_model="numpy")


@nb.njit(parallel=True, **JIT)
def maxpool_fwd(x, k, s, p, out, idx):
    # x [N, H, W, C], out / idx [N, OH, OW, C]; idx = (ih - h0) * k + (iw - w0) of the winner
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    ninf = x.dtype.type(-np.inf)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        h0 = oh * s - p
        ih0, ih1 = max(h0, 0), min(h0 + k, H)
        for ow in range(OW):
            w0 = ow * s - p
            iw0, iw1 = max(w0, 0), min(w0 + k, W)
            o = out[n, oh, ow]
            ix = idx[n, oh, ow]
            first = np.uint8((ih0 - h0) * k + (iw0 - w0))
            for c in range(C):
                o[c] = ninf
                ix[c] = first
            for ih in range(ih0, ih1):
                for iw in range(iw0, iw1):
                    pos = np.uint8((ih - h0) * k + (iw - w0))
                    xr = x[n, ih, iw]
                    for c in range(C):
                        v = xr[c]
                        oc = o[c]
                        take = (v > oc) | (v != v)
                        o[c] = v if take else oc
                        ix[c] = pos if take else ix[c]


@nb.njit(parallel=True, **JIT)
def maxpool2_fwd(x, out, idx):
    # the common case k = s = 2, p = 0, with the window's running maximum in registers; the first element is
    # always taken (it beats the initial -inf, or is -inf itself, or NaN)
    N, H, W, C = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        for ow in range(OW):
            x0 = x[n, 2 * oh, 2 * ow]
            x1 = x[n, 2 * oh, 2 * ow + 1]
            x2 = x[n, 2 * oh + 1, 2 * ow]
            x3 = x[n, 2 * oh + 1, 2 * ow + 1]
            o = out[n, oh, ow]
            ix = idx[n, oh, ow]
            for c in range(C):
                m = x0[c]
                i = np.uint8(0)
                v = x1[c]
                t = (v > m) | (v != v)
                m = v if t else m
                i = np.uint8(1) if t else i
                v = x2[c]
                t = (v > m) | (v != v)
                m = v if t else m
                i = np.uint8(2) if t else i
                v = x3[c]
                t = (v > m) | (v != v)
                m = v if t else m
                i = np.uint8(3) if t else i
                o[c] = m
                ix[c] = i


@nb.njit(parallel=True, **JIT)
def maxpool_bwd(g, idx, k, s, p, gin):
    # g / idx [N, OH, OW, C], gin [N, H, W, C]: gin[n, ih, iw] = sum over the windows (oh, ow) covering (ih, iw),
    # in ascending order, of g[n, oh, ow] where that window chose (ih, iw)
    N, H, W, C = gin.shape
    OH, OW = g.shape[1], g.shape[2]
    zero = gin.dtype.type(0.0)
    for r in prange(N * H):
        n = r // H
        ih = r - n * H
        oh_lo = max(0, -((k - 1 - ih - p) // s))  # ceil((ih + p - k + 1) / s)
        oh_hi = min(OH - 1, (ih + p) // s)
        for iw in range(W):
            ow_lo = max(0, -((k - 1 - iw - p) // s))
            ow_hi = min(OW - 1, (iw + p) // s)
            gr = gin[n, ih, iw]
            for c in range(C):
                gr[c] = zero
            for oh in range(oh_lo, oh_hi + 1):
                for ow in range(ow_lo, ow_hi + 1):
                    pos = np.uint8((ih - (oh * s - p)) * k + (iw - (ow * s - p)))
                    grow = g[n, oh, ow]
                    irow = idx[n, oh, ow]
                    for c in range(C):
                        gr[c] += grow[c] if irow[c] == pos else zero
'''

_lock = threading.Lock()
_MOD: list = []


def _module():
    if not _MOD:
        start_numba()  # starts numba's pool first, keeping torch's thread count
        with _lock:
            if not _MOD:
                d = cache_dir("pool")
                text = _SOURCE.format(cache=d is not None)
                if d is None:
                    g: dict = {}
                    exec(compile(text, "<spikeforge.kernels.pool>", "exec"), g)  # noqa: S102
                    _MOD.append(types.SimpleNamespace(**g))
                else:
                    _MOD.append(load_generated(d, "pool", text, "spikeforge_pool"))
    return _MOD[0]


def _out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def supported(x: torch.Tensor, k: int, s: int, p: int, dilation: int, ceil_mode: bool) -> bool:
    """Whether :func:`max_pool2d_cl` handles this call (else use ``torch.nn.functional.max_pool2d``).  Never under
    ``torch.compile``/``torch.export``: the compiler generates its own pooling (numba cannot be traced)."""
    if torch.compiler.is_compiling():
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() != 4:
        return False
    if dilation != 1 or ceil_mode or not (1 <= k <= MAX_KERNEL) or s < 1 or not (0 <= p <= k // 2):
        return False
    if x.numel() < MIN_ELEMENTS:
        return False
    # channels-last memory order, and not also C order (C == 1 or 1x1 images: torch would keep C order)
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False
    H, W = x.shape[2], x.shape[3]
    if _out_size(H, k, s, p) < 1 or _out_size(W, k, s, p) < 1:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _nhwc(t: torch.Tensor):
    return t.detach().permute(0, 2, 3, 1).numpy()


def _run_fwd(x, k, s, p):
    N, C, H, W = x.shape
    OH, OW = _out_size(H, k, s, p), _out_size(W, k, s, p)
    out = torch.empty((N, C, OH, OW), dtype=x.dtype, memory_format=torch.channels_last)
    idx = torch.empty((N, C, OH, OW), dtype=torch.uint8, memory_format=torch.channels_last)
    sync_threads(x.numel())
    if (k, s, p) == (2, 2, 0):
        _module().maxpool2_fwd(_nhwc(x), _nhwc(out), _nhwc(idx))
    else:
        _module().maxpool_fwd(_nhwc(x), k, s, p, _nhwc(out), _nhwc(idx))
    return out, idx


class _MaxPool2dCL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, s, p):
        out, idx = _run_fwd(x, k, s, p)
        ctx.save_for_backward(idx)
        ctx.cfg = (k, s, p, tuple(x.shape))
        ctx.mark_non_differentiable(idx)
        return out

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        k, s, p, shape = ctx.cfg
        g = g.contiguous(memory_format=torch.channels_last)
        gin = torch.empty(shape, dtype=g.dtype, memory_format=torch.channels_last)
        sync_threads(gin.numel())
        _module().maxpool_bwd(_nhwc(g), _nhwc(idx), k, s, p, _nhwc(gin))
        return gin, None, None, None


def max_pool2d_cl(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """``F.max_pool2d(x, k, s, p)`` for a channels-last ``x`` (see :func:`supported`); the result is channels-last."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2dCL.apply(x, k, s, p)
    return _run_fwd(x, k, s, p)[0]
