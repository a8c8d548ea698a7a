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

- ``reference``: a plain torch loop over ``x_seq.unbind(0)`` calling ``step`` bound to torch; autograd gives
  the gradient (the definition of truth).
- ``cpu``: a numba driver generated for the cell's arity: parallel over blocks of neurons (``prange``; the block
  size, a compile-time constant, is the largest up to 1,024 whose block buffer fits ``L1_BYTES``, see
  :func:`block_size`), sequential in time.  Each time step of a block is one row loop in its own function whose
  block-local values (states, parameters, gradients) sit in one flat buffer at compile-time offsets, so LLVM
  vectorises it (few runtime alias checks; a plain loop over many arrays stays scalar).  The forward saves only
  ``x`` (the input itself), the initial states, the parameter rows (``[P, N]``) and the tables of the ``seq``
  parameters; the backward replays the forward of each block into a ``T x S x block`` history that stays in
  cache (skipped when ``vjp`` reads no state, see :func:`vjp_reads_states`), then runs ``vjp`` in reverse time.
  Kernels use numpy's error model (a division by zero gives inf/nan, as in torch, instead of raising).

Parameters are floats or tensors broadcastable to ``x_seq.shape[1:]`` (per neuron, per channel or shared);
their per-neuron gradients are reduced back with ``sum_to_size``.  Parameters listed in ``Cell.seq_params`` may
change over time (broadcastable to the whole ``x_seq``): the kernels keep them as ``[T, Q]`` tables (``Q`` table
entries along the dims where they vary, each a run of neurons) filled into the block buffer at every step, and
sum their gradients per run.  Parameters listed in ``Cell.const_params`` (e.g. a spike cap) are compiled in as
constants, one kernel per value.  Each (cell, dtype) compiles once (cached on disk, see :func:`_build`); the
backward once per surrogate and per gradient variant (every parameter gradient, or none: the compiler drops the
code of gradients nobody asked for).

Example:
    >>> import torch
    >>> from spikeforge.kernels.fused import Cell, run_cell
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

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..surrogate import Surrogate, SpikeFn, bind, get_surrogate
from ._codegen import cache_dir, load_generated
from ._layout import permute_seq, permute_step, step_perm
from .cpu import _POOL, _sync_threads
from .dispatch import check_backend_name, resolve_backend

L1_BYTES = 24 * 1024  # a block's local buffer (states, parameters, gradients) should stay in L1
MAX_BLOCK = 1024
_lock = threading.Lock()
_FWD: dict = {}
_BWD: dict = {}


@dataclass(frozen=True, eq=False)
class Cell:
    """A recurrent neuron's update: ``step`` and its ``vjp`` (see the module docstring), with slot names."""

    name: str
    step: Callable
    vjp: Callable
    states: tuple
    params: tuple
    no_grad_params: tuple = ()  # parameters that are flags/configuration: never get a gradient
    # no-gradient parameters baked into the fused kernels as compile-time constants (one kernel per value): a
    # loop bound such as a spike cap becomes a constant trip count, so the loop unrolls and the row vectorises
    const_params: tuple = ()
    # parameters that may change over time: broadcastable to the whole ``[T, B, ...]`` input (e.g. GLIF's
    # conductance per time step and channel); every execution hands ``step`` the value for the current step
    seq_params: tuple = ()

    def __post_init__(self):
        if len(self.states) < 1:
            raise ValueError(f"cell {self.name!r}: needs at least one state")
        if not set(self.const_params) <= set(self.no_grad_params):
            raise ValueError(f"cell {self.name!r}: const_params {self.const_params} must be no_grad_params")
        if not set(self.seq_params) <= set(self.params) - set(self.const_params):
            raise ValueError(f"cell {self.name!r}: seq_params {self.seq_params} must be non-constant params")

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def n_params(self) -> int:
        return len(self.params)


