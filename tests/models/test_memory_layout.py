"""Channels-last execution and run-once of repeated steps: same numbers as the plain NCHW, folded run."""

import pytest
import torch
from torch import nn

from spikeforge.layers import TdBN, TimeFold, repeats_one_step
from spikeforge.models import create_model
from spikeforge.models.base import channels_last_steps
from spikeforge.neurons import NEURONS


def _cl_seq(x):
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def _is_cl_steps(x):
    return x[0].is_contiguous(memory_format=torch.channels_last) and not x[0].is_contiguous()


# per-channel parameters too (GLIF, LIFB, Hoyer with num_channels): the memory-order path must permute them
NEURON_KW = {"glif": {"num_channels": 6, "T": 4}, "lifb": {"num_channels": 6}, "hoyer": {"num_channels": 6},
             "stl": {"shape": (6, 5, 5)}}


def _has_backends(name: str) -> bool:
    """Whether the neuron takes ``backend=`` (a neuron with one execution runs once, not per backend)."""
    return "backend" in NEURONS.create(name, **NEURON_KW.get(name, {})).__init__.__code__.co_varnames


LAYOUT_CASES = [(b, n) for n in NEURONS.list() for b in ("cpu", "reference") if b == "cpu" or _has_backends(n)]


@pytest.mark.parametrize("backend, name", LAYOUT_CASES, ids=[f"{b}-{n}" for b, n in LAYOUT_CASES])
def test_neurons_give_identical_results_and_keep_a_channels_last_layout(name, backend):
    torch.manual_seed(0)
    kw = dict(NEURON_KW.get(name, {}))
    m = NEURONS.create(name, **kw)
    if _has_backends(name):
        m = NEURONS.create(name, backend=backend, **kw)
    with torch.no_grad():
        for p in m.parameters():  # make per-channel parameters differ, so a wrong permutation shows
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(4, 3, 6, 5, 5) * 0.8 + 0.4
    outs = []
    for xx in (x.clone(), _cl_seq(x)):
        xx.requires_grad_()
        y = m(xx)
        y = y[0] if isinstance(y, tuple) else y
        torch.manual_seed(1)
        (y * torch.randn(x.shape)).sum().backward()
        grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
        m.zero_grad()
        outs.append((y.detach(), xx.grad, grads, y))
    (y0, g0, p0, _), (y1, g1, p1, ycl) = outs
    assert torch.equal(y0, y1)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
    for a, b in zip(p0, p1):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    if backend == "cpu":  # the reference loop (torch.stack) is about values only
        assert _is_cl_steps(ycl), f"{name}: output lost the channels-last layout"


def test_channels_last_steps_keeps_values_and_a_repeated_step():
    x = torch.randn(3, 2, 4, 5, 5)
    y = channels_last_steps(x)
    assert torch.equal(y, x) and _is_cl_steps(y)
    rep = torch.randn(2, 4, 5, 5).unsqueeze(0).expand(3, 2, 4, 5, 5)
    z = channels_last_steps(rep)
    assert torch.equal(z, rep) and repeats_one_step(z) and _is_cl_steps(z)


class _Count(nn.Module):
    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return x


def test_timefold_runs_a_repeated_step_once_with_the_folded_values_and_gradients():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 4, 3, padding=1).double(), nn.BatchNorm2d(4).double()
    tf = TimeFold(conv, bn)
    assert tf.time_invariant
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    outs = []
    state = {k: v.clone() for k, v in tf.state_dict().items()}
    for repeated in (True, False):
        tf.load_state_dict(state)
        xx = x.clone().requires_grad_()
        seq = xx.unsqueeze(0).expand(4, *x.shape) if repeated else xx.unsqueeze(0).repeat(4, 1, 1, 1, 1)
        assert repeats_one_step(seq) == repeated
        y = tf(seq)
        assert y.shape == (4, 3, 4, 5, 5)
        torch.manual_seed(1)
        (y * torch.randn(y.shape, dtype=y.dtype)).sum().backward()
        outs.append((y.detach(), xx.grad, conv.weight.grad.clone(), bn.running_mean.clone()))
        conv.zero_grad()
        bn.zero_grad()
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_timefold_runs_once_only_for_time_invariant_layers():
    counter = _Count()
    seq = torch.randn(3, 4, 5, 5).unsqueeze(0).expand(4, 3, 4, 5, 5)
    TimeFold(counter)(seq)
    assert counter.batches == [12]  # unknown module: folded, every step computed
    drop = TimeFold(nn.Dropout(0.5))
    assert not drop.time_invariant  # a fresh mask per step must stay a fresh mask per step
    y = drop.train()(torch.ones(2, 3).unsqueeze(0).expand(4, 2, 3))
    assert not repeats_one_step(y)


