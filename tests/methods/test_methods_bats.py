"""BATS (bats-multispike-fast-deep.md): the card's invariants on the closed form, the fused numba kernel against
the plain-torch reference, the method through the real loop, and the bad-input errors."""

import math

import numpy as np
import pytest
import torch

from spikeforge.functional.bats import bats_layer, bats_layer_reference

TAU_S, THETA, T_MAX = 0.01, 0.2, 0.1


def _case(seed=0, B=2, N=8, M=6, S_in=2):
    """Input spikes in [0, 60 ms] on a 1 us grid (some absent), and weights that make neuron 0 silent (all
    negative), neuron 1 weak, the others spike once or several times."""
    g = torch.Generator().manual_seed(seed)
    t_in = torch.round(torch.rand(B, N, S_in, generator=g, dtype=torch.float64) * 0.06, decimals=6)
    t_in[torch.rand(B, N, S_in, generator=g) < 0.25] = math.inf
    w = torch.rand(M, N, generator=g, dtype=torch.float64) * 40.0 - 8.0
    w[0] = -torch.rand(N, generator=g, dtype=torch.float64)
    w[1] *= 0.05
    return t_in, w


def _clock_driven(t_in, w, tau_s, theta, delta_theta, t_max, dt=1e-6):
    """Threshold tested on a ``dt`` grid, the membrane propagated exactly between grid points (an exact-integration
    clock-driven simulation); a spike's reset starts at its grid point.  Returns one list of times per neuron."""
    tau = 2 * tau_s
    c, delta = theta / tau, delta_theta / tau
    grid = np.arange(0.0, t_max + dt / 2, dt)
    out = []
    for b in range(t_in.shape[0]):
        ts = t_in[b].numpy()
        for m in range(w.shape[0]):
            u = np.zeros_like(grid)
            for n in range(ts.shape[0]):
                for tj in ts[n]:
                    if np.isfinite(tj):
                        s = np.clip(grid - tj, 0.0, None)
                        u += np.where(grid > tj, w[m, n].item() * (np.exp(-s / tau) - np.exp(-s / tau_s)), 0.0)
            spikes, start = [], 0
            while True:
                idx = np.nonzero(u[start:] >= c)[0]
                if len(idx) == 0:
                    break
                k = start + idx[0]
                spikes.append(grid[k])
                u[k:] -= delta * np.exp(-(grid[k:] - grid[k]) / tau)
                start = k + 1
            out.append(spikes)
    return out


# ------------------------------------------------------------------------------------------- card check 1
@pytest.mark.parametrize("seed", [0, 1])
def test_card_check1_closed_form_times_equal_a_fine_grid_clock_driven_simulation(seed):
    t_in, w = _case(seed)
    got = bats_layer_reference(t_in, w, TAU_S, THETA, t_max=T_MAX, max_spikes=40)
    sim = _clock_driven(t_in, w, TAU_S, THETA, THETA, T_MAX)
    counts = got.counts.flatten().tolist()
    assert counts == [len(s) for s in sim]
    assert 0 in counts and max(counts) >= 3  # silent neurons and neurons that spike several times
    times = got.times.reshape(len(sim), -1)
    for i, s in enumerate(sim):
        assert np.allclose(times[i, :len(s)].numpy(), s, atol=1e-5, rtol=0), (i, times[i, :len(s)], s)


# ------------------------------------------------------------------------------------------- card check 2
def _smooth_loss(times, r):
    return (torch.where(torch.isfinite(times), times, torch.zeros_like(times)) * r).sum()


def _fd_and_analytic(recurrent_grad):
    t_in, w = _case(3, B=1, N=8, M=4)
    r = torch.linspace(1.0, 2.0, 4 * 8, dtype=torch.float64).reshape(1, 4, 8)
    out = bats_layer_reference(t_in, w, TAU_S, THETA, t_max=T_MAX, max_spikes=8)
    m = int(out.counts[0].argmax())
    assert int(out.counts[0, m]) >= 3  # the neuron under test spikes several times
    n = int(w[m].argmax())
    wg = w.clone().requires_grad_(True)
    o = bats_layer_reference(t_in, wg, TAU_S, THETA, t_max=T_MAX, max_spikes=8, recurrent_grad=recurrent_grad)
    (g,) = torch.autograd.grad(_smooth_loss(o.times, r), wg)
    eps = 1e-7
    vals = []
    for sgn in (1, -1):
        w2 = w.clone()
        w2[m, n] += sgn * eps
        o2 = bats_layer_reference(t_in, w2, TAU_S, THETA, t_max=T_MAX, max_spikes=8)
        assert torch.equal(o2.counts, out.counts)  # no spike created or deleted within +-eps
        vals.append(_smooth_loss(o2.times, r).item())
    fd = (vals[0] - vals[1]) / (2 * eps)
    return fd, g[m, n].item()


