"""NIF spike-time models and the ``nif`` method (temporal-coded-nif-snn.md): the loss, QAT through the deploy
module's parametrisation, weight noise, and the bad-input errors.  The closed form itself is tested in
tests/neurons/test_neurons_nif.py."""

import pytest
import torch

from spikeforge.methods import StepContext, create_method
from spikeforge.methods.nif import nif_layers, nif_weight_noise_, quantize_nif_
from spikeforge.models import create_model


def _net(**kw):
    torch.manual_seed(0)
    return create_model("nif_mlp", input_size=4, hidden=(6,), num_classes=3, **kw)


def test_nif_step_is_the_cards_loss_with_weight_sum_penalty():
    net = _net()
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        net.layers[0].weight[0] = -0.1  # neuron 0 cannot fire: the penalty pushes its weight sum up
    res = create_method("nif").train_step(net, x, y, StepContext(epoch=1, step=0, global_step=0, loss_fn=None))
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    z = net.spike_times(torch.exp(3.0 * (1 - x)))
    loss = torch.nn.functional.cross_entropy(-z, y)
    for m in nif_layers(net).values():
        loss = loss + 100.0 * torch.relu(1.0 - m.weight.sum(1)).mean() + 0.01 * (m.weight ** 2).mean()
    loss.backward()
    assert torch.allclose(res.loss, loss.detach())
    assert all(torch.allclose(a, p.grad) for a, p in zip(got, net.parameters()))
    assert got[0][0].sum() < 0  # descent raises neuron 0's weight sum
    assert res.logits.shape == (1, 5, 3) and torch.equal(net(x).argmax(-1)[0], (-z).argmax(-1))


def test_quantised_and_noisy_nif_weights_go_through_the_deploy_parametrisation():
    from spikeforge.deploy import QuantConfig, clear_noise_, dequantize_

    net = _net()
    w0 = net.layers[0].weight.detach().clone()
    quantize_nif_(net, QuantConfig(bits=2))
    levels = net.layers[0].weight.detach()
    assert all(len(torch.unique(row)) <= 3 for row in levels)  # 2-bit symmetric: -s, 0, s per neuron
    dequantize_(net, keep_quantized=False)
    assert torch.equal(net.layers[0].weight, w0)
    nif_weight_noise_(net, 0.1, generator=torch.Generator().manual_seed(0))
    rel = ((net.layers[0].weight - w0).pow(2).mean().sqrt() / w0.pow(2).mean().sqrt()).item()
    assert 0.05 < rel < 0.2
    clear_noise_(net)
    assert torch.equal(net.layers[0].weight, w0)
    m = create_method("nif", {"quant_bits": 4})
    qnet = m.prepare(_net())
    assert all(len(torch.unique(row)) <= 15 for row in qnet.layers[0].weight.detach())


def test_relu_mode_is_the_same_shape_ann():
    snn, ann = _net(), _net(mode="relu")
    shapes = [tuple(m.weight.shape) for m in nif_layers(snn).values()]
    assert shapes == [tuple(m.weight.shape) for m in ann.modules() if isinstance(m, torch.nn.Linear)]
    assert ann(torch.rand(2, 1, 4, 4)).shape == (1, 2, 3)
    conv, conv_ann = create_model("nif_convnet", input_size=8, channels=(4,)), \
        create_model("nif_convnet", input_size=8, channels=(4,), mode="relu")
    assert [tuple(m.weight.shape) for m in nif_layers(conv).values()] == \
        [tuple(m.weight.shape) for m in conv_ann.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


# ------------------------------------------------------------------------------------------- bad input
def test_nif_model_refuses_a_time_grid_sequence_and_the_reverse(tmp_path):
    from spikeforge.config import TrainConfig
    from spikeforge.training import train

    net = _net()
    with pytest.raises(ValueError, match=r"x: nif_mlp takes a static batch \[B, C, H, W\].*\[T, B, \.\.\.\] sequence"):
        net(torch.rand(4, 2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"z_in: nif_mlp.spike_times takes input spike times z = exp\(t\) with 4 "
                                         r"dims.*a \[T, B, \.\.\.\] spike train is not spike times"):
        net.spike_times(torch.ones(4, 2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"z_in: every z = exp\(t\) must be finite and >= 1"):
        net.spike_times(torch.zeros(2, 1, 4, 4))  # spikes (0/1) of one time step are not spike times
    base = ["data.train_subset=32", "data.test_subset=32", "run.epochs=1", "run.progress=false", "run.plots=false",
            "method.name=nif"]
    with pytest.raises(ValueError, match=r"model.name: method nif trains NIF spike-time models.*got 'convnet'"):
        train(TrainConfig().override(base + ["model.kwargs.channels=[4]"]), tmp_path / "a", verbose=False)
    with pytest.raises(ValueError, match=r"model.kwargs.mode: 'relu' is the ReLU ANN"):
        train(TrainConfig().override(base + ["model.name=nif_mlp", "model.kwargs={hidden: [4], mode: relu}",
                                             "data.normalize=false"]), tmp_path / "b", verbose=False)
    with pytest.raises(ValueError, match=r"method.kwargs.quant_bits: got 1; allowed: 0 \(float weights\) or"):
        create_method("nif", {"quant_bits": 1})


# ------------------------------------------------------------------------------------------- fused == reference
def test_numba_nif_kernels_equal_the_reference_closed_form_and_its_gradients():
    from spikeforge.functional.nif import nif_conv2d, nif_spike_time
    from spikeforge.kernels.nif_numba import nif_conv2d_numba, nif_spike_time_numba

    g = torch.Generator().manual_seed(0)
    z = torch.exp(3 * torch.rand(6, 9, generator=g, dtype=torch.float64))
    w = torch.rand(5, 9, generator=g, dtype=torch.float64) * 0.5 - 0.05
    w[0] = 0.05  # weight sum < theta: silent
    bw = torch.rand(5, generator=g, dtype=torch.float64) * 0.3
    zc = torch.exp(3 * torch.rand(2, 2, 6, 6, generator=g, dtype=torch.float64))
    wc = torch.rand(3, 2, 3, 3, generator=g, dtype=torch.float64) * 0.3
    bc = torch.zeros(3, dtype=torch.float64)
    cases = [((z, w, bw), nif_spike_time, nif_spike_time_numba, {}),
             ((zc, wc, bc), nif_conv2d, nif_conv2d_numba, {"stride": 2, "padding": 1})]
    for args, ref_fn, fused_fn, kw in cases:
        outs = []
        for fn in (ref_fn, fused_fn):
            a = [t.clone().requires_grad_(True) for t in args]
            out = fn(*a, **kw)
            r = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape)
            outs.append((out, *torch.autograd.grad((out * r).sum(), a)))
        for x_ref, x_got in zip(outs[0], outs[1]):
            assert torch.allclose(x_ref, x_got, rtol=1e-9, atol=1e-9)
    assert bool((nif_spike_time_numba(z, w, bw)[:, 0] == 1e5).all())  # the silent neuron
