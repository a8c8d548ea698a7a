r"""Triton backend (CUDA): every :class:`~spikeforge.kernels.cell.Cell` runs through one generated driver.

:func:`run_cell` generates, per cell, a forward and a backward kernel as source text and compiles them with
``triton.jit``.  The cell's ``step`` and ``vjp`` are copied in from their source (every ``a / b`` written
``_div(a, b)``), and their helper names (``spike``, ``heav``, ``dspike``, ``floor``, ``clamp``, ``mspike``,
``ONE``...) resolve to ``tl`` versions defined here, the way :func:`spikeforge.surrogate.bind` retargets a
surrogate: ``dspike`` is the surrogate's own derivative source, ``ONE``/``ZERO`` and the surrogate's width are
``tl.constexpr`` numbers (combined with a tensor they take its dtype, as a Python number does in torch).

- One program per block of ``BLOCK`` neurons, sequential in time.  The forward writes the outputs (and the first
  state after every step with ``record``) and saves only ``x`` (one row when it is repeated over time, stride 0),
  the initial states and the parameter tables.
- The backward replays the forward of its block, storing the states entering every step (the first state in the
  gradient buffer of ``x``, which the reverse sweep overwrites row by row, the others in a ``[T, S - 1, N]``
  buffer allocated by the backward; no replay when the vjp reads no state), then runs the vjp in reverse time.
- Parameters are tables (:func:`_table`): neuron ``n`` at step ``t`` reads ``table[t * Q + (n // inner) % Q]``,
  so a shared, per-channel or per-neuron value needs no ``[N]``-sized copy; ``Cell.seq_params`` may have one row
  per step; ``Cell.const_params`` are compiled in as ``tl.constexpr`` (an integral value as an integer, so a
  spike cap is a static loop bound).  A parameter's gradient is summed over time per neuron in float64 (per step
  for a per-step table) and reduced to the parameter's shape by torch.

Bit-identical spikes: the generated code keeps the cell's operation order, the kernels are compiled with
``enable_fp_fusion=False`` (no FMA contraction), and float32 division is rounded to nearest (``div_rn``;
Triton's ``/`` is ``div.full.f32``, within 2 ulp).  Only float32 and float64 are supported (torch rounds half
precision per op in float32 "opmath", which a fused kernel would not reproduce); ``auto`` sends half precision
to the reference.  :func:`cell_ptx` compiles a cell's kernels for a CUDA target on a machine without a GPU.

The LIF family is a cell too (:data:`spikeforge.functional.lif.LIF_CELL`) and runs on the same driver.

Tensors must be on a CUDA device; under ``TRITON_INTERPRET=1`` (Triton's interpreter) CPU tensors are accepted
too, which is how the tests run without a GPU.  See docs/kernels.md.

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
from ._layout import state_vec as _state_vec
from .cell import vjp_reads_states

BLOCK = 256
_lock = threading.Lock()


def is_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _compile_opts() -> dict:
    # Triton's interpreter takes no compile options; on the GPU, forbid FMA contraction (exact forward).
    return {} if _interpret() else {"enable_fp_fusion": False}


# --- helpers ---------------------------------------------------------------------------------------------
# The helper names a Cell's step and vjp use (see spikeforge.kernels.cell), bound to Triton by _build_cell, per
# dtype: DT is the data's dtype (a comparison's 0/1 takes it, as in torch); ONE/ZERO are numbers (combined with a
# tensor they take its dtype, as a Python number does in torch).
# fmt: off
def _c_heav(u):
    return tl.where(u >= 0.0, 1.0, 0.0).to(DT)  # noqa: F821


def _c_step(u):
    return tl.where(u > 0.0, 1.0, 0.0).to(DT)  # noqa: F821


def _c_relu(u):
    return tl.where(u > 0.0, u, 0.0).to(DT)  # noqa: F821  (not 0 * x: NaN at -inf)


def _c_floor(u):
    return tl.floor(u)  # noqa: F821


def _c_clamp(u, lo, hi):
    return tl.minimum(tl.maximum(u, lo), hi)  # noqa: F821


def _c_ste(q, a):
    return q


def _c_exp(u):
    return tl.exp(u)  # noqa: F821


def _c_abs(u):
    return tl.abs(u)  # noqa: F821


def _c_div_rn(a, b):
    # float32 a / b rounded to nearest, as torch divides (Triton's `/` on float32 is div.full.f32, 2 ulp)
    return tl.math.div_rn(a, b)  # noqa: F821


def _c_div(a, b):
    return a / b


def _c_mspike(u, vth, cap):
    return tl.minimum(tl.maximum(tl.floor(_div(u, vth)), 0.0), cap)  # noqa: F821


def _c_dmspike(u, vth, cap, alpha):
    # (sum_k g'(u - k vth), sum_k k g'(u - k vth)) over the levels k = 1..cap; cap is a compile-time integer
    du = tl.zeros_like(u)  # noqa: F821
    dk = tl.zeros_like(u)  # noqa: F821
    for k in tl.static_range(1, cap + 1):  # noqa: F821
        d = dspike(u - vth * k, alpha)  # noqa: F821
        du += d
        dk += k * d
    return du, dk


def _c_load_state(ptr, offs, mask, zero, VEC: tl.constexpr):
    if VEC:
        out = tl.load(ptr + offs, mask=mask, other=0.0)
    else:
        out = zero + tl.load(ptr)
    return out


def _c_load_param(ptr, idx, mask, t, Q, VEC: tl.constexpr, SEQ: tl.constexpr):
    # a parameter table [Tp, Q]: the value of neuron n at step t is tab[t * Q + (n // inner) % Q] (t = 0 when
    # Tp = 1); idx holds (n // inner) % Q; one table entry (Q = 1) stays a scalar
    base = ptr
    if SEQ:
        base = ptr + tl.cast(t, tl.int64) * Q
    if VEC:
        out = tl.load(base + idx, mask=mask, other=1.0)
    else:
        out = tl.load(base)
    return out
# fmt: on

_C_HELPERS = (("heav", _c_heav), ("spike", _c_heav), ("step", _c_step), ("relu", _c_relu), ("floor", _c_floor),
              ("clamp", _c_clamp), ("ste", _c_ste), ("_load_state", _c_load_state),
              ("_load_param", _c_load_param))
_CELL_KERNELS: dict = {}


def _const_value(v: float):
    """A ``Cell.const_params`` value as a compile-time number: an integer when it is one (a loop bound such as
    a spike cap), else the float."""
    v = float(v)
    return int(v) if v.is_integer() else v


def _cell_source(fn, new_name: str) -> str:
    """``fn``'s source renamed to ``new_name`` with every ``a / b`` written ``_div(a, b)`` (float32: rounded to
    nearest, as torch divides)."""
    import ast
    import inspect
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise ValueError(f"backend='triton': the source of {fn.__name__!r} is not available ({e}); Triton "
                         "compiles a cell's step and vjp from their source") from None
    tree = ast.parse(src)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise ValueError(f"backend='triton': {fn.__name__!r} is not a plain function (def ...)")
    fdef.name = new_name
    fdef.decorator_list = []

    class Div(ast.NodeTransformer):
        def visit_BinOp(self, node):
            self.generic_visit(node)
            if isinstance(node.op, ast.Div):
                return ast.copy_location(ast.Call(ast.Name("_div", ast.Load()), [node.left, node.right], []), node)
            return node

    return ast.unparse(ast.fix_missing_locations(Div().visit(tree))) + "\n"


def _gen_cell_src(cell, arr: list, consts: dict, grads: tuple, replay: bool) -> str:
    """Source of ``cell_fwd`` and ``cell_bwd`` for ``cell``: ``arr`` are the indices of the parameters passed as
    tables, ``consts`` maps the others to their constant's name, ``grads`` are the parameters whose gradient the
    backward computes, ``replay`` whether it replays the forward (the vjp reads the states)."""
    S, P = cell.n_states, cell.n_params
    sts = [f"s{i}" for i in range(S)]
    pex = [consts[i] if i in consts else f"p{i}" for i in range(P)]
    sptr = "".join(f"st{i}_ptr, " for i in range(S))
    pptr = "".join(f"p{i}_ptr, " for i in arr)
    pint = "".join(f", q{i}, in{i}" for i in arr)
    sflag = "".join(f"S{i}_VEC: tl.constexpr, " for i in range(S))
    pflag = "".join(f"P{i}_VEC: tl.constexpr, P{i}_SEQ: tl.constexpr, " for i in arr)
    L = []
    a = L.append

    def prologue():
        a("    pid = tl.program_id(0)")
        a("    offs = pid * BLOCK + tl.arange(0, BLOCK)")
        a("    mask = offs < N")
        a("    zero = tl.zeros([BLOCK], dtype=x_ptr.dtype.element_ty)")
        for i in arr:
            a(f"    k{i} = (offs // in{i}) % q{i}")
            a(f"    p{i} = _load_param(p{i}_ptr, k{i}, mask, 0, q{i}, P{i}_VEC, False)")

    def load_states():
        for i in range(S):
            a(f"    s{i} = _load_state(st{i}_ptr, offs, mask, zero, S{i}_VEC)")

    def load_x(ind):
        # X_REP: the same input at every step (x_seq expanded over time, stride 0), one row read T times
        a(f"{ind}if X_REP:")
        a(f"{ind}    x = tl.load(x_ptr + offs, mask=mask, other=0.0)")
        a(f"{ind}else:")
        a(f"{ind}    x = tl.load(x_ptr + row + offs, mask=mask, other=0.0)")

    def hist(i):
        # the states entering step t: state 0 in gx (the backward overwrites row t with dL/dx_t after reading it),
        # the others in hist [T, S - 1, N]
        return "gx_ptr + row + offs" if i == 0 else f"hist_ptr + (row * {S - 1} + {i - 1} * N) + offs"

    def seq_params(ind):
        for i in arr:
            if cell.params[i] in cell.seq_params:
                a(f"{ind}if P{i}_SEQ:")
                a(f"{ind}    p{i} = _load_param(p{i}_ptr, k{i}, mask, t, q{i}, P{i}_VEC, True)")

    # forward: spikes (and the first state after every step with REC) out, final states, the non-finite flag
    a(f"def cell_fwd(x_ptr, {sptr}{pptr}out_ptr, vseq_ptr, last_ptr, bad_ptr, T, N{pint}, {sflag}{pflag}"
      "REC: tl.constexpr, X_REP: tl.constexpr, BLOCK: tl.constexpr):")
    prologue()
    load_states()
    a("    acc = zero")
    a("    for t in range(T):")
    a("        row = tl.cast(t, tl.int64) * N")
    load_x("        ")
    seq_params("        ")
    a(f"        o, {', '.join(f'n{i}' for i in range(S))} = STEP(x, {', '.join(sts + pex)})")
    a("        tl.store(out_ptr + row + offs, o, mask=mask)")
    for i in range(S):
        a(f"        s{i} = n{i}")
    a("        if REC:")
    a("            tl.store(vseq_ptr + row + offs, s0, mask=mask)")
    a("        acc += x * 0.0  # NaN iff some x was NaN or inf")
    for i in range(S):
        a(f"    tl.store(last_ptr + {i} * N + offs, s{i}, mask=mask)")
    a("    tl.store(bad_ptr + offs, (acc != 0.0).to(tl.int8), mask=mask)")
    a("")
    a("")
    # backward: replay the forward, storing the states entering every step (see hist), then the vjp in reverse
    gin = "".join(f"gs{i}_ptr, " for i in range(S))
    gpo = "".join(f"gp{i}_ptr, " for i in grads)
    gflag = "".join(f"HAS_GS{i}: tl.constexpr, " for i in range(S))
    a(f"def cell_bwd(x_ptr, {sptr}{pptr}go_ptr, gv_ptr, {gin}hist_ptr, gx_ptr, gst_ptr, {gpo}T, N{pint}, "
      f"{sflag}{pflag}{gflag}GO_CONST: tl.constexpr, HAS_GV: tl.constexpr, X_REP: tl.constexpr, "
      "BLOCK: tl.constexpr):")
    prologue()
    if replay:
        load_states()
        a("    for t in range(T):")
        a("        row = tl.cast(t, tl.int64) * N")
        load_x("        ")
        seq_params("        ")
        for i in range(S):
            a(f"        tl.store({hist(i)}, s{i}, mask=mask)")
        a(f"        o, {', '.join(f'n{i}' for i in range(S))} = STEP(x, {', '.join(sts + pex)})")
        for i in range(S):
            a(f"        s{i} = n{i}")
        a("    tl.debug_barrier()")
    for i in range(S):
        a(f"    g{i} = zero")
        a(f"    if HAS_GS{i}:")
        a(f"        g{i} = tl.load(gs{i}_ptr + offs, mask=mask, other=0.0)")
    for i in grads:
        a(f"    a{i} = zero.to(tl.float64)")
    a("    go_c = zero")
    a("    if GO_CONST:")
    a("        go_c = zero + tl.load(go_ptr)")
    a("    for i in range(T):")
    a("        t = T - 1 - i")
    a("        row = tl.cast(t, tl.int64) * N")
    load_x("        ")
    a("        go = go_c")
    a("        if not GO_CONST:")
    a("            go = tl.load(go_ptr + row + offs, mask=mask, other=0.0)")
    a("        if HAS_GV:")
    a("            g0 = g0 + tl.load(gv_ptr + row + offs, mask=mask, other=0.0)")
    seq_params("        ")
    for i in range(S):
        a(f"        s{i} = tl.load({hist(i)}, mask=mask, other=0.0)" if replay else
          f"        s{i} = zero")
    outs = ["dx"] + [f"d{i}" for i in range(S)] + [f"dp{i}" if i in grads else "_" for i in range(P)]
    a(f"        {', '.join(outs)} = VJP(go, {', '.join(f'g{i}' for i in range(S))}, x, {', '.join(sts + pex)}, "
      "ALPHA)")
    a("        tl.store(gx_ptr + row + offs, dx, mask=mask)")
    for i in range(S):
        a(f"        g{i} = zero + d{i}")
    for i in grads:
        a(f"        if P{i}_SEQ:  # one gradient per step")
        a(f"            tl.store(gp{i}_ptr + row + offs, (zero + dp{i}).to(tl.float64), mask=mask)")
        a("        else:")
        a(f"            a{i} += (zero + dp{i}).to(tl.float64)")
    for i in range(S):
        a(f"    tl.store(gst_ptr + {i} * N + offs, g{i}, mask=mask)")
    for i in grads:
        a(f"    if not P{i}_SEQ:")
        a(f"        tl.store(gp{i}_ptr + offs, a{i}, mask=mask)")
    return "\n".join(L) + "\n"


def _namespace(dtype: torch.dtype, surrogate: Surrogate) -> dict:
    """The helper names of a Cell's step and vjp (and ``dspike``, the surrogate's derivative) as Triton functions
    for data of ``dtype``."""
    import triton
    import triton.language as tl

    # __name__: Triton reads a called function's module name (bind's globals become the functions' module)
    # numbers are tl.constexpr globals for the compiler; the interpreter wants plain numbers (a constexpr minus a
    # tensor would be a tensor wrapped in a constexpr)
    const = (lambda v: v) if _interpret() else tl.constexpr
    ns = {"__name__": __name__, "tl": tl, "DT": tl.float32 if dtype == torch.float32 else tl.float64,
          "ONE": const(1.0), "ZERO": const(0.0), "PI": const(math.pi), "SQRT_PI": const(math.sqrt(math.pi)),
          "ALPHA": const(float(surrogate.alpha)), "const": const}
    ns["_div"] = triton.jit(bind(_c_div_rn if dtype == torch.float32 else _c_div, ns))
    # exp/absf/relu/step/PI: the names of a surrogate derivative (spikeforge.surrogate), which a vjp may use too
    ns["exp"] = triton.jit(bind(_c_exp, ns))
    ns["absf"] = triton.jit(bind(_c_abs, ns))
    for name, fn in _C_HELPERS:
        ns[name] = triton.jit(bind(fn, ns))
    ns["dspike"] = triton.jit(bind(surrogate.grad_source, ns))
    ns["mspike"] = triton.jit(bind(_c_mspike, ns))
    ns["dmspike"] = triton.jit(bind(_c_dmspike, ns))
    return ns


def surrogate_fn(surrogate: Surrogate, dtype: torch.dtype = torch.float32):
    """The surrogate's derivative as a ``triton.jit`` function ``(u, alpha) -> g'(u)`` (its source bound to ``tl``
    math, as the generated kernels call it)."""
    return _namespace(dtype, surrogate)["dspike"]


def _build_cell(cell, dtype: torch.dtype, surrogate: Surrogate, consts: tuple, grads: tuple):
    """Compile (lazily: triton.jit) the forward and backward kernels of ``cell`` for ``dtype``, the constant
    values ``consts`` of ``cell.const_params``, the surrogate and the parameters ``grads`` whose gradient the
    backward computes.  The step, the vjp and the drivers are generated as source text (registered with
    ``linecache``, where Triton reads a kernel's source) and executed in a namespace holding the helpers bound to
    ``tl`` (:func:`_namespace`), so their global names resolve there, the way :func:`spikeforge.surrogate.bind`
    retargets a surrogate."""
    import linecache

    import triton

    ns = _namespace(dtype, surrogate)
    const = ns.pop("const")
    cidx = {cell.params.index(n): f"CONST{j}" for j, n in enumerate(cell.const_params)}
    for j, v in enumerate(consts):
        ns[f"CONST{j}"] = const(_const_value(v))
    arr = [i for i in range(cell.n_params) if i not in cidx]
    src = (_cell_source(cell.step, "_cell_step") + "\n\n" + _cell_source(cell.vjp, "_cell_vjp") + "\n\n"
           + _gen_cell_src(cell, arr, cidx, grads, vjp_reads_states(cell)))
    fname = f"<spikeforge.kernels.triton:{cell.name}:{len(_CELL_KERNELS)}>"
    lines = src.splitlines(keepends=True)
    linecache.cache[fname] = (len(src), None, lines, fname)
    exec(compile(src, fname, "exec"), ns)  # noqa: S102
    ns["STEP"] = triton.jit(ns["_cell_step"])
    ns["VJP"] = triton.jit(ns["_cell_vjp"])
    return triton.jit(ns["cell_fwd"]), triton.jit(ns["cell_bwd"]), arr


def _cell_kernels(cell, dtype, surrogate: Surrogate, consts: tuple, grads: tuple):
    key = (cell, dtype, surrogate.grad_source, surrogate.alpha, consts, grads, _interpret())
    with _lock:
        k = _CELL_KERNELS.get(key)
        if k is None:
            k = _CELL_KERNELS[key] = _build_cell(cell, dtype, surrogate, consts, grads)
        return k


def _table(name: str, p, seq: bool, T: int, shape: tuple, like: torch.Tensor):
    """A parameter as ``(table, Q, inner, Tp)``: a flat tensor of ``Tp x Q`` values where neuron ``n`` (C order)
    at step ``t`` reads ``table[t * Q + (n // inner) % Q]`` (``t = 0`` when ``Tp = 1``).  ``Q`` spans the dims
    where the parameter varies (e.g. the channels, ``inner`` = H x W); dims of size 1 between them are expanded.
    A float or a one-value tensor is one entry.  A ``seq`` parameter has ``x_seq``'s rank (its first dim: 1 or
    T steps)."""
    if not torch.is_tensor(p):
        return torch.full((1,), float(p), dtype=like.dtype, device=like.device), 1, 1, 1
    p = p.detach().to(dtype=like.dtype)
    if p.device != like.device:
        raise ValueError(f"backend='triton': {name} is on {p.device} but x_seq on {like.device}")
    nd = len(shape)
    if seq:
        Tp, rest = p.shape[0], tuple(p.shape[1:])
    else:
        Tp, rest = 1, (1,) * (nd - p.dim()) + tuple(p.shape)
    if Tp not in (1, T):
        raise ValueError(f"{name}: {Tp} time steps but x_seq has {T}")
    var = [d for d in range(nd) if rest[d] != 1]
    if not var:
        return p.reshape(Tp).contiguous(), 1, 1, Tp
    d0, d1 = var[0], var[-1]
    Q = math.prod(shape[d0:d1 + 1])
    inner = math.prod(shape[d1 + 1:])
    tshape = (Tp, *[shape[d] if d0 <= d <= d1 else 1 for d in range(nd)])
    return p.reshape(Tp, *rest).expand(tshape).contiguous().reshape(-1), Q, inner, Tp


class TritonCellFn(torch.autograd.Function):
    """Fused Triton forward/backward of any :class:`~spikeforge.kernels.cell.Cell` over ``[T, ...]``.

    ``apply(cell, surrogate, record, check, x_seq, *states, *params)`` returns
    ``(out [T, ...], v_seq [T, ...] or empty, *final_states)``; arguments as ``FusedCellFn`` (states of one step's
    shape, parameters floats or tensors, ``seq_params`` with ``x_seq``'s rank).
    """

    @staticmethod
    def forward(ctx, cell, surrogate, record, check, x_seq, *args):
        import triton

        S = cell.n_states
        states, params = args[:S], args[S:]
        T = x_seq.shape[0]
        shape = tuple(x_seq.shape[1:])
        N = math.prod(shape)
        # an input repeated over time (expanded, stride 0: e.g. direct coding) is read as its one row
        x_rep = T > 1 and x_seq.stride(0) == 0
        x2 = (x_seq.detach()[:1] if x_rep else x_seq.detach()).reshape(1 if x_rep else T, N).contiguous()
        consts = tuple(_const_param(cell, n, p) for n, p in zip(cell.params, params) if n in cell.const_params)
        fwd, _, arr = _cell_kernels(cell, x2.dtype, surrogate, consts, ())
        st = [_state_vec(s, N).to(x2.dtype) for s in states]
        tabs = {i: _table(cell.params[i], params[i], cell.params[i] in cell.seq_params, T, shape, x2) for i in arr}
        out = x2.new_empty(T, N)
        vseq = x2.new_empty(T, N) if record else x2.new_empty(1)
        last = torch.empty(S, N, dtype=x2.dtype, device=x2.device)
        bad = torch.zeros(N, dtype=torch.int8, device=x2.device)
        if N > 0 and T > 0:
            fwd[(triton.cdiv(N, BLOCK),)](
                x2, *st, *[tabs[i][0] for i in arr], out, vseq, last, bad, T, N,
                *[v for i in arr for v in tabs[i][1:3]], *[s.numel() > 1 for s in st],
                *[f for i in arr for f in (tabs[i][1] > 1, tabs[i][3] > 1)], REC=record, X_REP=x_rep, BLOCK=BLOCK,
                **_compile_opts())
        else:  # no step (or no neuron): the final states are the initial ones
            for i in range(S):
                last[i] = st[i].expand(N)
        if check and bool(bad.any()):
            raise ValueError("x_seq: contains NaN or inf; pass finite input (or check_inputs=False to skip)")
        # saved: x (the input itself, no copy when contiguous), the initial states and the parameter tables; the
        # backward replays the forward instead of saving [T, N] states
        ctx.save_for_backward(x2, *st, *[tabs[i][0] for i in arr])
        ctx.cfg = (cell, surrogate, record, T, N, shape, consts, arr, {i: tabs[i][1:] for i in arr}, x_rep)
        ctx.p_shapes = [p.shape if torch.is_tensor(p) else None for p in params]
        ctx.s_shapes = [s.shape for s in states]
        res = [out.reshape(x_seq.shape), vseq.reshape(x_seq.shape) if record else x2.new_empty(0)]
        res += [last[i].reshape(shape) for i in range(S)]
        return tuple(res)

    @staticmethod
    def backward(ctx, g_out, g_vseq, *g_states):
        import triton

        cell, surrogate, record, T, N, shape, consts, arr, tinfo, x_rep = ctx.cfg
        S = cell.n_states
        x2, *rest = ctx.saved_tensors
        st, tabs = rest[:S], rest[S:]
        dt, dev = x2.dtype, x2.device
        needs = ctx.needs_input_grad
        grads = tuple(i for i in arr if needs[5 + S + i])
        _, bwd, _ = _cell_kernels(cell, dt, surrogate, consts, grads)

        def flat(g, rows):
            g = g.to(dt).reshape((rows, N) if rows else (N,))
            return g if g.is_contiguous() else g.contiguous()

        if g_out is None:
            go_const, go = True, x2.new_zeros(1)
        elif _is_const(g_out):
            go_const, go = True, g_out[(0,) * g_out.dim()].reshape(1).to(dt)
        else:
            go_const, go = False, flat(g_out, T)
        has_gv = record and g_vseq is not None
        gv = flat(g_vseq, T) if has_gv else x2.new_empty(1)
        gs = [flat(g, 0) if g is not None else x2.new_empty(1) for g in g_states]
        # the states entering every step: the first in gx, the others in hist (no replay: the vjp reads no state)
        hist = torch.empty(T * (S - 1) * N if S > 1 and vjp_reads_states(cell) else 1, dtype=dt, device=dev)
        gx = torch.empty(T, N, dtype=dt, device=dev)
        gst = torch.empty(S, N, dtype=dt, device=dev)
        gp = {i: torch.zeros((T, N) if tinfo[i][2] > 1 else (N,), dtype=torch.float64, device=dev) for i in grads}
        if N > 0 and T > 0:
            bwd[(triton.cdiv(N, BLOCK),)](
                x2, *st, *tabs, go, gv, *gs, hist, gx, gst, *[gp[i] for i in grads], T, N,
                *[v for i in arr for v in tinfo[i][:2]], *[s.numel() > 1 for s in st],
                *[f for i in arr for f in (tinfo[i][0] > 1, tinfo[i][2] > 1)],
                *[g is not None for g in g_states], GO_CONST=go_const, HAS_GV=has_gv, X_REP=x_rep, BLOCK=BLOCK,
                **_compile_opts())
        else:
            gst.zero_()
            for i in range(S):
                if g_states[i] is not None:
                    gst[i] = flat(g_states[i], 0)
        g_st = [gst[i].reshape(shape).sum_to_size(ctx.s_shapes[i]) if needs[5 + i] else None for i in range(S)]
        g_p = [None] * cell.n_params
        for i in grads:
            ps = ctx.p_shapes[i]
            g = gp[i].reshape((T, *shape) if gp[i].dim() == 2 else shape)
            if len(ps) > g.dim():  # a seq parameter without a time dim: [1, B, ...]
                g = g.reshape((1,) * (len(ps) - g.dim()) + tuple(g.shape))
            g_p[i] = g.sum_to_size(ps).to(dt) if len(ps) else g.sum().to(dt)
        return (None, None, None, None, gx.reshape((T, *shape)), *g_st, *g_p)


def _const_param(cell, name: str, p):
    if torch.is_tensor(p):
        if p.numel() != 1:
            raise ValueError(f"{name}: the Triton kernel of {cell.name!r} needs one value for the whole layer (it is "
                             f"compiled in), got a tensor of shape {tuple(p.shape)}")
        p = p.item()
    return float(p)


def run_cell(cell, x_seq: torch.Tensor, states, params, surrogate: Surrogate, record: bool = False,
             check: bool = True):
    """Run ``cell`` over ``x_seq [T, B, ...]`` with the generated Triton kernels; returns
    ``(out, final_states, v_seq or None)``.  ``states`` are tensors of one step's shape ``[B, ...]`` (a broadcast
    value is read once); ``params`` are floats or tensors broadcastable to ``[B, ...]`` (``cell.seq_params``: to
    ``[T, B, ...]``, with ``x_seq``'s rank), as :func:`spikeforge.kernels.dispatch.run_cell` hands them on."""
    if not is_available():
        raise ValueError("backend='triton' needs triton, which is not installed (pip install 'spikeforge[triton]')")
    if x_seq.device.type != "cuda" and not _interpret():
        raise ValueError(f"backend='triton': x_seq is on {x_seq.device}; the triton backend needs CUDA tensors "
                         "(or TRITON_INTERPRET=1 for Triton's CPU interpreter)")
    if x_seq.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"backend='triton': dtype {x_seq.dtype} is not supported (float32, float64); "
                         "use backend='reference' or 'auto' for half precision")
    for name, s in zip(cell.states, states):
        if s.device != x_seq.device:
            raise ValueError(f"backend='triton': state {name} is on {s.device} but x_seq on {x_seq.device}")
    params = tuple(p.detach() if n in cell.no_grad_params and torch.is_tensor(p) else p
                   for n, p in zip(cell.params, params))
    res = TritonCellFn.apply(cell, surrogate, record, check, x_seq, *states, *params)
    return res[0], tuple(res[2:]), (res[1] if record else None)


def cell_ptx(cell, dtype: torch.dtype, surrogate: Surrogate, consts: tuple = (), grads: tuple = (), arch: int = 90,
             flags: bool = True) -> dict:
    """Compile the generated kernels of ``cell`` for a CUDA GPU of compute capability ``arch`` (no GPU needed:
    Triton's compiler and ptxas run on the CPU) and return their PTX, ``{"fwd": ..., "bwd": ...}``.  Every
    compile-time flag (per-neuron states and parameters, per-step tables, recorded ``v_seq``, incoming gradients)
    is set to ``flags``.  The interpreter accepts code the compiler rejects (e.g. a loop-carried value that
    changes type), so this is how the tests check the GPU path on a machine without one."""
    import triton
    from triton.backends.compiler import GPUTarget

    if _interpret():
        raise ValueError("cell_ptx: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    ty = {torch.float32: "fp32", torch.float64: "fp64"}[dtype]
    fwd, bwd, arr = _cell_kernels(cell, dtype, surrogate, tuple(consts), tuple(grads))
    seq = {f"P{i}_SEQ" for i in arr if cell.params[i] in cell.seq_params}
    out = {}
    for key, k in (("fwd", fwd), ("bwd", bwd)):
        sig, cst = {}, {}
        for j, (name, par) in enumerate(zip(k.arg_names, k.params)):
            if name.endswith("_ptr"):
                sig[name] = "*i8" if name == "bad_ptr" else "*fp64" if name.startswith("gp") else "*" + ty
            elif par.is_constexpr:
                sig[name] = "constexpr"
                cst[(j,)] = BLOCK if name == "BLOCK" else (flags and (name in seq or not name.endswith("_SEQ")))
            else:
                sig[name] = "i32"
        src = triton.compiler.ASTSource(fn=k, signature=sig, constexprs=cst)
        out[key] = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=_compile_opts()).asm["ptx"]
    return out
