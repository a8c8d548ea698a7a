"""The short cuts of the per-call path (cheap checks for plain numbers, an initial state passed as a number, the
forward alone when nothing needs a gradient, the first backward reusing the forward's view of x) change nothing:
the same errors, spikes and gradients as the general path and the reference backend."""

import pytest
import torch

from spikeforge.functional import lif, plif
from spikeforge.functional._checks import check_number
from spikeforge.functional.lif import lif_family
from spikeforge.surrogate import get_surrogate


@pytest.mark.parametrize(("value", "message"), [
    (0.5, "tau: got 0.5; allowed: >= 1.0"),
    (0, "tau: got 0; allowed: >= 1.0"),
    (float("nan"), "tau: must be finite, got nan"),
    (float("inf"), "tau: must be finite, got inf"),
    (True, "tau: expected a number, got True"),
    ("2", "tau: expected a number, got '2'"),
])
def test_plain_number_checks_raise_the_same_errors(value, message):
    with pytest.raises(ValueError) as e:
        check_number("tau", value, low=1.0)
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        lif(torch.rand(2, 1, 3), tau=value)
    assert str(e.value) == message


def test_plain_numbers_in_range_pass_unchanged():
    assert check_number("tau", 2, low=1.0) == 2
    assert check_number("th", 1.0, low=0.0, low_inclusive=False, high=1.0) == 1.0


def _fwd_bwd(backend, x, state, **kw):
    xx = x.clone().requires_grad_()
    s, st, v_seq = lif(xx, state, backend=backend, return_v=True, **kw)
    g = torch.linspace(-1.0, 1.0, s.numel()).view_as(s)
    ((s * g).sum() + st.v.square().sum() + v_seq.sum()).backward()
    return s, st.v, v_seq, xx.grad


