"""Card checks of the conversion recipes (tcl, spicalib/lipool, qcfs, offset) and every registered recipe end to end."""

import math

import pytest
import torch
import torch.nn.functional as F

from spikeforge.convert import RECIPES, ConversionConfig, ThresholdIF, convert, convert_with
from spikeforge.convert.lipool import LIPool2d
from spikeforge.convert.qcfs import offset_calibrate_
from spikeforge.convert.spicalib import spicalib
from spikeforge.models import SpikingModel, create_model
from spikeforge.neurons import QCFS
from spikeforge.neurons.activations import PACTClipFn

REF = {"backend": "reference"}


def test_tcl_check1_if_rate_tends_to_the_normalised_clip():
    """Card tcl check 1: threshold-1 IF on x/lambda for T = 10^4 steps: rate -> clip(x, 0, lambda)/lambda."""
    lam, T = 2.5, 10_000
    x = torch.linspace(-1.0, 3 * lam, 97, dtype=torch.float64)
    site = ThresholdIF(torch.tensor(lam), backend="reference").double()
    rate = site(x.reshape(1, 1, -1).expand(T, 1, -1)).mean(0).flatten() / lam
    err = (rate - x.clamp(0, lam) / lam).abs().max()
    assert err <= 1.0 / T + 1e-12, err


def test_tcl_check2_pact_gradient_identity():
    """Card tcl check 2: dL/dlambda = sum of the upstream gradient over clipped positions; dL/dx passes inside."""
    torch.manual_seed(0)
    x = torch.randn(40, dtype=torch.float64) * 2
    x = x[(x.abs() > 1e-3) & ((x - 1.3).abs() > 1e-3)].requires_grad_()  # away from the kinks
    lam = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(PACTClipFn.apply, (x, lam))
    g = torch.randn_like(x)
    PACTClipFn.apply(x, lam).backward(g)
    assert torch.allclose(lam.grad, g[x.detach() >= 1.3].sum())
    assert torch.equal(x.grad, g * ((x.detach() > 0) & (x.detach() < 1.3)))


def test_tcl_thresholds_are_the_trained_bounds():
    ann = create_model("mlp", neuron="clip", neuron_kwargs={"lam": 1.5}, T=1, input_size=4, hidden=(8,))
    with torch.no_grad():
        ann.features[1].lam.fill_(0.75)
    snn = convert_with("tcl", ann, T=4, **REF)
    assert float(snn.features[1].theta) == 0.75
    with pytest.raises(ValueError, match=r"^ann: tcl reads each activation's trained bound, but features\.1 is ReLU"):
        convert_with("tcl", create_model("mlp", neuron="relu", T=1, input_size=4, hidden=(8,)))


