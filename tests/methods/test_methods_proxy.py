"""``proxy``: card proxy-learning.md checks 1 (weight tying) and 2 (straight-through gradient identity), the
BatchNorm bookkeeping, checkpoints that load into the plain model, and the errors on models it cannot train."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.layers import BNTT
from spikeforge.methods import StepContext, create_method
from spikeforge.methods.proxy import ProxyNet
from spikeforge.models import create_model
from spikeforge.neurons import IF
from spikeforge.training import train
from spikeforge.training.checkpoint import load_checkpoint, load_model_state

TINY = ["data.train_subset=96", "data.test_subset=64", "data.batch_size=32", "model.T=3",
        "model.kwargs.channels=[4, 8]", "model.kwargs.hidden=16", "run.epochs=1", "run.progress=false",
        "run.plots=false", "run.device=cpu", "model.neuron=if", "method.name=proxy"]


def tiny_snn(neuron="if", dtype=torch.float32, T=4, **nkw):
    torch.manual_seed(0)
    return create_model("convnet", neuron=neuron, neuron_kwargs=nkw or None, T=T, input_size=16,
                        channels=(4, 8), hidden=16).to(dtype)


def ce(out, y):  # the loss on per-step outputs, in the outputs' dtype (compute_loss casts to float32)
    return F.cross_entropy(out.mean(0), y)


def ctx(epoch=1, fn=ce):
    return StepContext(epoch=epoch, step=0, global_step=0, loss_fn=fn, T=4)


def batch(dtype=torch.float32, B=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, 1, 16, 16, generator=g, dtype=dtype) * 2, torch.arange(B) % 10


def test_card_check_1_weights_share_storage_after_optimizer_steps():
    method = create_method("proxy")
    net = method.prepare(tiny_snn(v_threshold=0.5))
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = batch()
    for _ in range(3):
        opt.zero_grad()
        method.train_step(net, x, y, ctx())
        opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))  # the optimiser did move them
    net.double()  # a dtype change keeps the tie too
    ann = dict(net.ann.named_parameters())
    snn = dict(net.snn.named_parameters())
    assert ann.keys() == snn.keys() and len(snn) == 10
    for k in snn:
        assert ann[k].data_ptr() == snn[k].data_ptr(), k
        assert ann[k].dtype == torch.float64
    ann_b, snn_b = dict(net.ann.named_buffers()), dict(net.snn.named_buffers())
    assert ann_b.keys() == snn_b.keys() and all(ann_b[k].data_ptr() == snn_b[k].data_ptr() for k in snn_b)
    # the twin has ReLU where the SNN has IF neurons, and nothing else differs
    assert [type(m).__name__ for m in net.ann.modules() if isinstance(m, torch.nn.ReLU)] == ["ReLU"] * 3
    assert not any(isinstance(m, IF) for m in net.ann.modules())


class _Clip(torch.nn.Module):
    def __init__(self, v_th):
        super().__init__()
        self.v_th = v_th

    def forward(self, z):
        return torch.minimum(torch.relu(z) / self.v_th, torch.ones_like(z))


def _relu_ann(snn, activation="relu"):
    """An independent ANN: a deep copy of the SNN with every IF replaced by ReLU (or the clipped rate)."""
    ann = copy.deepcopy(snn)
    for path, m in list(ann.named_modules()):
        if isinstance(m, IF):
            ann.set_submodule(path, torch.nn.ReLU() if activation == "relu" else _Clip(m.v_threshold))
    return ann


@pytest.mark.parametrize("bn_eval, activation", [(False, "relu"), (True, "relu"), (False, "clip")])
def test_card_check_2_gradient_is_the_straight_through_ann(bn_eval, activation):
    """grads on the shared weights == those of the ReLU ANN whose output is forced to the SNN's: y = y_ann +
    (c - y_ann).detach(); and the loss is the SNN output's loss."""
    snn = tiny_snn(dtype=torch.float64, v_threshold=0.5)
    x, y = batch(torch.float64)
    ref_ann, ref_snn = _relu_ann(snn, activation), copy.deepcopy(snn)
    if bn_eval:  # frozen BatchNorm (running statistics from a few batches first)
        with torch.no_grad():
            for _ in range(3):
                ref_snn(x * torch.rand(()))
        snn.load_state_dict(ref_snn.state_dict())
        ref_ann.load_state_dict(ref_snn.state_dict())
        ref_snn.eval()  # the SNN runs on the running statistics, the ANN keeps normalising with batch statistics
    with torch.no_grad():
        c = ref_snn(x)
    y_ann = ref_ann(x)
    y_ref = y_ann + (c - y_ann).detach()
    loss_ref = ce(y_ref, y)
    loss_ref.backward()
    ref_grads = {k: p.grad for k, p in ref_ann.named_parameters()}

    method = create_method("proxy", {"bn_eval_from_epoch": 1 if bn_eval else 0, "ann_activation": activation})
    net = method.prepare(snn)
    res = method.train_step(net, x, y, ctx())
    assert torch.allclose(res.loss, loss_ref.detach(), rtol=1e-12, atol=0)
    assert torch.equal(res.logits, c)  # the loss sees the SNN's output, exactly
    grads = {k: p.grad for k, p in net.named_parameters()}
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        assert torch.allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12), k
    assert all(g.abs().sum() > 0 for g in grads.values())
    # not the SNN's own (surrogate) gradient: the proxy is what the weights learn from
    snn2 = copy.deepcopy(ref_snn)
    ce(snn2(x), y).backward()
    assert not all(torch.allclose(p.grad, grads[k], rtol=1e-3) for k, p in snn2.named_parameters())


