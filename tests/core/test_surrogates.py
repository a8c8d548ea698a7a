"""Each surrogate: derivative == d(primitive)/du (float64 gradcheck), finite in every float dtype, by name."""

import math

import pytest
import torch

from spikeforge.surrogate import SURROGATES, PrimitiveFn, Surrogate, get_surrogate, spike

NAMES = SURROGATES.list()


def test_all_required_surrogates_registered():
    required = {"atan", "sigmoid", "fast_sigmoid", "triangle", "rectangle", "erf", "piecewise_quadratic"}
    assert required <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 0.5, 3.0])
def test_derivative_is_gradient_of_primitive(name, alpha):
    sg = get_surrogate(name, alpha)
    # keep away from the kinks of the piecewise surrogates, where the FD derivative is undefined
    u = torch.linspace(-3, 3, 61, dtype=torch.float64)
    a = sg.alpha
    kinks = torch.tensor([0.0, 1.0, -1.0, 1 / a, -1 / a, 0.5 / a, -0.5 / a], dtype=torch.float64)
    keep = (u.unsqueeze(1) - kinks).abs().min(1).values > 1e-3
    u = u[keep].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: PrimitiveFn.apply(v, sg), (u,))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_derivative_finite_at_extreme_inputs(name, dtype):
    sg = get_surrogate(name)
    big = torch.finfo(dtype).max
    u = torch.tensor([-big, -1e4, -30.0, -1e-3, 0.0, 1e-3, 30.0, 1e4, big, -math.inf, math.inf]).to(dtype)
    d = sg.derivative(u)
    assert d.dtype == dtype
    assert torch.isfinite(d).all(), d
    assert (d >= 0).all()
    assert d[0] == 0 and d[8] == 0  # vanishes far from threshold


@pytest.mark.parametrize("name", NAMES)
def test_peak_at_threshold(name):
    sg = get_surrogate(name)
    u = torch.linspace(-2, 2, 401, dtype=torch.float64)
    d = sg.derivative(u)
    assert d[200] == d.max()


def test_spike_forward_is_heaviside_ge():
    u = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 2.0])
    assert spike(u).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_spike_backward_uses_surrogate():
    u = torch.tensor([0.3, -0.2], requires_grad=True)
    spike(u, "sigmoid").sum().backward()
    expected = get_surrogate("sigmoid").derivative(u.detach())
    torch.testing.assert_close(u.grad, expected)


def test_unknown_surrogate_name_lists_allowed():
    with pytest.raises(ValueError, match="surrogate.*'nope'.*atan"):
        get_surrogate("nope")


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        get_surrogate("atan", alpha)


def test_surrogate_object_passes_through_with_new_alpha():
    sg = get_surrogate("erf")
    assert isinstance(sg, Surrogate)
    assert get_surrogate(sg) is sg
    assert get_surrogate(sg, 5.0).alpha == 5.0