def test_lipool_check1_cumulative_output_is_the_max_of_cumulative_input():
    """Card spicalib check 1: cumsum(out) == maxpool(cumsum(x)) exactly at every t (and spikes stay in {0, 1})."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(30, 2, 3, 6, 6, generator=g) < 0.4).float()
    out = LIPool2d(2)(x)
    want = F.max_pool2d(x.cumsum(0).flatten(0, 1), 2).reshape(30, 2, 3, 3, 3)
    assert torch.equal(out.cumsum(0), want)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    counts = torch.randint(0, 4, (12, 1, 2, 4, 4), generator=g).float()  # integer (burst) inputs too
    assert torch.equal(LIPool2d(2)(counts).cumsum(0), F.max_pool2d(counts.cumsum(0).flatten(0, 1), 2).reshape(
        12, 1, 2, 2, 2))


def _if_counts(drive, allowance=None):
    s = ThresholdIF(torch.tensor(1.0), backend="reference")(drive) if allowance is None else None
    if allowance is not None:
        raw = ThresholdIF(torch.tensor(1.0), backend="reference").neuron(drive)
        s = spicalib(raw, allowance)
    return s.sum(0)


def test_spicalib_check2_lowers_the_rate_error_on_a_falling_current():
    """Card spicalib check 2, with a current that falls below zero: c for k steps, then -d; the ANN target is
    relu(mean drive).  Without SpiCalib the early spikes stay; with it (A = 0..2) they are retracted."""
    T, k = 40, 10
    c = torch.tensor([0.6, 0.9, 0.35, 0.5])
    drive = torch.cat([c.expand(k, 4), torch.full((T - k, 4), -0.3)]).unsqueeze(1)  # [T, 1, 4]
    target = drive.mean(0).clamp_min(0)
    base = (_if_counts(drive) / T - target).abs().mean()
    assert base > 0.05
    for A in (0, 1, 2):
        err = (_if_counts(drive, A) / T - target).abs().mean()
        assert err < base, (A, float(err), float(base))


def test_spicalib_never_retracts_below_zero_and_leaves_silent_neurons():
    s = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=torch.float32).reshape(10, 1)
    out = spicalib(torch.cat([s, torch.zeros_like(s)], 1), allowance=0)
    assert out.cumsum(0).min() >= 0 and torch.equal(out[:, 1], torch.zeros(10))
    assert out[:, 0].tolist() == [0, 0, 1, 0, 0, -1, 0, 0, 0, 0]


def test_qcfs_site_at_T_equal_L_reproduces_the_quantised_activation_exactly():
    """QCFS with theta/2 start: for a constant drive, L steps of the IF site give exactly the QCFS output."""
    L, lam = 8, 1.7
    x = torch.linspace(-0.5, 2.5, 301, dtype=torch.float64)
    q = QCFS(lam=lam, L=L).double()(x)
    site = ThresholdIF(torch.tensor(lam), v_init=0.5, backend="reference").double()
    y = site(x.reshape(1, 1, -1).expand(L, 1, -1)).sum(0).flatten() / L
    assert torch.allclose(y, q, atol=1e-12)


def test_offset_calibration_shrinks_the_offset_spikes():
    torch.manual_seed(0)
    ann = create_model("mlp", neuron="relu", T=1, input_size=6, hidden=(32, 16)).eval()
    x = torch.rand(64, 1, 6, 6)
    snn = convert(ann, ConversionConfig(T=4, norm="percentile", percentile=99.0, **REF), x)
    before = offset_calibrate_(snn, ann, x, T=4)
    after = offset_calibrate_(snn, ann, x, T=4)
    assert sum(map(abs, after.values())) < sum(map(abs, before.values()))


def _ann_for(name):
    meta = RECIPES.get(name).meta
    torch.manual_seed(0)
    if meta.get("takes") == "noise_single_step":
        from spikeforge.methods import create_method

        return create_method("noise_single_step").prepare(create_model(
            "convnet", T=1, input_size=8, channels=(4, 8), neuron="if",
            neuron_kwargs={"v_reset": None, "backend": "reference"}))
    return create_model("convnet", neuron=meta.get("neuron", "relu"), T=1, input_size=8, channels=(4, 8)).eval()


@pytest.mark.parametrize("name", RECIPES.list())
def test_every_recipe_returns_an_snn_model(name):
    meta = RECIPES.get(name).meta
    x = torch.rand(32, 1, 8, 8)
    data = (x, torch.randint(0, 10, (32,))) if meta.get("labelled") else x
    kw = {"epochs": 1} if meta.get("labelled") else {}
    kw.update(meta.get("smoke", {}))
    if meta.get("takes") is None:
        kw["backend"] = "reference"
    snn = convert_with(name, _ann_for(name), data, T=3, **kw)
    steps = 1 if meta.get("readout") == "once" else 3  # a TTFS network reads its logits once
    assert isinstance(snn, SpikingModel) and snn.T == steps
    out = snn(x[:2])
    assert out.shape == (steps, 2, 10) and torch.isfinite(out).all()


def test_unknown_recipe_option_is_named():
    with pytest.raises(ValueError, match=r"^percentil: unknown option of recipe 'percentile'; valid: .*percentile"):
        convert_with("percentile", _ann_for("percentile"), torch.rand(4, 1, 8, 8), percentil=99.0)


def test_spicalib_bayesian_optimisation_runs_with_optuna():
    pytest.importorskip("optuna")
    ann = _ann_for("spicalib")
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    snn = convert_with("spicalib", ann, (x, y), T=4, bo_trials=2, **REF)
    assert isinstance(snn, SpikingModel) and math.isfinite(float(snn(x[:2]).detach().sum()))


def test_privatesnn_data_free_conversion_stays_close_to_real_data_conversion(fashion, fashion_mlp):
    """Card privatesnn check 1 at our scale: thresholds from images inverted from the ANN, and the converted
    accuracy at T=32 within 3 points of the conversion calibrated on real images."""
    from spikeforge.convert import accuracy_vs_T
    from spikeforge.convert.privatesnn import synthesize, threshold_ratio

    x, _, xt, yt = fashion
    torch.manual_seed(0)
    xs, ys = synthesize(fashion_mlp, (1, 28, 28), n_per_class=8)
    assert (fashion_mlp(xs).mean(0).argmax(1) == ys.argmax(1)).float().mean() > 0.6  # the inversion worked
    ratio = threshold_ratio(fashion_mlp, xs, x[:500])["features.1"]
    assert 0.5 < ratio < 4.0, ratio
    acc = {}
    for name, data in (("synthetic", xs), ("real", x[:500])):
        snn = convert_with("channelwise", fashion_mlp, data, v_init=0.5, **REF)
        acc[name] = accuracy_vs_T(snn, xt, yt, Ts=(32,), max_fold=32 * xt.shape[0])["acc"][32]
    assert acc["synthetic"] >= acc["real"] - 0.03, acc


def test_cat_ttfs_ann_logits_equal_the_ttfs_simulation_bit_for_bit_in_float64():
    """Card cat-ttfs check 1: the CAT-ANN (CAT activation, 5-bit log weights) and the TTFS SNN simulated bin by bin
    give identical logits in float64 (every partial sum is exact); in float32 they agree to rounding."""
    from torch import nn

    from spikeforge.convert.cat_ttfs import cat_net, ttfs_simulate

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4, 16),
                        nn.ReLU(), nn.Linear(16, 5)).eval()
    with torch.no_grad():
        ann[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(64, 1, 8, 8)
    net = cat_net(ann, x, K=6)
    assert torch.allclose(net(x), ttfs_simulate(net, x), rtol=1e-5, atol=1e-5)
    net64 = net.double()
    a, s = net64(x.double()), ttfs_simulate(net64, x.double())
    assert torch.equal(a, s)
    assert len(torch.unique(a)) > 100  # not trivially equal (all zeros)


def test_offset_and_diagnostics_see_every_sample_at_large_T():
    from spikeforge.convert import layer_diagnostics

    torch.manual_seed(0)
    ann = create_model("mlp", neuron="relu", T=1, input_size=4, hidden=(8,)).eval()
    x = torch.rand(300, 1, 4, 4)
    snn = convert(ann, ConversionConfig(T=64, **REF), x)
    assert len(offset_calibrate_(snn, ann, x, T=64)) == 1  # 300 x 64 steps > one default chunk
    assert layer_diagnostics(ann, snn, x, 64)[0]["layer"] == "features.1"
