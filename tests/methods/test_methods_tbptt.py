"""Truncated BPTT: window = T is bptt exactly; a shorter window gives the gradient of an explicit-state reference
(state carried, graph cut at window boundaries); the forward is unchanged; memory follows K, not T; bad windows
and models that cannot run a window at a time are one error each; DDP."""

import pytest
import torch
from torch import nn
from windowed_models import SavedBytes, TwoLayer, ctx, ddp_vs_one_process, grads

from spikeforge.config import TrainConfig
from spikeforge.functional.lif import LIFState, lif
from spikeforge.layers import BNTT, TimeFold
from spikeforge.methods import create_method
from spikeforge.models import MODELS, create_model
from spikeforge.models.base import SpikingModel
from spikeforge.neurons import LIF
from spikeforge.training import train

TINY = ["data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "model.kwargs.channels=[4, 8]",
        "run.epochs=1", "run.progress=false", "run.plots=false", "run.device=cpu"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["tet", "ce"])
def test_window_T_equals_bptt_exactly(dtype, loss):
    """The default conv net (BatchNorm included): gradients, loss, outputs and running statistics bit-identical."""
    torch.manual_seed(0)
    net = create_model("convnet", T=4, input_size=16, channels=(4, 8), hidden=8).to(dtype)
    x, y = torch.rand(6, 1, 16, 16, dtype=dtype), torch.randint(0, 10, (6,))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    c = ctx(loss, T=4, scale=0.75)
    ref = create_method("bptt").train_step(net, x, y, c)
    want, want_state = grads(net), {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(start)
    got = create_method("tbptt", {"window": 4}).train_step(net, x, y, c)
    assert got.backward_passes == 1
    assert torch.equal(got.loss, ref.loss) and torch.equal(got.logits, ref.logits)
    for k, g in grads(net).items():
        assert torch.equal(g, want[k]), k
    for k, v in net.state_dict().items():
        assert torch.equal(v, want_state[k]), k


@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("loss", ["tet64", "ce"])
def test_short_window_is_explicit_state_truncated_bptt(K, loss):
    """T=5: windows of K steps, each started from the previous window's detached state and backpropagated with
    K_w/T of the loss on its outputs, written out with the functional LIF (float64)."""
    T, B = 5, 4
    torch.manual_seed(2)
    net = TwoLayer(T=T).double()
    nn.init.normal_(net.fc1.layer.weight, 0.0, 1.2)
    x, y = torch.rand(T, B, 6, dtype=torch.float64), torch.randint(0, 3, (B,))
    c = ctx(loss, T=T, scale=1.0)
    res = create_method("tbptt", {"window": K}).train_step(net, x, y, c)
    got = grads(net)
    assert res.backward_passes == -(-T // K)

    state, outs = None, []
    for t0 in range(0, T, K):
        t1 = min(t0 + K, T)
        s, state = lif(net.fc1(x[t0:t1]), state, tau=2.0, decay_input=False, v_reset=None, detach_reset=True,
                       surrogate="sigmoid")
        state = LIFState(state.v.detach())
        out = net.fc2(s)
        (c.loss_fn(out, y) * (t1 - t0) / T).backward()
        outs.append(out.detach())
    want = grads(net)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14, msg=k)
    # the forward is bptt's: the state is carried, only the gradient is cut
    assert torch.equal(res.logits, torch.cat(outs)) and torch.equal(res.logits, net(x).detach())
    # and the cut matters: bptt's gradient differs
    create_method("bptt").train_step(net, x, y, c)
    if K < T:
        assert (grads(net)["fc1.layer.weight"] - got["fc1.layer.weight"]).abs().max() > 1e-6


def test_memory_follows_window_not_T():
    def peak(method, T, **kw):
        torch.manual_seed(0)
        net = create_model("convnet", T=T, input_size=16, channels=(4, 8), hidden=8, norm="ws")
        x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
        with SavedBytes() as sb:
            create_method(method, kw).train_step(net, x, y, ctx("tet", T=T))
        assert sb.alive == 0
        return sb.peak

    # (the first window starts from no state; later ones hold their initial membrane: compare T >= 2K)
    assert peak("tbptt", 8, window=2) == peak("tbptt", 4, window=2)
    assert peak("bptt", 8) > 3 * peak("tbptt", 8, window=2)


@pytest.mark.parametrize("window", [0, -1, 2.5, True, "2"])
def test_window_not_a_positive_integer_is_one_error(window):
    with pytest.raises(ValueError, match=rf"^method.kwargs.window: {window!r}; allowed: an integer in 1..model.T "):
        create_method("tbptt", {"window": window})
    if not isinstance(window, str):  # on the command line "2" is the integer 2
        with pytest.raises(ValueError, match=r"method.kwargs.window: .*allowed: an integer in 1..model.T"):
            TrainConfig().override(["method.name=tbptt", f"method.kwargs.window={str(window).lower()}"])


def test_window_larger_than_T_is_one_error_before_training(tmp_path):
    cfg = TrainConfig().override(TINY + ["model.T=3", "method.name=tbptt", "method.kwargs.window=4"])
    with pytest.raises(ValueError) as e:
        train(cfg, tmp_path / "r", verbose=False)
    assert str(e.value) == "method.kwargs.window: 4 is larger than model.T=3; allowed: an integer in 1..3"
    assert not (tmp_path / "r").exists()


class _StepLoop(SpikingModel):
    """Runs its neuron through .step in its own loop: its state cannot be carried by the method."""

    channels_last = False

    def __init__(self):
        super().__init__(num_classes=3, in_channels=4, T=4, static_ndim=2)
        self.fc = nn.Linear(4, 3)
        self.sn = LIF()

    def forward_seq(self, x_seq):
        state, out = None, []
        for x_t in x_seq:
            s, state = self.sn.step(self.fc(x_t), state)
            out.append(s)
        return torch.stack(out)


class _PerStepNorm(SpikingModel):
    channels_last = False

    def __init__(self):
        super().__init__(num_classes=3, in_channels=4, T=4, static_ndim=2)
        self.fc = TimeFold(nn.Linear(4, 3))
        self.norm = BNTT(3, T=4)
        self.sn = LIF()

    def forward_seq(self, x_seq):
        return self.sn(self.norm(self.fc(x_seq)))


def test_models_that_cannot_run_a_window_at_a_time_are_refused():
    m, cfg = create_method("tbptt", {"window": 2}), TrainConfig().override(["model.T=4"])
    with pytest.raises(ValueError, match=r"^tbptt runs the model a window of steps at a time through "
                                         r"SpikingModel.forward_seq; Sequential is not a SpikingModel"):
        m.check(nn.Sequential(nn.Linear(2, 2)), cfg)
    with pytest.raises(ValueError, match=r"^tbptt runs the model a window of steps at a time; BNTT at norm couples "
                                         r"time steps outside its neurons \(one set of BatchNorm statistics per time "
                                         r"step t\) — use method bptt$"):
        m.check(_PerStepNorm(), cfg)
    lmu = create_model("lmu", T=16, **MODELS.get("lmu").meta["tiny"])
    with pytest.raises(ValueError, match=r"; SpikingLMU \(the model\) couples time steps outside its neurons \(it "
                                         r"runs its own time loop"):
        m.check(lmu, cfg)
    net = _StepLoop()
    m.check(net, cfg)  # nothing in its structure says so: the first window does
    with pytest.raises(ValueError, match=r"^tbptt: the neuron at sn did not run through its forward \(the model runs "
                                         r"it in its own loop, e.g. through .step\)"):
        m.train_step(net, torch.rand(4, 2, 4), torch.tensor([0, 1]), ctx("tet", T=4))


def test_ddp_two_processes_match_one_process(tmp_path):
    """A backward pass per window under DDP: gradients averaged once, before the optimiser step."""
    (diff,) = ddp_vs_one_process(tmp_path, [("tbptt", {"window": 3})])
    assert diff < 1e-10
