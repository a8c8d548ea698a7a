r"""The fused CPU kernels as registered custom operators, for ``torch.compile`` and ``torch.export``.

``torch.compile`` cannot trace into numba (it would read the tensors' memory through numpy, which fake tensors do
not have).  Under the compiler the fused executions therefore call opaque operators instead of their autograd
Functions, each a forward and a backward registered as the forward's autograd formula
(:func:`torch.library.register_autograd`):

- ``spikeforge::cell_fwd(cell, surrogate, record, check, x_seq, states, params_t, params_f) -> [out, v_seq,
  *final states]`` and ``cell_bwd``: any fused :class:`~spikeforge.kernels.cell.Cell` (the LIF family, ALIF,
  GLIF, LIFB, sigma-delta, multi-level, ...), named by its ``name``; :func:`cell_op` takes what
  ``FusedCellFn.apply`` takes;
- ``spikeforge::bats_fwd`` / ``bats_bwd`` and ``nif_fwd`` / ``nif_bwd``: the spike-time layers
  (:func:`bats_layer_op`, :func:`nif_spike_time_op`).

Every operator has a fake implementation (shapes and dtypes only), so the compiler plans memory around it, and
runs exactly the numba kernels eager mode runs: compiled and eager models give the same spikes and the same
gradients.  Eager calls keep the direct path (no dispatcher overhead per call).  A backward operator gets the
forward's inputs and the saved results it cannot cheaply recompute: ``cell_bwd`` rebuilds the parameter tables its
kernel reads from the forward's inputs, ``bats_bwd`` and ``nif_bwd`` sort the input spikes again.

Operators take strings, numbers and tensors only.  A cell travels as its name in the cell registry
(:data:`spikeforge.kernels.cell.CELLS`), a surrogate as ``"name:alpha"`` of a registered one: both are looked up
when the compiled code runs (a table filled while tracing would not do: the compiler defers such writes until
after the graph has run).  A parameter that may be a number or a
tensor travels as a float list (NaN where the value is a tensor) plus the tensors in order.

Example (the operator called directly; ``torch.compile(model, fullgraph=True)`` calls it for you):
    >>> import torch
    >>> from spikeforge.functional.alif import ALIF_CELL
    >>> from spikeforge.kernels.ops import cell_op
    >>> from spikeforge.surrogate import get_surrogate
    >>> x = torch.full((3, 1, 2), 1.5, requires_grad=True)
    >>> zero, params = torch.zeros(()).expand(1, 2), (0.5, 1.0, 0.2, 0.9, 0.0, 1.0)  # k, v_th, beta, rho, reset
    >>> out, _, v, a = cell_op(ALIF_CELL, get_surrogate("atan"), False, True, x, zero, zero, *params)
    >>> out.flatten().tolist()
    [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    >>> out.sum().backward(); tuple(x.grad.shape)
    (3, 1, 2)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..surrogate import Surrogate


def surrogate_key(sg: Surrogate) -> str:
    """The operators' name for surrogate ``sg``: ``"name:alpha"`` of a registered surrogate."""
    from ..surrogate import _DEFS

    if _DEFS.get(sg.name, (None,))[0] is not sg.grad_source:
        raise ValueError(f"surrogate: {sg.name!r} is not a registered surrogate; under torch.compile the fused "
                         f"kernels take registered ones only: {', '.join(_DEFS)}")
    return f"{sg.name}:{sg.alpha!r}"


def find_surrogate(key: str) -> Surrogate:
    from ..surrogate import get_surrogate

    name, alpha = key.split(":")
    return get_surrogate(name, float(alpha))


# --- any fused Cell ------------------------------------------------------------------------------------
def find_cell(name: str):
    """The registered cell called ``name`` (:data:`spikeforge.kernels.cell.CELLS`)."""
    import spikeforge.functional  # noqa: F401  (the cells register themselves on import)

    from .cell import registered_cell

    return registered_cell(name)


def cell_key(cell) -> str:
    """The operators' name for ``cell``, checked to name this very cell."""
    from .cell import CELLS, registered_cell

    if cell.name.lower() not in CELLS.list() or registered_cell(cell.name) is not cell:
        raise ValueError(f"cell: {cell.name!r} is not a registered cell (or another cell has its name); under "
                         f"torch.compile the fused kernels run registered cells only ({', '.join(CELLS.list())}): "
                         "register yours with spikeforge.kernels.cell.register_cell")
    return cell.name


