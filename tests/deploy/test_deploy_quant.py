"""deploy.quant and deploy.noise: quantiser grids, straight-through gradients, quantize_/export_int round trip,
weight noise scale and per-step draws, neuron mismatch against per-neuron reference neurons, bad input."""

import pytest
import torch
from torch import nn

from spikeforge.deploy import (QuantConfig, clear_noise_, dequantize_, dequantize_int, export_int, fake_quant,
                               neuron_mismatch_, quantize_, weight_noise_)
from spikeforge.deploy.quant import quant_params, raw_weight
from spikeforge.functional.lif import lif
from spikeforge.layers import TimeFold
from spikeforge.layers.ws import ScaledWSConv2d
from spikeforge.models import create_model
from spikeforge.neurons import LIF


def _w(seed=0, shape=(6, 3, 3, 3)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uniform_symmetric_grid_and_error(bits):
    w = _w()
    cfg = QuantConfig(bits=bits)
    q = fake_quant(w, cfg)
    scale, _ = quant_params(w, cfg)
    qmax = 2 ** (bits - 1) - 1
    codes = q / scale
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= qmax + 1e-4
    assert ((q - w).abs() <= scale / 2 + 1e-6).all()                  # round to nearest
    assert torch.equal(fake_quant(q, cfg), q)                        # idempotent
    for c in range(w.shape[0]):                                       # per channel: the max is on the grid
        assert torch.isclose(q[c].abs().max(), w[c].abs().max())


def test_asymmetric_uses_all_levels_in_range():
    w = _w() + 0.7
    cfg = QuantConfig(bits=3, symmetric=False, per_channel=False)
    q = fake_quant(w, cfg)
    scale, zp = quant_params(w, cfg)
    assert len(torch.unique(q)) <= 8 and len(torch.unique(q)) >= 6
    assert ((q - w).abs() <= scale / 2 + 1e-5).all() and (q == 0).any()   # zero is on the grid


def test_binary_ternary_log2_levels():
    w = _w()
    b = fake_quant(w, QuantConfig(bits=1))
    for c in range(w.shape[0]):
        alpha = w[c].abs().mean()
        assert torch.allclose(b[c].abs(), alpha.expand_as(b[c])) and torch.equal(b[c].sign(), w[c].sign())
    t = fake_quant(w, QuantConfig(bits=2, scheme="ternary"))
    assert all(len(torch.unique(t[c])) <= 3 for c in range(w.shape[0]))
    lg = fake_quant(w, QuantConfig(bits=5, scheme="log2"))
    s = w.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)
    r = (lg.abs() / s)[lg != 0]
    e = -torch.log2(r)
    assert torch.allclose(e, e.round(), atol=1e-5) and e.max() <= 14 and e.min() >= 0
    # log-domain rounding: ratio to the true weight within sqrt(2)
    nz = lg != 0
    ratio = (lg[nz] / w[nz])
    assert (ratio > 0).all() and (ratio <= 2 ** 0.5 + 1e-5).all() and (ratio >= 2 ** -0.5 - 1e-5).all()


@pytest.mark.parametrize("cfg", [QuantConfig(bits=4), QuantConfig(bits=1), QuantConfig(bits=5, scheme="log2"),
                                 QuantConfig(bits=2, scheme="ternary")])
def test_straight_through_gradient(cfg):
    w = _w(1).double().requires_grad_()
    g = torch.randn_like(w)
    (fake_quant(w, cfg) * g).sum().backward()
    assert torch.equal(w.grad, g)


@pytest.mark.parametrize("cfg", [QuantConfig(bits=4), QuantConfig(bits=8, symmetric=False),
                                 QuantConfig(bits=1, per_channel=False), QuantConfig(bits=6, scheme="log2"),
                                 QuantConfig(bits=2, scheme="ternary", mode="ptq")])
