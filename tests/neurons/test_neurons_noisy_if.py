"""Noisy IF: IF (soft reset, from v_init) plus Gaussian membrane noise; its T=1 spike rate is the Gaussian
expectation Phi((x + v_init - theta) / sigma); noise only in training mode."""

import pytest
import torch

from spikeforge.functional import if_, noisy_if, noisy_if_expectation, noisy_if_step
from spikeforge.functional.lif import LIFState
from spikeforge.neurons import NEURONS, NoisyIF


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_noisy_if_is_if_of_the_noisy_input_from_v_init(backend):
    """Same generator: spikes, final membrane and input gradients equal IF run on x + sigma * eps from v_init."""
    torch.manual_seed(0)
    x = (torch.rand(5, 3, 7, dtype=torch.float64) * 1.2).requires_grad_()
    s, st = noisy_if(x, sigma=0.3, v_threshold=1.5, v_init=0.4, generator=torch.Generator().manual_seed(3),
                     backend=backend)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    x2 = x.detach().clone().requires_grad_()
    s2, st2 = if_(x2 + 0.3 * eps, LIFState(torch.tensor(0.4, dtype=x.dtype)), v_threshold=1.5, v_reset=None,
                  backend=backend)
    assert torch.equal(s, s2) and torch.equal(st.v, st2.v)
    g = torch.randn(s.shape, dtype=x.dtype)
    (s * g).sum().backward()
    (s2 * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-12, atol=1e-12)
    assert x.grad.abs().sum() > 0


def test_default_v_init_is_half_the_threshold_and_sigma_zero_is_deterministic():
    x = torch.full((1, 4), 0.99)
    assert noisy_if(x, v_threshold=2.0)[0].sum() == 0          # 0.99 + 1.0 < 2
    assert noisy_if(x + 0.01, v_threshold=2.0)[0].sum() == 4   # 1.0 + 1.0 >= 2
    s_t, st = noisy_if_step(torch.full((4,), 0.7))             # 0.7 + 0.5 >= 1: spike, soft reset to 0.2
    assert s_t.tolist() == [1.0] * 4
    torch.testing.assert_close(st.v, torch.full((4,), 0.2))


def test_module_draws_noise_only_in_training_mode():
    neuron = NoisyIF(sigma=0.5)
    x = torch.full((1, 4000), 0.4)
    a, b = neuron(x), neuron(x)
    assert not torch.equal(a, b) and 0 < a.mean() < 1
    neuron.eval()
    assert torch.equal(neuron(x), torch.zeros_like(x))
    assert torch.equal(NoisyIF(sigma=0.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("sigma,v_init,v_threshold", [(0.3, None, 1.0), (0.5, 0.2, 2.0), (0.1, 0.0, 1.0)])
def test_single_step_spike_rate_is_the_gaussian_expectation(sigma, v_init, v_threshold):
    """T=1, training mode: the mean spike over many samples is Phi((x + v_init - theta) / sigma) (4 s.e.)."""
    torch.manual_seed(0)
    x = torch.linspace(-0.5, 1.5, 21) * v_threshold
    B = 20000
    neuron = NoisyIF(sigma=sigma, v_threshold=v_threshold, v_init=v_init)
    rate = neuron(x.expand(1, B, 21)).mean((0, 1))
    p = noisy_if_expectation(x, sigma=sigma, v_threshold=v_threshold, v_init=v_init)
    se = (p * (1 - p) / B).sqrt().clamp_min(1e-3)
    assert ((rate - p).abs() <= 4 * se).all(), (rate - p).abs().max()


def test_expectation_with_zero_sigma_is_the_step():
    x = torch.tensor([0.49, 0.5, 0.51])
    assert noisy_if_expectation(x, sigma=0.0).tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs,match", [
    ({"sigma": -0.1}, "^sigma: "),
    ({"v_threshold": 0.0}, "^v_threshold: "),
    ({"v_threshold": torch.tensor(1.0)}, "^v_threshold: expected a number"),
    ({"v_init": float("nan")}, "^v_init: "),
])
def test_bad_parameters_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoisyIF(**kwargs)


def test_registered_with_its_parameters():
    d = NEURONS.describe("noisy_if")
    assert d["params"]["sigma"] == 0.0 and d["params"]["v_init"] is None
    assert isinstance(NEURONS.create("noisy_if", sigma=0.2), NoisyIF)
