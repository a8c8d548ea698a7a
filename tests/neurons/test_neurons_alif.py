"""ALIF: the threshold rises after each spike and decays back with the set time constant."""

import math

import pytest
import torch

from spikeforge.functional import alif, alif_step, lif
from spikeforge.neurons import ALIF


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_alif_threshold_rises_after_each_spike_and_decays_with_tau_adapt(backend):
    tau_a, beta, vth = 7.0, 0.4, 1.0
    # strong pulses at t = 0, 1, 5 (each spikes), silence otherwise
    x = torch.zeros(30, 1, 1, dtype=torch.float64)
    x[[0, 1, 5]] = 10.0
    state, thresholds, spikes = None, [], []
    for x_t in x.unbind(0):
        a_prev = torch.zeros(1, 1, dtype=x.dtype) if state is None else state.a
        thresholds.append(vth + beta * a_prev.item())
        s, state = alif_step(x_t, state, tau=2.0, tau_adapt=tau_a, beta=beta, v_threshold=vth, backend=backend)
        spikes.append(s.item())
    assert [t for t, s in enumerate(spikes) if s] == [0, 1, 5]
    rho = math.exp(-1.0 / tau_a)
    excess = [th - vth for th in thresholds]
    assert excess[0] == 0.0
    # rises by beta right after each spike
    assert excess[1] == pytest.approx(beta)
    assert excess[2] == pytest.approx(beta * rho + beta)
    assert excess[6] == pytest.approx(beta * (rho ** 5 + rho ** 4) + beta)
    # decays back by exp(-1/tau_adapt) per silent step
    for t in list(range(3, 6)) + list(range(7, 30)):
        assert excess[t] / excess[t - 1] == pytest.approx(rho, rel=1e-12)
    # the sequence call agrees with stepping
    s_seq, st = alif(x, tau=2.0, tau_adapt=tau_a, beta=beta, v_threshold=vth, backend=backend)
    assert s_seq.flatten().tolist() == spikes
    assert st.a.item() == pytest.approx(excess[-1] / beta * rho + 0.0, rel=1e-12)


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_alif_with_beta_zero_is_lif_bit_for_bit(v_reset, backend):
    x = torch.rand(20, 3, 11) * 1.5
    s, st = alif(x, tau=3.0, beta=0.0, v_reset=v_reset, backend=backend)
    s_lif, st_lif = lif(x, tau=3.0, v_reset=v_reset, backend="reference")
    assert torch.equal(s, s_lif) and torch.equal(st.v, st_lif.v)


def test_alif_adaptation_lowers_firing():
    x = torch.rand(40, 4, 32) * 2
    rate_lif = lif(x)[0].mean()
    rate_alif = ALIF(beta=0.5)(x).mean()
    assert rate_alif < rate_lif


@pytest.mark.parametrize("kw,name", [({"tau_adapt": 0.0}, "tau_adapt"), ({"beta": -0.1}, "beta"),
                                     ({"tau": 0.5}, "tau"), ({"v_threshold": -1.0}, "v_threshold")])
def test_alif_bad_parameters_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        alif(torch.rand(2, 1, 3), **kw)
    with pytest.raises(ValueError, match=name):
        ALIF(**kw)
