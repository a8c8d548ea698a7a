"""spikeforge.layers.MaxPool2d: the fused channels-last kernel gives nn.MaxPool2d's values and gradients bit for bit."""

import pytest
import torch
from torch import nn

from spikeforge.kernels import pool
from spikeforge.layers import TIME_INVARIANT, MaxPool2d, TimeFold

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _small_inputs_too(monkeypatch, request):
    if "torch_and_agree" not in request.node.name:  # the fused kernel for the test's small inputs
        monkeypatch.setattr(pool, "MIN_ELEMENTS", 0)

CASES = [  # (kernel, stride, padding, N, C, H, W)
    (2, 2, 0, 8, 16, 28, 28),
    (2, 2, 0, 4, 24, 15, 13),  # odd sizes: the last row / column belongs to no window
    (3, 2, 1, 4, 16, 16, 16),  # overlapping windows with padding (SEW-ResNet's stem)
    (3, 1, 1, 2, 16, 12, 12),
    (3, 3, 0, 2, 32, 20, 17),
    (2, 1, 0, 2, 16, 12, 12),
]


def _cl(t):
    return t.contiguous(memory_format=torch.channels_last)


def _inputs(kind, shape, dtype):
    g = torch.Generator().manual_seed(0)
    if kind == "spikes":  # binary: ties in almost every window (the first maximum must win)
        x = (torch.rand(shape, generator=g) < 0.2).to(dtype)
    elif kind == "special":
        x = torch.randn(shape, generator=g, dtype=dtype)
        flat = x.view(-1)
        flat[::7] = float("nan")
        flat[3::11] = float("-inf")
        flat[5::13] = float("inf")
        flat[1::17] = -0.0
    else:
        x = torch.randn(shape, generator=g, dtype=dtype).round(decimals=1)  # some ties
    return _cl(x)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["spikes", "normal", "special"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_match_torch_bit_for_bit(case, kind, dtype):
    k, s, p, *shape = case
    x = _inputs(kind, shape, dtype)
    assert pool.supported(x, k, s, p, 1, False)
    ours, ref = MaxPool2d(k, s, p), nn.MaxPool2d(k, s, p)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    assert ya.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ya.isnan(), yb.isnan()) and torch.equal(ya.nan_to_num(), yb.nan_to_num())
    g = torch.randn(yb.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(torch.signbit(xa.grad), torch.signbit(xb.grad))


def test_gradient_from_a_sum_and_a_c_order_gradient():
    x = _inputs("spikes", (4, 16, 16, 16), torch.float32)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    MaxPool2d(2)(xa).sum().backward()  # stride-0 gradient
    nn.MaxPool2d(2)(xb).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    xa.grad = xb.grad = None
    g = torch.randn(4, 16, 8, 8)  # C order, not channels-last
    MaxPool2d(2)(xa).backward(g)
    nn.MaxPool2d(2)(xb).backward(g)
    assert torch.equal(xa.grad, xb.grad)


def test_gradcheck_float64():
    x = _cl(torch.randn(2, 16, 34, 34, dtype=torch.float64)).requires_grad_()  # distinct values: differentiable
    assert pool.supported(x, 3, 2, 1, 1, False)
    assert torch.autograd.gradcheck(lambda t: pool.max_pool2d_cl(t, 3, 2, 1), (x,), fast_mode=True)


@pytest.mark.parametrize("why,x,kw", [
    ("C order", torch.rand(4, 16, 32, 32), {}),
    ("float16", _cl(torch.rand(4, 16, 32, 32)).half(), {}),
    ("ceil_mode", _cl(torch.rand(4, 16, 31, 31)), {"ceil_mode": True}),
    ("dilation", _cl(torch.rand(4, 16, 32, 32)), {"dilation": 2}),
    ("small", _cl(torch.rand(1, 4, 8, 8)), {}),
    ("one channel", _cl(torch.rand(8, 1, 64, 64)), {}),
])
def test_other_cases_run_torch_and_agree(why, x, kw):
    assert not pool.supported(x, 2, 2, 0, kw.get("dilation", 1), kw.get("ceil_mode", False)), why
    assert torch.equal(MaxPool2d(2, **kw)(x), nn.MaxPool2d(2, **kw)(x))


def test_return_indices_and_rectangular_windows_run_torch():
    x = _cl(torch.rand(4, 16, 32, 32))
    y, i = MaxPool2d(2, return_indices=True)(x)
    y2, i2 = nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(y, y2) and torch.equal(i, i2)
    assert torch.equal(MaxPool2d((2, 3))(x), nn.MaxPool2d((2, 3))(x))


def test_no_grad_and_time_fold():
    x = _cl(torch.rand(6, 16, 20, 20))
    with torch.no_grad():
        assert torch.equal(MaxPool2d(2)(x), nn.MaxPool2d(2)(x))
    assert MaxPool2d in TIME_INVARIANT
    seq = x.reshape(2, 3, 16, 20, 20)
    assert torch.equal(TimeFold(MaxPool2d(2))(seq), TimeFold(nn.MaxPool2d(2))(seq))


def test_it_is_an_nn_maxpool2d():
    m = MaxPool2d(3, stride=2, padding=1)
    assert isinstance(m, nn.MaxPool2d)
    assert "kernel_size=3, stride=2, padding=1" in repr(m)
