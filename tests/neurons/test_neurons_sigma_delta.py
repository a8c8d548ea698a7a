"""Sigma-delta quantiser: error-diffusion bound, non-spiking limit, bits per activation, bad omega."""

import pytest
import torch

from spikeforge.functional import SigmaDeltaState, activation_bits, sigma_delta
from spikeforge.functional.sigma_delta import omega_schedule
from spikeforge.neurons import SigmaDelta


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("omega", [0.5, 1.0, 3.0, 17.0])
def test_sigma_delta_prefix_sums_within_inverse_omega(backend, omega):
    g = torch.Generator().manual_seed(int(omega * 10))
    a = torch.rand(50, 8, 33, generator=g, dtype=torch.float64) * torch.rand(1, 8, 33, generator=g) * 3
    a[:, 0] = 0.0  # an all-silent neuron
    v0 = torch.rand(8, 33, generator=g, dtype=torch.float64)  # v0 ~ U(0, 1)
    y, st = sigma_delta(a, SigmaDeltaState(v0), omega=omega, backend=backend)
    err = (y.cumsum(0) - a.cumsum(0)).abs()
    assert err.max() <= 1.0 / omega + 1e-12
    # the exact identity behind the bound: sum y - sum a = (v0 - v_T) / omega
    torch.testing.assert_close(y.sum(0) - a.sum(0), (v0 - st.v) / omega)
    assert ((st.v >= 0) & (st.v < 1)).all()
    # outputs are integer multiples of 1/omega
    n = y * omega
    assert torch.equal(n, n.round())


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_sigma_delta_large_omega_recovers_nonspiking_output(backend):
    x = torch.randn(20, 4, 16, dtype=torch.float64)
    a = torch.relu(x)
    errs = []
    for omega in (1e1, 1e3, 1e5):
        y, _ = sigma_delta(x, omega=omega, backend=backend)
        errs.append((y - a).abs().max().item())
        assert errs[-1] < 1.0 / omega
    assert errs[0] > errs[1] > errs[2]


def test_sigma_delta_gradient_is_straight_through_relu():
    x = torch.randn(5, 3, 4, requires_grad=True)
    y, _ = sigma_delta(x, omega=2.0, backend="reference")
    y.sum().backward()
    assert torch.equal(x.grad, (x > 0).to(x.dtype))


def test_sigma_delta_average_bits_reported_and_fall_as_omega_anneals():
    a = torch.rand(32, 16, 64) * 2
    bits = []
    for omega in (256.0, 16.0, 1.0):
        y, _ = sigma_delta(a, omega=omega)
        bits.append(activation_bits(y, omega))
    assert bits[0] > bits[1] > bits[2] > 0
    y1, _ = sigma_delta(torch.rand(8, 2, 50), omega=1.0)  # omega * max a <= 1: binary spikes, 1 bit
    assert set(y1.unique().tolist()) <= {0.0, 1.0} and activation_bits(y1, 1.0) <= 1.0
    assert SigmaDelta(omega=4.0).bits(y1) >= 0
    sched = [omega_schedule(e, 5, 1e3, 1.0) for e in range(5)]
    assert sched[0] == pytest.approx(1e3) and sched[-1] == pytest.approx(1.0) and sched == sorted(sched, reverse=True)


@pytest.mark.parametrize("omega", [0.0, -1.0, float("inf")])
def test_sigma_delta_nonpositive_omega_raises(omega):
    with pytest.raises(ValueError, match="omega"):
        sigma_delta(torch.rand(2, 1, 3), omega=omega)
    with pytest.raises(ValueError, match="omega"):
        SigmaDelta(omega=omega)