@pytest.mark.parametrize("v_reset", [0.0, -0.25, None])
@pytest.mark.parametrize("shape", [(5, 2, 3), (4, 2, 3, 4, 4)])
def test_state_none_equals_an_explicit_initial_state(v_reset, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 1.5
    v0 = torch.full(shape[1:], 0.0 if v_reset is None else v_reset)
    if len(shape) == 5:  # channels-last: the cpu backend runs in memory order and permutes back
        x = x.to(memory_format=torch.channels_last_3d)
    ref = _fwd_bwd("reference", x, None, v_reset=v_reset)
    for state in (None, v0):
        out = _fwd_bwd("cpu", x, state, v_reset=v_reset)
        assert torch.equal(out[0], ref[0])  # spikes bit-identical
        for a, b in zip(out[1:], ref[1:]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_without_gradients_the_forward_alone_gives_the_same_outputs():
    x = torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(2)) * 2
    s1, st1 = lif(x.clone().requires_grad_(), backend="cpu")
    with torch.no_grad():
        s2, st2 = lif(x, backend="cpu")
    s3, st3 = lif(x, backend="cpu")  # grad mode, but no input requires a gradient
    assert s1.grad_fn is not None and s2.grad_fn is None and s3.grad_fn is None
    assert torch.equal(s1, s2) and torch.equal(s1, s3)
    assert torch.equal(st1.v, st2.v) and torch.equal(st1.v, st3.v)
    with pytest.raises(ValueError, match="x_seq: contains NaN or inf"):
        with torch.no_grad():
            lif(torch.full((2, 1, 3), float("nan")), backend="cpu")


@pytest.mark.parametrize("use", ["v_last", "v_seq", "spikes"])
def test_a_single_used_output_gives_the_reference_gradient(use):
    """Unused outputs' gradients reach the backward as None (not tensors of zeros)."""
    x = torch.randn(5, 2, 7, generator=torch.Generator().manual_seed(3))
    w = torch.tensor(0.3)
    grads = {}
    for backend in ("reference", "cpu"):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        s, st, v_seq = plif(xx, ww, backend=backend, return_v=True, decay_input=False)
        {"v_last": st.v, "v_seq": v_seq, "spikes": s}[use].pow(2).sum().backward()
        grads[backend] = (xx.grad, ww.grad)
    for a, b in zip(grads["cpu"], grads["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_second_backward_recomputes_what_the_first_reused():
    x = torch.randn(4, 2, 9, generator=torch.Generator().manual_seed(4)).requires_grad_()
    s, _ = lif(x, backend="cpu")
    (s * 2).sum().backward(retain_graph=True)
    g1 = x.grad.clone()
    x.grad = None
    (s * 2).sum().backward()
    assert torch.equal(x.grad, g1)


def test_the_backward_releases_x():
    """The backward frees the forward's saved input: keeping the outputs (and so the graph node) must not keep
    the input alive once autograd has run the backward."""
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(5)).requires_grad_()
    s, _ = lif(x, backend="cpu")
    assert s.grad_fn.saved_tensors[0].data_ptr() == x.data_ptr()  # x itself, no copy
    s.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        s.grad_fn.saved_tensors


def test_an_in_place_change_of_x_after_the_forward_is_still_caught():
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(6))
    xx = x.clone().requires_grad_()
    y = xx * 1.0
    s, _ = lif(y, backend="cpu")
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


def test_lif_family_takes_a_number_as_initial_state():
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(7))
    sg = get_surrogate("atan")
    for backend in ("reference", "cpu"):
        a = lif_family(x, 0.25, 0.5, 1.0, 0.0, True, False, sg, True, backend, True)
        b = lif_family(x, torch.full((2, 3), 0.25), 0.5, 1.0, 0.0, True, False, sg, True, backend, True)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        assert a[1].shape == (2, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_tensor_checks_one_reduction_still_catch_every_bad_value(dtype):
    # the tensor path of check_number reads only the min and the max: a NaN, an inf or one value out of range
    # anywhere in the tensor must still raise, naming the argument
    from spikeforge.functional._checks import check_number

    good = torch.full((4, 1, 1), 0.5, dtype=dtype)
    assert check_number("tau", good, low=0.0, high=1.0) is good
    assert check_number("tau", good[:0], low=0.0, high=1.0).numel() == 0
    for bad, match in ((float("nan"), "tau: must be finite"), (float("inf"), "tau: must be finite"),
                       (1.5, "tau: got tensor with min 0.5, max 1.5"), (-0.25, "allowed: >= 0.0 and <= 1.0")):
        t = good.clone()
        t[2, 0, 0] = bad
        with pytest.raises(ValueError, match=match):
            check_number("tau", t, low=0.0, high=1.0)
    with pytest.raises(ValueError, match="v_threshold: got tensor"):
        check_number("v_threshold", torch.zeros(3, dtype=dtype), low=0.0, low_inclusive=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch scripts its jvp decompositions on first use
def test_forward_mode_ad_is_not_dropped_by_the_no_grad_shortcut():
    # without autograd, the cpu backend skips Function.apply; under an open forward-AD level it must not, or the tangent
    # would be lost silently: the Function says it has no jvp instead
    import torch.autograd.forward_ad as fwAD

    x = torch.rand(4, 2, 3)
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match="jvp"):
            lif(dual, backend="cpu")


# --- the same short cuts in the generic cell path (spikeforge.kernels.dispatch.run_cell) -------------------------
def _alif_run(x, states, backend, grad):
    from spikeforge.functional.alif import ALIF_CELL
    from spikeforge.kernels.dispatch import run_cell

    k = torch.tensor([0.5, 0.25, 0.75]).requires_grad_(grad)
    return run_cell(ALIF_CELL, x, states, params=(k, 1.0, 0.2, 0.9, 0.0, 1.0), backend=backend, record=True)


def test_cell_forward_alone_without_gradients_gives_the_same_outputs():
    x = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(8)) * 2
    s1, st1, v1 = _alif_run(x.clone().requires_grad_(), None, "cpu", True)
    with torch.no_grad():
        s2, st2, v2 = _alif_run(x, None, "cpu", True)
    s3, st3, v3 = _alif_run(x, None, "cpu", False)  # grad mode, but nothing requires a gradient
    s4, st4, v4 = _alif_run(x, None, "reference", False)
    assert s1.grad_fn is not None and s2.grad_fn is None and s3.grad_fn is None
    for out in ((s2, *st2, v2), (s3, *st3, v3), (s4, *st4, v4)):
        for a, b in zip((s1, *st1, v1), out):
            assert torch.equal(a.detach(), b)
    with pytest.raises(ValueError, match="x_seq: contains NaN or inf"):
        with torch.no_grad():
            _alif_run(torch.full((2, 1, 3), float("nan")), None, "cpu", False)


def test_cell_states_given_as_numbers_equal_the_same_tensors():
    x = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(9)) * 2
    ref = None
    for states in ((0.25, 0.5), (torch.full((2, 3), 0.25), torch.full((2, 3), 0.5)),
                   (torch.tensor(0.25).expand(2, 3), 0.5)):
        for backend in ("cpu", "reference"):
            xx = x.clone().requires_grad_()
            s, st, v = _alif_run(xx, states, backend, True)
            (s.sum() + st[0].square().sum() + v.sum()).backward()
            out = (s, *st, v, xx.grad)
            if ref is None:
                ref = out
            assert torch.equal(out[0], ref[0])
            for a, b in zip(out[1:], ref[1:]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cell_in_place_change_of_a_state_after_the_forward_is_caught():
    x = torch.randn(3, 2, 3, generator=torch.Generator().manual_seed(10)).requires_grad_()
    v0 = torch.zeros(2, 3)
    s, _, _ = _alif_run(x, (v0, 0.0), "cpu", True)
    v0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cell_forward_mode_ad_is_not_dropped_by_the_no_grad_shortcut():
    import torch.autograd.forward_ad as fwAD

    x = torch.rand(4, 2, 3)
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match="jvp"):
            _alif_run(dual, None, "cpu", False)
