"""ONNX: the exported file run in onnxruntime equals the torch model (spikes identical, readout within 1e-5), unrolled
and step by step with explicit state; the fused CPU kernels do not block export; bad arguments are named."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from spikeforge.deploy.export.onnx import to_onnx  # noqa: E402
from spikeforge.layers import TimeFold  # noqa: E402
from spikeforge.models import create_model  # noqa: E402
from spikeforge.neurons import IF, LIF, PLIF  # noqa: E402

T = 4


def _zoo(name):
    torch.manual_seed(0)
    kw = {"mlp": {"input_size": 8, "hidden": (16,)}, "convnet": {"input_size": 8, "channels": (4, 8)}}[name]
    m = create_model(name, num_classes=3, in_channels=1, T=T, neuron_kwargs={"v_threshold": 0.5}, **kw)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.mul_(4.0)  # every layer spikes
    return m.eval()


def _spiking_mlp():
    """Ends in a neuron, so the output is spikes; IF, LIF (no decay_input) and PLIF."""
    torch.manual_seed(0)
    net = nn.Sequential(TimeFold(nn.Linear(6, 12)), PLIF(v_threshold=0.4), TimeFold(nn.Linear(12, 8)),
                        IF(v_threshold=0.6, v_reset=None), TimeFold(nn.Linear(8, 5)),
                        LIF(tau=3.0, decay_input=False, v_threshold=0.3))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)  # every layer spikes at 2-30%
    return net.eval()


def _run_steps(path, info, x_seq):
    sess = ort.InferenceSession(str(path))
    state, ys = info.initial_state, []
    for x_t in x_seq:
        out = sess.run(None, {"x": x_t, **dict(zip(info.input_names[1:], state))})
        ys.append(out[0])
        state = out[1:]
    return np.stack(ys)


@pytest.mark.parametrize("mode", ["unrolled", "step"])
def test_spikes_identical_in_onnxruntime(tmp_path, mode):
    net = _spiking_mlp()
    x = torch.rand(T + 2, 3, 6) * 1.5
    with torch.no_grad():
        s0 = net(x)
    assert 0 < float(s0.mean()) < 0.5
    path = tmp_path / "net.onnx"
    info = to_onnx(net, x, path, mode=mode)
    s1 = (ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0] if mode == "unrolled"
          else _run_steps(path, info, x.numpy()))
    assert np.array_equal(s1, s0.numpy())


@pytest.mark.parametrize("name", ["mlp", "convnet"])
@pytest.mark.parametrize("mode", ["unrolled", "step"])
def test_zoo_readout_matches(tmp_path, name, mode):
    m = _zoo(name)
    assert m.features[1].resolved_backend(torch.rand(2)) == "cpu"  # the fused kernel runs in torch, not in the file
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        y0 = m(x).numpy()
    x_seq = x.unsqueeze(0).expand(T, *x.shape).contiguous().numpy()
    path = tmp_path / "m.onnx"
    info = to_onnx(m, x, path, mode=mode)
    y1 = (ort.InferenceSession(str(path)).run(None, {"x": x_seq})[0] if mode == "unrolled"
          else _run_steps(path, info, x_seq))
    np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-5)


def test_bad_arguments_named(tmp_path):
    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), LIF())
    with pytest.raises(ValueError, match=r"^mode: unknown value 'scan'; allowed: unrolled, step"):
        to_onnx(net, torch.rand(3, 2, 4), tmp_path / "a.onnx", mode="scan")
    with pytest.raises(ValueError, match=r"^opset: expected an integer >= 13, got 9"):
        to_onnx(net, torch.rand(3, 2, 4), tmp_path / "a.onnx", opset=9)


def test_op_the_opset_cannot_express_named(tmp_path):
    class Spectrum(nn.Module):
        def forward(self, x_seq):
            return torch.fft.rfft(x_seq, dim=-1).abs()

    with pytest.raises(ValueError, match=r"opset 13\) failed: Exporting the operator 'aten::fft_rfft'"):
        to_onnx(Spectrum(), torch.rand(3, 2, 4), tmp_path / "a.onnx", opset=13)


def test_step_mode_refuses_other_state_named(tmp_path):
    from spikeforge.models.base import make_neuron

    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), make_neuron("alif"))
    with pytest.raises(ValueError, match=r"^1 \(ALIF\): step mode exports the state of IF/LIF/PLIF"):
        to_onnx(net, torch.rand(3, 2, 4), tmp_path / "a.onnx", mode="step")
