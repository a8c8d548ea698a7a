"""Fused LIF kernels: property tests over shapes and dtypes, float64 gradcheck of the fused backward, the
saved-for-backward memory, surrogate bindings, dispatch and errors."""

from __future__ import annotations  # lets _apply_surrogate name tl.constexpr before triton is imported

import gc
import math
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.functional import lif, plif
from lif_backends import lif_cpu, lif_on
from spikeforge.functional.lif import lif_family
from spikeforge.kernels.dispatch import resolve_backend
from spikeforge.surrogate import SURROGATES, bind, get_surrogate

HALF = [torch.float16, torch.bfloat16]


@st.composite
def lif_cases(draw):
    T = draw(st.integers(1, 9))
    shape = tuple(draw(st.lists(st.integers(1, 70), min_size=1, max_size=3)))  # crosses block boundaries
    return dict(
        T=T, shape=shape, seed=draw(st.integers(0, 2**31 - 1)),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        v_reset=draw(st.sampled_from([0.0, -0.25, None])), decay=draw(st.booleans()), detach=draw(st.booleans()),
        tau=draw(st.sampled_from([1.0, 1.5, 2.0, 7.0])), v_th=draw(st.sampled_from([0.3, 1.0, 2.5])),
        surrogate=draw(st.sampled_from(["atan", "sigmoid"])),  # every surrogate: the equivalence tests
    )


