"""``snn2ann``: card snn2ann-weight-sharing.md checks 1 (memory flat in T: no graph through time) and 2 (STSU:
ANN-branch output equals the SNN's), the spike mapping units against the IF neuron, the gradient against an
independent hand-written ANN branch, ATA, checkpoints, and the errors on models it cannot train."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.layers import BNTT, TimeFold, resu, straight_through, stsu
from spikeforge.methods import StepContext, create_method
from spikeforge.models import create_model
from spikeforge.neurons import IF
from spikeforge.training import train

SOFT = {"v_reset": None, "v_threshold": 0.5}
TINY = ["data.train_subset=96", "data.test_subset=64", "data.batch_size=32", "model.T=3",
        "model.kwargs.channels=[4, 8]", "model.kwargs.hidden=16", "run.epochs=1", "run.progress=false",
        "run.plots=false", "run.device=cpu", "model.neuron=if", "model.neuron_kwargs.v_reset=null",
        "method.name=snn2ann"]


def tiny_snn(T=4, dtype=torch.float32, neuron="if", hidden=16, **nkw):
    torch.manual_seed(0)
    return create_model("convnet", neuron=neuron, neuron_kwargs=nkw if nkw else dict(SOFT), T=T, input_size=16,
                        channels=(4, 8), hidden=hidden).to(dtype)


def ce(out, y):
    return F.cross_entropy(out.mean(0), y)


def ctx(T=4):
    return StepContext(epoch=1, step=0, global_step=0, loss_fn=ce, T=T)


def batch(dtype=torch.float32, B=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 1, 16, 16, generator=g, dtype=dtype) * 2, torch.arange(B) % 10


# ------------------------------------------------------------------------------- the units
def test_resu_is_the_soft_reset_if_rate_for_a_constant_drive():
    T, theta = 8, 0.7
    z = torch.linspace(-1.0, 3.0, 401, dtype=torch.float64) + 1e-4  # off the exact rate boundaries
    s = IF(v_threshold=theta, v_reset=None)(z.expand(T, 1, -1).contiguous())
    assert torch.equal(resu(z, T, theta), s.mean(0)[0])


def test_units_pass_the_clipped_relu_derivative_and_straight_through_is_exact():
    theta = 0.5
    z = torch.tensor([-0.2, 0.1, 0.3, 0.49, 0.7], dtype=torch.float64, requires_grad=True)
    inside = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / theta
    for a in (resu(z, 4, theta), stsu(z, torch.rand(5, dtype=torch.float64), theta)):
        g = torch.rand(5, dtype=torch.float64)
        (gz,) = torch.autograd.grad(a, z, g)
        assert torch.equal(gz, g * inside)
    r = torch.rand(5, dtype=torch.float64)
    assert torch.equal(stsu(z, r, theta), r)
    a = torch.rand(3, requires_grad=True)
    v = torch.tensor([0.1, 0.2, 0.3])
    out = straight_through(a, v)
    assert torch.equal(out, v)
    out.backward(torch.tensor([1.0, 2.0, 3.0]))
    assert a.grad.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"^r: the SNN rate has shape \(4,\), expected the pre-activation's \(5,\)"):
        stsu(z, torch.rand(4), theta)


# ------------------------------------------------------------------------------- card check 2
def _site_outputs(net):
    outs, handles = {}, []
    for path, unit in net.units.items():
        handles.append(unit.register_forward_hook(lambda m, i, o, p=path: outs.__setitem__(p, o.detach())))
    return outs, handles


@pytest.mark.parametrize("hidden", [16, 0])
def test_card_check_2_stsu_ann_branch_equals_the_snn_output(hidden):
    """STSU: every ANN-branch activation is the SNN layer's rate, bit for bit, and the branch's logits are the
    SNN's time-averaged logits (with hidden=0 the readout reads max-pooled spikes: the pooling must be the SNN's,
    not a pooling of rates); ReSU (the analytic unit) is not, so the check can fail."""
    x, y = batch(torch.float64)
    net = create_method("snn2ann").prepare(tiny_snn(dtype=torch.float64, hidden=hidden))
    outs, handles = _site_outputs(net)
    y_snn, y_ann, rates = net.branches(x)
    for h in handles:
        h.remove()
    assert set(outs) == set(rates) == {"features.1", "features.4", "head.1"} - ({"head.1"} if not hidden else set())
    for p in rates:
        assert torch.equal(outs[p][0], rates[p]), p
        assert 0 < float(rates[p].mean()) < 1, p  # the layer does spike, and not everywhere
    assert torch.allclose(y_ann[0], y_snn.mean(0), rtol=0, atol=1e-12)

    resu_net = create_method("snn2ann", {"unit": "resu"}).prepare(tiny_snn(dtype=torch.float64, hidden=hidden))
    outs, handles = _site_outputs(resu_net)
    y_snn2, y_ann2, rates2 = resu_net.branches(x)
    assert torch.equal(y_snn2, y_snn)
    assert not all(torch.equal(outs[p][0], rates2[p]) for p in rates2)
    assert not torch.allclose(y_ann2[0], y_snn2.mean(0), atol=1e-6)


def test_the_loss_sees_the_snn_output_and_grads_follow_a_hand_written_ann_branch():
    """A 2-hidden-layer MLP: the weight gradients equal those of the ANN branch written out by hand (input of
    each layer = the SNN's rate, clipped-ReLU derivative at the branch's own pre-activation)."""
    torch.manual_seed(0)
    theta, T = 0.5, 5
    snn = create_model("mlp", neuron="if", neuron_kwargs=dict(SOFT), T=T, input_size=4, hidden=(6, 5)).double()
    x = torch.rand(7, 1, 4, 4, dtype=torch.float64) * 2
    y = torch.arange(7) % 10
    with torch.no_grad():
        seq = x.flatten(1).expand(T, -1, -1)
        s1 = snn.features[1](snn.features[0](seq))
        s2 = snn.features[3](snn.features[2](s1))
        y_snn = snn.readout(s2)
    r1, r2 = s1.mean(0), s2.mean(0)
    W = {k: p.detach().clone().requires_grad_() for k, p in snn.named_parameters()}

    def clip_st(z, r):  # value r, gradient of clip(z / theta, 0, 1)
        c = (z / theta).clamp(0, 1)
        return c + (r - c).detach()

    z1 = F.linear(x.flatten(1), W["features.0.layer.weight"], W["features.0.layer.bias"])
    a1 = clip_st(z1, r1)
    z2 = F.linear(a1 + (r1 - a1).detach(), W["features.2.layer.weight"], W["features.2.layer.bias"])
    a2 = clip_st(z2, r2)
    out = F.linear(a2, W["readout.layer.weight"], W["readout.layer.bias"])
    loss_ref = F.cross_entropy(out + (y_snn.mean(0) - out).detach(), y)
    loss_ref.backward()

    method = create_method("snn2ann", {"ata": False})
    net = method.prepare(snn)
    res = method.train_step(net, x, y, ctx(T))
    assert torch.equal(res.logits, y_snn)
    assert torch.allclose(res.loss, loss_ref.detach(), rtol=1e-12, atol=0)
    for k, p in net.named_parameters():
        assert torch.allclose(p.grad, W[k].grad, rtol=1e-10, atol=1e-14), k
        assert p.grad.abs().sum() > 0, k


# ------------------------------------------------------------------------------- card check 1
def _saved_bytes(name, T, **kw):
    method = create_method(name, kw)
    net = method.prepare(tiny_snn(T=T))
    x, y = batch()
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        method.train_step(net, x, y, ctx(T))
    return total[0]


def test_card_check_1_no_graph_is_kept_through_time():
    """The bytes autograd saves for backward do not depend on T (BPTT's grow with it)."""
    for kw in ({}, {"ata": False, "unit": "resu"}):
        short, long = _saved_bytes("snn2ann", 2, **kw), _saved_bytes("snn2ann", 8, **kw)
        assert short == long > 0, kw
    assert _saved_bytes("bptt", 8) > 2 * _saved_bytes("bptt", 2)


# ------------------------------------------------------------------------------- ATA
def test_ata_rescaling_equals_the_threshold_change_and_reaches_the_percentile():
    x, y = batch(torch.float64)
    method = create_method("snn2ann", {"ata_momentum": 1.0, "ata_percentile": 99.0})
    net = method.prepare(tiny_snn(dtype=torch.float64, v_reset=None, v_threshold=0.8)).eval()  # drives scale exactly
    before = copy.deepcopy(net.snn)
    drives = {}
    hs = [net.snn.get_submodule(p).register_forward_hook(
        lambda m, i, o, p=p: drives.__setitem__(p, i[0].mean(0))) for p in net.units]
    with torch.no_grad():
        net(x)
    factors = method.adjust_thresholds_(net, drives)
    f = factors.tolist()
    assert all(0.5 <= k <= 2.0 for k in f) and 0.5 < f[0] < 2.0 and abs(f[0] - 1) > 0.05  # first: not clamped
    for (p, _), f in zip(net.units.items(), factors.tolist()):  # the same network, as a threshold change
        before.get_submodule(p).v_threshold *= f
    rates_a, rates_b = {}, {}
    for model, rates in ((net.snn, rates_a), (before, rates_b)):
        for p in net.units:
            model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p, r=rates: r.__setitem__(p, o))
    for h in hs:
        h.remove()
    drives.clear()
    hs = [net.snn.get_submodule("features.1").register_forward_hook(
        lambda m, i, o: drives.__setitem__("features.1", i[0].mean(0)))]
    with torch.no_grad():
        net(x)
        before(x)
    for p in net.units:
        assert torch.equal(rates_a[p], rates_b[p]), p
    z = drives["features.1"]
    q = torch.quantile(z[z > 0], 0.99)
    assert abs(float(q) - 0.8) < 1e-6  # momentum 1: the percentile drive is now the threshold (float32 quantile)


