"""convert(): the converted SNN reproduces the ANN at large T; it is an ordinary spikeforge model; unsupported nodes
are named; bad input is one ValueError naming the argument, the value and what is allowed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.analysis import FiringRateMonitor
from spikeforge.convert import ConversionConfig, ThresholdIF, accuracy_vs_T, convert, layer_diagnostics
from spikeforge.models import SpikingModel, create_model

REF = {"backend": "reference"}


def test_converted_snn_at_T512_matches_the_ann_on_fashion_mnist(fashion, fashion_mlp):
    x, _, xt, yt = fashion
    with torch.no_grad():
        ann_pred = fashion_mlp(xt).mean(0).argmax(1)
    assert (ann_pred == yt).float().mean() > 0.7  # the ANN is trained
    snn = convert(fashion_mlp, ConversionConfig(T=512, **REF), calibration_data=x[:500])
    assert isinstance(snn, SpikingModel) and snn.T == 512
    res = accuracy_vs_T(snn, xt, yt, Ts=(8, 512), max_fold=512 * xt.shape[0])
    agree = float((res["pred"][512] == ann_pred).float().mean())
    assert agree >= 0.99, agree
    assert res["spikes_per_sample"][512] > res["spikes_per_sample"][8] > 0


class Residual(nn.Module):
    """A user module: functional ReLU, residual addition, average pooling, view by the batch size."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h) + h)
        return self.fc(self.pool(h).view(h.size(0), -1))


def test_traced_module_converts_matches_at_large_T_and_is_an_ordinary_snn():
    torch.manual_seed(0)
    ann = Residual().eval()
    with torch.no_grad():
        ann.bn1.running_mean.uniform_(-0.2, 0.2)
        ann.bn1.running_var.uniform_(0.5, 1.5)
    x = torch.rand(64, 1, 8, 8)
    snn = convert(ann, ConversionConfig(T=256, **REF), calibration_data=x)
    assert isinstance(snn, SpikingModel)
    assert sum(isinstance(m, ThresholdIF) for m in snn.modules()) == 2
    with torch.no_grad():
        ref = ann(x[:16])
        out = snn(x[:16]).mean(0)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    with FiringRateMonitor(snn) as mon:  # counts spikes like any spikeforge model
        snn(x[:4])
    assert len(mon.rates_per_step()) == 2
    snn.train()  # and trains: the IF surrogate carries gradients to every weight
    snn.T = 4
    F.cross_entropy(snn(x[:8]).mean(0), torch.zeros(8, dtype=torch.long)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in snn.parameters())
    rows = layer_diagnostics(ann, snn, x[:8], 64)
    assert [r["layer"] for r in rows] == ["net.relu_fn1", "net.relu_fn2"] and all(r["rate_error"] < 0.1 for r in rows)


@pytest.mark.parametrize("act", [nn.GELU(), nn.Sigmoid()])
def test_unsupported_module_is_named(act):
    ann = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 2))
    with pytest.raises(ValueError, match=rf"^convert: node _1 \(call_module 1\) is not supported: "
                                         rf"{type(act).__name__}"):
        convert(ann, ConversionConfig(), torch.rand(8, 4))


class FunctionalGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return F.gelu(self.fc(x))


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.lstm(x)[0]))


def test_unsupported_function_and_lstm_are_named():
    with pytest.raises(ValueError, match=r"^convert: node gelu \(call_function gelu\) is not supported: not linear"):
        convert(FunctionalGelu(), ConversionConfig(), torch.rand(8, 4))
    with pytest.raises(ValueError, match=r"^convert: node lstm \(call_module lstm\) is not supported: LSTM"):
        convert(WithLSTM(), ConversionConfig(), torch.rand(8, 3, 4))


def _mlp_ann():
    torch.manual_seed(0)
    return create_model("mlp", neuron="relu", T=1, input_size=4, hidden=(8,))


def test_bad_input_non_ann_and_untrained():
    with pytest.raises(ValueError, match=r"^ann: SpikingMLP is already spiking \(LIF neuron at features\.1\)"):
        convert(create_model("mlp", T=1, input_size=4, hidden=(8,)), ConversionConfig(), torch.rand(4, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^ann: expected a torch nn.Module"):
        convert("model.safetensors", ConversionConfig())
    dead = _mlp_ann()
    with torch.no_grad():
        dead.features[0].layer.weight.zero_()
        dead.features[0].layer.bias.fill_(-1.0)
    with pytest.raises(ValueError, match=r"^ann: activation features\.1 is never positive on the calibration data "
                                         r"\(threshold 0\): is the ANN trained"):
        convert(dead, ConversionConfig(), torch.rand(8, 1, 4, 4))


def test_bad_input_calibration_data():
    ann = _mlp_ann()
    with pytest.raises(ValueError, match=r"^calibration_data: batch of shape \(8, 3, 4, 4\); the ANN expects "
                                         r"\[N, 1, 4, 4\]"):
        convert(ann, ConversionConfig(), torch.rand(8, 3, 4, 4))
    seq = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"^calibration_data: a batch of shape \(8, 1, 5, 5\) does not fit the ANN"):
        convert(seq, ConversionConfig(), torch.rand(8, 1, 5, 5))
    with pytest.raises(ValueError, match=r"^calibration_data: an empty tensor of shape \(0, 1, 4, 4\); allowed: at "
                                         r"least one sample"):
        convert(ann, ConversionConfig(), torch.rand(0, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^calibration_data: the calibration set is empty"):
        convert(ann, ConversionConfig(), [])
    with pytest.raises(ValueError, match=r"^calibration_data: None, but norm='max' measures thresholds on data"):
        convert(ann, ConversionConfig())


@pytest.mark.parametrize("p", [0, -1.0, 100.5, float("nan")])
def test_bad_percentile_is_named(p):
    with pytest.raises(ValueError, match=r"^percentile: .*; allowed: a number in \(0, 100\]"):
        ConversionConfig(norm="percentile", percentile=p)


def test_bad_T_is_named():
    for T in (0, -3):
        with pytest.raises(ValueError, match=rf"^T: {T}; allowed: an integer >= 1"):
            ConversionConfig(T=T)
    snn = convert(_mlp_ann(), ConversionConfig(**REF), torch.rand(8, 1, 4, 4))
    with pytest.raises(ValueError, match=r"^T: 0; allowed: integers >= 1"):
        accuracy_vs_T(snn, torch.rand(2, 1, 4, 4), torch.zeros(2), Ts=(0, 4))


def test_conversion_config_round_trips_and_names_bad_fields():
    cfg = ConversionConfig(T=8, norm="percentile", percentile=99.9, per_channel=True, v_init=0.5, spicalib=1)
    assert ConversionConfig(**cfg.to_dict()) == cfg
    for kw, msg in (({"norm": "mean"}, r"^norm: 'mean'; allowed: max, percentile, bound"),
                    ({"v_init": 1.0}, r"^v_init: 1.0; allowed: a number in \[0, 1\)"),
                    ({"maxpool": "avg"}, r"^maxpool: 'avg'; allowed: spiking, lipool"),
                    ({"spicalib": -1}, r"^spicalib: -1; allowed: an integer >= 0")):
        with pytest.raises(ValueError, match=msg):
            ConversionConfig(**kw)