def test_card_check2_weight_gradient_equals_finite_differences():
    fd, an = _fd_and_analytic(recurrent_grad=True)
    assert abs(an - fd) <= 1e-3 * abs(fd), (an, fd)


def test_card_check2_dropping_the_recurrent_reset_term_breaks_the_gradient():
    fd, an = _fd_and_analytic(recurrent_grad=False)
    assert abs(an - fd) > 1e-3 * abs(fd), (an, fd)


def test_input_time_gradient_equals_finite_differences():
    t_in, w = _case(4, B=1, N=6, M=3, S_in=1)
    t_in[0, :, 0] = torch.tensor([0.001, 0.004, 0.009, 0.013, 0.02, 0.03], dtype=torch.float64)
    w = w.abs() + 4.0
    r = torch.linspace(1.0, 2.0, 3 * 6, dtype=torch.float64).reshape(1, 3, 6)
    tg = t_in.clone().requires_grad_(True)
    out = bats_layer_reference(tg, w, TAU_S, THETA, t_max=T_MAX, max_spikes=6)
    assert int(out.counts.max()) >= 2
    (g,) = torch.autograd.grad(_smooth_loss(out.times, r), tg)
    j = 1
    eps = 1e-8
    vals = []
    for sgn in (1, -1):
        t2 = t_in.clone()
        t2[0, j, 0] += sgn * eps
        o2 = bats_layer_reference(t2, w, TAU_S, THETA, t_max=T_MAX, max_spikes=6)
        assert torch.equal(o2.counts, out.counts)
        vals.append(_smooth_loss(o2.times, r).item())
    fd = (vals[0] - vals[1]) / (2 * eps)
    assert abs(g[0, j, 0].item() - fd) <= 1e-3 * abs(fd), (g[0, j, 0].item(), fd)


# ------------------------------------------------------------------------------------------- numba == reference
def test_numba_kernel_equals_the_reference_times_counts_dropped_and_gradients():
    t_in, w = _case(5, B=3, N=7, M=5, S_in=2)
    S = 3  # small buffer: some neurons drop spikes
    r = torch.randn(3, 5, S, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for fn in (bats_layer_reference, bats_layer):
        tg, wg = t_in.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = fn(tg, wg, TAU_S, THETA, t_max=T_MAX, max_spikes=S)
        grads.append((out, *torch.autograd.grad(_smooth_loss(out.times, r), [tg, wg])))
    (ref, gt_ref, gw_ref), (got, gt, gw) = grads
    assert torch.equal(ref.counts, got.counts) and torch.equal(ref.dropped, got.dropped)
    assert bool(got.dropped.any()) and bool((got.counts == 0).any())
    fin = torch.isfinite(ref.times)
    assert torch.equal(fin, torch.isfinite(got.times))
    assert torch.allclose(ref.times[fin], got.times[fin], atol=1e-12, rtol=0)
    assert torch.allclose(gw, gw_ref, atol=1e-9, rtol=1e-9)
    assert torch.allclose(gt, gt_ref, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------------------------------- model and method
def test_bats_mlp_counts_and_warns_dropped_spikes_in_the_loop(tmp_path):
    """A 1-spike buffer on the output layer: the extra spikes are counted in the epoch record, with a warning."""
    from spikeforge.config import TrainConfig
    from spikeforge.training import train

    sets = ["data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "data.normalize=false",
            "run.epochs=1", "run.progress=false", "run.plots=false", "run.device=cpu", "method.name=bats",
            "model.name=bats_mlp", "model.kwargs={hidden: [12], max_spikes: 2, max_spikes_out: 1, theta_out: 0.05}",
            "method.kwargs.n_true=3"]
    with pytest.warns(RuntimeWarning, match=r"bats: \d+ sample-neuron pairs spiked more than max_spikes"):
        res = train(TrainConfig().override(sets), tmp_path / "r", verbose=False)
    assert res["final"]["bats_dropped"] > 0 and res["final"]["T"] == 1


def test_bats_mlp_scores_rank_by_count_then_first_spike_and_numba_equals_reference():
    from spikeforge.models import create_model

    torch.manual_seed(0)
    net = create_model("bats_mlp", input_size=4, hidden=(6,), num_classes=3, theta_out=0.3).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    t_in = net.encode(x)
    assert t_in.shape == (3, 16, 1) and bool(torch.isinf(t_in[x.flatten(1) == 0]).all())
    a = net.spike_times(t_in)
    net.backend = "reference"
    b = net.spike_times(t_in)
    assert all(torch.equal(p.counts, q.counts) for p, q in zip(a, b))
    s = net.scores(a)
    assert torch.equal(s.floor(), a[-1].counts.double())  # the tie-break stays below one spike
    assert net(x).shape == (1, 3, 3)


def test_bats_losses_count_gradient_is_the_codes_error_and_ttfs_is_finite():
    from spikeforge.functional.bats import BATSOutput, spike_count_loss, ttfs_loss

    times = torch.tensor([[[0.01, 0.02], [0.03, math.inf]]], dtype=torch.float64, requires_grad=True)
    out = BATSOutput(times, torch.tensor([[2, 1]]), torch.zeros(1, 2, dtype=torch.bool))
    y = torch.tensor([0])
    loss = spike_count_loss(out, y, n_true=5, n_false=1)
    assert loss.item() == pytest.approx(0.5 * (3 ** 2 + 0 ** 2))
    loss.backward()
    assert times.grad.tolist() == [[[3.0, 3.0], [0.0, 0.0]]]
    silent = BATSOutput(torch.full((1, 2, 1), math.inf), torch.zeros(1, 2, dtype=torch.long),
                        torch.zeros(1, 2, dtype=torch.bool))
    assert math.isfinite(ttfs_loss(silent, y, t_silent=0.2).item())


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad,match", [
    (float("nan"), r"t_in: got a spike time of nan; allowed: finite times >= 0, or \+inf"),
    (-math.inf, r"t_in: got a spike time of -inf; allowed"),
    (-0.01, r"t_in: got a spike time of -0.01; allowed"),
])
def test_bad_spike_times_raise(bad, match):
    t_in, w = _case(0, B=1, N=3, M=2, S_in=1)
    t_in[0, 1, 0] = bad
    for fn in (bats_layer, bats_layer_reference):
        with pytest.raises(ValueError, match=match):
            fn(t_in, w, TAU_S, THETA, t_max=T_MAX)


