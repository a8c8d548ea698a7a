r"""One generic engine for recurrent neurons: a neuron's update is written once, as a *cell*, and run by
several executions.

A :class:`Cell` holds two plain Python functions, written with arithmetic and a few helper names only
(the way :mod:`spikeforge.surrogate` writes derivatives), so :func:`spikeforge.surrogate.bind` can point
those names at torch or at scalar numba math:

- ``step(x, *states, *params) -> (out, *new_states)``: one time step.  Helpers: ``spike(u)`` (Heaviside
  :math:`u \ge 0` with the surrogate gradient), ``ste(q, a)`` (value ``q``, gradient of ``a``),
  ``floor``, ``relu``, ``clamp(u, lo, hi)``, ``mspike(u, vth, cap)`` (``clamp(floor(u / vth), 0, cap)``, the
  surrogate summed over the levels), and the constants ``ONE`` / ``ZERO`` (typed like the data, so float32
  kernels compute in float32 with the same operation order as torch: spikes are bit-identical).
- ``vjp(g_out, *g_new_states, x, *states, *params, alpha) -> (g_x, *g_states, *g_params)``: the hand-written
  vector-Jacobian product of ``step`` (it recomputes what it needs from the step's inputs).  Helpers:
  ``dspike(u, alpha)`` (the surrogate derivative of :mod:`spikeforge.surrogate`), ``dmspike(u, vth, cap,
  alpha)`` (returns the derivative w.r.t. ``u``; the one w.r.t. ``vth`` is ``-dmspike_k``), ``heav``, ``relu``,
  ``step`` (``[x > 0]``), ``floor``, ``ONE``, ``ZERO``.

Executions:

- ``reference``: :func:`spikeforge.kernels.cell.reference_seq`, a plain torch loop (the definition of truth).
- ``cpu``: the numba driver generated here from the cell (:func:`_build`).  The input is viewed as ``x[T, N]``
  (``[1, N]`` when every step is the same memory).  Neurons are cut into blocks, run in parallel (``prange``),
  each sequential in time.  Each step of a block is one row loop (its own function) over the block's neurons
  whose states, parameters and gradients sit in one flat buffer ``loc`` at compile-time offsets; the loop runs
  in chunks of ``CHUNK`` neurons, each first prefetching its part of the row read next.  The forward writes the
  outputs and the final states and saves only ``x``, the initial states and the parameter tables; the backward
  replays the forward of each block into a ``T x S x block`` history (skipped when ``vjp`` reads no state, see
  :func:`vjp_reads_states`), then runs ``vjp`` in reverse time; a cell with ``keep``/``vjp_kept`` stores its kept
  values instead and runs ``vjp_kept`` on them.  An incoming gradient that is one value
  everywhere (e.g. from ``out.sum()``) is read once.  ``[T, N]`` outputs of at least ``STREAM_MIN_BYTES`` are
  written by non-temporal stores, into buffers of :data:`spikeforge.kernels.runtime.POOL`.  Kernels use
  numpy's error model and compute in the data's dtype.

Parameters are floats or tensors broadcastable to ``x_seq.shape[1:]`` (per neuron, per channel or shared).  The
kernels take every one as a table of ``Q`` entries, each a run of ``inner`` consecutive neurons (``Q`` spans the
dims where the parameter varies: a per-channel value is ``Q = C`` runs of ``H x W``; a shared one is one entry),
filled into the block buffer once per block.  When every entry is a run of at least ``SEG_MIN`` neurons, the
kernels run in *segment mode*: the row loops take the parameters as scalar arguments and are called once per
run of constant parameters.  A gradient is summed per run in the kernel (float32 sums of a block flushed into
float64), added into its table, then reduced to the parameter's shape with ``sum_to_size``.  Parameters listed
in ``Cell.seq_params`` may change over time (broadcastable to the whole ``x_seq``): their tables have ``T`` rows,
filled at every step, and their gradients are summed per step.  Parameters listed in ``Cell.const_params`` are
compiled in as constants, one kernel per value.  Each (cell, dtype, constants, segment mode, streaming) forward
compiles once, the backward also once per surrogate and per set of parameters whose gradient is needed (the
others' code and buffer rows are dropped): the cell's row loops as ``cfunc``s, and a parallel driver shared by
every cell of the same shape, which takes them as arguments; the modules are cached on disk (:func:`_build`).
docs/kernels.md explains the choices (block sizes, prefetching, segment mode) and their measurements.

Example:
    >>> import torch
    >>> from spikeforge.kernels.cell import Cell
    >>> from spikeforge.kernels.dispatch import run_cell
    >>> def if_step(x, v, vth):            # integrate-and-fire with soft reset
    ...     h = v + x
    ...     s = spike(h - vth)
    ...     return s, h - vth * s
    >>> def if_vjp(gs, gv, x, v, vth, alpha):
    ...     h = v + x
    ...     s = heav(h - vth)
    ...     d = dspike(h - vth, alpha)
    ...     gh = gs * d + gv * (ONE - vth * d)
    ...     return gh, gh, -gs * d + gv * (vth * d - s)
    >>> cell = Cell("if_soft", if_step, if_vjp, states=("v",), params=("vth",))
    >>> s, (v,), _ = run_cell(cell, torch.full((4, 1), 0.6), params=(1.0,), backend="reference")
    >>> s.flatten().tolist()
    [0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Callable

import numpy as np
import torch

from ..surrogate import Surrogate, bind
from ._layout import is_const as _is_const
from .cell import Cell, vjp_reads_states
from .runtime import (POOL, PREFETCH_SOURCE, STORE_NT_SOURCE, cache_dir, function_arg, load_generated, start_numba,
                      sync_threads)

# The backward's block buffer (states, parameters, gradients): with at most L2_ROWS rows it may fill L2_BYTES (long
# blocks: fewer row calls per element); with more rows, read and written many times per element, it stays in L1
L1_BYTES = 24 * 1024
L2_BYTES = 512 * 1024
L2_ROWS = 16
MAX_BLOCK = 16384  # neurons per block of the backward, at most
# The forward's block buffer holds only states and parameters and may sit in L2: long blocks read x and write the
# outputs in long runs per step (rows of 1 KB at a stride of N cost twice as much per byte as rows of 16 KB)
FWD_BYTES = 256 * 1024
FWD_MAX_BLOCK = 16384
HIST_BYTES = 1024 * 1024  # the backward's replay history of a block (T x states x block values), at most
CHUNK = 1024  # row loops run in chunks of this many neurons, each first prefetching its part of the next row
# Segment mode: when every parameter is constant on runs of at least this many neurons (shared, or per channel of
# H x W >= SEG_MIN), the row loops take the parameters as scalars, one call per run, instead of reading a row of
# each per element (GLIF's forward: 10 rows read per element become 2)
SEG_MIN = 64
_lock = threading.Lock()
_FWD: dict = {}
_BWD: dict = {}


# Scalar helpers of the fused kernels.  ONE/ZERO are typed like the data (float32 kernels stay in float32).
_PRELUDE = """
import math
import numpy as np
import numba as nb
from numba import prange

DT = np.{dtype}
ONE = DT(1.0)
ZERO = DT(0.0)
PI = DT(math.pi)
SQRT_PI = DT(math.sqrt(math.pi))
exp = math.exp
absf = abs
floor = np.floor


""" + STORE_NT_SOURCE + """

""" + PREFETCH_SOURCE + """

