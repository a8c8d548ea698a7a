"""Losses against their definitions written out by hand."""

import pytest
import torch
import torch.nn.functional as F

from spikeforge.training.losses import ce_mean_loss, compute_loss, mse_rate_loss, tet_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 7, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1, 2])


def test_ce_is_cross_entropy_of_time_mean(batch):
    out, y = batch
    assert torch.allclose(ce_mean_loss(out, y), F.cross_entropy(out.mean(0).float(), y))


def test_tet_is_mean_of_per_step_ce(batch):
    out, y = batch
    ref = sum(F.cross_entropy(out[t].float(), y) for t in range(out.shape[0])) / out.shape[0]
    assert torch.allclose(tet_loss(out, y), ref)
    lam, phi = 0.3, 1.0
    mse = sum(((out[t].float() - phi) ** 2).mean() for t in range(5)) / 5
    assert torch.allclose(tet_loss(out, y, lam=lam, phi=phi), (1 - lam) * ref + lam * mse, atol=1e-6)


def test_mse_on_rates_with_label_smoothing(batch):
    out, y = batch
    eps, K = 0.1, out.shape[2]
    target = F.one_hot(y, K).float() * (1 - eps) + eps / K
    assert torch.allclose(mse_rate_loss(out, y, eps), ((out.mean(0).float() - target) ** 2).mean())


def test_label_smoothing_reaches_cross_entropy(batch):
    out, y = batch
    assert torch.allclose(compute_loss("ce", out, y, label_smoothing=0.2),
                          F.cross_entropy(out.mean(0).float(), y, label_smoothing=0.2))


def test_tet_and_ce_agree_for_T1(batch):
    out, y = batch
    assert torch.allclose(compute_loss("tet", out[:1], y), compute_loss("ce", out[:1], y))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="loss: unknown value 'hinge'"):
        compute_loss("hinge", torch.zeros(2, 3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"out: expected per-step outputs \[T, B, K\]"):
        compute_loss("ce", torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y: expected labels \[B\] with B=3"):
        compute_loss("ce", torch.zeros(2, 3, 4), torch.zeros(5, dtype=torch.long))