@pytest.mark.parametrize("kw,match", [
    ({"max_spikes": 0}, r"max_spikes: got 0; allowed: an integer >= 1"),
    ({"tau_s": 0.0}, r"tau_s: got 0.0; allowed: a finite number > 0"),
    ({"tau_s": -1.0}, r"tau_s: got -1.0; allowed: a finite number > 0"),
])
def test_bad_layer_parameters_raise(kw, match):
    t_in, w = _case(0, B=1, N=3, M=2, S_in=1)
    args = dict(tau_s=TAU_S, theta=THETA, t_max=T_MAX, max_spikes=4) | kw
    with pytest.raises(ValueError, match=match):
        bats_layer(t_in, w, **args)
    from spikeforge.models import create_model

    model_kw = {k: v for k, v in kw.items()}
    with pytest.raises(ValueError, match=match):
        create_model("bats_mlp", input_size=4, hidden=(4,), **model_kw)


def test_unsorted_input_spikes_are_sorted_by_the_layer():
    """Spike lists in any order give the same output (the layer sorts every sample's spikes itself)."""
    t_in, w = _case(6, B=2, N=5, M=3, S_in=3)
    shuffled = t_in.flip(-1)
    a = bats_layer(t_in, w, TAU_S, THETA, t_max=T_MAX)
    b = bats_layer(shuffled, w, TAU_S, THETA, t_max=T_MAX)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.times, b.times)


def test_spike_time_model_refuses_a_time_grid_sequence_and_methods_refuse_time_grid_models(tmp_path):
    from spikeforge.config import TrainConfig
    from spikeforge.models import create_model
    from spikeforge.training import train

    net = create_model("bats_mlp", input_size=4, hidden=(4,))
    with pytest.raises(ValueError, match=r"x: bats_mlp takes a static batch \[B, C, H, W\].*a \[T, B, \.\.\.\] "
                                         r"sequence has no meaning"):
        net(torch.rand(2, 3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"t_in: expected spike times \[B, N, S\].*a \[T, B, \.\.\.\] spike train"):
        net.spike_times(torch.rand(2, 3, 16, 1))
    with pytest.raises(ValueError, match=r"x: bats_mlp codes pixel intensities in \[0, 1\].*data.normalize=false"):
        net(torch.randn(2, 1, 4, 4))
    sets = ["data.train_subset=32", "data.test_subset=32", "run.epochs=1", "run.progress=false",
            "run.plots=false", "method.name=bats", "model.kwargs.channels=[4]"]
    with pytest.raises(ValueError, match=r"model.name: method bats trains BATS spike-time models \(bats_mlp\), "
                                         r"got 'convnet'"):
        train(TrainConfig().override(sets), tmp_path / "r", verbose=False)