def test_ata_steps_in_training_and_stays_within_the_clamp():
    method = create_method("snn2ann")
    net = method.prepare(tiny_snn())
    gamma = net.features[0].layer[1].weight.detach().clone()
    x, y = batch()
    res = method.train_step(net, x, y, ctx())
    assert 0.5 <= res.aux["ata_factor_mean"] <= 2.0
    assert not torch.equal(net.features[0].layer[1].weight, gamma)


# ------------------------------------------------------------------------------- run folders and errors
def test_run_folder_evaluates_with_spikeforge_eval(tmp_path, capsys):
    res = train(TrainConfig().override(TINY), tmp_path / "r", verbose=False)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == res["final"]["test_acc"]


def test_models_it_cannot_train_are_one_error_naming_the_layer(tmp_path):
    m = create_method("snn2ann")
    with pytest.raises(ValueError) as e:
        m.check(tiny_snn(v_threshold=0.5), TrainConfig())  # IF with its default hard reset
    assert str(e.value) == ("snn2ann: IF at features.1 has a hard reset (v_reset=0.0); the spike mapping units model "
                            "the soft-reset IF (set model.neuron_kwargs.v_reset=null)")
    with pytest.raises(ValueError, match=r"^snn2ann: LIF at features.1 is not an IF neuron; the spike mapping"):
        m.check(tiny_snn(neuron="lif", tau=2.0), TrainConfig())
    with pytest.raises(ValueError, match=r"^snn2ann: IF at features.1 has a hard reset"):
        train(TrainConfig().override(TINY[:-2] + ["method.name=snn2ann"]), tmp_path / "r", verbose=False)
    assert not (tmp_path / "r").exists()

    snn = tiny_snn()
    snn.features[0] = BNTT(1, T=4)
    with pytest.raises(ValueError, match=r"^snn2ann: BNTT at features.0 cannot be mirrored in the ANN branch"):
        m.prepare(snn)

    snn = tiny_snn()
    snn.features[0] = TimeFold(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False))
    with pytest.raises(ValueError) as e:
        m.prepare(snn)
    assert str(e.value) == ("snn2ann: ATA cannot adjust the threshold of the IF at features.1: a BatchNorm2d sits "
                            "between it and the layer feeding it (set method.kwargs.ata=false)")
    create_method("snn2ann", {"ata": False}).prepare(snn)  # without ATA the same model is fine


@pytest.mark.parametrize("kw, msg", [
    ({"unit": "stbp"}, "method.kwargs.unit: got 'stbp'; allowed: stsu, resu"),
    ({"ata_percentile": 0}, r"method.kwargs.ata_percentile: got 0; allowed: a number in \(0, 100\]"),
    ({"ata_momentum": 1.5}, r"method.kwargs.ata_momentum: got 1.5; allowed: a number in \(0, 1\]"),
    ({"ata": "yes"}, "method.kwargs.ata: got 'yes'; allowed: true or false"),
])
def test_config_is_validated(kw, msg):
    with pytest.raises(ValueError, match="^" + msg):
        create_method("snn2ann", kw)
