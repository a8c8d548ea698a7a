"""Paths of the generic numba driver (spikeforge.kernels.fused) that the registry equivalence tests do not take:
an input repeated over time (stride 0, read once per step from one row) and an incoming gradient that is one value
everywhere (read once, never materialised).  Both reuse the kernels the registry test compiles for the LIF cell's
first example (same cell, constants, dtype and parameter gradients)."""

import torch

from spikeforge.functional.lif import LIF_CELL
from spikeforge.kernels.cell import cell_examples
from spikeforge.kernels.dispatch import run_cell


def _example():
    ex = cell_examples("lif", torch.float64)[0]
    params = tuple(p.detach().requires_grad_() if torch.is_tensor(p) else p for p in ex.params)
    return ex, params


def _run(x, ex, params, g=None):
    out, (v,), _ = run_cell(LIF_CELL, x, ex.states, params, surrogate=ex.surrogate, backend="cpu")
    loss = out.sum() if g is None else (out * g).sum()
    return out, v, loss


def test_input_repeated_over_time_equals_its_copy():
    ex, params = _example()
    x0 = ex.x[:1].detach()
    T = ex.x.shape[0]
    a = x0.clone().requires_grad_()
    b = x0.clone().requires_grad_()
    xa = a.expand(T, *x0.shape[1:])  # stride 0 over time: the kernels read one row
    xb = b.expand(T, *x0.shape[1:]).contiguous()
    assert xa.stride(0) == 0
    g = torch.randn(xa.shape, dtype=xa.dtype, generator=torch.Generator().manual_seed(1))
    sa, va, la = _run(xa, ex, params, g)
    sb, vb, lb = _run(xb, ex, params, g)
    assert torch.equal(sa, sb) and torch.equal(va, vb)
    assert 0 < sa.sum() < sa.numel()  # the example spikes, and not everywhere
    ga = torch.autograd.grad(la, (a, *params[:2]))
    gb = torch.autograd.grad(lb, (b, *params[:2]))
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_constant_output_gradient_equals_the_materialised_one():
    ex, params = _example()
    xa = ex.x.detach().clone().requires_grad_()
    xb = ex.x.detach().clone().requires_grad_()
    sa, _, la = _run(xa, ex, params)  # out.sum(): dL/dout is one value broadcast
    sb, _, lb = _run(xb, ex, params, torch.ones(ex.x.shape, dtype=ex.x.dtype))
    ga = torch.autograd.grad(la, (xa, *params[:2]))
    gb = torch.autograd.grad(lb, (xb, *params[:2]))
    assert ga[0].abs().sum() > 0
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
