"""``torch.compile(fullgraph=True)`` and ``torch.export``: the fused CPU kernels run as registered custom operators
(``spikeforge::lif_fwd`` / ``lif_bwd``), so a compiled model has no graph break and gives eager's outputs and
gradients.  The fast tests use the ``aot_eager`` backend (the same graph capture and autograd, no code generation);
every zoo model through the default inductor backend is the slow test."""

import sys
from pathlib import Path

import pytest
import torch

from spikeforge.models import MODELS, create_model, list_models
from spikeforge.neurons import LIF, PLIF


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
    assert any("spikeforge.lif_fwd" in str(n.target) for n in ep.graph.nodes)  # the kernel, opaque
    torch.testing.assert_close(ep.module()(x), m(x), rtol=0, atol=0)


def _tiny(name):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from test_models_registry import tiny

    return tiny(name, neuron_kwargs={})  # the default backend: the fused kernels


@pytest.mark.slow
# spike-time models validate their input with data-dependent checks (see docs/interop.md)
@pytest.mark.parametrize("name", [n for n in list_models() if MODELS.get(n).meta.get("input") != "spike_times"])
def test_every_zoo_model_compiles_with_inductor(name):
    torch.manual_seed(0)
    m, shape = _tiny(name)
    x = torch.rand(2, *shape)
    y0 = m(x)
    g0 = _grads(m, y0.float().square().sum())
    torch._dynamo.reset()
    y1 = torch.compile(m, fullgraph=True)(x)
    g1 = _grads(m, y1.float().square().sum())
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
