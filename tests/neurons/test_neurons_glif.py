"""GLIF card invariants: exact reductions to LIF/IF, parameters stay in (0, 1), bad gates raise."""

import pytest
import torch

from spikeforge.functional import glif, lif
from spikeforge.neurons import GLIF

BACKENDS = ["reference", "cpu"]


def _x(T=24, shape=(3, 5, 7), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, *shape, generator=g, dtype=dtype) * 0.6


def _tau(shape=(5, 1), seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 0.9 + 0.05).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_glif_gates_101_give_lif_with_hard_reset_bit_for_bit(backend):
    x, tau = _x(), _tau()
    s, st, u = glif(x, tau=tau, v_threshold=0.5, leak=0.3, v_reset=0.7, alpha=1.0, beta=0.0, gamma=1.0,
                    conductance=0.3, backend=backend, return_v=True)
    # textbook LIF, decay factor tau, hard reset (applied from the previous step's spike)
    v, o, outs, us = torch.zeros_like(x[0]), torch.zeros_like(x[0]), [], []
    for x_t in x:
        v = tau * v * (1.0 - o) + x_t
        o = (v >= 0.5).to(x.dtype)
        outs.append(o)
        us.append(v)
    assert torch.equal(s, torch.stack(outs))
    assert torch.equal(u, torch.stack(us))
    assert 0.05 < s.mean() < 0.6
    # and spikeforge's own LIF (decay_input=False, k = 1 - tau) where the arithmetic is exact (tau = 1/2)
    s_glif, _ = glif(x, tau=0.5, v_threshold=0.5, alpha=1.0, beta=0.0, gamma=1.0, backend=backend)
    s_lif, _ = lif(x, tau=2.0, v_threshold=0.5, v_reset=0.0, decay_input=False, backend="reference")
    assert torch.equal(s_glif, s_lif)


@pytest.mark.parametrize("backend", BACKENDS)
def test_glif_gates_100_give_lif_with_soft_reset(backend):
    x, tau = _x(seed=3), _tau(seed=4)
    s, st = glif(x, tau=tau, v_threshold=0.5, leak=0.3, v_reset=0.45, alpha=1.0, beta=0.0, gamma=0.0,
                 backend=backend)
    v, o, outs = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for x_t in x:
        v = tau * v + x_t - 0.45 * o
        o = (v >= 0.5).to(x.dtype)
        outs.append(o)
    assert torch.equal(s, torch.stack(outs))
    assert torch.equal(st.u, v)
    assert s.sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_glif_alpha0_gives_if_with_linear_leak(backend, gamma):
    x = _x(seed=5)
    s, st = glif(x, tau=0.3, v_threshold=0.5, leak=0.05, v_reset=0.5, alpha=0.0, beta=0.0, gamma=gamma,
                 backend=backend)
    v, o, outs = torch.zeros_like(x[0]), torch.zeros_like(x[0]), []
    for x_t in x:
        v = (v * (1.0 - o) if gamma == 1.0 else v) - 0.05 + x_t - (0.5 * o if gamma == 0.0 else 0.0)
        o = (v >= 0.5).to(x.dtype)
        outs.append(o)
    assert torch.equal(s, torch.stack(outs))
    assert torch.equal(st.u, v)


def test_glif_conductance_gate():
    # beta = 1: the input is scaled by the (per-step) conductance c_t; beta = 0: by 1
    x = _x(T=6, seed=6)
    c = torch.rand(6, 1, 5, 1)
    s1, st1 = glif(x, beta=1.0, conductance=c, backend="reference")
    s2, st2 = glif(x * c, beta=0.0, backend="reference")
    assert torch.equal(s1, s2) and torch.equal(st1.u, st2.u)


def test_glif_sigmoid_parameters_stay_in_unit_interval_after_training():
    torch.manual_seed(0)
    neuron = GLIF(num_channels=4, T=6, random_gates=True)
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    opt = torch.optim.SGD([*conv.parameters(), *neuron.parameters()], lr=5.0)
    x = torch.rand(6, 8, 2, 6, 6)
    target = torch.rand(8, 4, 6, 6)
    for _ in range(15):
        cur = conv(x.flatten(0, 1)).reshape(6, 8, 4, 6, 6)
        loss = ((neuron(cur).mean(0) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    grads = [p.grad for p in neuron.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # gradients reach gates and membrane parameters
    for name, v in neuron.values().items():
        assert bool(((v > 0) & (v < 1)).all()), name


def test_glif_hard_gates_are_binary_in_forward_with_gradient():
    neuron = GLIF(num_channels=3, hard_gates=True, backend="reference")
    x = torch.rand(5, 2, 3) * 2
    s = neuron(x)
    s.sum().backward()
    assert neuron.w_alpha.grad is not None
    # hard gates from init (0.55, 0.65, 0.55) -> (1, 1, 1): the layer behaves like beta = 1, alpha = 1, gamma = 1
    vals = neuron.values()
    s_ref, _ = glif(x, tau=vals["tau"], v_threshold=vals["v_threshold"], leak=vals["leak"],
                    v_reset=vals["v_reset"], alpha=1.0, beta=1.0, gamma=1.0, conductance=vals["conductance"],
                    backend="reference")
    assert torch.equal(s.detach(), s_ref)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma", "tau", "conductance"])
def test_glif_parameter_outside_unit_interval_raises(name):
    with pytest.raises(ValueError, match=name):
        glif(torch.rand(3, 2, 4), **{name: 1.5})


def test_glif_module_bad_gate_raises():
    with pytest.raises(ValueError, match="gates"):
        GLIF(gates=(0.6, 1.2, 0.6))
    with pytest.raises(ValueError, match="v_threshold"):
        GLIF(v_threshold=0.0)
    with pytest.raises(ValueError, match="T=4"):
        GLIF(T=4)(torch.rand(3, 2, 5))
