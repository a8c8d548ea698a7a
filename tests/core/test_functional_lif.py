"""Semantics of IF/LIF/PLIF (reference backend): equations, defaults, state, errors."""

import pytest
import torch

from spikeforge.functional import LIFState, if_, if_step, lif, lif_step, plif

REF = dict(backend="reference")


def manual_lif(x_seq, tau=2.0, vth=1.0, v_reset=0.0, decay_input=True):
    """Scalar loop straight from the equations."""
    out, v = [], torch.zeros_like(x_seq[0]) + (0.0 if v_reset is None else v_reset)
    vr0 = 0.0 if v_reset is None else v_reset
    for x in x_seq:
        h = v + (x - (v - vr0)) / tau if decay_input else v - (v - vr0) / tau + x
        s = (h >= vth).float()
        v = h - s * vth if v_reset is None else torch.where(s > 0, torch.full_like(h, v_reset), h)
        out.append(s)
    return torch.stack(out), v


@pytest.mark.parametrize("v_reset", [0.0, None, -0.3])
@pytest.mark.parametrize("decay_input", [True, False])
def test_lif_matches_equations(v_reset, decay_input):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 7, generator=g) * 2
    s, st = lif(x, tau=3.0, v_reset=v_reset, decay_input=decay_input, **REF)
    s_ref, v_ref = manual_lif(x, 3.0, 1.0, v_reset, decay_input)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(st.v, v_ref)


def test_spike_on_equality():
    # v_threshold reached exactly: spike iff v >= threshold
    s, _ = if_(torch.tensor([[0.5], [0.5]]), **REF)
    assert s.flatten().tolist() == [0.0, 1.0]


def test_defaults_match_spikingjelly_lifnode():
    # tau=2, threshold 1, hard reset 0, decay_input: constant input 1.5 -> h1 = 0.75, h2 = 1.125 -> spike
    s, st = lif(torch.full((2, 1), 1.5), **REF)
    assert s.flatten().tolist() == [0.0, 1.0]
    assert st.v.item() == 0.0


def test_if_integrates_without_leak():
    x = torch.full((5, 1), 0.3)
    s, st = if_(x, v_threshold=1.0, v_reset=None, **REF)
    assert s.flatten().tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    torch.testing.assert_close(st.v, torch.tensor([0.5]))


def test_state_continues_sequence():
    x = torch.randn(10, 2, 4)
    s_full, st_full = lif(x, **REF)
    s1, st1 = lif(x[:4], **REF)
    s2, st2 = lif(x[4:], st1, **REF)
    assert torch.equal(torch.cat([s1, s2]), s_full)
    torch.testing.assert_close(st2.v, st_full.v)


def test_step_equals_sequence():
    x = torch.randn(6, 3, 2)
    s_seq, st_seq = lif(x, **REF)
    st, outs = None, []
    for x_t in x.unbind(0):
        s_t, st = lif_step(x_t, st, **REF)
        outs.append(s_t)
    assert torch.equal(torch.stack(outs), s_seq)
    torch.testing.assert_close(st.v, st_seq.v)
    s0, _ = if_step(x[0], None, **REF)
    assert s0.shape == x[0].shape


def test_return_v_is_post_reset_membrane():
    x = torch.full((3, 1), 1.5)
    s, st, v = lif(x, return_v=True, **REF)
    assert v.shape == x.shape
    assert v[1].item() == 0.0  # reset after the spike at t=1
    assert v[-1].item() == st.v.item()


def test_plif_sigmoid_w_equals_lif_tau():
    x = torch.randn(8, 2, 5)
    w = torch.tensor(0.0)  # sigmoid(0) = 1/2 -> tau 2
    s1, _ = plif(x, w, **REF)
    s2, _ = lif(x, tau=2.0, **REF)
    assert torch.equal(s1, s2)


def test_plif_w_gets_gradient():
    w = torch.tensor(0.1, requires_grad=True)
    s, _ = plif(torch.rand(6, 4, 3) * 2, w, **REF)
    s.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad)


def test_state_dtype_and_device_follow_input():
    x = torch.randn(3, 2, dtype=torch.float64)
    s, st = lif(x, **REF)
    assert s.dtype == torch.float64 and st.v.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_on_auto(dtype):
    s, _ = lif(torch.randn(4, 2, 3).to(dtype))
    assert s.dtype == dtype


# ---- bad input: one clear ValueError naming the argument, the value and what is allowed ----------------

@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(5), r"x_seq.*\[T, B, \.\.\.\].*\(5,\)"),
        (torch.ones(3, 2, dtype=torch.int64), r"x_seq.*int64.*floating"),
        ("not a tensor", r"x_seq.*torch.Tensor"),
    ],
)
def test_bad_input_tensor(x, match):
    with pytest.raises(ValueError, match=match):
        lif(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_nonfinite_input_rejected(bad, backend):
    x = torch.zeros(4, 2, 3)
    x[2, 1, 0] = bad
    with pytest.raises(ValueError, match="x_seq.*NaN or inf"):
        lif(x, backend=backend)
    lif(x, backend=backend, check_inputs=False)  # explicitly allowed


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tau=0.5), r"tau: got 0.5; allowed: >= 1"),
        (dict(tau=float("nan")), r"tau: must be finite"),
        (dict(v_threshold=0.0), r"v_threshold: got 0.0; allowed: > 0"),
        (dict(v_threshold=-1.0), r"v_threshold"),
        (dict(surrogate="banana"), r"surrogate: unknown value 'banana'; allowed: atan"),
        (dict(backend="gpu"), r"backend: unknown value 'gpu'; allowed: auto, reference, cpu, triton"),
        (dict(decay_input="yes"), r"decay_input: expected True or False"),
        (dict(v_reset="zero"), r"v_reset: expected a number"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lif(torch.zeros(2, 2), **kwargs)


def test_tensor_tau_below_one_rejected():
    with pytest.raises(ValueError, match="tau: got tensor with min 0.5"):
        lif(torch.zeros(2, 2, 3), tau=torch.tensor([2.0, 0.5, 3.0]))


def test_state_shape_mismatch_named():
    with pytest.raises(ValueError, match=r"state.v: shape \(3,\) does not match"):
        lif(torch.zeros(2, 2, 4), LIFState(torch.zeros(3)))


def test_named_backend_never_replaced():
    with pytest.raises(ValueError, match="backend='cpu'.*float16"):
        lif(torch.zeros(2, 2, dtype=torch.float16), backend="cpu")


def test_triton_backend_on_cpu_tensor_is_an_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # tests/conftest.py turns the interpreter on, which takes CPU tensors
    with pytest.raises(ValueError, match="triton"):
        lif(torch.zeros(2, 2), backend="triton")