def test_quantize_export_round_trip_on_zoo_model(cfg):
    torch.manual_seed(0)
    net = create_model("convnet", T=2, input_size=16, channels=(4, 8)).eval()
    x = torch.rand(2, 1, 16, 16)
    ref = {n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    quantize_(net, cfg)
    ints = export_int(net)
    assert set(ints) == set(ref)
    for n, m in net.named_modules():
        if n in ints:
            q, s, z = ints[n]
            assert not q.is_floating_point()
            assert torch.equal(dequantize_int(q, s, z, "log2" if cfg.kind == "log2" else "uniform"), m.weight)
            assert torch.equal(m.weight, fake_quant(ref[n], cfg))
    y_q = net(x)
    dequantize_(net)                                    # keeps the quantised values as plain weights
    assert torch.allclose(net(x), y_q) and not hasattr(net.features[0].layer[0], "parametrizations")


def test_qat_trains_stored_weights_ptq_keeps_scales():
    lin = nn.Linear(8, 4)
    quantize_(lin, QuantConfig(bits=4))
    lin(torch.randn(3, 8)).sum().backward()
    assert raw_weight(lin).grad is not None and raw_weight(lin).grad.abs().sum() > 0
    ptq = nn.Linear(8, 4)
    quantize_(ptq, QuantConfig(bits=4, mode="ptq"))
    s0 = export_int(ptq)[""][1].clone()
    with torch.no_grad():
        raw_weight(ptq).mul_(3.0)
    assert torch.equal(export_int(ptq)[""][1], s0)     # calibrated once
    dequantize_(ptq, keep_quantized=False)
    assert not hasattr(ptq, "parametrizations")


def test_quantize_bad_layers_and_nothing_to_quantise():
    net = nn.Sequential(TimeFold(ScaledWSConv2d(1, 4, 3)), nn.Flatten())
    with pytest.raises(ValueError, match=r"layer '0.layer' \(ScaledWSConv2d\).*cannot be handled.*allowed types"):
        quantize_(net, QuantConfig(bits=4))
    with pytest.raises(ValueError, match=r"quantize_: model Sequential has no layer.*allowed"):
        quantize_(nn.Sequential(nn.ReLU()), QuantConfig())
    lin = nn.Linear(2, 2)
    quantize_(lin, QuantConfig())
    with pytest.raises(ValueError, match="already quantised"):
        quantize_(lin, QuantConfig())


@pytest.mark.parametrize("kw,msg", [
    ({"bits": 0}, r"quant.bits: expected an integer in 1..8, got 0"),
    ({"bits": 9}, r"quant.bits: expected an integer in 1..8, got 9"),
    ({"bits": 4.0}, r"quant.bits: expected an integer in 1..8, got 4.0"),
    ({"scheme": "pow2"}, r"quant.scheme: unknown value 'pow2'; allowed: uniform, log2, ternary, binary"),
    ({"mode": "int"}, r"quant.mode: unknown value 'int'; allowed: qat"),
    ({"bits": 4, "scheme": "binary"}, r"quant.bits: 4 with scheme 'binary'; allowed: 1"),
    ({"bits": 1, "scheme": "log2"}, r"quant.bits: 1 with scheme 'log2'; allowed: 2..8"),
    ({"bits": 5, "scheme": "log2", "symmetric": False}, r"quant.symmetric: False needs scheme 'uniform'"),
])
def test_quant_config_bad_input(kw, msg):
    with pytest.raises(ValueError, match=msg):
        QuantConfig(**kw)


def test_weight_noise_fixed_scale_and_per_step_draws():
    torch.manual_seed(0)
    lin = nn.Linear(64, 64)
    w0 = lin.weight.detach().clone()
    weight_noise_(lin, 0.1, generator=torch.Generator().manual_seed(1))
    d = lin.weight - w0
    assert torch.equal(lin.weight, w0 + d)                           # fixed: same draw every use
    rel = (d.pow(2).mean().sqrt() / w0.pow(2).mean().sqrt()).detach()
    assert 0.09 < float(rel) < 0.11
    # on top of quantisation: RMS of the quantised weight, noise after the quantiser
    clear_noise_(lin)
    quantize_(lin, QuantConfig(bits=2))
    wq = lin.weight.detach().clone()
    weight_noise_(lin, 0.2, generator=torch.Generator().manual_seed(1))
    rel = ((lin.weight - wq).pow(2).mean().sqrt() / wq.pow(2).mean().sqrt()).detach()
    assert 0.18 < float(rel) < 0.22
    # per step: every time step of a repeated (direct-coded) input sees its own weights
    tf = TimeFold(nn.Linear(5, 3))
    x = torch.rand(1, 2, 5).expand(4, 2, 5)
    clean = tf(x)
    weight_noise_(tf, 0.0, per_step=True)
    assert torch.allclose(tf(x), clean)
    weight_noise_(tf, 0.3, per_step=True, generator=torch.Generator().manual_seed(0))
    y = tf(x)
    assert all(not torch.allclose(y[0], y[t]) for t in range(1, 4))
    clear_noise_(tf)
    assert torch.equal(tf(x), clean) and not tf._forward_hooks


def test_noise_bad_input():
    with pytest.raises(ValueError, match=r"sigma_rel: expected a finite number >= 0.*got -0.1"):
        weight_noise_(nn.Linear(2, 2), -0.1)
    with pytest.raises(ValueError, match=r"sigma_theta: expected a finite number >= 0.*got -1"):
        neuron_mismatch_(nn.Sequential(LIF()), sigma_theta=-1)


@pytest.mark.parametrize("v_reset", [0.0, None])
def test_neuron_mismatch_equals_per_neuron_reference(v_reset):
    neuron = LIF(tau=2.0, v_threshold=1.0, v_reset=v_reset, backend="reference")
    x = torch.rand(12, 3, 5) * 1.5
    net = nn.Sequential(neuron)
    neuron_mismatch_(net, sigma_tau=0.3, sigma_theta=0.2, seed=3)
    s = net(x)
    tau_i = 2.0 / neuron.mismatch_k
    th_i = neuron.mismatch_theta
    assert (tau_i - 2.0).abs().max() > 0.05 and (th_i - 1.0).abs().max() > 0.05
    for i in range(5):
        s_i, _ = lif(x[..., i:i + 1], tau=float(tau_i[i]), v_threshold=float(th_i[i]), v_reset=v_reset,
                     backend="reference")
        assert torch.equal(s[..., i:i + 1], s_i)
    # .step() sees the same neurons
    st, out = None, []
    for t in range(12):
        o, st = neuron.step(x[t], st)
        out.append(o)
    assert torch.equal(torch.stack(out), s)
    with pytest.raises(ValueError, match="per-sample shape changed"):
        net(torch.rand(2, 3, 4))
