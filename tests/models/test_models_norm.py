"""tdBN / BNTT / TEBN: card invariants and equivalences (bntt-batchnorm-through-time.md)."""

import pytest
import torch
from torch import nn

from spikeforge.layers import BNTT, TEBN, TdBN, TimeFold, make_norm


def _x(T=4, B=3, C=5, H=4, W=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, C, H, W, generator=g, dtype=dtype) * 2 + 0.5


def test_bntt_with_tied_gammas_equals_shared_bias_free_bn_per_step():
    """Card check 1: T per-step gammas tied to one tensor == one shared, bias-free BN applied at each step."""
    T, C = 4, 5
    x = _x(T=T, C=C)
    gamma = torch.rand(C, dtype=torch.float64) + 0.5
    bntt = BNTT(C, T).double()
    with torch.no_grad():
        bntt.weight.copy_(gamma.expand(T, C))
    shared = nn.BatchNorm2d(C, eps=1e-4, momentum=0.1).double()
    shared.bias = None  # the BNTT code deletes beta
    with torch.no_grad():
        shared.weight.copy_(gamma)
    bntt.train()
    shared.train()
    y = bntt(x)
    ref = torch.stack([shared(x[t]) for t in range(T)])
    assert torch.equal(y, ref) or torch.allclose(y, ref, rtol=0, atol=1e-13)
    # per-step statistics: running mean/var of step t equal a fresh BN fed with step t alone
    for t in range(T):
        bn_t = nn.BatchNorm2d(C, eps=1e-4).double()
        bn_t(x[t])
        assert torch.allclose(bntt.running_mean[t], bn_t.running_mean, atol=1e-14)
        assert torch.allclose(bntt.running_var[t], bn_t.running_var, atol=1e-14)


def test_bntt_gradient_reaches_each_step_gamma():
    T, C = 3, 2
    x = _x(T=T, C=C)
    bntt = BNTT(C, T).double()
    w = torch.randn(T, 1, C, 1, 1, dtype=torch.float64)
    (bntt(x) * w * x).sum().backward()
    assert bntt.weight.grad.shape == (T, C)
    assert (bntt.weight.grad.abs() > 0).all()
    assert bntt.bias is None


def test_bntt_eval_uses_per_step_running_statistics():
    T, C = 3, 2
    bntt = BNTT(C, T).double().eval()
    with torch.no_grad():
        bntt.running_mean.copy_(torch.arange(T * C, dtype=torch.float64).view(T, C))
        bntt.running_var.fill_(4.0)
    x = torch.zeros(T, 1, C, 2, 2, dtype=torch.float64)
    y = bntt(x)
    expect = -bntt.running_mean / (4.0 + bntt.eps) ** 0.5
    assert torch.allclose(y[:, 0, :, 0, 0], expect)


def test_tdbn_equals_folded_batchnorm_scaled_by_alpha_vth():
    x = _x()
    td = TdBN(5, alpha=0.5, v_th=0.8).double()
    ref = TimeFold(nn.BatchNorm2d(5)).double()
    with torch.no_grad():
        td.weight.uniform_(0.5, 1.5)
        td.bias.uniform_(-1, 1)
        ref.layer.weight.copy_(td.weight * 0.4)
        ref.layer.bias.copy_(td.bias)
    assert torch.allclose(td(x), ref(x), atol=1e-12)
    assert torch.allclose(td.running_var, ref.layer.running_var)


def test_tebn_is_shared_bn_times_per_step_scale():
    x = _x()
    te = TEBN(5, T=4).double()
    td = TdBN(5).double()
    assert torch.allclose(te(x), td(x), atol=1e-13)   # p = 1 at init
    with torch.no_grad():
        te.p.copy_(torch.tensor([0.5, 1.0, 2.0, 0.0]))
    y, y0 = te(x), td(x)
    for t, p in enumerate([0.5, 1.0, 2.0, 0.0]):
        assert torch.allclose(y[t], p * y0[t], atol=1e-12)
    pc = TEBN(5, T=4, per_channel=True)
    assert pc.p.shape == (4, 5)


def test_norm_errors_name_the_layout():
    with pytest.raises(ValueError, match=r"T=4 time steps"):
        BNTT(5, T=4)(torch.zeros(3, 2, 5, 2, 2))
    with pytest.raises(ValueError, match=r"C=5 channels"):
        TdBN(5)(torch.zeros(3, 2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\[T, B, C, \.\.\.\]"):
        TEBN(5, T=3)(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="available: bn, tdbn, bntt, tebn"):
        make_norm("layer", 4)
    with pytest.raises(ValueError, match="needs T"):
        make_norm("bntt", 4)