# --- torch bindings ------------------------------------------------------------------------------------
class StraightThroughFn(torch.autograd.Function):
    """Value ``q``, gradient passed to ``a`` unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, q, a):
        return q.clone()

    @staticmethod
    def backward(ctx, g):
        return None, g


class MultiSpikeFn(torch.autograd.Function):
    r"""Integer spike count ``clamp(floor(u / vth), 0, cap)``; gradient: the surrogate summed over the levels,
    :math:`\sum_{k=1}^{cap} g'(u - k\,\vartheta)` for ``u`` and :math:`-\sum_k k\,g'(u - k\vartheta)` for ``vth``."""

    @staticmethod
    def forward(ctx, u, vth, cap, surrogate):
        ctx.save_for_backward(u, vth)
        ctx.cap, ctx.surrogate = cap, surrogate
        return torch.clamp(torch.floor(u / vth), min=0.0, max=float(cap))

    @staticmethod
    def backward(ctx, g):
        u, vth = ctx.saved_tensors
        du = torch.zeros_like(u)
        dth = torch.zeros_like(u)
        for k in range(1, int(ctx.cap) + 1):
            d = ctx.surrogate.derivative(u - vth * float(k))
            du = du + d
            dth = dth - float(k) * d
        gu = g * du
        gth = (g * dth).sum_to_size(vth.shape) if vth.requires_grad else None
        return gu, gth, None, None


def torch_namespace(surrogate: Surrogate) -> dict:
    """Helper names of ``Cell.step`` bound to torch (``spike`` carries ``surrogate``'s gradient)."""
    return {
        "spike": lambda u: SpikeFn.apply(u, surrogate),
        "ste": StraightThroughFn.apply,
        "mspike": lambda u, vth, cap: MultiSpikeFn.apply(u, vth, cap, surrogate),
        "floor": torch.floor,
        "relu": torch.relu,
        "clamp": lambda u, lo, hi: torch.clamp(u, lo, hi),
        "ONE": 1.0,
        "ZERO": 0.0,
    }


def torch_step(cell: Cell, surrogate: Surrogate) -> Callable:
    """``cell.step`` bound to torch (used by the reference execution and by single-step calls)."""
    return bind(cell.step, torch_namespace(surrogate))


# --- numba bindings ------------------------------------------------------------------------------------
def _numba():
    import numba

    return numba


# Scalar helpers of the fused kernels.  ONE/ZERO are typed like the data (float32 kernels stay in float32).
_PRELUDE = """
import math
import numpy as np
import numba as nb
from numba import prange

ONE = np.{dtype}(1.0)
ZERO = np.{dtype}(0.0)
PI = math.pi
SQRT_PI = math.sqrt(math.pi)
exp = math.exp
absf = abs
floor = np.floor


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
def fill_runs(dst, n0, m, tab, inner, Q):
    # dst[j] = tab[((n0 + j) // inner) % Q] for j < m, one run of equal values at a time (a per-channel table
    # gives runs of ``inner`` neurons)
    j = 0
    while j < m:
        n = n0 + j
        e = min(m, j + inner - n % inner)
        dst[j:e] = tab[(n // inner) % Q]
        j = e


@nb.njit(fastmath={{"reassoc", "nsz"}}, error_model="numpy")
def _sum(src):
    # a gradient sum: it may reassociate, so the loop vectorises (its own function: the flags stay with it)
    acc = ZERO
    for i in range(src.shape[0]):
        acc += src[i]
    return acc


@nb.njit(inline="always")
def sum_runs(dst, n0, m, src, inner):
    # dst[k] += the sum of src over the k-th run of the block (runs as in fill_runs)
    j = 0
    k = 0
    while j < m:
        n = n0 + j
        e = min(m, j + inner - n % inner)
        dst[k] += _sum(src[j:e])
        j = e
        k += 1


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


def _build(cell: Cell, np_dtype, direction: str, grad_src=None, consts=(), grads=()):
    """Compile the ``direction`` ("fwd"/"bwd") driver of ``cell`` for ``np_dtype`` (and the values ``consts`` of
    ``cell.const_params``; for "bwd", the indices ``grads`` of the parameters whose gradient it computes).
    Returns ``(driver, neurons per block)``.

    The whole kernel (helpers, the cell's function, the surrogate derivative, the driver) is generated as one
    module source.  When the sources are available it is written to ``$SPIKEFORGE_CACHE_DIR/fused`` (default
    ``~/.cache/spikeforge/fused``) under a name holding its hash and compiled with numba's on-disk cache, so
    later processes load it instead of compiling (the hash makes a stale cache impossible).  Otherwise it is
    compiled from memory with the functions bound by :func:`spikeforge.surrogate.bind`.
    """
    import re

    nb = _numba()
    fname = f"fused_{direction}"
    # the forward needs the step; the backward replays the step and runs the vjp
    fns = {"STEP": cell.step} if direction == "fwd" else {"STEP": cell.step, "VJP": cell.vjp}
    cidx = {cell.params.index(n): f"CONST{i}" for i, n in enumerate(cell.const_params)}
    seq = tuple(cell.params.index(n) for n in cell.seq_params)
    if direction == "fwd":
        blk = block_size(_forward_rows(cell), np_dtype.itemsize)
        driver = _gen_forward_src(cell.n_states, cell.n_params, cidx, seq, blk)
    else:
        blk = block_size(_backward_rows(cell, grads), np_dtype.itemsize)
        replay = vjp_reads_states(cell)
        driver = _gen_backward_src(cell.n_states, cell.n_params, cidx, seq, grads, replay, blk)
    prelude = _PRELUDE.format(dtype=np_dtype.name) + "".join(
        f"CONST{i} = np.{np_dtype.name}({float(v)!r})\n" for i, v in enumerate(consts))
    rows = re.findall(r"^def (row_\w+)\(", driver, flags=re.M)  # the per-row loops the driver calls
    srcs = {slot: _renamed_source(f, f"_{slot.lower()}_fn") for slot, f in fns.items()}
    sg_src = _renamed_source(grad_src, "_sg_derivative") if grad_src is not None else ""
    cache = cache_dir("fused") if (all(v is not None for v in srcs.values()) and sg_src is not None) else None
    if cache is not None:
        parts = [prelude, sg_src or "", "" if grad_src is None else
                 'dspike = nb.njit(inline="always")(_sg_derivative)\n']
        for slot, src in srcs.items():
            parts += [src, f'{slot} = nb.njit(inline="always")(_{slot.lower()}_fn)\n']
        parts += [driver, "".join(f'{r} = nb.njit(cache=True, error_model="numpy")({r})\n' for r in rows),
                  f'{fname} = nb.njit(parallel=True, nogil=True, cache=True, error_model="numpy")({fname})\n']
        mod = load_generated(cache, f"{cell.name}_{direction}_{np_dtype.name}", "\n\n".join(parts),
                             "spikeforge_fused")
        return getattr(mod, fname), blk
    g: dict = {}
    exec(compile(prelude + "\n\n" + driver, f"<spikeforge.kernels.fused:{cell.name}>", "exec"), g)  # noqa: S102
    if grad_src is not None:
        g["dspike"] = nb.njit(inline="always")(bind(grad_src, g))
    for slot, f in fns.items():
        g[slot] = nb.njit(inline="always")(bind(f, g))
    for r in rows:
        g[r] = nb.njit(error_model="numpy")(g[r])
    return nb.njit(parallel=True, nogil=True, error_model="numpy")(g[fname]), blk


def block_size(n_rows: int, itemsize: int) -> int:
    """Neurons per parallel block of a generated kernel whose block-local buffer holds ``n_rows`` rows: the
    largest power of two up to 1024 (at least 128) whose buffer fits in ``L1_BYTES``.  A larger buffer spills to
    L2 on every row access (e.g. ALIF's backward with six parameter gradients: 16 rows)."""
    blk = MAX_BLOCK
    while blk > 128 and n_rows * blk * itemsize > L1_BYTES:
        blk //= 2
    return blk


def _forward_rows(cell: Cell) -> int:
    """Rows of the forward's block buffer: states, array parameters, the NaN accumulator."""
    return cell.n_states + cell.n_params - len(cell.const_params) + 1


def _backward_rows(cell: Cell, grads: tuple) -> int:
    """Rows of the backward's block buffer: states, array parameters, state gradients, parameter gradients."""
    return 2 * cell.n_states + cell.n_params - len(cell.const_params) + len(grads)


def vjp_reads_states(cell: Cell) -> bool:
    """Whether ``cell.vjp`` reads any of its state arguments.  When it does not (e.g. the sigma-delta quantiser,
    whose gradient is straight through), the backward skips the replay of the forward."""
    import dis

    code = cell.vjp.__code__
    S = cell.n_states
    names = set(code.co_varnames[S + 2:2 * S + 2])  # vjp(g_out, *g_new_states, x, *states, ...)
    for ins in dis.get_instructions(code):
        if ins.opname.startswith("LOAD_FAST") or ins.opname in ("LOAD_DEREF", "LOAD_CLOSURE"):
            val = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
            if names & set(val):
                return True
    return False


def _param_slots(P: int, consts: dict, seq: tuple, first_row: int, blk: int):
    """Per parameter: its expression inside the row loop (a ``loc`` row or a constant); the ``loc`` offsets of
    the static array parameters (filled once per block) and of the ``seq`` parameters (filled every step)."""
    exprs, offs, soffs, r = [], {}, {}, first_row
    for i in range(P):
        if i in consts:
            exprs.append(consts[i])
        else:
            (soffs if i in seq else offs)[i] = r * blk
            exprs.append(f"loc[{r * blk} + j]")
            r += 1
    return exprs, offs, soffs


def _gen_forward_src(S: int, P: int, consts: dict, seq: tuple, blk: int) -> str:
    # A block's states, parameters and NaN accumulator live in one flat local buffer ``loc`` at offsets that are
    # multiples of ``blk`` (compile-time constants): LLVM sees a single pointer with constant distances, so the
    # per-row loop needs at most 3 runtime alias checks and vectorises.  ``row_fwd`` is its own function, so no
    # loop value lives past the loop.  Parameters that change over time (``seq``) are filled from their
    # ``[T, Q]`` tables before every step.
    o_s = [i * blk for i in range(S)]
    p_expr, o_p, o_sp = _param_slots(P, consts, seq, S, blk)
    o_acc = (S + len(o_p) + len(o_sp)) * blk
    L = []
    a = L.append
    a("def row_fwd(xr, orow, loc):")
    a("    for j in range(xr.shape[0]):")
    a("        xj = xr[j]")
    a(f"        o, {', '.join(f'n{i}' for i in range(S))} = STEP(xj, "
      f"{', '.join([f'loc[{k} + j]' for k in o_s] + p_expr)})")
    a("        orow[j] = o")
    for i in range(S):
        a(f"        loc[{o_s[i]} + j] = n{i}")
    a(f"        loc[{o_acc} + j] += xj * ZERO")
    a("")
    a("")
    a("def fused_fwd(x, st0, prm, stab, sinner, sq, rec, out, vseq, st_last, bad):")
    a("    T, N = x.shape")
    a(f"    nblk = (N + {blk - 1}) // {blk}")
    a("    for b in prange(nblk):")
    a(f"        n0 = b * {blk}")
    a(f"        n1 = min(n0 + {blk}, N)")
    a("        m = n1 - n0")
    a(f"        loc = np.zeros({o_acc + blk}, dtype=x.dtype)")
    for i in range(S):
        a(f"        loc[{o_s[i]}:{o_s[i]} + m] = st0[{i}, n0:n1]")
    for r, k in enumerate(o_p.values()):
        a(f"        loc[{k}:{k} + m] = prm[{r}, n0:n1]")
    a("        for t in range(T):")
    for r, k in enumerate(o_sp.values()):
        a(f"            fill_runs(loc[{k}:{k} + m], n0, m, stab[{r}, t], sinner[{r}], sq[{r}])")
    a("            row_fwd(x[t, n0:n1], out[t, n0:n1], loc)")
    a("            if rec:")
    a("                vseq[t, n0:n1] = loc[:m]")
    for i in range(S):
        a(f"        st_last[{i}, n0:n1] = loc[{o_s[i]}:{o_s[i]} + m]")
    a("        for j in range(m):")
    a(f"            if loc[{o_acc} + j] != ZERO:")
    a("                bad[b] = 1")
    return "\n".join(L) + "\n"


def _gen_backward_src(S: int, P: int, consts: dict, seq: tuple, grads: tuple, replay: bool, blk: int) -> str:
    # Per block: replay the forward from the initial state (the states entering every step land in a block-local
    # history of T x S x blk values that stays in cache), then run the vjp in reverse time.  Nothing [T, N]-sized
    # is saved by the forward.  ``loc`` holds states, parameters, state gradients and the gradients of the
    # parameters listed in ``grads`` (the others are not computed: the compiler drops their code).  Without
    # ``replay`` (the vjp reads no state) there is no replay and no history.  The gradient of a ``seq``
    # parameter is summed per step over each run of equal table entries into ``gseq[r, block, t, run]``.
    o_s = [i * blk for i in range(S)]
    p_expr, o_p, o_sp = _param_slots(P, consts, seq, S, blk)
    Pa = len(o_p) + len(o_sp)
    o_g = [(S + Pa + i) * blk for i in range(S)]
    o_gp = {i: (2 * S + Pa + r) * blk for r, i in enumerate(grads)}
    K = 2 * S + Pa + len(grads)
    L = []
    a = L.append

    def fills(indent):
        for r, k in enumerate(o_sp.values()):
            a(f"{indent}fill_runs(loc[{k}:{k} + m], n0, m, stab[{r}, t], sinner[{r}], sq[{r}])")

    if replay:
        a("def row_replay(xr, hr, loc):")
        a("    for j in range(xr.shape[0]):")
        for i in range(S):
            a(f"        a{i} = loc[{o_s[i]} + j]")
            a(f"        hr[{o_s[i]} + j] = a{i}")
        a(f"        o, {', '.join(f'n{i}' for i in range(S))} = STEP(xr[j], "
          f"{', '.join([f'a{i}' for i in range(S)] + p_expr)})")
        for i in range(S):
            a(f"        loc[{o_s[i]} + j] = n{i}")
        a("")
        a("")
    a("def row_bwd(gor, xr, gxr, hr, loc, alpha):")
    a("    for j in range(xr.shape[0]):")
    st_args = [f"hr[{k} + j]" for k in o_s] if replay else ["ZERO"] * S
    args = ["gor[j]"] + [f"loc[{k} + j]" for k in o_g] + ["xr[j]"] + st_args + p_expr + ["alpha"]
    outs = ["dx"] + [f"ds{i}" for i in range(S)] + [f"dp{i}" if i in o_gp else "_" for i in range(P)]
    a(f"        {', '.join(outs)} = VJP({', '.join(args)})")
    a("        gxr[j] = dx")
    for i in range(S):
        a(f"        loc[{o_g[i]} + j] = ds{i}")
    for i, k in o_gp.items():
        a(f"        loc[{k} + j] {'=' if i in o_sp else '+='} dp{i}")
    a("")
    a("")
    a("def fused_bwd(gout, gst_last, gvseq, x, st0, prm, stab, sinner, sq, alpha, gx, gst0, gprm, gseq):")
    a("    T, N = x.shape")
    a(f"    nblk = (N + {blk - 1}) // {blk}")
    a("    has_gv = gvseq.shape[0] > 0")
    a(f"    H = {S * blk if replay else 0}")
    a("    for b in prange(nblk):")
    a(f"        n0 = b * {blk}")
    a(f"        n1 = min(n0 + {blk}, N)")
    a("        m = n1 - n0")
    a(f"        loc = np.zeros({K * blk}, dtype=x.dtype)")
    a("        hist = np.empty(T * H, dtype=x.dtype)")
    if replay:
        for i in range(S):
            a(f"        loc[{o_s[i]}:{o_s[i]} + m] = st0[{i}, n0:n1]")
    for r, k in enumerate(o_p.values()):
        a(f"        loc[{k}:{k} + m] = prm[{r}, n0:n1]")
    if replay:
        a("        for t in range(T):")
        fills("            ")
        a("            row_replay(x[t, n0:n1], hist[t * H:(t + 1) * H], loc)")
    for i in range(S):
        a(f"        loc[{o_g[i]}:{o_g[i]} + m] = gst_last[{i}, n0:n1]")
    a("        for t in range(T - 1, -1, -1):")
    a("            if has_gv:")
    a(f"                loc[{o_g[0]}:{o_g[0]} + m] += gvseq[t, n0:n1]")
    fills("            ")
    a("            row_bwd(gout[t, n0:n1], x[t, n0:n1], gx[t, n0:n1], hist[t * H:(t + 1) * H], loc, alpha)")
    for r, i in enumerate(i for i in o_sp if i in o_gp):
        k = o_gp[i]
        a(f"            sum_runs(gseq[{r}, b, t], n0, m, loc[{k}:{k} + m], sinner[{list(o_sp).index(i)}])")
    for i in range(S):
        a(f"        gst0[{i}, n0:n1] = loc[{o_g[i]}:{o_g[i]} + m]")
    for r, (i, k) in enumerate((i, k) for i, k in o_gp.items() if i not in o_sp):
        a(f"        gprm[{r}, n0:n1] = loc[{k}:{k} + m]")
    return "\n".join(L) + "\n"


def _forward_kernel(cell: Cell, np_dtype, consts=()):
    key = (cell, np_dtype.str, consts)
    with _lock:
        fn = _FWD.get(key)
        if fn is None:
            fn = _FWD[key] = _build(cell, np_dtype, "fwd", None, consts)
    return fn


def _backward_kernel(cell: Cell, np_dtype, surrogate: Surrogate, consts=(), grads=()):
    key = (cell, np_dtype.str, surrogate.grad_source, consts, grads)
    with _lock:
        fn = _BWD.get(key)
        if fn is None:
            fn = _BWD[key] = _build(cell, np_dtype, "bwd", surrogate.grad_source, consts, grads)
    return fn


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def _param_row(p, like: torch.Tensor, shape, N: int) -> torch.Tensor:
    if not torch.is_tensor(p):
        return torch.full((N,), float(p), dtype=like.dtype)
    return torch.broadcast_to(p.detach().to(like.dtype), shape).reshape(N)


def _seq_table(p: torch.Tensor, T: int, shape):
    """A parameter broadcastable to ``[T, *shape]`` as ``(table [T, Q], inner, Q, table shape)``: the value of
    neuron ``n`` (C order) at step ``t`` is ``table[t, (n // inner) % Q]``.  The dims along which ``p`` varies
    span ``Q`` (e.g. the channels: ``inner`` = H x W); dims that are not contiguous are expanded."""
    nd = len(shape)
    p = p.detach().reshape((1,) * (nd + 1 - p.dim()) + tuple(p.shape))
    var = [d for d in range(nd) if p.shape[1 + d] != 1]
    if var:  # from the first varying dim to the last (the dims in between are expanded)
        var = list(range(var[0], var[-1] + 1))
    d0, d1 = (var[0], var[-1]) if var else (nd, nd - 1)
    Q = int(np.prod(shape[d0:d1 + 1])) if var else 1
    inner = int(np.prod(shape[d1 + 1:])) if var else 1
    tshape = (T, *[shape[d] if d0 <= d <= d1 else 1 for d in range(nd)])
    return p.expand(tshape).reshape(T, Q).contiguous(), inner, Q, tshape


class FusedCellFn(torch.autograd.Function):
    """Fused numba forward/backward of any :class:`Cell` over a whole sequence ``[T, ...]``.

    ``apply(cell, surrogate, record, check, x_seq, *states, *params)`` returns
    ``(out [T, ...], v_seq [T, ...] or empty, *final_states)``.
    """

    @staticmethod
    def forward(ctx, cell, surrogate, record, check, x_seq, *args):
        S = cell.n_states
        states, params = args[:S], args[S:]
        T = x_seq.shape[0]
        shape = x_seq.shape[1:]
        N = int(np.prod(shape)) if len(shape) else 1
        x2 = x_seq.detach().reshape(T, N).contiguous()
        consts, arr, seq = _split_params(cell, params)
        st0 = torch.stack([s.detach().to(x2.dtype).reshape(N) for s in states])
        prm = torch.stack([_param_row(params[i], x2, shape, N) for i in arr]) if arr else x2.new_empty(0, N)
        tabs = [_seq_table(params[i].to(x2.dtype), T, shape) for i in seq]
        qmax = max([t[2] for t in tabs], default=0)
        stab = x2.new_zeros(len(seq), T, qmax)
        for r, (tab, _, q, _) in enumerate(tabs):
            stab[r, :, :q] = tab
        sinner = np.array([t[1] for t in tabs], dtype=np.int64)
        sq = np.array([t[2] for t in tabs], dtype=np.int64)
        # [T, N] outputs come from the CPU kernels' buffer pool (a fresh 16 MB buffer costs as much in page faults
        # as the whole kernel)
        out = _POOL.empty(x2.shape, x2.dtype)
        vseq = _POOL.empty(x2.shape, x2.dtype) if record else x2.new_empty(0, 0)
        st_last = torch.empty_like(st0)
        kernel, blk = _forward_kernel(cell, _np(x2).dtype, consts)
        bad = np.zeros((N + blk - 1) // blk, dtype=np.uint8)
        _sync_threads(T * N)
        kernel(_np(x2), _np(st0), _np(prm), _np(stab), sinner, sq, record, _np(out), _np(vseq), _np(st_last), bad)
        if check and bad.any():
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        # saved for backward: x (the input itself, no copy when contiguous), the initial states, the parameter
        # rows ([S + P, N]) and tables: the backward replays the forward block by block instead of saving [T, N]
        # states
        ctx.save_for_backward(x2, st0, prm, stab)
        ctx.cfg = (cell, surrogate, record, T, N, shape, consts, arr, seq, sinner, sq, [t[3] for t in tabs])
        ctx.p_shapes = [p.shape if torch.is_tensor(p) else None for p in params]
        ctx.s_shapes = [s.shape for s in states]
        res = [out.reshape(x_seq.shape), vseq.reshape(x_seq.shape) if record else x2.new_empty(0)]
        res += [st_last[i].reshape(shape) for i in range(S)]
        return tuple(res)

    @staticmethod
    def backward(ctx, g_out, g_vseq, *g_states):
        x2, st0, prm, stab = ctx.saved_tensors
        cell, surrogate, record, T, N, shape, consts, arr, seq, sinner, sq, tshapes = ctx.cfg
        S = cell.n_states
        dt = x2.dtype
        go = (g_out if g_out is not None else x2.new_zeros(T, N)).reshape(T, N).contiguous().to(dt)
        gv = g_vseq.reshape(T, N).contiguous().to(dt) if (record and g_vseq is not None) else x2.new_empty(0, 0)
        gsl = torch.stack([(g if g is not None else x2.new_zeros(N)).reshape(N).to(dt) for g in g_states])
        needs = ctx.needs_input_grad
        # parameter gradients: all of them or none (two kernels per cell at most; the compiler drops the code of
        # the gradients a kernel does not compute, and their rows leave the block buffer)
        grads = tuple(sorted(arr + seq)) if any(needs[5 + S + i] for i in arr + seq) else ()
        g_arr = [i for i in grads if i not in seq]
        g_seq = [i for i in grads if i in seq]
        kernel, blk = _backward_kernel(cell, _np(x2).dtype, surrogate, consts, grads)
        nblk = (N + blk - 1) // blk
        runs = max([blk // int(sinner[seq.index(i)]) + 2 for i in g_seq], default=0)
        gx = _POOL.empty(x2.shape, dt)
        gst0 = torch.empty(S, N, dtype=dt)
        gprm = torch.empty(len(g_arr), N, dtype=dt)
        gseq = torch.zeros(len(g_seq), nblk, T, runs, dtype=dt)
        alpha = np.array(surrogate.alpha, dtype=_np(x2).dtype)[()]
        _sync_threads(T * N)
        kernel(_np(go), _np(gsl), _np(gv), _np(x2), _np(st0), _np(prm), _np(stab), sinner, sq, alpha, _np(gx),
               _np(gst0), _np(gprm), _np(gseq))
        g_st = [gst0[i].reshape(shape).sum_to_size(ctx.s_shapes[i]) if needs[5 + i] else None for i in range(S)]
        g_p = [None] * cell.n_params
        for r, i in enumerate(g_arr):
            ps = ctx.p_shapes[i]
            if ps is not None and needs[5 + S + i]:
                g = gprm[r].reshape(shape)
                g_p[i] = g.sum_to_size(ps) if len(ps) else g.sum()
        for r, i in enumerate(g_seq):
            if needs[5 + S + i]:
                k = seq.index(i)
                inner, q = int(sinner[k]), int(sq[k])
                # run j of block b holds table entry ((b * blk) // inner + j) % Q
                idx = (torch.arange(nblk).mul_(blk).div_(inner, rounding_mode="floor")[:, None]
                       + torch.arange(runs)[None, :]) % q
                gt = x2.new_zeros(T, q).index_add_(1, idx.reshape(-1), gseq[r].permute(1, 0, 2).reshape(T, -1))
                g_p[i] = gt.reshape(tshapes[k]).sum_to_size(ctx.p_shapes[i])
        return (None, None, None, None, gx.reshape((T, *shape)), *g_st, *g_p)


def _split_params(cell: Cell, params):
    """``(values of cell.const_params, indices of the parameters passed as per-neuron rows, indices of
    cell.seq_params)``."""
    consts, arr, seq = [], [], []
    for i, (name, p) in enumerate(zip(cell.params, params)):
        if name in cell.seq_params:
            seq.append(i)
            continue
        if name not in cell.const_params:
            arr.append(i)
            continue
        if torch.is_tensor(p):
            if p.numel() != 1:
                raise ValueError(f"{name}: the fused kernel of {cell.name!r} needs one value for the whole layer "
                                 f"(it is compiled in), got a tensor of shape {tuple(p.shape)}")
            p = p.item()
        consts.append(float(p))
    return tuple(consts), arr, seq


def reference_seq(cell: Cell, x_seq, states, params, surrogate: Surrogate, record: bool = False):
    """Plain torch loop over ``x_seq.unbind(0)`` calling ``cell.step`` (autograd gives the gradient)."""
    step = torch_step(cell, surrogate)
    outs, vs = [], []
    states = tuple(states)
    T = x_seq.shape[0]
    seq = [n in cell.seq_params for n in cell.params]  # seq params have x_seq's rank (see run_cell)
    for t, x in enumerate(x_seq.unbind(0)):
        ps = [(p[t] if p.shape[0] == T else p[0]) if is_seq else p for p, is_seq in zip(params, seq)]
        o, *states = step(x, *states, *ps)
        outs.append(o)
        if record:
            vs.append(states[0])
    return torch.stack(outs), tuple(states), (torch.stack(vs) if record else None)


def _seq_view(name: str, p: torch.Tensor, x_seq: torch.Tensor) -> torch.Tensor:
    """A time-varying parameter with ``x_seq``'s rank (leading dims of size 1 added), checked to broadcast."""
    try:
        ok = torch.broadcast_shapes(p.shape, x_seq.shape) == x_seq.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: shape {tuple(p.shape)} does not broadcast to x_seq's {tuple(x_seq.shape)}") from None
    return p.reshape((1,) * (x_seq.dim() - p.dim()) + tuple(p.shape))


def resolve_cell_backend(backend: str, x: torch.Tensor) -> str:
    """What ``backend`` means for a cell neuron: ``cpu`` or ``reference`` (no Triton kernel for cells)."""
    check_backend_name(backend)
    if backend == "triton":
        raise ValueError("backend='triton': this neuron has no Triton kernel; use 'auto', 'cpu' or 'reference'")
    name = resolve_backend(backend, x)
    return "reference" if name == "triton" else name


def run_cell(cell: Cell, x_seq: torch.Tensor, states=None, params=(), surrogate="atan", backend="auto",
             record: bool = False, check: bool = True):
    """Run ``cell`` over ``x_seq [T, B, ...]``; returns ``(out, final_states, v_seq or None)``.

    ``states`` default to zeros shaped ``[B, ...]``; ``params`` are floats or tensors broadcastable to
    ``[B, ...]``.  ``v_seq`` (``record=True``) is the first state after every step.
    """
    sg = get_surrogate(surrogate)
    shape = x_seq.shape[1:]
    if states is None:
        states = tuple(torch.zeros(shape, dtype=x_seq.dtype, device=x_seq.device) for _ in cell.states)
    states = tuple(s.to(x_seq.dtype).expand(shape) if s.shape != shape else s.to(x_seq.dtype) for s in states)
    if len(states) != cell.n_states or len(params) != cell.n_params:
        raise ValueError(f"{cell.name}: expected {cell.n_states} states and {cell.n_params} params, got "
                         f"{len(states)} and {len(params)}")
    params = tuple(p.to(x_seq.dtype) if torch.is_tensor(p) else
                   torch.tensor(float(p), dtype=x_seq.dtype, device=x_seq.device) for p in params)
    params = tuple(_seq_view(n, p, x_seq) if n in cell.seq_params else p for n, p in zip(cell.params, params))
    name = resolve_cell_backend(backend, x_seq)
    if name == "reference":
        if check and not bool(torch.isfinite(x_seq).all()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        return reference_seq(cell, x_seq, states, params, sg, record)
    if x_seq.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend='cpu': dtype {x_seq.dtype} is not supported (float32, float64); "
                         "use backend='reference' or 'auto' for half precision")
    if x_seq.device.type != "cpu":
        raise ValueError(f"backend='cpu': x_seq is on {x_seq.device}; the cpu backend needs CPU tensors")
    # flags/config parameters never need a gradient
    params = tuple(p.detach() if n in cell.no_grad_params else p for n, p in zip(cell.params, params))
    order = step_perm(x_seq)
    if order is not None:  # a dense non-C layout (channels-last): run in memory order, return the same layout
        x_seq = permute_seq(x_seq, order)
        states = tuple(permute_step(s, order) for s in states)
        params = tuple(permute_seq(p, order) if n in cell.seq_params else permute_step(p, order)
                       for n, p in zip(cell.params, params))
    res = FusedCellFn.apply(cell, sg, record, check, x_seq, *states, *params)
    out, vseq, final = res[0], res[1], tuple(res[2:])
    if order is not None:
        out, vseq = permute_seq(out, order, inverse=True), permute_seq(vseq, order, inverse=True) if record else vseq
        final = tuple(permute_step(s, order, inverse=True) for s in final)
    return out, final, (vseq if record else None)


def cell_seq(cell: Cell, x_seq, state, state_cls, params, *, surrogate, backend, return_v, check_inputs,
             init=None):
    """Shared body of the functional API of cell neurons: validate, default the state, run, wrap the state.

    ``state`` is ``None`` (zeros, or ``init`` values per state slot), a ``state_cls`` or a tuple of tensors.
    Returns ``(out, state_cls)`` or ``(out, state_cls, v_seq)`` with ``return_v``.
    """
    from ..functional._checks import check_bool, check_seq

    check_seq(x_seq)
    check_bool("return_v", return_v)
    check_bool("check_inputs", check_inputs)
    check_backend_name(backend)
    shape = x_seq.shape[1:]
    if state is None:
        init = init or (0.0,) * cell.n_states
        states = tuple(torch.full(shape, float(v), dtype=x_seq.dtype, device=x_seq.device) for v in init)
    else:
        if not isinstance(state, tuple) or len(state) != cell.n_states:
            raise ValueError(f"state: expected {state_cls.__name__}({', '.join(cell.states)}), got "
                             f"{type(state).__name__}")
        states = []
        for name, v in zip(cell.states, state):
            if not torch.is_tensor(v):
                raise ValueError(f"state.{name}: expected a tensor, got {type(v).__name__}")
            if v.shape != shape:
                if v.numel() != 1:
                    raise ValueError(f"state.{name}: shape {tuple(v.shape)} does not match x_seq's [B, ...] = "
                                     f"{tuple(shape)}")
                v = v.reshape(()).expand(shape)
            states.append(v.to(x_seq.dtype))
    out, final, v_seq = run_cell(cell, x_seq, tuple(states), params, surrogate, backend, return_v, check_inputs)
    st = state_cls(*final)
    return (out, st, v_seq) if return_v else (out, st)