class _Saved:
    """The ctx that :class:`FusedCellFn`'s forward and backward read and write, outside autograd."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _cell_params(params_t, params_f):
    """The cell's parameters from the operators' arguments: ``params_f`` holds every parameter as a float, and
    the tensor ones (NaN there) come from ``params_t`` in order."""
    it = iter(params_t)
    return [next(it) if math.isnan(f) else f for f in params_f]


@torch.library.custom_op("spikeforge::cell_fwd", mutates_args=())
def cell_fwd(cell: str, surrogate: str, record: bool, check: bool, x_seq: Tensor, states: list[Tensor],
             params_t: list[Tensor], params_f: list[float]) -> list[Tensor]:
    """The fused forward of a cell: ``[out, v_seq or empty, *final states]``."""
    from .fused import FusedCellFn

    res = FusedCellFn.forward(_Saved(), find_cell(cell), find_surrogate(surrogate), record, check, x_seq, *states,
                              *_cell_params(params_t, params_f))
    return [res[0], res[1], *(s.clone() for s in res[2:])]  # the final states are views of one buffer: unalias


@cell_fwd.register_fake
def _(cell, surrogate, record, check, x_seq, states, params_t, params_f):
    shape = x_seq.shape[1:]
    return [x_seq.new_empty(x_seq.shape), x_seq.new_empty(x_seq.shape) if record else x_seq.new_empty(0),
            *(x_seq.new_empty(shape) for _ in states)]


@torch.library.custom_op("spikeforge::cell_bwd", mutates_args=())
def cell_bwd(cell: str, surrogate: str, record: bool, x_seq: Tensor, states: list[Tensor], params_t: list[Tensor],
             params_f: list[float], g_out: Tensor | None, g_vseq: Tensor | None, g_states: list[Tensor | None],
             needs: list[bool]) -> list[Tensor]:
    """The fused backward: ``[dx, *d states, *d tensor params]``, an empty tensor where ``needs`` (one flag per
    state and per tensor parameter) says no gradient.  The parameter tables the backward kernel reads are rebuilt
    from the forward's inputs (no forward kernel runs)."""
    from .fused import FusedCellFn, backward_inputs

    ctx = _Saved()
    params = _cell_params(params_t, params_f)
    c = find_cell(cell)
    saved = backward_inputs(c, x_seq, states, params)
    FusedCellFn.keep(ctx, c, find_surrogate(surrogate), record, states, params, saved)
    S = len(states)
    it = iter(needs[S:])
    ctx.needs_input_grad = (False, False, False, False, True, *needs[:S],
                            *(next(it) if torch.is_tensor(p) else False for p in params))
    g = FusedCellFn.backward(ctx, g_out, g_vseq, *g_states)[4:]
    g_p = [d for d, p in zip(g[1 + S:], params) if torch.is_tensor(p)]
    # the gradients of states and parameters are views of one buffer each: unalias
    return [g[0].contiguous(), *(x_seq.new_empty(0) if d is None else d.clone() for d in (*g[1:1 + S], *g_p))]


@cell_bwd.register_fake
def _(cell, surrogate, record, x_seq, states, params_t, params_f, g_out, g_vseq, g_states, needs):
    return [x_seq.new_empty(x_seq.shape)] + [x_seq.new_empty(t.shape) if need else x_seq.new_empty(0)
                                             for t, need in zip((*states, *params_t), needs)]


def _cell_setup_context(ctx, inputs, output):
    cell, surrogate, record, check, x_seq, states, params_t, params_f = inputs
    ctx.save_for_backward(x_seq, *states, *params_t)
    ctx.consts = (cell, surrogate, record, len(states), params_f)
    ctx.needs = [t.requires_grad for t in (*states, *params_t)]


def _cell_backward(ctx, grads):
    cell, surrogate, record, S, params_f = ctx.consts
    x_seq, *rest = ctx.saved_tensors
    g_out, g_vseq, *g_states = grads
    g = cell_bwd(cell, surrogate, record, x_seq, rest[:S], rest[S:], params_f, g_out, g_vseq if record else None,
                 g_states, ctx.needs)
    gs = [d if need else None for d, need in zip(g[1:], ctx.needs)]
    return None, None, None, None, g[0], gs[:S], gs[S:], None