def test_tdbn_normalises_a_repeated_step_once_with_the_folded_result():
    bn1, bn2 = TdBN(4, alpha=0.7), TdBN(4, alpha=0.7)
    x = torch.randn(3, 4, 5, 5)
    y1 = bn1(x.unsqueeze(0).expand(4, *x.shape))
    y2 = bn2(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn1.running_mean, bn2.running_mean)


@pytest.mark.parametrize("name,kw", [("convnet", {"input_size": 16}), ("sew_resnet18", {"width": 4, "stem": "cifar"}),
                                     ("ms_resnet18", {"width": 4, "stem": "cifar"}), ("resnet19", {"width": 4})])
def test_channels_last_models_match_nchw_models(name, kw):
    c = 1 if name == "convnet" else 3
    torch.manual_seed(0)
    a = create_model(name, num_classes=5, in_channels=c, T=3, channels_last=True, **kw)
    b = create_model(name, num_classes=5, in_channels=c, T=3, channels_last=False, **kw)
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, c, 16, 16)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}.{n}: {m}")


def test_create_model_rejects_a_bad_channels_last_value():
    with pytest.raises(ValueError, match="channels_last"):
        create_model("convnet", channels_last="yes")


def test_image_models_default_to_channels_last_and_mlp_does_not():
    assert create_model("convnet").channels_last
    assert not create_model("mlp").channels_last


@pytest.mark.parametrize("shape", [(4, 3, 1, 12, 12), (4, 3, 5, 1, 1)])
@pytest.mark.parametrize("repeated", [False, True])
def test_one_channel_input_gets_channels_last_strides_so_the_first_conv_keeps_that_order(shape, repeated):
    x = torch.rand(shape)
    if repeated:
        x = x[0].unsqueeze(0).expand(shape)
    y = channels_last_steps(x)
    assert torch.equal(y, x)
    assert y[0].stride()[1] == 1  # canonical channels-last strides, same memory
    out = nn.Conv2d(shape[2], 4, 1)(y[0])
    assert out.is_contiguous(memory_format=torch.channels_last) and out.stride()[1] == 1


@pytest.mark.parametrize("layer", ["timefold", "tdbn"])
def test_a_repeated_step_gets_its_gradient_in_its_own_memory_order(layer, monkeypatch):
    from spikeforge.layers import norm, timefold

    seen = []  # the gradient that reaches the layer's output (the step before it is repeated)
    torch.manual_seed(0)
    base = _cl_seq(torch.rand(1, 4, 6, 8, 8, dtype=torch.float64)).requires_grad_()
    x = base.expand(3, 4, 6, 8, 8)
    m = (TimeFold(nn.BatchNorm2d(6)) if layer == "timefold" else TdBN(6)).double()
    real = timefold.repeat_step
    monkeypatch.setattr(timefold if layer == "timefold" else norm, "repeat_step",
                        lambda y, T: (y.register_hook(seen.append), real(y, T))[1])
    y = m(x)
    g = _cl_seq(torch.rand(3, 4, 6, 8, 8, dtype=torch.float64))
    y.backward(g)
    assert len(seen) == 1
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert torch.equal(seen[0], g.sum(0))


def test_repeat_step_gradcheck():
    from spikeforge.layers.timefold import repeat_step

    s = _cl_seq(torch.rand(1, 2, 3, 4, 4, dtype=torch.float64))[0].requires_grad_()
    assert torch.autograd.gradcheck(lambda t: repeat_step(t * 1.0, 3), (s,))
