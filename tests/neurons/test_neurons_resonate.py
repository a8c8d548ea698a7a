"""Resonate-and-fire (Izhikevich 2001): it fires for input at its eigenfrequency and not for the same pulses at any
other period; an input pulse rings as lambda^t (cos, sin)(omega t); the hand-written backward of the fused CPU
kernel equals finite differences (float64 gradcheck).  Its cell is checked against autograd and every backend by
the registry tests (test_neurons_cells.py, test_neurons_fused_equivalence.py)."""

import math

import pytest
import torch

from spikeforge.functional import RFState, rf, rf_step
from spikeforge.neurons import NEURONS, RF
from spikeforge.surrogate import get_surrogate

PERIODS = list(range(2, 25))


def _pulse_trains(T, dtype):
    """One column per period P in PERIODS: a unit pulse every P steps."""
    x = torch.zeros(T, len(PERIODS), 1, dtype=dtype)
    for j, P in enumerate(PERIODS):
        x[::P, j] = 1.0
    return x


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("period", [6, 8, 12])
def test_fires_only_for_input_at_its_eigenfrequency(period, backend):
    # pulses every 2 steps bring 6x the input of pulses every 12 steps: only the timing decides
    x = _pulse_trains(96, torch.float32)
    s, _ = rf(x, omega=2 * math.pi / period, decay=0.95, v_threshold=1.8, backend=backend)
    firing = [P for P, n in zip(PERIODS, s.sum(0).flatten().tolist()) if n > 0]
    assert firing == [period]


def test_a_pulse_rings_at_omega_and_decays_by_lambda():
    omega, lam = 0.7, 0.9
    x = torch.zeros(20, 1, 1, dtype=torch.float64)
    x[0] = 1.0
    state, ws, us = None, [], []
    for x_t in x.unbind(0):
        s, state = rf_step(x_t, state, omega=omega, decay=lam, v_threshold=10.0, backend="reference")
        assert s.item() == 0.0
        us.append(state.u.item())
        ws.append(state.w.item())
    for t in range(20):
        assert us[t] == pytest.approx(lam ** t * math.cos(omega * t), abs=1e-12)
        assert ws[t] == pytest.approx(lam ** t * math.sin(omega * t), abs=1e-12)


def test_a_spike_resets_both_parts():
    x = torch.tensor([[[3.0]], [[0.0]], [[0.0]]], dtype=torch.float64)
    kw = dict(omega=math.pi / 2, decay=1.0, v_threshold=1.0, backend="reference")
    s, _ = rf(x, **kw)
    assert s.flatten().tolist() == [0.0, 1.0, 0.0]  # z = 3 turns a quarter: w' = 3 at t = 1
    _, st = rf(x[:2], **kw)
    assert st.u.item() == 0.0 and st.w.item() == 0.0


def test_fused_backward_gradcheck_float64():
    # a narrow rectangle surrogate is exactly 0 unless w' is within 1/(2 alpha) of the threshold, where no step
    # lands: there the hand-written backward (through the resets) must equal finite differences
    g = torch.Generator().manual_seed(5)
    T, B, C, M = 10, 2, 3, 4
    x = (torch.rand(T, B, C, M, generator=g, dtype=torch.float64) * 2.0 - 0.5)
    state = RFState(torch.rand(B, C, M, generator=g, dtype=torch.float64) - 0.5,
                    torch.rand(B, C, M, generator=g, dtype=torch.float64) - 0.5)
    omega = torch.rand(C, 1, generator=g, dtype=torch.float64) * 0.6 + 0.4
    decay = torch.rand(C, 1, generator=g, dtype=torch.float64) * 0.2 + 0.75
    vth = torch.tensor(0.6, dtype=torch.float64)
    sg = get_surrogate("rectangle", alpha=1000.0)

    def f(x, u0, w0, omega, decay, vth):
        s, st, v_seq = rf(x, RFState(u0, w0), omega=omega, decay=decay, v_threshold=vth, surrogate=sg,
                          backend="cpu", return_v=True)
        return s, st.u, st.w, v_seq

    inputs = tuple(t.clone().requires_grad_() for t in (x, *state, omega, decay, vth))
    # spikes happen, and every step's w' (before the reset) is away from the threshold
    a, b, st, ws = decay * torch.cos(omega), decay * torch.sin(omega), state, []
    for x_t in x.unbind(0):
        ws.append(b * st.u + a * st.w)
        _, st = rf_step(x_t, st, omega=omega, decay=decay, v_threshold=vth, backend="reference")
    assert (torch.stack(ws) - vth).abs().min().item() > 1e-3 and f(*inputs)[0].sum() > 0
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-7, rtol=1e-6)


def test_module_registered_and_runs_on_the_cpu_kernel():
    neuron = NEURONS.create("rf", omega=1.0, decay=0.8)
    assert isinstance(neuron, RF) and neuron.resolved_backend(torch.zeros(1)) == "cpu"
    x = torch.rand(6, 2, 3)
    torch.testing.assert_close(neuron(x), RF(omega=1.0, decay=0.8, backend="reference")(x), rtol=0, atol=0)


@pytest.mark.parametrize("kw, match", [({"omega": 4.0}, "omega"), ({"omega": -0.1}, "omega"),
                                       ({"decay": 0.0}, "decay"), ({"decay": 1.5}, "decay"),
                                       ({"v_threshold": 0.0}, "v_threshold")])
def test_bad_parameters_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        rf(torch.zeros(2, 1, 1), **kw)
    with pytest.raises(ValueError, match=match):
        RF(**kw)
