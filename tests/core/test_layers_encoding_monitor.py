"""TimeFold, encoders and the firing-rate monitor."""

import pytest
import torch
from torch import nn

from spikeforge._registry import Registry
from spikeforge.analysis import FiringRateMonitor
from spikeforge.encoding import ENCODERS, direct, encode, latency, poisson
from spikeforge.layers import TimeFold
from spikeforge.neurons import LIF


def test_timefold_equals_per_step_application():
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(3, 5, 2, 8, 8)
    y = TimeFold(conv)(x)
    ref = torch.stack([conv(x_t) for x_t in x.unbind(0)])
    torch.testing.assert_close(y, ref)
    bn = nn.BatchNorm1d(4)
    z = TimeFold(nn.Linear(6, 4), bn)(torch.randn(2, 3, 6))
    assert z.shape == (2, 3, 4)


def test_timefold_rejects_missing_time_axis():
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        TimeFold(nn.ReLU())(torch.randn(5))
    with pytest.raises(ValueError, match="at least one layer"):
        TimeFold()


def test_direct_encoder_repeats():
    x = torch.rand(2, 3)
    y = direct(x, 4)
    assert y.shape == (4, 2, 3) and torch.equal(y[3], x)


def test_poisson_is_seeded_and_rate_coded():
    x = torch.full((1000,), 0.3)
    a, b = poisson(x, 50, seed=1), poisson(x, 50, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, poisson(x, 50, seed=2))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 0.01
    assert poisson(torch.tensor([2.0, -1.0]), 10, seed=0).tolist() == [[1.0, 0.0]] * 10


def test_latency_encoder_one_spike_earlier_for_larger():
    x = torch.tensor([[1.0, 0.75, 0.25, 0.0]])
    y = latency(x, 5)
    assert y.sum(0).tolist() == [[1.0, 1.0, 1.0, 0.0]]
    first = y.argmax(0)[0].tolist()[:3]
    assert first == sorted(first) and first[0] == 0


@pytest.mark.parametrize("T", [0, -1, 2.5, True])
def test_encoders_reject_bad_T(T):
    with pytest.raises(ValueError, match="T: expected an integer >= 1"):
        encode("direct", torch.rand(2), T)


def test_encoder_registry():
    assert {"direct", "poisson", "latency"} <= set(ENCODERS.list())
    with pytest.raises(ValueError, match="unknown encoder"):
        encode("morse", torch.rand(2), 3)
    with pytest.raises(ValueError, match="x: expected a floating-point"):
        direct(torch.ones(2, dtype=torch.long), 3)


def test_monitor_counts_spikes_per_layer_and_step():
    net = nn.Sequential(TimeFold(nn.Linear(4, 6)), LIF(), TimeFold(nn.Linear(6, 3)), LIF())
    x = torch.rand(5, 2, 4) * 4
    with FiringRateMonitor(net) as mon:
        y = net(x)
        # recompute spikes of layer '1' directly
        s1 = net[1](net[0](x))
    rates = mon.rates_per_step()
    assert set(rates) == {"1", "3"}
    torch.testing.assert_close(torch.tensor(rates["1"], dtype=torch.float32), s1.mean(dim=(1, 2)))
    assert 0.0 <= mon.mean_rate() <= 1.0
    assert mon.spikes_per_sample() == pytest.approx(
        (s1.sum().item() + y.sum().item()) / 2, rel=1e-6)
    # hooks removed on exit
    assert not net[1]._forward_hooks


def test_monitor_requires_neurons():
    with pytest.raises(ValueError, match="no neuron modules"):
        FiringRateMonitor(nn.Linear(2, 2))


def test_registry_duplicate_and_describe():
    r = Registry("thing")
    r.register("a")(lambda x=1: x)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a")(lambda: 2)
    assert r.describe("a")["params"] == {"x": 1}
    assert "a" in r and len(r) == 1
