"""OTTT (card ottt-online-training.md): card check 1 (single LIF layer: OTTT's weight gradient is BPTT's with the
reset detached, float64), the presynaptic-trace trick (delta * a_hat^T in every layer), memory flat in T, the
online variant, DDP, and the refusals (BatchNorm, neurons without one fixed leak, bad variant)."""

import pytest
import torch
from torch import nn
from windowed_models import OneLayer, SavedBytes, TwoLayer, ctx, ddp_vs_one_process, grads

from spikeforge.config import TrainConfig
from spikeforge.functional.lif import LIFState, lif
from spikeforge.methods import create_method
from spikeforge.models import create_model
from spikeforge.neurons import IF, LIF, PLIF, NEURONS
from spikeforge.training import train

T, B = 6, 5
BN_MSG = ("OTTT trains online per time step; BatchNorm2d at features.0.layer.1 needs batch statistics over time — "
          "use norm='ws' (scaled weight standardisation) or method bptt")


def _spikes(n_in=6, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, n_in, generator=g) < 0.5).double()
    return x, torch.randint(0, classes, (B,), generator=g)


NEURON_CASES = {
    "lif_tau2": lambda: LIF(tau=2.0, decay_input=False, v_reset=None, detach_reset=True, surrogate="sigmoid"),
    "lif_tau3_decay_input": lambda: LIF(tau=3.0, decay_input=True, v_reset=None, detach_reset=True),
    "if": lambda: IF(v_reset=None, detach_reset=True, surrogate="sigmoid"),
}


@pytest.mark.parametrize("neuron", sorted(NEURON_CASES))
def test_card_check1_single_lif_layer_ottt_equals_detached_reset_bptt(neuron):
    """sum_t delta_u[t] a_hat[t]^T == BPTT's sum_t sum_{tau<=t} delta_u[t] lambda^(t-tau) s_in[tau]^T, per-step loss."""
    torch.manual_seed(0)
    net = OneLayer(T=T, neuron=NEURON_CASES[neuron]()).double()
    nn.init.normal_(net.fc.layer.weight, 0.0, 1.2)
    x, y = _spikes()
    rate = net(x).mean().item()
    assert 0.1 < rate < 0.9  # the neuron fires and stays silent: the surrogate and the reset both matter
    c = ctx("tet64", T=T, scale=0.7)
    create_method("bptt").train_step(net, x, y, c)
    bptt = grads(net)
    create_method("ottt").train_step(net, x, y, c)
    ottt = grads(net)
    torch.testing.assert_close(ottt["fc.layer.weight"], bptt["fc.layer.weight"], rtol=1e-12, atol=1e-14)
    # the check can fail: without the trace (plain per-step backprop = tbptt with window 1) it does
    create_method("tbptt", {"window": 1}).train_step(net, x, y, c)
    plain = grads(net)
    assert (plain["fc.layer.weight"] - bptt["fc.layer.weight"]).abs().max() > 1e-3


def test_trace_trick_gives_delta_times_a_hat_in_every_layer():
    """Two layers: each weight's OTTT gradient is sum_t delta[t]^T a_hat[t] (explicit state, traces by hand);
    each bias gets sum_t delta[t] (a bias has no presynaptic trace, as in the official code)."""
    torch.manual_seed(1)
    net = TwoLayer(T=T).double()
    nn.init.normal_(net.fc1.layer.weight, 0.0, 1.2)
    x, y = _spikes(seed=1, classes=3)
    c = ctx("tet64", T=T, scale=1.0)
    create_method("ottt").train_step(net, x, y, c)
    got = grads(net)

    W1, b1 = net.fc1.layer.weight.detach(), net.fc1.layer.bias.detach()
    W2, b2 = net.fc2.layer.weight.detach(), net.fc2.layer.bias.detach()
    lam = 1 - 1 / 2.0
    want = {k: torch.zeros_like(v) for k, v in got.items()}
    a1 = torch.zeros_like(x[0])
    a2 = torch.zeros(B, W1.shape[0], dtype=torch.float64)
    state = None
    for t in range(T):
        z1 = (x[t] @ W1.T + b1).requires_grad_()
        s, state = lif(z1.unsqueeze(0), state, tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                       surrogate="sigmoid")
        state = LIFState(state.v.detach())
        z2 = s[0] @ W2.T + b2
        z2.retain_grad()
        (c.loss_fn(z2.unsqueeze(0), y) / T).backward()
        a1 = lam * a1 + x[t]
        a2 = lam * a2 + s[0].detach()
        want["fc1.layer.weight"] += z1.grad.T @ a1
        want["fc1.layer.bias"] += z1.grad.sum(0)
        want["fc2.layer.weight"] += z2.grad.T @ a2
        want["fc2.layer.bias"] += z2.grad.sum(0)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14, msg=k)


