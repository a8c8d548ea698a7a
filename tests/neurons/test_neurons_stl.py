"""STL: the finite-difference gradient of the loss w.r.t. one threshold matches autograd (smooth surrogate)."""

import pytest
import torch

import spikeforge.kernels.cell as cell_module
from spikeforge.functional import stl
from spikeforge.neurons import STL
from spikeforge.surrogate import PrimitiveFn, get_surrogate


def _net_loss(theta, w1, w2, x, y):
    cur = torch.einsum("tbi,oi->tbo", x, w1)
    s, _ = stl(cur, theta, surrogate="sigmoid", backend="reference")
    out = torch.einsum("tbo,ko->tbk", s, w2).mean(0)
    return ((out - y) ** 2).sum()


def test_stl_finite_difference_threshold_gradient_matches_autograd(monkeypatch):
    # the card's check: spikes replaced by the smooth sigmoid (forward = primitive, backward = its derivative),
    # so the loss is differentiable and finite differences are meaningful
    monkeypatch.setattr(cell_module, "SpikeFn", PrimitiveFn)  # the reference's spikes: the smooth primitive
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 5, generator=g, dtype=torch.float64)
    w1 = (torch.randn(8, 5, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    w2 = torch.randn(2, 8, generator=g, dtype=torch.float64)
    y = torch.rand(3, 2, generator=g, dtype=torch.float64)
    theta = (0.6 + 0.4 * torch.rand(8, generator=g, dtype=torch.float64)).requires_grad_()
    loss = _net_loss(theta, w1, w2, x, y)
    loss.backward()
    eps = 1e-6
    for j in (0, 3, 7):
        d = torch.zeros_like(theta)
        d[j] = eps
        with torch.no_grad():
            fd = (_net_loss(theta + d, w1, w2, x, y) - _net_loss(theta - d, w1, w2, x, y)) / (2 * eps)
        assert theta.grad[j].item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)
    # the weights (trained jointly) get the matching gradient too
    d = torch.zeros_like(w1)
    d[2, 1] = eps
    with torch.no_grad():
        fd = (_net_loss(theta, w1 + d, w2, x, y) - _net_loss(theta, w1 - d, w2, x, y)) / (2 * eps)
    assert w1.grad[2, 1].item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)
    assert theta.grad.abs().min() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stl_fused_and_reference_thresholds_agree(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(10, 4, 3, 6, generator=g) * 2.5).to(dtype).requires_grad_()
    theta0 = (1.5 + torch.rand(3, 6, generator=g)).to(dtype)
    res = []
    for backend in ("cpu", "reference"):
        theta = theta0.clone().requires_grad_()
        x.grad = None
        s, st = stl(x, theta, surrogate="sigmoid", backend=backend)
        (s * torch.linspace(0, 1, s.numel(), dtype=dtype).reshape(s.shape)).sum().add(st.v.sum()).backward()
        res.append((s, theta.grad, x.grad.clone()))
    (s1, gt1, gx1), (s2, gt2, gx2) = res
    assert torch.equal(s1, s2) and s1.sum() > 0
    torch.testing.assert_close(gt1, gt2, rtol=1e-5, atol=1e-5 * gt2.abs().max().item())
    torch.testing.assert_close(gx1, gx2, rtol=1e-5, atol=1e-5 * gx2.abs().max().item())


def test_stl_module_learns_per_neuron_thresholds():
    torch.manual_seed(0)
    neuron = STL(shape=(12,))
    assert neuron.theta.shape == (12,)
    assert (neuron.theta - 2.0).abs().max() < 0.01 and neuron.theta.std() > 0  # heterogeneous init
    fc = torch.nn.Linear(6, 12)
    opt = torch.optim.Adam([*fc.parameters(), *neuron.parameters()], lr=0.05)
    x = torch.rand(4, 16, 6)
    before = neuron.theta.detach().clone()
    for _ in range(5):
        s = neuron(fc(x))
        loss = ((s.mean(0) - 0.5) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, neuron.theta.detach())  # thresholds move: trained jointly with weights


def test_stl_bad_parameters_raise():
    with pytest.raises(ValueError, match="v_threshold"):
        stl(torch.rand(2, 1, 3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="decay"):
        stl(torch.rand(2, 1, 3), 1.0, decay=1.5)
    with pytest.raises(ValueError, match="shape"):
        STL(shape=(4,))(torch.rand(2, 1, 3))