@settings(max_examples=40, deadline=None)
@given(case=lif_cases())
def test_cpu_matches_reference_on_any_shape(case):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["T"], *case["shape"], generator=g, dtype=case["dtype"]) * case["v_th"]
    kw = dict(tau=case["tau"], v_threshold=case["v_th"], v_reset=case["v_reset"], decay_input=case["decay"],
              detach_reset=case["detach"], surrogate=case["surrogate"], return_v=True)
    out = {}
    for backend in ("reference", "cpu"):
        xx = x.clone().requires_grad_()
        s, state, v_seq = lif(xx, backend=backend, **kw)
        (s.sum() + 0.5 * v_seq.sum() + state.v.sum()).backward()
        out[backend] = (s, state.v, v_seq, xx.grad)
    for a, b in zip(out["cpu"][:3], out["reference"][:3]):
        assert torch.equal(a, b)
    torch.testing.assert_close(out["cpu"][3], out["reference"][3], rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(T=st.integers(1, 5), shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       dtype=st.sampled_from(HALF), seed=st.integers(0, 1000))
def test_half_precision_goes_to_reference_under_auto(T, shape, dtype, seed):
    x = torch.randn(T, *shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    assert resolve_backend("auto", x) == "reference"
    s_auto, st_auto = lif(x, backend="auto")
    s_ref, st_ref = lif(x, backend="reference")
    assert s_auto.dtype == dtype and torch.equal(s_auto, s_ref) and torch.equal(st_auto.v, st_ref.v)
    with pytest.raises(ValueError, match=rf"backend='cpu': dtype {dtype} is not supported"):
        lif(x, backend="cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_picks_the_fused_cpu_backend(dtype):
    assert resolve_backend("auto", torch.zeros(2, 2, dtype=dtype)) == "cpu"


def _membrane(x, v0, k, th, v_reset, decay):
    """h_t of the recurrence (reset detached), to place the gradcheck away from the threshold."""
    v, hs = v0, []
    for xt in x.unbind(0):
        h = v + (xt - (v - (v_reset or 0.0))) * k if decay else v - (v - (v_reset or 0.0)) * k + xt
        s = (h >= th).to(h.dtype)
        v = h * (1 - s) + v_reset * s if v_reset is not None else h - th * s
        hs.append(h)
    return torch.stack(hs)


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("decay", [True, False])
def test_fused_backward_gradcheck_float64(v_reset, decay):
    """With a detached reset the membrane path (v_seq, v_T) is a smooth function of (x, v0, k, v_th) away
    from the threshold, so the hand-written backward must equal finite differences there."""
    g = torch.Generator().manual_seed(3)
    T, B, N = 6, 2, 5
    x = torch.randn(T, B, N, generator=g, dtype=torch.float64) * 0.7 + 0.4
    v0 = torch.randn(B, N, generator=g, dtype=torch.float64) * 0.2
    k = torch.rand(N, generator=g, dtype=torch.float64) * 0.5 + 0.3
    th = torch.rand(B, N, generator=g, dtype=torch.float64) * 0.4 + 0.8
    h = _membrane(x, v0, k, th, v_reset, decay)
    assert (h >= th).any() and (h - th).abs().min() > 1e-3  # spikes happen, none within reach of eps
    sg = get_surrogate("sigmoid")

    def f(x, v0, k, th):
        s, v_last, v_seq = lif_cpu(x, v0, k, th, v_reset, decay, True, sg, return_v=True)
        return v_seq, v_last

    inputs = tuple(t.clone().requires_grad_() for t in (x, v0, k, th))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_plif_w_gradient_through_fused_backend_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 4, 9, generator=g, dtype=torch.float64) + 0.5
    grads = {}
    for backend in ("reference", "cpu"):
        w = torch.tensor([0.1, -0.4, 0.7, 0.0], dtype=torch.float64).reshape(4, 1).requires_grad_()
        s, _ = plif(x, w, v_threshold=torch.full((4, 9), 0.9, dtype=torch.float64), backend=backend)
        (s * torch.linspace(-1, 1, 9, dtype=torch.float64)).sum().backward()
        grads[backend] = w.grad
    torch.testing.assert_close(grads["cpu"], grads["reference"], rtol=1e-10, atol=1e-12)


class _Saved:
    def __init__(self, t):
        self.t = t


def _saved_bytes_per_element(fn, x):
    """Bytes of the distinct storages that the autograd graph of ``fn(x)`` keeps for backward, per element
    of x (tensors saved by transient graphs, e.g. inside an isfinite check, are freed and not counted)."""
    packed = []

    def pack(t):
        holder = _Saved(t)
        packed.append(weakref.ref(holder))
        return holder

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        out = fn(x)
    gc.collect()
    storages = {}
    for ref in packed:
        holder = ref()
        if holder is not None:
            st_ = holder.t.untyped_storage()
            storages[st_.data_ptr()] = st_.nbytes()
    del out
    return sum(storages.values()) / x.numel()


@pytest.mark.parametrize("T", [1, 8])
def test_saved_for_backward_bytes(T):
    x = torch.rand(T, 16, 64, requires_grad=True)
    sg = get_surrogate("atan")
    v0 = torch.zeros(()).expand(16, 64)  # one initial value broadcast, as for state=None

    def run(backend):
        return lambda x: lif_family(x, v0, 0.5, 1.0, 0.0, True, False, sg, False, backend, True)

    assert _saved_bytes_per_element(run("reference"), x) == pytest.approx(12.0, abs=16 / x.numel())  # h, 1-s, h-th
    assert _saved_bytes_per_element(run("cpu"), x) == pytest.approx(4.0, abs=16 / x.numel())  # x only
    # a per-neuron initial state adds N values (4/T bytes per element)
    v0_full = torch.rand(16, 64)
    fused = _saved_bytes_per_element(
        lambda x: lif_family(x, v0_full, 0.5, 1.0, 0.0, True, False, sg, False, "cpu", True), x)
    assert fused <= 4.0 + 4.0 / T + 1e-9


@pytest.mark.parametrize("name", SURROGATES.list())
def test_numba_surrogate_derivative_equals_torch_derivative(name):
    """The surrogate derivative as the generated CPU kernels compute it (typed like the data), on a grid and at
    extreme values, equals the torch derivative."""
    import numpy as np

    from spikeforge.kernels.fused import surrogate_derivative

    for dtype in (np.float32, np.float64):
        sg = get_surrogate(name, alpha=1.7)
        u = np.concatenate([np.linspace(-4, 4, 801), [0.0, 1e30, -1e30, np.finfo(dtype).max]]).astype(dtype)
        out = surrogate_derivative(sg, u)
        want = sg.derivative(torch.from_numpy(u)).numpy()
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, want, rtol=1e-6 if dtype is np.float32 else 1e-12, atol=1e-7)


def _apply_surrogate(u_ptr, out_ptr, alpha_ptr, n, SG: tl.constexpr, BLOCK: tl.constexpr):  # noqa: F821
    offs = tl.arange(0, BLOCK)  # noqa: F821  (tl is bound when the test compiles it)
    m = offs < n
    tl.store(out_ptr + offs, SG(tl.load(u_ptr + offs, mask=m), tl.load(alpha_ptr)), mask=m)  # noqa: F821


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy, at 1e30
@pytest.mark.parametrize("name", SURROGATES.list())
def test_triton_surrogate_binding_equals_torch_derivative(name, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton", reason="triton is an optional extra (pip install 'spikeforge[triton]')")
    import triton
    import triton.language as tl

    from spikeforge.kernels import triton as tk

    sg = get_surrogate(name, alpha=1.7)
    apply = triton.jit(bind(_apply_surrogate, {"tl": tl}))
    u = torch.cat([torch.linspace(-4, 4, 801), torch.tensor([0.0, 1e30, -1e30])])
    out = torch.empty_like(u)
    apply[(1,)](u, out, torch.tensor([sg.alpha]), u.numel(), SG=tk.surrogate_fn(sg), BLOCK=1024)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, sg.derivative(u), rtol=1e-6, atol=1e-7)


def test_nonfinite_input_is_caught_inside_the_kernel():
    sg = get_surrogate("atan")
    for bad in (math.nan, math.inf):
        x = torch.rand(3, 2, 300)
        x[2, 1, 257] = bad
        with pytest.raises(ValueError, match="x_seq: contains NaN or inf"):
            lif_cpu(x, torch.zeros(2, 300), 0.5, 1.0, 0.0, True, False, sg)
        lif_cpu(x, torch.zeros(2, 300), 0.5, 1.0, 0.0, True, False, sg, check=False)  # allowed when asked


def test_triton_needs_cuda_tensors_unless_interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from spikeforge.kernels import triton as tk

    if not tk.is_available():
        with pytest.raises(ValueError, match="needs triton"):
            lif_on("triton")(torch.zeros(2, 2), torch.zeros(2), 0.5, 1.0, 0.0, True, False, get_surrogate("atan"))
        return
    with pytest.raises(ValueError, match=r"backend='triton': x_seq is on cpu; the triton backend needs CUDA"):
        lif_on("triton")(torch.zeros(2, 2), torch.zeros(2), 0.5, 1.0, 0.0, True, False, get_surrogate("atan"))


def test_results_do_not_depend_on_thread_count():
    x = torch.randn(5, 8, 1000, dtype=torch.float64).requires_grad_()
    outs = []
    n = torch.get_num_threads()
    try:
        for threads in (1, max(2, n)):
            torch.set_num_threads(threads)
            s, st_ = lif(x, backend="cpu")
            (g,) = torch.autograd.grad((s * torch.cos(x)).sum(), x)
            outs.append((s, st_.v, g))
    finally:
        torch.set_num_threads(n)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