def test_running_statistics_come_from_the_snn_pass_and_freeze_from_bn_eval_from_epoch():
    snn = tiny_snn(v_threshold=0.5)
    ref = copy.deepcopy(snn)
    x, y = batch()
    method = create_method("proxy")  # bn_eval_from_epoch=2
    net = method.prepare(snn)
    net.train()
    method.train_step(net, x, y, ctx(epoch=1))
    with torch.no_grad():
        ref.train()
        ref(x)  # one SNN forward in train mode: the running statistics a proxy step must leave
    for k, v in ref.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    frozen = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    method.train_step(net, x, y, ctx(epoch=2))
    for k, v in net.state_dict().items():
        if "running" in k or "num_batches" in k:
            assert torch.equal(v, frozen[k]), k


def test_state_dict_is_the_plain_models_and_eval_reads_the_snn():
    snn = tiny_snn(v_threshold=0.5)
    net = create_method("proxy").prepare(snn)
    assert list(net.state_dict()) == list(create_method("bptt").prepare(tiny_snn()).state_dict())
    assert [n for n, _ in net.named_modules()][1:] == [n for n, _ in snn.named_modules()][1:]
    net.eval()
    x, _ = batch()
    assert torch.equal(net(x), snn(x))
    assert not snn.training and not net.ann.training


def test_run_folder_loads_into_the_registered_model_for_eval_and_resume(tmp_path, capsys):
    res = train(TrainConfig().override(TINY + ["model.neuron_kwargs.v_threshold=0.5"]), tmp_path / "r",
                verbose=False)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test_acc"] == res["final"]["test_acc"]
    # resume path: the checkpoint loads into a freshly prepared ProxyNet
    fresh = create_method("proxy").prepare(create_model("convnet", neuron="if", T=3, input_size=8,
                                                        channels=(4, 8), hidden=16))
    assert isinstance(fresh, ProxyNet)
    load_model_state(fresh, load_checkpoint(tmp_path / "r" / "checkpoints" / "last")["model"], "last")


def test_a_non_if_neuron_is_one_error_naming_the_layer(tmp_path):
    with pytest.raises(ValueError) as e:
        create_method("proxy").check(tiny_snn("lif"), TrainConfig())
    assert str(e.value) == ("proxy: LIF at features.1 is not an IF neuron; the ReLU proxy stands for the IF firing "
                            "rate (set model.neuron=if)")
    with pytest.raises(ValueError, match=r"^proxy: LIF at features.1 is not an IF neuron"):
        train(TrainConfig().override(TINY + ["model.neuron=lif"]), tmp_path / "r", verbose=False)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_layer_the_ann_cannot_mirror_is_one_error_naming_it():
    snn = tiny_snn()
    snn.features[0] = BNTT(4, T=4)
    with pytest.raises(ValueError) as e:
        create_method("proxy").prepare(snn)
    assert str(e.value).startswith("proxy: BNTT at features.0 cannot be mirrored in the ANN branch")
    assert "\n" not in str(e.value)


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"^method.kwargs.bn_eval_from_epoch: got -1; allowed: an integer >= 0"):
        create_method("proxy", {"bn_eval_from_epoch": -1})
    with pytest.raises(ValueError, match=r"^method.kwargs.ann_activation: got 'tanh'; allowed: relu, clip"):
        create_method("proxy", {"ann_activation": "tanh"})
    with pytest.raises(ValueError, match=r"^method.kwargs.lr: unknown option of method 'proxy'"):
        create_method("proxy", {"lr": 1})
