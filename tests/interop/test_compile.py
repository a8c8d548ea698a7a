"""``torch.compile(fullgraph=True)`` and ``torch.export``: every fused kernel runs as a registered custom operator
(``spikeforge::cell_fwd``/``cell_bwd`` for any fused cell, the LIF family included, ``bats_*``, ``nif_*``: see
:mod:`spikeforge.kernels.ops`), so a compiled model has no graph break and gives eager's outputs and gradients.

Fast tests: every registered cell's examples through ``aot_eager`` (the same graph capture and autograd as
inductor, no code generation; the examples' kernels are the ones the backend tests compile), the operators'
registration checked by ``torch.library.opcheck``, and a few models through the default inductor backend.  Every
zoo model through inductor (and every fused cell in a conv net) is the slow test."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch._inductor.config  # noqa: F401  (fallback_random, patched below)

import spikeforge.functional  # noqa: F401  (the cells register themselves)
import spikeforge.kernels.ops  # noqa: F401  (registers the operators opcheck looks up)
from spikeforge.kernels.cell import CELLS, cell_examples, registered_cell
from spikeforge.kernels.dispatch import run_cell
from spikeforge.models import MODELS, create_model, list_models
from spikeforge.neurons import LIF, NEURONS, PLIF

TESTS = Path(__file__).resolve().parents[1]


def _import(subdir, module):
    sys.path.insert(0, str(TESTS / subdir))
    try:
        return __import__(module)
    finally:
        sys.path.pop(0)


def _grads(module, loss):
    module.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in module.parameters()]


def test_lif_custom_op_matches_eager_values_and_gradients():
    """Explicit state (a tensor v0), per-channel learnable tau (PLIF) and shared tau."""
    torch.manual_seed(0)
    plif, lif = PLIF(num_channels=3, backend="cpu"), LIF(tau=3.0, v_reset=None, backend="cpu")

    def f(x, v0):
        s1, st = plif(x, v0)
        s2, st2 = lif(s1 * 2.0 + x, st.v, return_state=True)
        return (s2 * torch.arange(1.0, 6.0, dtype=x.dtype).reshape(5, 1, 1, 1)).sum() + st2.v.square().sum()

    x = torch.rand(5, 2, 3, 4, requires_grad=True)
    v0 = (torch.rand(2, 3, 4) * 0.5).requires_grad_()
    eager = f(x, v0)
    ge = torch.autograd.grad(eager, (x, v0, plif.w))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, v0)
    gc = torch.autograd.grad(out, (x, v0, plif.w))
    assert torch.equal(out, eager)
    for a, b in zip(gc, ge):  # the same kernels run in both
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


CELL_CASES = [(name, i) for name in CELLS.list() for i in range(len(cell_examples(name)))]


def _cell_run(cell, ex, compiled):
    """Outputs, final states, ``v_seq`` and the gradients of x, the states and every parameter of the example."""
    x = ex.x.detach().clone().requires_grad_()
    states = [s.detach().clone().requires_grad_() for s in ex.states]
    params = [p.detach().clone().requires_grad_(p.requires_grad) if torch.is_tensor(p) else p for p in ex.params]

    def f(x, states, params):
        return run_cell(cell, x, states, params, surrogate=ex.surrogate, backend="cpu", record=True)

    if compiled:
        torch._dynamo.reset()
        f = torch.compile(f, fullgraph=True, backend="aot_eager")
    out, final, v_seq = f(x, states, params)
    w = torch.linspace(-1.0, 1.0, out.numel(), dtype=x.dtype).reshape(out.shape)
    loss = (out * w).sum() + sum((s * (i + 0.5)).sum() for i, s in enumerate(final)) + (v_seq * 0.3).sum()
    leaves = [x, *states, *(p for p in params if torch.is_tensor(p) and p.requires_grad)]
    return out, final, v_seq, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("name,i", CELL_CASES)
def test_every_registered_cell_compiles_fullgraph_with_eager_values_and_gradients(name, i):
    """Each registered cell's examples (per-channel, shared and time-varying parameters, explicit states,
    ``record``), float64: the compiled call equals the eager fused call in values and in the gradients of x, the
    states and every parameter.  A graph break (the cell's autograd Function traced into numba) fails
    ``fullgraph=True``."""
    cell, ex = registered_cell(name), cell_examples(name, torch.float64)[i]
    o1, st1, v1, g1 = _cell_run(cell, ex, compiled=False)
    o2, st2, v2, g2 = _cell_run(cell, ex, compiled=True)
    assert torch.equal(o1, o2) and torch.equal(v1, v2)
    assert all(torch.equal(a, b) for a, b in zip(st1, st2))
    assert len(g1) == len(g2) >= 3
    for a, b in zip(g2, g1):  # the same kernels: equal up to the order of a few float64 sums
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", CELLS.list())
def test_cell_operator_registration_opcheck(name):
    """Schema, fake implementation and autograd registration of ``spikeforge::cell_fwd`` on each registered cell:
    the fake outputs match the real ones, and the backward reached through the dispatcher (``cell_bwd``) matches
    the eager autograd.  (Graph capture itself: the test above.)"""
    from spikeforge.kernels.ops import cell_key, surrogate_key
    from spikeforge.surrogate import get_surrogate

    cell, ex = registered_cell(name), cell_examples(name, torch.float64)[0]
    params = [p.detach().clone().requires_grad_(p.requires_grad) if torch.is_tensor(p) else p for p in ex.params]
    args = (cell_key(cell), surrogate_key(get_surrogate(ex.surrogate)), True, True,
            ex.x.detach().clone().requires_grad_(), [s.detach().clone().requires_grad_() for s in ex.states],
            [p for p in params if torch.is_tensor(p)], [math.nan if torch.is_tensor(p) else p for p in params])
    torch.library.opcheck(torch.ops.spikeforge.cell_fwd.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def test_unregistered_cell_or_surrogate_under_compile_is_one_clear_error():
    """The operators find cells and surrogates by name when the compiled code runs, so only registered ones can
    be compiled: anything else raises naming it (eagerly, a ValueError; compiled, dynamo's error carries it)."""
    from spikeforge.kernels.cell import Cell
    from spikeforge.kernels.ops import cell_key, surrogate_key
    from spikeforge.surrogate import Surrogate, get_surrogate

    alif = registered_cell("alif")
    mine = Cell("mine", alif.step, alif.vjp, states=alif.states, params=alif.params,
                no_grad_params=alif.no_grad_params, const_params=alif.const_params)
    with pytest.raises(ValueError, match="cell: 'mine' is not a registered cell"):
        cell_key(mine)
    atan = get_surrogate("atan")
    odd = Surrogate("odd", 1.0, lambda u, alpha: alpha * u, atan.primitive_fn)
    with pytest.raises(ValueError, match="surrogate: 'odd' is not a registered surrogate"):
        surrogate_key(odd)
    ex = cell_examples("alif", torch.float64)[0]
    torch._dynamo.reset()
    f = torch.compile(lambda x: run_cell(mine, x, ex.states, ex.params, backend="cpu")[0], fullgraph=True,
                      backend="aot_eager")
    with pytest.raises((ValueError, torch._dynamo.exc.Unsupported), match="'mine' is not a registered cell"):
        f(ex.x)


def test_zoo_mlp_compiles_fullgraph_and_exports():
    torch.manual_seed(0)
    m = create_model("mlp", num_classes=3, in_channels=1, T=2, input_size=8, hidden=(16,))
    x = torch.rand(2, 1, 8, 8)
    y0 = m(x)
    g0 = _grads(m, y0.square().sum())
    y1 = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    g1 = _grads(m, y1.square().sum())
    assert torch.equal(y0, y1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    ep = torch.export.export(m.eval(), (x,))
    assert any(str(n.target).startswith("spikeforge.") for n in ep.graph.nodes)  # the kernel, opaque
    torch.testing.assert_close(ep.module()(x), m(x), rtol=0, atol=0)


def _loss(name, m, x):
    """A loss with a gradient for every parameter (a silent tiny net's output is 0: the loss is not only its
    square).  BATS class scores are spike counts (no gradient), so its loss reads every layer's spike times."""
    if MODELS.get(name).meta.get("input") == "spike_times" and hasattr(m, "max_spikes"):
        outs = m.spike_times(m.encode(x))
        times = torch.cat([o.times.flatten() for o in outs])
        return m(x), torch.where(torch.isfinite(times), times, torch.zeros_like(times)).square().sum()
    y = m(x)
    w = torch.linspace(-1.0, 1.0, y.numel(), dtype=torch.float32).reshape(y.shape)  # a gradient even where y = 0
    return y, (y.float() * w).sum() + y.float().square().sum()


def _compiled_equals_eager(name, neuron="lif", batch=2, dtype=torch.float32, backend="inductor", **over):
    tiny = _import("models", "test_models_registry").tiny
    torch.manual_seed(0)
    m, shape = tiny(name, neuron=neuron, neuron_kwargs={}, **over)
    m = m.to(dtype)
    x = torch.rand(batch, *shape, dtype=dtype)
    params = [p for p in m.parameters() if p.requires_grad]
    torch.manual_seed(1)  # dropout: the same masks (inductor draws them as eager does with fallback_random)
    y0, l0 = _loss(name, m, x)
    g0 = torch.autograd.grad(l0, params, allow_unused=True)
    torch._dynamo.reset()
    torch.manual_seed(1)
    with torch._inductor.config.patch(fallback_random=True):
        y1, l1 = torch.compile(lambda x: _loss(name, m, x), fullgraph=True, backend=backend)(x)
    g1 = torch.autograd.grad(l1, params, allow_unused=True)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    assert any(g is not None and bool(g.ne(0).any()) for g in g0), "degenerate test: no gradient"
    for a, b in zip(g1, g0):
        assert (a is None) == (b is None)
        if a is not None:  # float32 sums reassociated by inductor through up to 50 layers: relative to the largest
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 + 1e-4 * float(b.abs().max()))
    return m, x


@pytest.mark.parametrize("name,neuron", [("convnet", "alif"), ("nif_mlp", "lif")])
def test_models_compile_with_inductor(name, neuron):
    """The default backend end to end: a conv net on a non-LIF fused cell, and a spike-time model (NIF kernels as
    operators, the input's value checks kept out of the graph); the NIF model exports too."""
    m, x = _compiled_equals_eager(name, neuron, dtype=torch.float64 if name == "nif_mlp" else torch.float32)
    if name == "nif_mlp":
        ep = torch.export.export(m.eval(), (x,))
        assert any("spikeforge.nif_fwd" in str(n.target) for n in ep.graph.nodes)
        torch.testing.assert_close(ep.module()(x), m(x), rtol=0, atol=0)


def test_spike_time_input_checks_stay_in_eager():
    """Moving the value checks out of the compiled path leaves the eager error unchanged."""
    m = create_model("nif_mlp", num_classes=3, input_size=8, hidden=(8,))
    with pytest.raises(ValueError, match=r"x: nif_mlp codes pixel intensities in \[0, 1\].*got values in \[-1, 0\]"):
        m(torch.zeros(2, 1, 8, 8).index_fill(0, torch.tensor([1]), -1.0))


HEAVY = {n for n in list_models() if MODELS.get(n).meta.get("heavy")}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_compiles_with_inductor(name):
    m, x = _compiled_equals_eager(name)
    if name not in HEAVY:  # export: the same graph capture without autograd
        ep = torch.export.export(m.eval(), (x,))
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("neuron", [n for n in NEURONS.list() if n in CELLS.list()])
def test_every_fused_cell_compiles_with_inductor_in_a_conv_net(neuron):
    _compiled_equals_eager("convnet", neuron)