cell_fwd.register_autograd(_cell_backward, setup_context=_cell_setup_context)


def cell_op(cell, surrogate, record, check, x_seq, *args):
    """``FusedCellFn.apply(cell, surrogate, record, check, x_seq, *states, *params)`` through the custom operators
    (what runs under ``torch.compile``): ``(out, v_seq or empty, *final states)``."""
    S = cell.n_states
    states, params = args[:S], args[S:]
    params_t = [p for p in params if torch.is_tensor(p)]
    params_f = [math.nan if torch.is_tensor(p) else float(p) for p in params]
    return tuple(cell_fwd(cell_key(cell), surrogate_key(surrogate), bool(record), bool(check), x_seq, list(states),
                          params_t, params_f))


# --- spike-time layers (BATS, NIF) ---------------------------------------------------------------------
@torch.library.custom_op("spikeforge::bats_fwd", mutates_args=())
def bats_fwd(t_in: Tensor, weight: Tensor, tau_s: float, theta: float, delta_theta: float, t_max: float,
             max_spikes: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A BATS layer's fused forward: ``(times, counts, dropped, z, x, n)``, the last three [B, M, S] for the
    backward (what :class:`~spikeforge.functional.bats.BATSLayerFn` saves)."""
    from ..functional.bats import BATSLayerFn

    ctx = _Saved()
    times, count, dropped = BATSLayerFn.forward(ctx, t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes)
    _, _, _, _, _, _, out_z, out_x, out_n, _ = ctx.saved_tensors
    return times, count.clone(), dropped, out_z, out_x, out_n


@bats_fwd.register_fake
def _(t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes):
    B, M, S = t_in.shape[0], weight.shape[0], max_spikes
    f64 = dict(dtype=torch.float64)
    return (t_in.new_empty(B, M, S), t_in.new_empty(B, M, dtype=torch.int64), t_in.new_empty(B, M, dtype=torch.bool),
            t_in.new_empty(B, M, S, **f64), t_in.new_empty(B, M, S, **f64), t_in.new_empty(B, M, S, dtype=torch.int64))


@torch.library.custom_op("spikeforge::bats_bwd", mutates_args=())
def bats_bwd(g_t: Tensor, t_in: Tensor, weight: Tensor, out_z: Tensor, out_x: Tensor, out_n: Tensor, count: Tensor,
             tau_s: float, delta_theta: float, need_in: bool, need_w: bool) -> tuple[Tensor, Tensor]:
    """A BATS layer's exact backward: ``(d t_in, d weight)`` (empty where not needed).  It sorts the input spikes
    again (the forward's sort, not returned by the forward operator)."""
    from ..functional.bats import BATSLayerFn, sort_spikes

    ctx = _Saved()
    tau = 2.0 * tau_s
    B = t_in.shape[0]
    t_sorted, perm, n_in = sort_spikes(t_in.detach().double())
    L = int(n_in.max()) if B else 0
    t_sorted, perm = t_sorted[:, :L].contiguous(), perm[:, :L].contiguous()
    ctx.saved_tensors = (perm, torch.exp(t_sorted / tau_s), torch.exp(t_sorted / tau), perm // t_in.shape[2], n_in,
                         weight.detach().double().contiguous(), out_z, out_x, out_n, count)
    ctx.consts = (tau_s, tau, delta_theta / tau, tuple(t_in.shape), t_in.dtype, weight.dtype)
    ctx.needs_input_grad = (need_in, need_w)
    d_in, d_w = BATSLayerFn.backward(ctx, g_t)[:2]
    return (t_in.new_empty(0) if d_in is None else d_in), (weight.new_empty(0) if d_w is None else d_w)


@bats_bwd.register_fake
def _(g_t, t_in, weight, out_z, out_x, out_n, count, tau_s, delta_theta, need_in, need_w):
    return (torch.empty_like(t_in) if need_in else t_in.new_empty(0),
            torch.empty_like(weight) if need_w else weight.new_empty(0))


def _bats_setup_context(ctx, inputs, output):
    t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes = inputs
    _, count, _, out_z, out_x, out_n = output
    ctx.save_for_backward(t_in, weight, out_z, out_x, out_n, count)
    ctx.consts = (tau_s, delta_theta)


def _bats_backward(ctx, g_t, *_):
    t_in, weight, out_z, out_x, out_n, count = ctx.saved_tensors
    need_in, need_w = ctx.needs_input_grad[:2]
    d_in, d_w = bats_bwd(g_t, t_in, weight, out_z, out_x, out_n, count, *ctx.consts, need_in, need_w)
    return d_in if need_in else None, d_w if need_w else None, None, None, None, None, None


bats_fwd.register_autograd(_bats_backward, setup_context=_bats_setup_context)


def bats_layer_op(t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes):
    """``BATSLayerFn.apply`` through the custom operators: ``(times, counts, dropped)``."""
    return bats_fwd(t_in, weight, tau_s, theta, delta_theta, t_max, max_spikes)[:3]


@torch.library.custom_op("spikeforge::nif_fwd", mutates_args=())
def nif_fwd(z_in: Tensor, weight: Tensor, bias_weight: Tensor, theta: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """NIF spike times, fused: ``(z_out in z_in's dtype, z_out, n_caus, wsum)``, the last three (float64, int64,
    float64) for the backward."""
    from .nif_numba import NIFSpikeTimeFn

    ctx = _Saved()
    z = NIFSpikeTimeFn.forward(ctx, z_in, weight, bias_weight, theta)
    _, _, _, z_out, n_caus, wsum = ctx.saved_tensors
    return (z.clone() if z.dtype == torch.float64 else z), z_out, n_caus, wsum


@nif_fwd.register_fake
def _(z_in, weight, bias_weight, theta):
    shape = (z_in.shape[0], weight.shape[0])
    return (z_in.new_empty(shape), z_in.new_empty(shape, dtype=torch.float64),
            z_in.new_empty(shape, dtype=torch.int64), z_in.new_empty(shape, dtype=torch.float64))


@torch.library.custom_op("spikeforge::nif_bwd", mutates_args=())
def nif_bwd(g: Tensor, z_in: Tensor, weight: Tensor, bias_weight: Tensor, z_out: Tensor, n_caus: Tensor,
            wsum: Tensor, theta: float, need_z: bool, need_w: bool) -> tuple[Tensor, Tensor, Tensor]:
    """NIF gradients ``(d z_in, d weight, d bias_weight)`` (empty where not needed); sorts the inputs again."""
    from .nif_numba import NIFSpikeTimeFn

    ctx = _Saved()
    z_s, perm = torch.sort(z_in.detach().double(), dim=1, stable=True)
    ctx.saved_tensors = (z_s, perm, weight.detach().double().contiguous(), z_out, n_caus, wsum)
    ctx.consts = (theta, z_in.dtype, weight.dtype, bias_weight.dtype)
    ctx.needs_input_grad = (need_z, need_w, need_w)
    d_z, d_w, d_b = NIFSpikeTimeFn.backward(ctx, g)[:3]
    return (z_in.new_empty(0) if d_z is None else d_z, weight.new_empty(0) if d_w is None else d_w,
            bias_weight.new_empty(0) if d_b is None else d_b)


@nif_bwd.register_fake
def _(g, z_in, weight, bias_weight, z_out, n_caus, wsum, theta, need_z, need_w):
    return (torch.empty_like(z_in) if need_z else z_in.new_empty(0),
            torch.empty_like(weight) if need_w else weight.new_empty(0),
            torch.empty_like(bias_weight) if need_w else bias_weight.new_empty(0))


def _nif_setup_context(ctx, inputs, output):
    z_in, weight, bias_weight, theta = inputs
    _, z_out, n_caus, wsum = output
    ctx.save_for_backward(z_in, weight, bias_weight, z_out, n_caus, wsum)
    ctx.theta = theta


def _nif_backward(ctx, g, *_):
    z_in, weight, bias_weight, z_out, n_caus, wsum = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_w = bool(need[1] or need[2])
    d_z, d_w, d_b = nif_bwd(g, z_in, weight, bias_weight, z_out, n_caus, wsum, ctx.theta, bool(need[0]), need_w)
    return (d_z if need[0] else None, d_w if need[1] else None, d_b if need[2] else None, None)


nif_fwd.register_autograd(_nif_backward, setup_context=_nif_setup_context)


def nif_spike_time_op(z_in, weight, bias_weight, theta):
    """``NIFSpikeTimeFn.apply`` through the custom operators."""
    return nif_fwd(z_in, weight, bias_weight, float(theta))[0]