LINE = 64 // np.dtype(DT).itemsize  # values per cache line
CHUNK = {chunk}  # row loops run in chunks of this many neurons, each first prefetching its part of the rows read next
U = nb.uint64  # an index known to be >= 0: no wraparound code
SEG_MIN = {seg_min}  # segment mode: every parameter's runs of constant value are at least this long
@nb.njit(inline="always")
def heav(u):
    return ONE if u >= ZERO else ZERO


spike = heav


@nb.njit(inline="always")
def relu(u):
    return u if u > ZERO else ZERO


@nb.njit(inline="always")
def step(u):
    return ONE if u > ZERO else ZERO


@nb.njit(inline="always")
def ste(q, a):
    return q


@nb.njit(inline="always")
def clamp(u, lo, hi):
    return min(max(u, lo), hi)


@nb.njit(inline="always")
def mspike(u, vth, cap):
    return min(max(np.floor(u / vth), ZERO), cap)


@nb.njit(inline="always")
def fill_tab(dst, n0, m, tab, off, Q, inner):
    # dst[j] = tab[off + ((n0 + j) // inner) % Q] for j < m: a parameter table of Q entries, each a run of ``inner``
    # consecutive neurons (a per-channel table gives runs of H x W neurons; ``inner`` = 1: one entry per neuron)
    j = 0
    if inner == 1:
        while j < m:
            s = (n0 + j) % Q
            e = min(m, j + Q - s)
            dst[j:e] = tab[off + s:off + s + e - j]
            j = e
    else:
        while j < m:
            n = n0 + j
            e = min(m, j + inner - n % inner)
            dst[j:e] = tab[off + (n // inner) % Q]
            j = e


@nb.njit(fastmath={{"reassoc", "nsz"}}, error_model="numpy")
def _sum(src):
    # a gradient sum: it may reassociate, so the loop vectorises (its own function: the flags stay with it)
    acc = ZERO
    for i in range(src.shape[0]):
        acc += src[i]
    return acc


@nb.njit(inline="always")
def sum_tab(dst, n0, m, src, inner):
    # dst[k] += the sum of src over the k-th run of the block (runs as in fill_tab); dst is float64: the float32
    # partial sums of one block are flushed into float64
    if inner == 1:
        for j in range(m):
            dst[j] += src[j]
    else:
        j = 0
        k = 0
        while j < m:
            n = n0 + j
            e = min(m, j + inner - n % inner)
            dst[k] += _sum(src[j:e])
            j = e
            k += 1


@nb.njit(inline="always")
def reduce_tab(gtab, toff, Q, inner, Tp, gbuf, goff, runs, nblk, blk):
    # gtab[toff + t * Q + q] = the sum over blocks of the runs that hold table entry q (run k of block b holds
    # entry ((b * blk) // inner + k) % Q)
    for b in range(nblk):
        e0 = (b * blk) // inner
        for t in range(Tp):
            base = goff + (b * Tp + t) * runs
            for k in range(runs):
                gtab[toff + t * Q + (e0 + k) % Q] += gbuf[base + k]


@nb.njit(inline="always")
def segments(seg, pidx, n0, n1, pm):
    # the runs of the block [n0, n1) on which every array parameter is constant (a per-channel table changes
    # every ``inner`` neurons, a shared one never): seg[q] = start of run q (block-relative), seg[nseg] = the block
    # length; pidx[q, r] = index in ``tab`` of parameter r's value on run q (at step 0).  Returns nseg.
    q = 0
    n = n0
    while n < n1:
        e = n1
        for r in range(pm.shape[0]):
            inner = pm[r, 2]
            if pm[r, 1] > 1:
                e = min(e, (n // inner + 1) * inner)
            pidx[q, r] = pm[r, 0] + (n // inner) % pm[r, 1]
        seg[q] = n - n0
        q += 1
        n = e
    seg[q] = n1 - n0
    return q


@nb.njit(inline="always")
def dmspike(u, vth, cap, alpha):
    # (sum_k g'(u - k vth), sum_k k g'(u - k vth)) over the levels k = 1..cap; a counted loop, so a constant
    # cap (Cell.const_params) unrolls it and the row loop around it vectorises
    du = ZERO
    dk = ZERO
    kf = ZERO
    for _ in range(int(cap)):
        kf += ONE
        d = dspike(u - vth * kf, alpha)
        du += d
        dk += kf * d
    return du, dk
"""


def _renamed_source(fn: Callable, new_name: str) -> str | None:
    """``fn``'s source with its name replaced, or None where the source is not available (e.g. a doctest)."""
    import inspect
    import re
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    src, n = re.subn(rf"^def {re.escape(fn.__name__)}\(", f"def {new_name}(", src, count=1, flags=re.M)
    return src if n == 1 else None


def _typed_source(src: str | None) -> str | None:
    """``src`` with every number literal typed like the data (``0.5`` -> ``DT(0.5)``): a bare float literal is
    float64 in numba and would widen a float32 kernel's math (and halve its vector width)."""
    import ast

    class Typed(ast.NodeTransformer):
        def visit_Constant(self, node):
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                return ast.copy_location(ast.Call(ast.Name("DT", ast.Load()), [node], []), node)
            return node

    if src is None:
        return None
    return ast.unparse(ast.fix_missing_locations(Typed().visit(ast.parse(src)))) + "\n"


# the row loops' signatures (numba types named in the generated rows module): array rows A, an int64 vector I64,
# the per-run parameter values P2 (segment mode), the data's scalar F
_ROW_SIGS = {
    "row_fwd": "nb.types.intp(A, A, A, A{seg})",
    "row_replay": "nb.types.void(A, A, A, A{seg})",
    "row_bwd": "nb.types.void(A, A, A, A, A, F, A, A{seg})",
}
_SEG_ARGS = ", I64, nb.types.intp, P2"
_ROW_TYPES = """
F = nb.from_dtype(DT)
A = F[::1]
P2 = F[:, ::1]
I64 = nb.types.int64[::1]
"""


def _build(cell: Cell, np_dtype, direction: str, grad_src=None, consts=(), grads=(), stream=False, seg=False):
    """Compile the ``direction`` ("fwd"/"bwd") kernel of ``cell`` for ``np_dtype`` (and the values ``consts`` of
    ``cell.const_params``; for "bwd", the indices ``grads`` of the parameters whose gradient it computes;
    ``stream``: outputs by non-temporal stores; ``seg``: segment mode, see :func:`_gen_forward_src`).
    Returns ``(kernel, neurons per block)``: ``kernel(*driver arguments)`` runs the driver with the cell's rows.

    Two modules are generated: the *rows* (the cell's functions, the surrogate derivative and the row loops that
    inline them, compiled as ``numba.cfunc``) and the parallel *driver*, which takes the row loops as function
    arguments.  The driver depends on the cell's shape only (states, parameters, gradients, block size), so it
    compiles once for every cell, constant and surrogate of that shape (e.g. the eight reset/decay/detach variants
    of the LIF family and every surrogate): most of a kernel's compile time is the driver's parallel loop.  When
    the sources are available both are written to ``$SPIKEFORGE_CACHE_DIR/fused`` (default
    ``~/.cache/spikeforge/fused``) under names holding their hash and compiled with numba's on-disk cache, so later
    processes load them instead of compiling (the hash makes a stale cache impossible).  Otherwise the rows are
    compiled from memory with the functions bound by :func:`spikeforge.surrogate.bind`.
    """
    import re

    nb = start_numba()
    fname = f"fused_{direction}"
    # the forward needs the step; the backward replays the step and runs the vjp
    kept = _kept(cell, grads) if direction == "bwd" else None
    fns = ({"STEP": cell.step} if direction == "fwd" else {"STEP": cell.step, "VJP": cell.vjp} if kept is None else
           {"STEP": cell.step, "KEEP": cell.keep, "VJPK": cell.vjp_kept})
    cidx = {cell.params.index(n): f"CONST{i}" for i, n in enumerate(cell.const_params)}
    seq = tuple(cell.params.index(n) for n in cell.seq_params)
    if direction == "fwd":
        blk = _fwd_cap(cell, np_dtype.itemsize, seg)
        src = _gen_forward_src(cell.n_states, cell.n_params, cidx, seq, blk, stream, seg)
    else:
        blk = _bwd_cap(cell, grads, np_dtype.itemsize, seg)
        replay = vjp_reads_states(cell) if kept is None else bool(kept)
        src = _gen_backward_src(cell.n_states, cell.n_params, cidx, seq, grads, replay, blk, stream, seg, kept,
                                len(cell.keep_for))
    cut = src.index(f"def {fname}(")
    rows_src, driver = src[:cut], src[cut:]
    rows = re.findall(r"^def (row_\w+)\(", rows_src, flags=re.M)  # the per-row loops the driver calls
    runs = re.findall(r"^def (run_\w+)\(", rows_src, flags=re.M)  # segment mode: a row's loop over one run
    driver = driver.replace("):\n", f", {', '.join(rows)}):\n", 1)  # the rows become the driver's arguments
    base = _PRELUDE.format(dtype=np_dtype.name, seg_min=SEG_MIN, chunk=CHUNK)
    prelude = base + _ROW_TYPES + "".join(f"CONST{i} = np.{np_dtype.name}({float(v)!r})\n"
                                          for i, v in enumerate(consts))
    sigs = {r: _ROW_SIGS[r].format(seg=_SEG_ARGS if seg else "") for r in rows}
    srcs = {slot: _renamed_source(f, f"_{slot.lower()}_fn") for slot, f in fns.items()}
    sg_src = _typed_source(_renamed_source(grad_src, "_sg_derivative")) if grad_src is not None else ""
    cache = cache_dir("fused")
    stem = f"{direction}_{np_dtype.name}" + ("_nt" if stream else "") + ("_seg" if seg else "")
    jit = 'nb.njit(parallel=True, nogil=True, {}error_model="numpy")'
    if cache is not None:
        dmod = load_generated(cache, f"driver_{stem}", base + "\n\n" + driver + f"\n\n{fname} = "
                              + jit.format("cache=True, ") + f"({fname})\n", "spikeforge_fused")
        drv = getattr(dmod, fname)
    else:
        g: dict = {}
        exec(compile(base + "\n\n" + driver, "<spikeforge.kernels.fused:driver>", "exec"), g)  # noqa: S102
        drv = nb.njit(parallel=True, nogil=True, error_model="numpy")(g[fname])
    if cache is not None and all(v is not None for v in srcs.values()) and sg_src is not None:
        parts = [prelude, sg_src or "", "" if grad_src is None else
                 'dspike = nb.njit(inline="always")(_sg_derivative)\n']
        for slot, fsrc in srcs.items():
            parts += [fsrc, f'{slot} = nb.njit(inline="always")(_{slot.lower()}_fn)\n']
        parts += [rows_src, "".join(f'{r} = nb.njit(inline="always", error_model="numpy")({r})\n' for r in runs),
                  "".join(f'{r} = nb.cfunc({sigs[r]}, cache=True, error_model="numpy")({r})\n' for r in rows)]
        mod = load_generated(cache, f"{cell.name}_{stem}", "\n\n".join(parts), "spikeforge_fused")
        cfs = [getattr(mod, r) for r in rows]
    else:
        g = {}
        exec(compile(prelude + "\n\n" + rows_src, f"<spikeforge.kernels.fused:{cell.name}>", "exec"), g)  # noqa: S102
        if grad_src is not None:
            g["dspike"] = nb.njit(inline="always")(bind(grad_src, g))
        for slot, f in fns.items():
            g[slot] = nb.njit(inline="always")(bind(f, g))
        for r in runs:
            g[r] = nb.njit(inline="always", error_model="numpy")(g[r])
        cfs = [nb.cfunc(eval(sigs[r], g), error_model="numpy")(g[r]) for r in rows]  # noqa: S307
    args = tuple(function_arg(cf) for cf in cfs)

    def kernel(*a):
        return drv(*a, *args)

    return kernel, blk


@functools.lru_cache(maxsize=None)
def _kept(cell: Cell, grads: tuple) -> tuple | None:
    """The indices of ``cell.keep``'s values the backward stores when the parameters ``grads`` need a gradient
    (None: the cell keeps no values; the replay stores its states)."""
    if cell.keep is None:
        return None
    need = {cell.params[i] for i in grads}
    return tuple(i for i, only in enumerate(cell.keep_for) if not only or need & set(only))


def hist_rows(cell: Cell, grads: tuple) -> int:
    """Values the backward's replay stores per neuron and step: the kept values, else the states."""
    kept = _kept(cell, grads)
    return cell.n_states if kept is None else max(1, len(kept))


def block_size(n_rows: int, itemsize: int, budget: int = L1_BYTES, max_block: int = MAX_BLOCK) -> int:
    """Neurons per parallel block (at most) of a generated kernel whose block-local buffer holds ``n_rows`` rows:
    the largest power of two up to ``max_block`` (at least 128) whose buffer fits in ``budget`` bytes.  For the
    backward, whose buffer is read and written many times per element, the budget is L1: a larger buffer spills to
    L2 on every row access (e.g. GLIF's backward with eight parameter gradients: 20 rows)."""
    blk = max_block
    while blk > 128 and n_rows * blk * itemsize > budget:
        blk //= 2
    return blk


@functools.lru_cache(maxsize=None)
def _fwd_cap(cell: Cell, itemsize: int, seg: bool = False) -> int:
    return block_size(_forward_rows(cell, seg), itemsize, FWD_BYTES, FWD_MAX_BLOCK)


@functools.lru_cache(maxsize=None)
def _bwd_cap(cell: Cell, grads: tuple, itemsize: int, seg: bool = False) -> int:
    rows = _backward_rows(cell, grads, seg)
    return block_size(rows, itemsize, L2_BYTES if rows <= L2_ROWS else L1_BYTES, MAX_BLOCK)


def fwd_block(cap: int, N: int) -> int:
    """Neurons per block of a forward call: at most ``cap``, the same number of blocks on every thread, a multiple
    of 16 (whole vectors, 64-byte aligned rows)."""
    threads = max(1, torch.get_num_threads())
    nblk = threads * -(-N // (threads * cap))
    return max(16, min(cap, -(-N // (nblk * 16)) * 16))


def bwd_block(cap: int, N: int, T: int, S: int, itemsize: int) -> int:
    """Neurons per block of a backward call: at most ``cap``, the replay's ``T x S x block`` history within
    ``HIST_BYTES``, at least 4 blocks per thread when N allows, a multiple of 16."""
    hist = max(16, HIST_BYTES // max(1, T * S * itemsize) // 16 * 16)
    return run_block(min(cap, hist), N)


def run_block(cap: int, N: int) -> int:
    """Neurons per block of one call: ``cap`` (the kernel's block size), or fewer (a multiple of 16) so that each
    thread gets at least 4 blocks when ``N`` is small."""
    per = -(-N // (4 * max(1, torch.get_num_threads())))
    return max(16, min(cap, -(-per // 16) * 16))


def _forward_rows(cell: Cell, seg: bool = False) -> int:
    """Rows of the forward's block buffer: states and array parameters (none in segment mode)."""
    return cell.n_states + (0 if seg else cell.n_params - len(cell.const_params))


def _backward_rows(cell: Cell, grads: tuple, seg: bool = False) -> int:
    """Rows of the backward's block buffer: states, array parameters, state gradients, parameter gradients.  In
    segment mode the parameters have no rows, but the block keeps the size it has with them (docs/kernels.md says
    why)."""
    return 2 * cell.n_states + (cell.n_params - len(cell.const_params)) + len(grads)


def _param_slots(P: int, consts: dict, first_row: int, blk: int, seg: bool = False):
    """Per parameter: its expression inside the row loop (a ``loc`` row, a scalar argument ``p<rank>`` in
    segment mode, or a constant), and the ``loc`` offset of each array parameter (its index in the parameter
    tables is its rank among them; in segment mode it has no ``loc`` row: the offset is None)."""
    exprs, offs, r = [], {}, first_row
    for i in range(P):
        if i in consts:
            exprs.append(consts[i])
        elif seg:
            exprs.append(f"p{len(offs)}")
            offs[i] = None
        else:
            offs[i] = r * blk
            exprs.append(f"loc[U({r * blk}) + j]")
            r += 1
    return exprs, offs


def _seg_block_src(a, Pa: int, indent: str) -> None:
    # segment mode, once per block: the runs of constant parameters (seg, nseg), the table index of each
    # parameter's value on each run (pidx) and the values themselves (pv, at step 0)
    a(f"{indent}seg = np.empty(m // SEG_MIN + 3, dtype=np.int64)")
    a(f"{indent}pidx = np.empty((m // SEG_MIN + 2, {max(Pa, 1)}), dtype=np.int64)")
    a(f"{indent}pv = np.empty((m // SEG_MIN + 2, {max(Pa, 1)}), dtype=x.dtype)")
    a(f"{indent}nseg = segments(seg, pidx, n0, n1, pm)")
    a(f"{indent}for q in range(nseg):")
    a(f"{indent}    for r in range({Pa}):")
    a(f"{indent}        pv[q, r] = tab[pidx[q, r]]")


def _seg_step_src(a, seq_ranks: set, indent: str) -> None:
    # segment mode, per step t: the values of the time-varying parameters with one table row per step
    for r in sorted(seq_ranks):
        a(f"{indent}if pm[{r}, 3] > 1:")
        a(f"{indent}    for q in range(nseg):")
        a(f"{indent}        pv[q, {r}] = tab[pidx[q, {r}] + t * pm[{r}, 1]]")


def _params_block_src(a, seg: bool, Pa: int, o_p: dict, seq: tuple, indent: str) -> None:
    # once per block: the parameters' scalar values per run (segment mode) or their loc rows
    if seg:
        _seg_block_src(a, Pa, indent)
    else:
        _fill_src(a, o_p, seq, indent, "block")


def _params_step_src(a, seg: bool, seq_ranks: set, o_p: dict, seq: tuple, indent: str) -> str:
    # every step t: the time-varying parameters; returns the extra arguments of the row call (segment mode: the
    # runs and their values)
    if seg:
        _seg_step_src(a, seq_ranks, indent)
        return ", seg, nseg, pv"
    _fill_src(a, o_p, seq, indent, "step")
    return ""


def _fill_src(a, offs: dict, seq: tuple, indent: str, when: str) -> None:
    """Code filling the ``loc`` rows of the array parameters from their tables ``tab`` (``pm[r]`` = offset, Q,
    inner, steps): ``when="block"`` the static ones (once per block), ``"step"`` the time-varying ones (every
    step ``t``)."""
    for r, (i, k) in enumerate(offs.items()):
        if when == "block" and i in seq:
            a(f"{indent}if pm[{r}, 3] == 1:")
            a(f"{indent}    fill_tab(loc[{k}:{k} + m], n0, m, tab, pm[{r}, 0], pm[{r}, 1], pm[{r}, 2])")
        elif when == "block":
            a(f"{indent}fill_tab(loc[{k}:{k} + m], n0, m, tab, pm[{r}, 0], pm[{r}, 1], pm[{r}, 2])")
        elif i in seq:
            a(f"{indent}if pm[{r}, 3] > 1:")
            a(f"{indent}    fill_tab(loc[{k}:{k} + m], n0, m, tab, pm[{r}, 0] + t * pm[{r}, 1], pm[{r}, 1], "
              f"pm[{r}, 2])")


def _state_fill_src(a, S: int, o_s: list, indent: str) -> None:
    # an initial state is a row of N values, or of one value (a constant state, e.g. the default zeros)
    for i in range(S):
        a(f"{indent}if st{i}.shape[0] == 1:")
        a(f"{indent}    loc[{o_s[i]}:{o_s[i]} + m] = st{i}[0]")
        a(f"{indent}else:")
        a(f"{indent}    loc[{o_s[i]}:{o_s[i]} + m] = st{i}[n0:n1]")


def _chunked(a, rows: tuple, pfs: tuple, ind: str = "    ") -> str:
    # opens a row loop over j in [0, len(rows[0])) in chunks of CHUNK neurons, each chunk first prefetching its
    # part of the rows ``pfs`` (rows read next, e.g. x of the next step); returns the indent of the loop body
    a(f"{ind}n = {rows[0]}.shape[0]")
    a(f"{ind}for c in range(0, n, CHUNK):")
    a(f"{ind}    ce = min(c + CHUNK, n)")
    for p in pfs:
        a(f"{ind}    for q in range(c, min(ce, {p}.shape[0]), LINE):")
        a(f"{ind}        prefetch({p}, q)")
    a(f"{ind}    for jj in range(c, ce):")
    a(f"{ind}        j = U(jj)")
    return ind + "        "


def _seg_row_src(a, name: str, args: list, run_args: list, Pa: int, result: bool) -> None:
    # segment mode: the row function ``name`` walks the runs of the block's row and calls the loop over one run
    # (``run_<name>``, inlined: no call per run) with the parameters as scalars; ``args`` are its array arguments,
    # ``run_args`` how each is passed for run q (a slice)
    a(f"def {name}({', '.join(args)}, seg, nseg, pv):")
    if result:
        a("    acc = 0")
    a("    for q in range(nseg):")
    a("        c0 = seg[q]")
    a("        c1 = seg[q + 1]")
    call = f"run_{name}({', '.join(run_args + [f'pv[q, {r}]' for r in range(Pa)])})"
    a(f"        acc += {call}" if result else f"        {call}")
    if result:
        a("    return acc")
    a("")
    a("")


def _gen_forward_src(S: int, P: int, consts: dict, seq: tuple, blk: int, stream: bool, seg: bool = False) -> str:
    """Source of ``fused_fwd`` and its row loop ``row_fwd`` (``run_row_fwd`` in segment mode).  Per block: the
    states and the parameters in ``loc`` (rows of ``blk`` values at compile-time offsets), then one row call per
    step, which returns whether some x was not finite; ``x`` is ``[T, N]`` or ``[1, N]`` (read at every step)."""
    o_s = [i * blk for i in range(S)]
    p_expr, o_p = _param_slots(P, consts, S, blk, seg)
    Pa = len(o_p)
    seq_ranks = {r for r, i in enumerate(o_p) if i in seq}
    K = S if seg else S + Pa
    sts = ", ".join(f"st{i}" for i in range(S))
    pargs = "".join(f", p{r}" for r in range(Pa)) if seg else ""
    L = []
    a = L.append
    if seg:
        _seg_row_src(a, "row_fwd", ["xr", "orow", "loc", "pf"],
                     ["xr[c0:c1]", "orow[c0:c1]", "loc[c0:]", "pf[c0:c1]"], Pa, True)
    a(f"def {'run_' if seg else ''}row_fwd(xr, orow, loc, pf{pargs}):")
    a("    bad = False")
    ind = _chunked(a, ("xr",), ("pf",))
    a(f"{ind}xj = xr[j]")
    a(f"{ind}o, {', '.join(f'n{i}' for i in range(S))} = STEP(xj, "
      f"{', '.join([f'loc[U({k}) + j]' for k in o_s] + p_expr)})")
    a(f"{ind}store_nt(orow, j, o)" if stream else f"{ind}orow[j] = o")
    for i in range(S):
        a(f"{ind}loc[U({o_s[i]}) + j] = n{i}")
    a(f"{ind}bad |= (xj - xj) != ZERO  # NaN iff x is NaN or inf; a bool OR keeps the full vector width")
    a("    return 1 if bad else 0")
    a("")
    a("")
    a(f"def fused_fwd(x, {sts}, tab, pm, rec, out, vseq, st_last, bad, bl):")
    a("    T, N = out.shape")
    a("    xs = 1 if x.shape[0] > 1 else 0  # x [1, N]: one step repeated T times")
    a("    nblk = (N + bl - 1) // bl")
    a("    for b in prange(nblk):")
    a("        n0 = b * bl")
    a("        n1 = min(n0 + bl, N)")
    a("        n2 = min(n1 + bl, N)")
    a("        m = n1 - n0")
    a(f"        loc = np.empty({max(K, 1) * blk}, dtype=x.dtype)")
    _state_fill_src(a, S, o_s, "        ")
    _params_block_src(a, seg, Pa, o_p, seq, "        ")
    a("        nbad = 0")
    a("        for t in range(T):")
    a("            if t + 1 < T:")
    a("                pf = x[(t + 1) * xs, n0:n1 if xs else n0]")
    a("            else:")
    a("                pf = x[0, n1:n2]")
    extra = _params_step_src(a, seg, seq_ranks, o_p, seq, "            ")
    a(f"            nbad += row_fwd(x[t * xs, n0:n1], out[t, n0:n1], loc, pf{extra})")
    a("            if rec:")
    a("                vseq[t, n0:n1] = loc[:m]")
    for i in range(S):
        a(f"        st_last[{i}, n0:n1] = loc[{o_s[i]}:{o_s[i]} + m]")
    a("        bad[b] = 1 if nbad > 0 else 0")
    return "\n".join(L) + "\n"


def _gen_backward_src(S: int, P: int, consts: dict, seq: tuple, grads: tuple, replay: bool, blk: int,
                      stream: bool, seg: bool = False, kept: tuple | None = None, n_kept: int = 0) -> str:
    """Source of ``fused_bwd``: per block, the replay of the forward (``row_replay``: the states entering every step
    into ``hist``, when ``replay``), then ``row_bwd`` in reverse time.  With ``kept`` (the indices of the
    ``n_kept`` values of the cell's ``keep`` that are stored), the replay stores those instead of the states and the
    reverse rows call ``vjp_kept`` on them (``ZERO`` for the others), without reading x.  ``loc`` holds states, array parameters
    (not in segment mode), state gradients and the gradients of the parameters ``grads``; a parameter gradient is
    summed per run of equal table entries into ``gbuf`` (float64) and, after the parallel loop, into ``gtab``.
    ``gout`` is ``[T, N]``, or ``[1, 1]`` holding one value for every element when ``gc``."""
    o_s = [i * blk for i in range(S)]
    p_expr, o_p = _param_slots(P, consts, S, blk, seg)
    Pa = len(o_p)
    Pl = 0 if seg else Pa  # parameter rows in loc
    o_g = [(S + Pl + i) * blk for i in range(S)]
    o_gp = {i: (2 * S + Pl + r) * blk for r, i in enumerate(grads)}
    rank = {i: r for r, i in enumerate(o_p)}  # table row of each array parameter
    seq_ranks = {r for r, i in enumerate(o_p) if i in seq}
    K = 2 * S + Pl + len(grads)
    sts = ", ".join(f"st{i}" for i in range(S))
    gsl = ", ".join(f"gs{i}" for i in range(S))
    pargs = "".join(f", p{r}" for r in range(Pa)) if seg else ""
    L = []
    a = L.append
    if replay:
        if seg:
            _seg_row_src(a, "row_replay", ["xr", "hr", "loc", "pf"],
                         ["xr[c0:c1]", "hr[c0:]", "loc[c0:]", "pf[c0:c1]"], Pa, False)
        a(f"def {'run_' if seg else ''}row_replay(xr, hr, loc, pf{pargs}):")
        ind = _chunked(a, ("xr",), ("pf",))
        for i in range(S):
            a(f"{ind}a{i} = loc[U({o_s[i]}) + j]")
            if kept is None:
                a(f"{ind}hr[U({o_s[i]}) + j] = a{i}")
        if kept is not None:
            a(f"{ind}{''.join(f'k{i}, ' for i in range(n_kept))}= KEEP(xr[j], "
              f"{', '.join([f'a{i}' for i in range(S)] + p_expr)})")
            for r, i in enumerate(kept):
                a(f"{ind}hr[U({r * blk}) + j] = k{i}")
        a(f"{ind}o, {', '.join(f'n{i}' for i in range(S))} = STEP(xr[j], "
          f"{', '.join([f'a{i}' for i in range(S)] + p_expr)})")
        for i in range(S):
            a(f"{ind}loc[U({o_s[i]}) + j] = n{i}")
        a("")
        a("")
    if seg:
        _seg_row_src(a, "row_bwd", ["gor", "xr", "gxr", "hr", "loc", "alpha", "pf", "pf2"],
                     ["gor[c0:c1]", "xr[c0:c1]", "gxr[c0:c1]", "hr[c0:]", "loc[c0:]", "alpha", "pf[c0:c1]",
                      "pf2[c0:c1]"], Pa, False)
    a(f"def {'run_' if seg else ''}row_bwd(gor, xr, gxr, hr, loc, alpha, pf, pf2{pargs}):")
    if kept is None:
        st_args = ["xr[j]"] + ([f"hr[U({k}) + j]" for k in o_s] if replay else ["ZERO"] * S)
    else:  # the kept values, ZERO for those not stored
        st_args = [f"hr[U({kept.index(i) * blk}) + j]" if i in kept else "ZERO" for i in range(n_kept)]
    args = ["gor[j]"] + [f"loc[U({k}) + j]" for k in o_g] + st_args + p_expr + ["alpha"]
    outs = ["dx"] + [f"ds{i}" for i in range(S)] + [f"dp{i}" if i in o_gp else "_" for i in range(P)]
    ind = _chunked(a, ("xr",), ("pf", "pf2"))
    a(f"{ind}{', '.join(outs)} = {'VJP' if kept is None else 'VJPK'}({', '.join(args)})")
    a(f"{ind}store_nt(gxr, j, dx)" if stream else f"{ind}gxr[j] = dx")
    for i in range(S):
        a(f"{ind}loc[U({o_g[i]}) + j] = ds{i}")
    for i, k in o_gp.items():
        a(f"{ind}loc[U({k}) + j] += dp{i}")
    a("")
    a("")
    a(f"def fused_bwd(gout, gc, {gsl}, gvseq, x, {sts}, tab, pm, alpha, gx, gst0, gbuf, gm, gtab, bl):")
    a("    # gout: [T, N], or [1, 1] holding one value for every element when gc")
    a("    T, N = gx.shape")
    a("    xs = 1 if x.shape[0] > 1 else 0  # x [1, N]: one step repeated T times")
    a("    nblk = (N + bl - 1) // bl")
    a("    has_gv = gvseq.shape[0] > 0")
    a(f"    H = {(S if kept is None else len(kept)) * blk if replay else 0}")
    a("    for b in prange(nblk):")
    a("        n0 = b * bl")
    a("        n1 = min(n0 + bl, N)")
    a("        n2 = min(n1 + bl, N)")
    a("        m = n1 - n0")
    a(f"        loc = np.empty({K * blk}, dtype=x.dtype)")
    for k in o_gp.values():  # parameter gradients are summed into their rows (the state gradients' are set below)
        a(f"        loc[{k}:{k} + m] = ZERO")
    a("        hist = np.empty(T * H, dtype=x.dtype)")
    a("        grow = np.full(m if gc else 0, gout[0, 0] if gc else ZERO)")
    a("        nopf = x[0, 0:0]")
    if replay:
        _state_fill_src(a, S, o_s, "        ")
    _params_block_src(a, seg, Pa, o_p, seq, "        ")
    if replay:
        a("        for t in range(T):")
        a("            if t + 1 < T:")
        a("                pf = x[(t + 1) * xs, n0:n1 if xs else n0]")
        a("            else:")
        a("                pf = nopf")
        extra = _params_step_src(a, seg, seq_ranks, o_p, seq, "            ")
        a(f"            row_replay(x[t * xs, n0:n1], hist[t * H:(t + 1) * H], loc, pf{extra})")
    for i in range(S):
        a(f"        if gs{i}.shape[0] > 0:")
        a(f"            loc[{o_g[i]}:{o_g[i]} + m] = gs{i}[n0:n1]")
        a("        else:")
        a(f"            loc[{o_g[i]}:{o_g[i]} + m] = ZERO")
    a("        for t in range(T - 1, -1, -1):")
    a("            if has_gv:")
    a(f"                loc[{o_g[0]}:{o_g[0]} + m] += gvseq[t, n0:n1]")
    # rows read next: dL/dout of the previous step (none when it is one value) and x: the previous step's when
    # there is no replay, else the next block's (for its replay)
    a("            if gc:")
    a("                pf = nopf")
    a("            elif t > 0:")
    a("                pf = gout[t - 1, n0:n1]")
    a("            else:")
    a("                pf = gout[T - 1, n1:n2]")
    if replay:
        a("            pf2 = x[t * xs, n1:n2] if (xs or t == 0) else nopf")
    else:
        a("            pf2 = x[(t - 1) * xs, n0:n1 if xs else n0] if t > 0 else x[0, n1:n2]")
    a("            gor = grow if gc else gout[t, n0:n1]")
    extra = _params_step_src(a, seg, seq_ranks, o_p, seq, "            ")
    a(f"            row_bwd(gor, x[t * xs, n0:n1], gx[t, n0:n1], hist[t * H:(t + 1) * H], loc, alpha, pf, pf2{extra})")
    for g, i in enumerate(grads):
        if i in seq:  # a time-varying parameter: its gradient per step, then the row starts again from zero
            r, k = rank[i], o_gp[i]
            a(f"            if pm[{r}, 3] > 1:")
            a(f"                sum_tab(gbuf[gm[{g}, 0] + (b * T + t) * gm[{g}, 1]:], n0, m, loc[{k}:{k} + m], "
              f"pm[{r}, 2])")
            a(f"                loc[{k}:{k} + m] = ZERO")
    for g, i in enumerate(grads):
        r, k = rank[i], o_gp[i]
        ind = "        "
        if i in seq:
            a(f"        if pm[{r}, 3] == 1:")
            ind += "    "
        a(f"{ind}sum_tab(gbuf[gm[{g}, 0] + b * gm[{g}, 1]:], n0, m, loc[{k}:{k} + m], pm[{r}, 2])")
    for i in range(S):
        a(f"        if gst0.shape[1] > 0:")
        a(f"            gst0[{i}, n0:n1] = loc[{o_g[i]}:{o_g[i]} + m]")
    for g, i in enumerate(grads):
        r = rank[i]
        a(f"    reduce_tab(gtab, gm[{g}, 2], pm[{r}, 1], pm[{r}, 2], pm[{r}, 3], gbuf, gm[{g}, 0], gm[{g}, 1], "
          "nblk, bl)")
    return "\n".join(L) + "\n"


# ``stream`` (outputs written by non-temporal stores) is a compile-time variant: small inputs (e.g. the tests) never
# compile the streaming kernels, large ones compile them once (cached on disk)
def _forward_kernel(cell: Cell, np_dtype, consts=(), stream=False, seg=False):
    key = (cell, np_dtype.str, consts, stream, seg)
    fn = _FWD.get(key)
    if fn is None:
        with _lock:
            fn = _FWD.get(key)
            if fn is None:
                fn = _FWD[key] = _build(cell, np_dtype, "fwd", None, consts, stream=stream, seg=seg)
    return fn


def _backward_kernel(cell: Cell, np_dtype, surrogate: Surrogate, consts=(), grads=(), stream=False, seg=False):
    key = (cell, np_dtype.str, surrogate.grad_source, consts, grads, stream, seg)
    fn = _BWD.get(key)
    if fn is None:
        with _lock:
            fn = _BWD.get(key)
            if fn is None:
                fn = _BWD[key] = _build(cell, np_dtype, "bwd", surrogate.grad_source, consts, grads, stream, seg)
    return fn


_SG_ROWS: dict = {}


def surrogate_derivative(surrogate: Surrogate, u: np.ndarray) -> np.ndarray:
    """``surrogate``'s derivative at every value of ``u`` (a float32 or float64 vector), computed by the scalar code
    the backward kernels inline: its source with literals typed like the data, on the kernels' prelude (compiled
    from memory when the source is not available).  For tests and inspection."""
    nb = start_numba()
    dt = np.dtype(u.dtype)
    key = (surrogate.grad_source, dt.str)
    row = _SG_ROWS.get(key)
    if row is None:
        g: dict = {}
        exec(compile(_PRELUDE.format(dtype=dt.name, seg_min=SEG_MIN, chunk=CHUNK), "<spikeforge.kernels.fused>",  # noqa: S102
                     "exec"), g)
        src = _typed_source(_renamed_source(surrogate.grad_source, "_sg_derivative"))
        if src is not None:
            exec(compile(src, "<spikeforge.kernels.fused:surrogate>", "exec"), g)  # noqa: S102
            sg = nb.njit(inline="always")(g["_sg_derivative"])
        else:
            sg = nb.njit(inline="always")(bind(surrogate.grad_source, g))

        def sg_row(v, alpha, out):
            for j in range(v.shape[0]):
                out[j] = sg(v[j], alpha)

        row = _SG_ROWS[key] = nb.njit(error_model="numpy")(sg_row)
    out = np.empty_like(u)
    row(u, dt.type(surrogate.alpha), out)
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


_NP_DTYPE = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}
_NO_GRAD = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}
_NO_GRAD2 = {dt: np.empty((0, 0), dt) for dt in _NO_GRAD}


STREAM_MIN_BYTES = 16 << 20  # [T, N] outputs at least this large are written by non-temporal stores


def _stream(out: np.ndarray, bl: int) -> bool:
    """Whether a kernel writes ``out`` ([T, N]) by non-temporal stores: for outputs too large to stay in the last-level
    cache, that saves reading each line before it is written.  The stores claim 64-byte alignment, so every row of
    every block must start 64-byte aligned (the buffer pool aligns its buffers)."""
    return (out.nbytes >= STREAM_MIN_BYTES and out.ctypes.data % 64 == 0 and (out.shape[1] * out.itemsize) % 64 == 0
            and (bl * out.itemsize) % 64 == 0)


def _x_rows(x_seq: torch.Tensor, T: int, N: int) -> torch.Tensor:
    """The input as C rows ``[T, N]``, or ``[1, N]`` when every step is the same memory (stride 0 over time, e.g. a
    direct-coded first layer): the kernels then read that one row T times instead of a T-fold copy."""
    if T > 1 and x_seq.stride(0) == 0:
        return x_seq[:1].reshape(1, N).contiguous()
    x2 = x_seq.reshape(T, N)
    return x2 if x2.is_contiguous() else x2.contiguous()


@functools.lru_cache(maxsize=1024)
def _shared(value: float, dt: torch.dtype) -> np.ndarray:
    """One value as the length-1 array the kernels take (shared: the kernels never write it)."""
    return np.full(1, value, dtype=_NP_DTYPE[dt])


def _state_row(s, N: int, dt: torch.dtype) -> np.ndarray:
    """An initial state as the row of N values the kernels read, or one value when it is a float or one value
    broadcast (stride 0, e.g. the default zeros): the kernels fill a block's state from either."""
    if not torch.is_tensor(s):
        return _shared(float(s), dt)
    s = s.detach()
    if s.dtype != dt:
        s = s.to(dt)
    if N > 1 and s.numel() == N and all(st == 0 for st in s.stride()):
        return s[(0,) * s.dim()].reshape(1).numpy()
    s = s.reshape(N)
    return (s if s.is_contiguous() else s.contiguous()).numpy()


def _param_table(p, T: int, shape, N: int, dtype: torch.dtype):
    """A parameter (a float, or a tensor broadcastable to ``[B, ...]`` or, for a ``seq`` parameter, to
    ``[T, B, ...]`` with ``x_seq``'s rank) as ``(table [Tp, Q] as a flat numpy array, Q, inner, Tp, table shape)``:
    the value of neuron ``n`` (C order) at step ``t`` is ``table[t if Tp > 1 else 0, (n // inner) % Q]``.  The dims
    along which ``p`` varies span ``Q`` (e.g. the channels: ``inner`` = H x W); dims between them are expanded.
    A float or a tensor with one value is one entry for all neurons (``inner`` = N).  (Called for every parameter
    of every call: the layout, which depends on the shapes only, is computed once per shape.)"""
    if not torch.is_tensor(p):
        return np.full(1, p, dtype=_NP_DTYPE[dtype]), 1, max(N, 1), 1, None
    Q, inner, Tp, tshape, pshape = _table_layout(tuple(p.shape), tuple(shape), T > 1)
    p = p.detach()
    if p.dtype != dtype:
        p = p.to(dtype)
    if pshape is not None:  # dims between the varying ones are expanded: one copy
        p = p.reshape(pshape).expand(tshape).contiguous()
    elif not p.is_contiguous():
        p = p.contiguous()
    return p.view(-1).numpy(), Q, inner, Tp, tshape


@functools.lru_cache(maxsize=512)
def _table_layout(p_shape: tuple, shape: tuple, multi_step: bool):
    """``(Q, inner, Tp, table shape, shape to expand from or None)`` of a parameter of shape ``p_shape`` for steps
    of shape ``shape`` (see :func:`_param_table`)."""
    nd = len(shape)
    pshape = (1,) * (nd + 1 - len(p_shape)) + p_shape
    Tp = pshape[0] if multi_step else 1
    var = [d for d in range(nd) if pshape[1 + d] != 1]
    if var:  # from the first varying dim to the last (the dims in between are expanded)
        d0, d1 = var[0], var[-1]
        Q = math.prod(shape[d0:d1 + 1])
        inner = math.prod(shape[d1 + 1:])
    else:
        d0, d1, Q, inner = nd, nd - 1, 1, max(math.prod(shape), 1)
    tshape = (Tp, *[shape[d] if d0 <= d <= d1 else 1 for d in range(nd)])
    copy = math.prod(pshape) != Tp * Q  # size-1 dims between varying ones: the table needs them expanded
    return Q, inner, Tp, tshape, (pshape if copy else None)


def _segment_mode(tabs, itemsize: int) -> tuple[bool, bool]:
    """``(seg, aligned)`` for parameter tables ``tabs`` (see :func:`_param_table`): ``seg`` when the kernels can
    take every array parameter as a scalar per run of at least ``SEG_MIN`` neurons; ``aligned`` when every run then
    starts 64-byte aligned (as the non-temporal stores need; always true outside segment mode)."""
    runs = [inner for _, q, inner, _, _ in tabs if q > 1]  # a parameter with one value per step has no runs
    if not tabs or any(inner < SEG_MIN for inner in runs):
        return False, True
    return True, all(inner * itemsize % 64 == 0 for inner in runs)


def backward_inputs(cell: Cell, x_seq: torch.Tensor, states, params) -> tuple:
    """What the backward kernel reads besides the gradients: ``(x as [T, N] or [1, N] rows, the initial states as
    rows, the parameter table, its layout pm, (T, N, step shape, constants, array parameter indices, per-table
    layouts, segment mode, aligned runs))``.  Built from the forward's inputs alone (no kernel runs)."""
    T = x_seq.shape[0]
    shape = x_seq.shape[1:]
    N = math.prod(shape)
    x2 = _x_rows(x_seq.detach(), T, N)
    dt = x2.dtype
    consts, arr = _split_params(cell, params)
    st = [_state_row(s, N, dt) for s in states]
    # every array parameter as a table (no [N]-sized copy of a per-channel or shared value): one flat array,
    # pm[r] = (offset, Q, inner, steps) of the r-th
    tab, pm, tabs = _tables([params[i] for i in arr], T, shape, N, dt)
    seg, aligned = _segment_mode(tabs, tab.itemsize)
    return x2, st, tab, pm, (T, N, shape, consts, arr, [t[1:] for t in tabs], seg, aligned)


def fused_forward(cell: Cell, record: bool, check: bool, x_seq: torch.Tensor, states, params):
    """Run ``cell``'s forward kernel over ``x_seq [T, ...]``: ``(results, saved)``, where ``results`` is
    ``(out [T, ...], v_seq [T, ...] or empty, *final_states)`` and ``saved`` what the backward needs
    (:func:`backward_inputs`: the backward replays the forward block by block instead of saving ``[T, N]``
    states).  States and parameters are floats or tensors; nothing here records a gradient (see
    :class:`FusedCellFn`)."""
    saved = backward_inputs(cell, x_seq, states, params)
    x2, st, tab, pm, (T, N, shape, consts, _, _, seg, aligned) = saved
    S = cell.n_states
    dt = x2.dtype
    # outputs and final states come from the CPU kernels' buffer pool (a fresh 16 MB buffer costs as much in page
    # faults as the whole kernel)
    out = POOL.empty((T, N), dt)
    vseq = POOL.empty((T, N), dt) if record else _EMPTY2[dt]
    st_last = POOL.empty((S, N), dt)
    sync_threads(T * N)
    bl = fwd_block(_fwd_cap(cell, tab.itemsize, seg), N)
    on = out.numpy()
    kernel = _forward_kernel(cell, tab.dtype, consts, _stream(on, bl) and aligned, seg)[0]
    bad = np.zeros((N + bl - 1) // bl, dtype=np.uint8)
    kernel(x2.numpy(), *st, tab, pm, record, on, vseq.numpy(), st_last.numpy(), bad, bl)
    if check and bad.any():
        raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
    res = [out.view(x_seq.shape), vseq.view(x_seq.shape) if record else vseq.view(0)]
    res += [st_last[i].view(shape) for i in range(S)]
    return tuple(res), saved


_EMPTY2 = {torch.float32: torch.empty(0, 0, dtype=torch.float32), torch.float64: torch.empty(0, 0, dtype=torch.float64)}


class FusedCellFn(torch.autograd.Function):
    """Fused numba forward/backward of any :class:`Cell` over a whole sequence ``[T, ...]``.

    ``apply(cell, surrogate, record, check, x_seq, *states, *params)`` returns
    ``(out [T, ...], v_seq [T, ...] or empty, *final_states)``.  States and parameters are floats or tensors.
    """

    @staticmethod
    def forward(ctx, cell, surrogate, record, check, x_seq, *args):
        S = cell.n_states
        states, params = args[:S], args[S:]
        res, saved = fused_forward(cell, record, check, x_seq, states, params)
        FusedCellFn.keep(ctx, cell, surrogate, record, states, params, saved)
        return res

    @staticmethod
    def keep(ctx, cell, surrogate, record, states, params, saved) -> None:
        """Store on ``ctx`` what :meth:`backward` reads (``saved``: :func:`backward_inputs`)."""
        x2, st, tab, pm, cfg = saved
        # the given state tensors are saved too, so that autograd refuses a backward after they changed in place
        ctx.save_for_backward(x2, *(s for s in states if torch.is_tensor(s)))
        ctx.st, ctx.tab, ctx.pm = st, tab, pm  # numpy rows and tables: copies, or views of the inputs
        ctx.cfg = (cell, surrogate, record, *cfg)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: the kernel reads none
        ctx.p_shapes = [p.shape if torch.is_tensor(p) else None for p in params]
        ctx.s_shapes = [s.shape if torch.is_tensor(s) else None for s in states]

    @staticmethod
    def backward(ctx, g_out, g_vseq, *g_states):
        x2 = ctx.saved_tensors[0]
        st = ctx.st
        cell, surrogate, record, T, N, shape, consts, arr, tinfo, seg, aligned = ctx.cfg
        S = cell.n_states
        dt = x2.dtype
        npdt = ctx.tab.dtype

        def rows(g, n_rows):
            g = g.reshape(n_rows, N) if n_rows else g.reshape(N)
            if g.dtype != dt:
                g = g.to(dt)
            return g if g.is_contiguous() else g.contiguous()

        gc = g_out is None or _is_const(g_out)
        if gc:  # one value everywhere (e.g. from out.sum().backward()), or none: the kernel reads it once
            go = np.zeros((1, 1), dtype=npdt)
            if g_out is not None:
                go[0, 0] = g_out.detach().numpy()[(0,) * g_out.dim()]
        else:
            go = _np(rows(g_out, T))
        gv = _np(rows(g_vseq, T)) if (record and g_vseq is not None) else _NO_GRAD2[npdt]
        gs = [_np(rows(g, 0)) if g is not None else _NO_GRAD[npdt] for g in g_states]
        needs = ctx.needs_input_grad
        # the backward kernel is specialised for the parameters whose gradient is needed (the compiler drops the
        # code and the block-buffer rows of the others)
        r_of = {i: r for r, i in enumerate(arr)}
        grads = tuple(i for i in arr if needs[5 + S + i])
        sync_threads(T * N)
        bl = bwd_block(_bwd_cap(cell, grads, npdt.itemsize, seg), N, T, hist_rows(cell, grads), npdt.itemsize)
        nblk = (N + bl - 1) // bl
        # per gradient: (offset in gbuf, runs per block, offset of its table in gtab); a block of bl neurons spans at
        # most bl // inner + 2 runs of one table entry
        gm = np.zeros((len(grads), 3), dtype=np.int64)
        nbuf = ntab = 0
        for g, i in enumerate(grads):
            q, inner, tp, _ = tinfo[r_of[i]]
            runs = min(bl, bl // inner + 2)
            gm[g] = (nbuf, runs, ntab)
            nbuf += nblk * tp * runs
            ntab += tp * q
        gbuf = np.zeros(max(nbuf, 1), dtype=np.float64)
        gtab = np.zeros(max(ntab, 1), dtype=np.float64)
        gx = POOL.empty((T, N), dt)
        kernel = _backward_kernel(cell, npdt, surrogate, consts, grads, _stream(_np(gx), bl) and aligned, seg)[0]
        # dL/d(initial states): written only when one of them needs it
        gst0 = torch.empty(S, N if any(needs[5:5 + S]) else 0, dtype=dt)
        alpha = npdt.type(surrogate.alpha)
        kernel(go, gc, *gs, gv, _np(x2), *st, ctx.tab, ctx.pm, alpha, _np(gx), _np(gst0), gbuf, gm, gtab, bl)
        g_st = [gst0[i].reshape(shape).sum_to_size(ctx.s_shapes[i]) if needs[5 + i] else None for i in range(S)]
        g_p = [None] * cell.n_params
        gtab_t = torch.from_numpy(gtab).to(dt) if grads else None  # every table at once: one conversion, then views
        for g, i in enumerate(grads):
            q, inner, tp, tshape = tinfo[r_of[i]]
            o = int(gm[g, 2])
            t = gtab_t[o:o + tp * q]
            ps = ctx.p_shapes[i]
            # the table holds one value per element of the parameter unless the parameter was expanded
            g_p[i] = t.view(ps) if t.numel() == math.prod(ps) else t.view(tshape).sum_to_size(ps)
        return (None, None, None, None, gx.view((T, *shape)), *g_st, *g_p)


_FLOAT_TABLES: dict = {}  # every array parameter a float: (tab, pm, tables) per (values, shapes, dtype)


def _tables(ps: list, T: int, shape, N: int, dt: torch.dtype):
    """The array parameters ``ps`` as one flat table ``tab`` (numpy), ``pm[r]`` = (offset, Q, inner, steps) of the
    r-th, and the per-parameter tables of :func:`_param_table`.  When every one is a float the result depends on
    the values and the shape only, and is made once (the kernels never write it)."""
    key = None
    if not any(torch.is_tensor(p) for p in ps):
        key = (tuple(ps), T > 1, N, dt)
        hit = _FLOAT_TABLES.get(key)
        if hit is not None:
            return hit
    tabs = [_param_table(p, T, shape, N, dt) for p in ps]
    pm = np.zeros((len(tabs), 4), dtype=np.int64)
    off = 0
    for r, (tab, q, inner, tp, _) in enumerate(tabs):
        pm[r] = (off, q, inner, tp)
        off += tab.shape[0]
    tab = np.concatenate([t[0] for t in tabs]) if tabs else np.zeros(1, dtype=_NP_DTYPE[dt])
    res = (tab, pm, tabs)
    if key is not None:
        if len(_FLOAT_TABLES) > 256:
            _FLOAT_TABLES.clear()
        _FLOAT_TABLES[key] = res
    return res


def _split_params(cell: Cell, params):
    """``(values of cell.const_params, indices of the other parameters, which the kernels take as tables)``."""
    cidx, arr = _param_kinds(cell)
    consts = []
    for i in cidx:
        p = params[i]
        if torch.is_tensor(p):
            if p.numel() != 1:
                raise ValueError(f"{cell.params[i]}: the fused kernel of {cell.name!r} needs one value for the whole "
                                 f"layer (it is compiled in), got a tensor of shape {tuple(p.shape)}")
            p = p.item()
        consts.append(float(p))
    return tuple(consts), arr


@functools.lru_cache(maxsize=None)
def _param_kinds(cell: Cell) -> tuple:
    """``(indices of cell.const_params, indices of the other parameters)`` in ``cell.params`` order."""
    cidx = tuple(i for i, n in enumerate(cell.params) if n in cell.const_params)
    return cidx, tuple(i for i in range(cell.n_params) if i not in cidx)
