"""STCB (slssnn-stcsnn.md, LOW confidence): the equivalent gradient is consistent with the spike counts."""

import pytest
import torch

from spikeforge.layers import STCB, stcb_rate, stcb_temporal


def test_equivalent_gradient_matches_finite_differences_of_expected_count_if_soft_reset():
    """Card check 1: constant current, jittered initial membrane v0 ~ U(0, theta): finite differences of E[n]
    with respect to I_bar equal g(I_bar) = T / theta (IF, soft reset, inside the firing range)."""
    T, theta, N = 8, 1.0, 200_000
    g = torch.Generator().manual_seed(0)
    v0 = torch.rand(N, generator=g, dtype=torch.float64) * theta
    for i_bar in (0.23, 0.41, 0.67):
        def expected_count(i):
            seq = torch.full((T, N), i, dtype=torch.float64)
            return stcb_temporal(seq, 1.0, theta, reset="soft", v0=v0).sum(0).mean()
        h = 0.02
        fd = (expected_count(i_bar + h) - expected_count(i_bar - h)) / (2 * h)
        i = torch.tensor(i_bar, dtype=torch.float64, requires_grad=True)
        n_smooth = T * stcb_rate(i, 1.0, theta)
        (g_eq,) = torch.autograd.grad(n_smooth, i)
        assert float(g_eq) == pytest.approx(T / theta)
        assert float(fd) == pytest.approx(float(g_eq), rel=0.03)
    # outside the firing range the count is flat and g = 0
    i = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert float(torch.autograd.grad(stcb_rate(i, 1.0, theta), i)[0]) == 0.0


def test_equivalent_gradient_is_the_rate_slope_shared_by_all_steps():
    torch.manual_seed(0)
    T = 6
    i_seq = (torch.rand(T, 3, 4, dtype=torch.float64) * 2).requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    s = stcb_temporal(i_seq, lam, 1.0)
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    up = torch.randn_like(s)
    s.backward(up)
    i_bar = i_seq.detach().mean(0).requires_grad_(True)
    r = stcb_rate(i_bar, lam.detach(), 1.0)
    (dr,) = torch.autograd.grad(r.sum(), i_bar)
    expect = (up.sum(0) * dr / T).expand(T, 3, 4)
    assert torch.allclose(i_seq.grad, expect, atol=1e-12)
    assert lam.grad is not None and torch.isfinite(lam.grad)


def test_leaky_rate_matches_simulated_firing_period():
    """[inferred] rate: for a constant current the simulated hard-reset LIF fires every ceil(k) steps."""
    T, lam, theta = 400, 0.8, 1.0
    for i in (0.25, 0.4, 0.7):
        seq = torch.full((T, 1), i, dtype=torch.float64)
        n = float(stcb_temporal(seq, lam, theta).sum())
        k = float(1.0 / stcb_rate(torch.tensor(i, dtype=torch.float64), lam, theta))
        assert n == pytest.approx(T / torch.tensor(k).ceil().item(), abs=1.0)
    assert float(stcb_rate(torch.tensor(0.1, dtype=torch.float64), lam, theta)) == 0.0   # below theta(1-lambda)


def test_stcb_block_trains_decay_and_conv():
    torch.manual_seed(0)
    block = STCB(2, 4, T=4)
    s = block((torch.rand(4, 3, 2, 6, 6) < 0.5).float())
    assert s.shape == (4, 3, 4, 6, 6)
    s.sum().backward()
    assert block.w.grad is not None and block.conv.weight.grad.abs().sum() > 0
    sur = STCB(2, 4, T=4, gradient="surrogate")
    sur((torch.rand(4, 3, 2, 6, 6) < 0.5).float()).sum().backward()
    assert sur.conv.weight.grad.abs().sum() > 0


def test_stcb_errors():
    with pytest.raises(ValueError, match="available: hard, soft"):
        STCB(2, 4, T=4, reset="zero")
    with pytest.raises(ValueError, match="learn_decay=False"):
        STCB(2, 4, T=4, decay=1.0)
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        STCB(2, 4, T=4)(torch.rand(2, 4, 6, 6))
