"""STCB (slssnn-stcsnn.md, LOW confidence): the equivalent gradient is consistent with the spike counts."""

import inspect

import pytest
import torch

from spikeforge.layers import STCB, stcb_expected_count, stcb_rate, stcb_temporal


def _mc_count(i_bar, decay, T, theta, reset, v0):
    """E[n] over the jittered initial membranes ``v0`` (one simulated neuron per sample)."""
    seq = torch.full((T, len(v0)), float(i_bar), dtype=torch.float64)
    return float(stcb_temporal(seq, decay, theta, reset=reset, v0=v0).sum(0).mean())


def _v0(n=30_000, theta=1.0):
    return torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * theta


def test_shipped_default_equivalent_gradient_matches_finite_differences_of_expected_count():
    """Card check 1 for the defaults STCB ships, through the block's own backward: the gradient reaching the
    currents, summed over steps, equals the finite difference of E[n] (v0 ~ U(0, theta)) in I_bar."""
    sig = inspect.signature(STCB).parameters
    decay, reset, theta = sig["decay"].default, sig["reset"].default, sig["v_threshold"].default
    T, v0 = 8, _v0()
    for i_bar in (0.23, 0.41, 0.6, 0.67):
        i_seq = torch.full((T, 1), i_bar, dtype=torch.float64, requires_grad=True)
        stcb_temporal(i_seq, decay, theta, reset=reset).sum().backward()
        g_eq = float(i_seq.grad.sum())
        h = 0.02
        fd = (_mc_count(i_bar + h, decay, T, theta, reset, v0)
              - _mc_count(i_bar - h, decay, T, theta, reset, v0)) / (2 * h)
        assert g_eq == pytest.approx(fd, rel=0.03), i_bar


def test_hard_reset_expected_count_is_exact_and_its_gradient_matches_finite_differences():
    """The card's leaky hard-reset block (lambda=0.5): the closed-form E[n] equals the simulated mean, and its
    gradient equals finite differences away from the staircase's jumps (I=0.6: 6.0; the continuous-rate slope
    gave 14.39)."""
    T, theta, lam, v0 = 8, 1.0, 0.5, _v0()
    for i_bar in (0.3, 0.55, 0.6, 0.8):
        n = stcb_expected_count(torch.tensor(i_bar, dtype=torch.float64), lam, T, theta, "hard")
        assert float(n) == pytest.approx(_mc_count(i_bar, lam, T, theta, "hard", v0), abs=0.01)
    for i_bar, lam_ in ((0.6, 0.5), (0.62, 0.5), (0.45, 0.8), (0.45, 1.0)):
        i = torch.tensor(i_bar, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(stcb_expected_count(i, lam_, T, theta, "hard"), i)
        h = 0.01
        fd = (_mc_count(i_bar + h, lam_, T, theta, "hard", v0)
              - _mc_count(i_bar - h, lam_, T, theta, "hard", v0)) / (2 * h)
        assert float(g) == pytest.approx(fd, rel=0.03, abs=0.05), (i_bar, lam_)
    i = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    assert float(torch.autograd.grad(stcb_expected_count(i, 0.5, T, theta, "hard"), i)[0]) == pytest.approx(6.0)
    # the decay's gradient is the finite difference of E[n] in lambda too
    lam_t = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    (g_lam,) = torch.autograd.grad(stcb_expected_count(torch.tensor(0.6, dtype=torch.float64), lam_t, T), lam_t)
    h = 0.005
    fd = (_mc_count(0.6, 0.5 + h, T, theta, "hard", v0) - _mc_count(0.6, 0.5 - h, T, theta, "hard", v0)) / (2 * h)
    assert float(g_lam) == pytest.approx(fd, rel=0.05)


def test_equivalent_gradient_is_shared_by_all_steps():
    torch.manual_seed(0)
    T = 6
    i_seq = (torch.rand(T, 3, 4, dtype=torch.float64) * 2).requires_grad_(True)
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    s = stcb_temporal(i_seq, lam, 1.0, reset="hard")
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    up = torch.randn_like(s)
    s.backward(up)
    i_bar = i_seq.detach().mean(0).requires_grad_(True)
    n = stcb_expected_count(i_bar, lam.detach(), T, 1.0, "hard")
    (dn,) = torch.autograd.grad(n.sum(), i_bar)
    expect = (up.sum(0) * dn / T / T).expand(T, 3, 4)
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
    assert block.conv.weight.grad.abs().sum() > 0 and not block.learn_decay
    leaky = STCB(2, 4, T=4, decay=0.5, learn_decay=True, reset="hard")
    leaky((torch.rand(4, 3, 2, 6, 6) < 0.5).float()).sum().backward()
    assert leaky.w.grad is not None and leaky.conv.weight.grad.abs().sum() > 0
    sur = STCB(2, 4, T=4, gradient="surrogate")
    sur((torch.rand(4, 3, 2, 6, 6) < 0.5).float()).sum().backward()
    assert sur.conv.weight.grad.abs().sum() > 0


def test_stcsnn_model_is_registered_and_uses_stcbs():
    from spikeforge.models import create_model

    net = create_model("stcsnn", num_classes=10, in_channels=1, T=2, input_size=8, channels=(4, 8))
    assert sum(isinstance(m, STCB) for m in net.modules()) == 2
    y = net(torch.rand(3, 1, 8, 8))
    assert y.shape == (2, 3, 10)
    with pytest.raises(ValueError, match=r"neuron_kwargs.tau: .*allowed: v_threshold, surrogate"):
        create_model("stcsnn", num_classes=10, in_channels=1, T=2, input_size=8, neuron_kwargs={"tau": 2.0})
    other = create_model("stcsnn", num_classes=10, in_channels=1, T=2, input_size=8, channels=(4,), neuron="plif")
    assert not any(isinstance(m, STCB) for m in other.modules())


def test_stcb_errors():
    with pytest.raises(ValueError, match="available: hard, soft"):
        STCB(2, 4, T=4, reset="zero")
    with pytest.raises(ValueError, match="learn_decay=False"):
        STCB(2, 4, T=4, decay=1.0, learn_decay=True)
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        STCB(2, 4, T=4)(torch.rand(2, 4, 6, 6))
