"""The fused CPU backend's own machinery: streaming (non-temporal) stores for large outputs, the aligned buffer
pool, and surrogates whose source is not available (compiled from memory instead of the generated module)."""

import itertools

import numpy as np
import pytest
import torch

from lif_backends import lif_cpu, lif_reference
from spikeforge.kernels import fused, runtime
from spikeforge.surrogate import Surrogate, get_surrogate


def _run(fn, x, v_reset, decay, detach, sg, gs):
    xx = x.clone().requires_grad_()
    v0 = torch.zeros(x.shape[1:], dtype=x.dtype)
    s, v_last, _ = fn(xx, v0, 0.5, 1.0, v_reset, decay, detach, sg)
    (s * gs).sum().backward()
    return s, v_last, xx.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_streaming_stores_match_reference(monkeypatch, dtype):
    """With every output streamed (threshold 0), spikes and gradients still equal the reference: the stores
    claim 64-byte alignment, so a row or a vector store that is not aligned would corrupt the output."""
    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    g = torch.Generator().manual_seed(0)
    sg = get_surrogate("atan")
    # two flag combinations (the flags are compiled in; the stores are the same code for each)
    for N, (v_reset, decay, detach) in itertools.product([64, 16 * 37, 37], [(0.0, True, False), (None, False, True)]):
        x = torch.randn(5, 2, N, generator=g, dtype=dtype) * 0.8 + 0.45
        gs = torch.randn(5, 2, N, generator=g, dtype=dtype)
        s_ref, v_ref, gx_ref = _run(lif_reference, x, v_reset, decay, detach, sg, gs)
        s, v, gx = _run(lif_cpu, x, v_reset, decay, detach, sg, gs)
        what = f"N={N} v_reset={v_reset} decay={decay} detach={detach}"
        assert torch.equal(s, s_ref) and torch.equal(v, v_ref), what
        torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6, msg=what)
    # the streamed path is taken where the rows allow it (2 * N elements per row: 64-byte multiples)
    out = np.empty((5, 2 * 64), dtype=np.float32)
    assert fused._stream(out, 16) == (out.ctypes.data % 64 == 0)
    assert not fused._stream(np.empty((5, 2 * 37), dtype=np.float32)[:, :74], 16)


def test_pool_buffers_are_64_byte_aligned():
    for n in (1 << 18, (1 << 18) + 3):
        t = runtime.POOL.empty((n,), torch.float32)
        assert t.data_ptr() % 64 == 0 and t.numel() == n
        del t
        t = runtime.POOL.empty((n,), torch.float32)  # reused from the pool: still aligned
        assert t.data_ptr() % 64 == 0


def test_surrogate_without_source_compiles_from_memory():
    """A derivative whose source cannot be read (defined by exec) is bound to the kernel's scalar math."""
    ns: dict = {}
    exec("def my_grad(u, alpha):\n    return alpha / (1.0 + alpha * absf(u)) ** 2\n", ns)  # noqa: S102
    ref = get_surrogate("fast_sigmoid", 3.0)
    sg = Surrogate("mine", 3.0, ns["my_grad"], ref.primitive_fn)
    assert fused._renamed_source(sg.grad_source, "_sg_derivative") is None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 40, generator=g, dtype=torch.float64) * 0.8 + 0.45
    gs = torch.randn(7, 3, 40, generator=g, dtype=torch.float64)
    s_ref, v_ref, gx_ref = _run(lif_reference, x, 0.0, False, False, sg, gs)
    s, v, gx = _run(lif_cpu, x, 0.0, False, False, sg, gs)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)


def test_float32_kernels_compute_in_float32():
    """Number literals of the surrogate source are typed like the data (a float64 literal would widen the math)."""
    src = fused._typed_source(fused._renamed_source(get_surrogate("atan").grad_source, "_sg_derivative"))
    assert src.startswith("def _sg_derivative(u, alpha):") and "DT(2.0)" in src and "DT(1.0)" in src


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_a_repeated_step_is_read_once_and_matches_the_copied_input(dtype, T, per_neuron):
    """Direct coding hands the first neuron layer one step expanded over T (stride 0): the kernels read that step
    T times instead of a T-fold copy; spikes and gradients are those of the copied input (parameter gradients
    too), on the C-order and the channels-last path."""
    from spikeforge.functional import lif

    torch.manual_seed(0)
    for cl in (False, True):
        y = torch.randn(4, 6, 5, 5, dtype=dtype) + 0.7
        if cl:
            y = y.contiguous(memory_format=torch.channels_last)
        tau = (torch.rand(6, 1, 1, dtype=dtype) + 1.5).requires_grad_() if per_neuron else 2.0
        th = (torch.rand(6, 5, 5, dtype=dtype) * 0.5 + 0.75).requires_grad_() if per_neuron else 1.0
        grads = []
        for x_of in (lambda t: t.unsqueeze(0).expand(T, *t.shape), lambda t: t.unsqueeze(0).repeat(T, 1, 1, 1, 1)):
            yy = y.clone().requires_grad_()
            x = x_of(yy)
            assert (x.stride(0) == 0) == (len(grads) == 0 and T > 1) or T == 1
            s, _ = lif(x, tau=tau, v_threshold=th, v_reset=None, backend="cpu")
            g = torch.randn(s.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
            params = [p for p in (tau, th) if torch.is_tensor(p)]
            grads.append((s.detach(), *torch.autograd.grad(s, [yy, *params], g)))
        (s_a, *g_a), (s_b, *g_b) = grads
        assert torch.equal(s_a, s_b)
        for a, b in zip(g_a, g_b):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_first_fused_call_keeps_torchs_thread_count():
    """numba's OpenMP pool, started by the first fused call, resets the thread count torch reads; the kernels give
    the user's ``torch.set_num_threads`` back (checked in a fresh process, where the pool is not started yet)."""
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(1)\n"
            "from spikeforge.functional import lif\n"
            "lif(torch.rand(4, 8, 70000), backend='cpu')\n"
            "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"