def test_memory_flat_in_T_each_step_graph_freed():
    """The activations autograd keeps alive peak at one step's worth whatever T (bptt's grow with T)."""
    def peak(method, T_):
        torch.manual_seed(0)
        net = create_model("convnet", T=T_, input_size=16, channels=(4, 8), hidden=8, norm="ws")
        x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
        with SavedBytes() as sb:
            create_method(method).train_step(net, x, y, ctx("tet", T=T_))
        assert sb.alive == 0
        return sb.peak

    assert peak("ottt", 8) == peak("ottt", 2)
    assert peak("bptt", 8) > 3 * peak("bptt", 2)


def test_online_variant_updates_after_every_step_but_the_last():
    torch.manual_seed(0)
    net = TwoLayer(T=T).double()
    x, y = _spikes(classes=3)
    seen = []

    def update():
        seen.append({k: p.grad.clone() for k, p in net.named_parameters()})
        net.zero_grad(set_to_none=True)

    res = create_method("ottt", {"variant": "online"}).train_step(net, x, y, ctx("tet64", T=T, update=update))
    assert len(seen) == T - 1 and res.backward_passes == T and res.logits.shape == (T, B, 3)
    last = grads(net)
    # with the weights left unchanged, the per-step gradients add up to OTTT_A's
    create_method("ottt").train_step(net, x, y, ctx("tet64", T=T))
    total = grads(net)
    for k in total:
        torch.testing.assert_close(sum(g[k] for g in seen) + last[k], total[k], rtol=1e-12, atol=1e-14)


def test_ddp_two_processes_match_one_process(tmp_path):
    """Several backward passes per step under DDP: gradients averaged before every update (OTTT_O: T of them)."""
    diffs = ddp_vs_one_process(tmp_path, [("ottt", {"variant": "accumulate"}), ("ottt", {"variant": "online"})])
    assert len(diffs) == 2 and max(diffs) < 1e-10


def test_batchnorm_refused_before_training(tmp_path):
    sets = ["data.train_subset=64", "data.test_subset=32", "model.T=2", "model.kwargs.channels=[4, 8]",
            "run.epochs=1", "run.progress=false", "run.plots=false", "run.device=cpu", "method.name=ottt"]
    with pytest.raises(ValueError) as e:
        train(TrainConfig().override(sets), tmp_path / "r", verbose=False)
    assert str(e.value) == BN_MSG
    assert not (tmp_path / "r").exists()
    net = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="ws")
    create_method("ottt").check(net, TrainConfig())  # the ws twin is accepted
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_neurons_without_one_fixed_leak_refused():
    m = create_method("ottt")
    net = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="ws", neuron="plif")
    with pytest.raises(ValueError, match=r"^ottt: the presynaptic trace decays with the neurons' leak, so every "
                                         r"neuron must be LIF \(fixed tau\) or IF; PLIF at features.1 is not"):
        m.check(net, TrainConfig())
    assert "alif" in NEURONS.list()
    net = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="ws", neuron="alif")
    with pytest.raises(ValueError, match=r"; ALIF at features.1 is not — use neuron lif or if"):
        m.check(net, TrainConfig())
    net = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="ws")
    net.features[4] = LIF(tau=3.0)
    with pytest.raises(ValueError, match=r"^ottt: the presynaptic trace needs one leak for every neuron; the neuron "
                                         r"at features.4 decays by 0.666667 per step, the one at features.1 by 0.5"):
        m.check(net, TrainConfig())
    assert isinstance(PLIF(), LIF)  # PLIF is refused by exact type, not let through as a LIF


def test_bad_variant_is_one_error():
    with pytest.raises(ValueError, match=r"^method.kwargs.variant: 'A'; allowed: 'accumulate' \(OTTT_A"):
        create_method("ottt", {"variant": "A"})
    with pytest.raises(ValueError, match=r"method.kwargs.variant: 'O'; allowed"):
        TrainConfig().override(["method.name=ottt", "method.kwargs.variant=O"])
