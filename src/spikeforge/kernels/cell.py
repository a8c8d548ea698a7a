r"""A recurrent neuron's update written once, as a :class:`Cell`, plus its torch bindings and the reference loop.

A :class:`Cell` holds two plain Python functions, written with arithmetic and a few helper names only (the way
:mod:`spikeforge.surrogate` writes derivatives), so :func:`spikeforge.surrogate.bind` can point those names at
torch (:func:`torch_namespace`), at scalar numba math (:mod:`spikeforge.kernels.fused`) or at Triton:

- ``step(x, *states, *params) -> (out, *new_states)``: one time step.  Helpers: ``spike(u)`` (Heaviside
  :math:`u \ge 0` with the surrogate gradient), ``ste(q, a)`` (value ``q``, gradient of ``a``), ``floor``,
  ``relu``, ``clamp(u, lo, hi)``, ``mspike(u, vth, cap)`` (``clamp(floor(u / vth), 0, cap)``, the surrogate
  summed over the levels), and the constants ``ONE`` / ``ZERO`` (typed like the data).
- ``vjp(g_out, *g_new_states, x, *states, *params, alpha) -> (g_x, *g_states, *g_params)``: the hand-written
  vector-Jacobian product of ``step`` (it recomputes what it needs from the step's inputs).  Helpers:
  ``dspike(u, alpha)``, ``dmspike(u, vth, cap, alpha)``, ``heav``, ``relu``, ``step`` (``[x > 0]``),
  ``floor``, ``ONE``, ``ZERO``.

:func:`reference_seq` runs a cell as a plain torch loop over ``x_seq.unbind(0)`` (autograd gives the gradient):
the definition of truth every other execution is tested against.  :func:`spikeforge.kernels.dispatch.run_cell`
picks the execution.

Example:
    >>> import torch
    >>> from spikeforge.kernels.cell import Cell, reference_seq
    >>> from spikeforge.surrogate import get_surrogate
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
    >>> s, (v,), _ = reference_seq(cell, torch.full((4, 1), 0.6), (torch.zeros(1),), (torch.tensor(1.0),),
    ...                            get_surrogate("atan"))
    >>> s.flatten().tolist()
    [0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from .._registry import Registry
from ..surrogate import TORCH_MATH, Surrogate, SpikeFn, bind, get_surrogate


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
    # optional, for the fused CPU backward: ``keep(x, *states, *params) -> (k_0, ...)``, values of one step that the
    # replay stores instead of the states entering it, and ``vjp_kept(g_out, *g_new_states, *kept, *params, alpha)``,
    # the same gradients as ``vjp`` computed from them (e.g. LIF keeps its membrane h: the reverse sweep then reads
    # one stored value instead of re-reading x and the state).  ``keep_for[i]`` names the parameters whose gradient
    # is the only one that reads kept value i (stored only when one of them needs a gradient); () = always stored.
    # One entry per kept value.
    keep: Callable | None = None
    vjp_kept: Callable | None = None
    keep_for: tuple = ()

    def __post_init__(self):
        if len(self.states) < 1:
            raise ValueError(f"cell {self.name!r}: needs at least one state")
        if not set(self.const_params) <= set(self.no_grad_params):
            raise ValueError(f"cell {self.name!r}: const_params {self.const_params} must be no_grad_params")
        if not set(self.seq_params) <= set(self.params) - set(self.const_params):
            raise ValueError(f"cell {self.name!r}: seq_params {self.seq_params} must be non-constant params")
        if (self.keep is None) != (self.vjp_kept is None):
            raise ValueError(f"cell {self.name!r}: keep and vjp_kept go together")
        if any(not set(names) <= set(self.params) for names in self.keep_for):
            raise ValueError(f"cell {self.name!r}: keep_for names parameters not in {self.params}")

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


# --- the vjp bound to torch, and its check against autograd of the step ----------------------------------
def torch_vjp(cell: Cell, surrogate: Surrogate, fn: Callable | None = None) -> Callable:
    """``cell.vjp`` (or ``fn``, e.g. ``cell.keep`` / ``cell.vjp_kept``) bound to torch: evaluates the hand-written
    gradient on tensors (used by :func:`check_vjp`)."""
    dspike = bind(surrogate.grad_source, TORCH_MATH)

    def dmspike(u, vth, cap, alpha):
        du = torch.zeros_like(u)
        dk = torch.zeros_like(u)
        for k in range(1, int(cap) + 1):
            d = dspike(u - vth * float(k), alpha)
            du = du + d
            dk = dk + float(k) * d
        return du, dk

    ns = dict(TORCH_MATH)
    ns.update({"dspike": dspike, "dmspike": dmspike, "heav": lambda u: (u >= 0).to(u.dtype), "floor": torch.floor,
               "clamp": lambda u, lo, hi: torch.clamp(u, lo, hi), "ONE": 1.0, "ZERO": 0.0})
    return bind(cell.vjp if fn is None else fn, ns)


def _step_params(cell: Cell, params, x_seq: torch.Tensor, t: int) -> list:
    """The parameters as one step sees them (a ``seq_params`` tensor with a time dim gives its row ``t``)."""
    out = []
    for name, p in zip(cell.params, params):
        if name in cell.seq_params and p.dim() == x_seq.dim():
            p = p[t] if p.shape[0] == x_seq.shape[0] else p[0]
        out.append(p)
    return out


def check_vjp(cell: Cell, example: "CellExample", rtol: float = 1e-7) -> None:
    """Check ``cell.vjp`` against autograd of ``cell.step`` at every step of ``example`` in float64 (the states
    of each step come from running the reference forward): the gradient of ``x``, of every state and of every
    parameter not in ``cell.no_grad_params``, for random cotangents of the output and the new states.
    Raises one ValueError naming the cell, the component (``x``, ``state 'v'``, ``param 'k'``) and the step
    where they differ by more than ``rtol`` relative to the largest autograd value."""
    dt = torch.float64
    sg = get_surrogate(example.surrogate)
    step, vjp = torch_step(cell, sg), torch_vjp(cell, sg)
    x_seq = example.x.detach().to(dt)
    params = []
    for name, p in zip(cell.params, example.params):
        p = torch.as_tensor(p).detach().to(dt) if torch.is_tensor(p) else torch.tensor(float(p), dtype=dt)
        if name in cell.seq_params and 0 < p.dim() < x_seq.dim():  # a time-varying parameter gets x_seq's rank
            p = p.reshape((1,) * (x_seq.dim() - p.dim()) + tuple(p.shape))
        params.append(p)
    wanted = [n not in cell.no_grad_params for n in cell.params]
    names = ["x", *(f"state {s!r}" for s in cell.states), *(f"param {n!r}" for n in cell.params)]
    states = [s.detach().to(dt) for s in example.states]
    g = torch.Generator().manual_seed(0)
    for t in range(x_seq.shape[0]):
        x = x_seq[t].clone().requires_grad_()
        st = [s.clone().requires_grad_() for s in states]
        ps = [p.clone().requires_grad_(w) for p, w in zip(_step_params(cell, params, x_seq, t), wanted)]
        outs = step(x, *st, *ps)
        full = torch.broadcast_shapes(*(o.shape for o in outs))
        cot = [torch.randn(full, generator=g, dtype=dt) for _ in outs]
        leaves = [x, *st, *(p for p, w in zip(ps, wanted) if w)]
        auto = torch.autograd.grad([o.expand(full) for o in outs], leaves, cot, allow_unused=True)
        mine = vjp(*cot, x.detach(), *(s.detach() for s in st), *(p.detach() for p in ps), sg.alpha)
        if len(mine) != 1 + cell.n_states + cell.n_params:
            raise ValueError(f"cell {cell.name!r}: vjp returns {len(mine)} gradients, expected "
                             f"{1 + cell.n_states + cell.n_params} (x, {cell.n_states} states, {cell.n_params} params)")
        if cell.keep is not None:
            _check_kept(cell, sg, mine, cot, x.detach(), [s.detach() for s in st], [p.detach() for p in ps], t,
                        full, rtol)
        checked = list(range(1 + cell.n_states)) + [1 + cell.n_states + i for i, w in enumerate(wanted) if w]
        for i, leaf, a in zip(checked, leaves, auto):
            a = torch.zeros_like(leaf) if a is None else a
            m = torch.broadcast_to(torch.as_tensor(mine[i], dtype=dt), full).sum_to_size(leaf.shape)
            scale = a.abs().max().item()
            diff = (m - a).abs().max().item()
            if not diff <= rtol * max(scale, 1e-12):
                raise ValueError(f"cell {cell.name!r}: vjp's gradient of {names[i]} differs from autograd of step "
                                 f"at step t={t} (max |difference| {diff:.3g}, max |autograd| {scale:.3g})")
        states = [o.detach() for o in outs[1:]]


def _check_kept(cell: Cell, sg: Surrogate, mine, cot, x, st, ps, t: int, full, rtol: float) -> None:
    """``cell.vjp_kept`` on ``cell.keep``'s values equals ``cell.vjp`` (``mine``), and a kept value named in
    ``cell.keep_for`` changes no gradient but those of its parameters (it is replaced by zero where it is not
    stored)."""
    keep, vjpk = torch_vjp(cell, sg, cell.keep), torch_vjp(cell, sg, cell.vjp_kept)
    kept = list(keep(x, *st, *ps))
    if len(kept) != len(cell.keep_for):
        raise ValueError(f"cell {cell.name!r}: keep returns {len(kept)} values; keep_for has {len(cell.keep_for)} "
                         "entries (one per kept value)")
    names = ["x", *(f"state {s!r}" for s in cell.states), *(f"param {n!r}" for n in cell.params)]

    def compare(got, skip, what):
        for i, (a, b) in enumerate(zip(got, mine)):
            if i in skip:
                continue
            a = torch.broadcast_to(torch.as_tensor(a, dtype=x.dtype), full)
            b = torch.broadcast_to(torch.as_tensor(b, dtype=x.dtype), full)
            scale = b.abs().max().item()
            if not (a - b).abs().max().item() <= rtol * max(scale, 1e-12):
                raise ValueError(f"cell {cell.name!r}: vjp_kept's gradient of {names[i]} differs from vjp's at step "
                                 f"t={t}{what}")

    compare(vjpk(*cot, *kept, *ps, sg.alpha), (), "")
    for i, only in enumerate(cell.keep_for):
        if only:
            zeroed = [torch.zeros_like(k) if j == i else k for j, k in enumerate(kept)]
            skip = {1 + cell.n_states + cell.params.index(n) for n in only}
            compare(vjpk(*cot, *zeroed, *ps, sg.alpha), skip, f" with kept value {i} zeroed (keep_for: {only})")


# --- the registry: every cell, with an example that exercises its branches ------------------------------
@dataclass(frozen=True)
class CellExample:
    """Inputs that exercise a cell's branches (spikes occur, resets happen): ``x [T, B, ...]``, the initial
    ``states`` (tensors ``[B, ...]``) and ``params`` in ``Cell.params`` order (floats, or tensors broadcastable to
    ``[B, ...]``; a ``Cell.seq_params`` tensor to ``[T, B, ...]``).  :func:`check_vjp` checks the gradient of every
    parameter that can take one; the backend tests, of the parameter tensors that require a gradient here (each set
    of them compiles its own backward kernel, so examples ask for the set the neuron's module trains)."""

    x: torch.Tensor
    states: tuple
    params: tuple
    surrogate: str = "atan"
    label: str = ""  # which branch this example exercises (e.g. "soft reset"), for test ids and messages


CELLS = Registry("cell")


def register_cell(cell: Cell, *, help: str = ""):  # noqa: A002 - mirrors Registry.register
    """Decorator registering ``cell`` (under ``cell.name``) with the function that builds its examples:
    ``example(dtype, generator) -> CellExample`` or a tuple of them (one per branch, e.g. hard and soft reset).
    Registered cells are what the registry tests check and what ``spikeforge neurons`` lists as cells."""
    if not isinstance(cell, Cell):
        raise ValueError(f"register_cell: expected a Cell, got {type(cell).__name__}")

    def deco(example):
        CELLS.register(cell.name, help=help, cell=cell)(example)
        return example

    return deco


def registered_cell(name: str) -> Cell:
    """The registered :class:`Cell` called ``name``."""
    return CELLS.get(name).meta["cell"]


def cell_examples(name: str, dtype: torch.dtype = torch.float64) -> tuple:
    """The declared examples of cell ``name`` in ``dtype`` (seeded by the name: the same on every call)."""
    cell = registered_cell(name)
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) % 10007)
    exs = CELLS.create(name, dtype, g)
    exs = exs if isinstance(exs, tuple) else (exs,)
    for ex in exs:
        if len(ex.states) != cell.n_states or len(ex.params) != cell.n_params:
            raise ValueError(f"cell {name!r}: example {ex.label!r} has {len(ex.states)} states and "
                             f"{len(ex.params)} params; the cell has {cell.n_states} and {cell.n_params}")
    return exs


def uniform(g: torch.Generator, dtype: torch.dtype, shape, lo: float = 0.0, hi: float = 1.0,
            grad: bool = False) -> torch.Tensor:
    """Example values uniform in ``[lo, hi)`` (drawn in float32, so every dtype gets the same numbers), a leaf
    that requires a gradient with ``grad``: the building block of the examples."""
    t = (lo + (hi - lo) * torch.rand(tuple(shape), generator=g)).to(dtype)
    return t.requires_grad_(grad)


@functools.lru_cache(maxsize=None)
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
