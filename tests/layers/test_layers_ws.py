"""Scaled weight standardisation (OTTT's normalisation): the formula of the official code, gradients (gradcheck),
no batch or time statistics, and the convnet's ``norm="ws"`` option (default unchanged)."""

import pytest
import torch
from torch import nn

from spikeforge.layers import ScaledWSConv2d, ScaledWSLinear, TimeFold
from spikeforge.models import create_model


def _official(w, gain, eps=1e-4):
    """The OTTT repository's ``get_weight`` (models/spiking_vgg.py), written out."""
    dims = list(range(1, w.dim()))
    fan_in = torch.tensor(w.shape[1:]).prod()
    mean = torch.mean(w, dim=dims, keepdim=True)
    var = torch.var(w, dim=dims, keepdim=True)
    return (w - mean) / ((var * fan_in + eps) ** 0.5) * gain


@pytest.mark.parametrize("make", [lambda: ScaledWSConv2d(3, 5, 3, padding=1), lambda: ScaledWSLinear(7, 4)])
def test_standardised_weight_is_the_official_formula(make):
    torch.manual_seed(0)  # the layer is built here, so its weights do not depend on the test order
    layer = make()
    with torch.no_grad():
        layer.gain.uniform_(0.5, 2.0)
    w = layer.standardized_weight()
    torch.testing.assert_close(w, _official(layer.weight, layer.gain))
    dims = tuple(range(1, w.dim()))
    fan_in = layer.weight[0].numel()
    unit = w / layer.gain
    assert unit.mean(dims).abs().max() < 1e-6
    raw = layer.weight.var(dims) * fan_in  # unit variance up to the eps in the denominator
    torch.testing.assert_close(unit.var(dims) * fan_in, raw / (raw + layer.eps), rtol=1e-5, atol=0)


def test_gradcheck_float64():
    torch.manual_seed(0)
    conv = ScaledWSConv2d(2, 3, 3, padding=1).double()
    lin = ScaledWSLinear(5, 3).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, g: nn.functional.conv2d(x, _official(w, g), conv.bias, padding=1),
                                    (x, conv.weight, conv.gain))
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, _official(conv.weight, conv.gain), conv.bias,
                                                             padding=1))
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lin, (z,))


def test_no_batch_statistics_and_no_mode_difference():
    torch.manual_seed(0)
    conv = TimeFold(ScaledWSConv2d(1, 4, 3, padding=1))
    x = torch.rand(3, 5, 1, 8, 8)
    full = conv(x)
    torch.testing.assert_close(conv(x[1:2, 2:3]), full[1:2, 2:3])  # one sample at one step: same output
    conv.eval()
    torch.testing.assert_close(conv(x), full)
    assert not list(conv.buffers())
    assert set(dict(conv.named_parameters())) == {"layer.weight", "layer.bias", "layer.gain"}
    assert ScaledWSLinear(3, 2, gain=False).gain is None
    with pytest.raises(ValueError, match="eps"):
        ScaledWSLinear(3, 2, eps=0.0)


def test_convnet_norm_option():
    torch.manual_seed(0)
    default = create_model("convnet", T=2, input_size=16, channels=(4, 8))
    torch.manual_seed(0)
    bn = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="bn")
    a, b = default.state_dict(), bn.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the default is norm="bn"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in default.modules()) == 2
    ws = create_model("convnet", T=2, input_size=16, channels=(4, 8), norm="ws")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ws.modules())
    assert sum(isinstance(m, ScaledWSConv2d) for m in ws.modules()) == 2
    assert ws(torch.rand(3, 1, 16, 16)).shape == (2, 3, 10)
    with pytest.raises(ValueError, match=r"^model\.kwargs\.norm: unknown value 'ln'; allowed: "
                                         r"'bn' \(BatchNorm2d after each conv\), 'ws' \(scaled weight standardisation"):
        create_model("convnet", T=2, input_size=16, norm="ln")
