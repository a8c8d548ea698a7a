"""Every fused backend of the LIF family against the reference (the cell's plain torch loop): identical spikes and membrane potentials, and gradients
(x, initial state, PLIF w, per-neuron threshold, the return_v path) within 1e-5 relative, for every
combination of hard/soft reset, detach_reset and decay_input with ATan (two combinations with each other surrogate),
T in {1, 2, 7, 64}, float32/float64.

The Triton backend runs under Triton's CPU interpreter (TRITON_INTERPRET=1) when triton is installed.
"""

import itertools
import math

import pytest
import torch

from lif_backends import lif_cpu, lif_on, lif_reference
from spikeforge.surrogate import SURROGATES, get_surrogate

SURROGATE_NAMES = SURROGATES.list()
DTYPES = [torch.float32, torch.float64]
FLAGS = list(itertools.product([0.0, None], [False, True], [False, True]))  # v_reset (None=soft), decay, detach
TS = [1, 2, 7, 64]


@pytest.fixture
def triton_interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # before triton's first import, if this is it
    pytest.importorskip("triton", reason="triton is an optional extra (pip install 'spikeforge[triton]')")
    return lif_on("triton")


def make_case(T, dtype, seed, shape=(3, 37)):
    """Inputs that fire often and sit near threshold, a PLIF w, a per-neuron threshold and output weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=g, dtype=dtype) * 0.8 + 0.45
    v0 = torch.randn(*shape, generator=g, dtype=dtype) * 0.3
    w = torch.tensor(0.3, dtype=dtype)  # 1/tau = sigmoid(w)
    th = torch.rand(shape[-1], generator=g, dtype=dtype) * 0.5 + 0.75  # broadcast over the batch
    outw = (torch.randn(T, *shape, generator=g, dtype=dtype), torch.randn(T, *shape, generator=g, dtype=dtype),
            torch.randn(*shape, generator=g, dtype=dtype))
    return x, v0, w, th, outw


def run(fn, case, v_reset, decay, detach, sg, tensor_params=True):
    """Outputs and d(loss)/d(x, v0[, w, th]) with a loss on spikes, v_seq and v_T."""
    x, v0, w, th, (w_s, w_v, w_last) = case
    leaves = [t.clone().requires_grad_() for t in ((x, v0, w, th) if tensor_params else (x, v0))]
    if tensor_params:
        xx, vv, ww, tt = leaves
        k, v_th = torch.sigmoid(ww), tt
    else:
        xx, vv = leaves
        k, v_th = 0.5, 1.0
    s, v_last, v_seq = fn(xx, vv, k, v_th, v_reset, decay, detach, sg, True)
    loss = (s * w_s).sum() + (v_seq * w_v).sum() + (v_last * w_last).sum()
    return (s, v_last, v_seq), torch.autograd.grad(loss, leaves)


def grad_errors(got, want):
    """Largest elementwise relative difference per gradient, floored at the gradient's scale."""
    errs = []
    for a, b in zip(got, want):
        a, b = a.double(), b.double()
        scale = b.abs().max().clamp_min(1e-12)
        errs.append(((a - b).abs() / torch.maximum(b.abs(), scale)).max().item())
    return errs


def assert_grads_close(got, want, what, truth=None):
    """Within 1e-5 relative of the reference; in float32 a larger difference is accepted only where the float64
    reference (same inputs, same spikes) shows it is the float32 reference's rounding, not the kernel's: the
    parameter gradients sum T x N terms, which the fused kernels accumulate in float64."""
    errs = grad_errors(got, want)
    errs_truth = grad_errors(got, truth) if truth is not None else [math.inf] * len(errs)
    for name, err, err_t in zip(("x", "v0", "w", "v_th"), errs, errs_truth):
        assert err <= 1e-5 or err_t <= 1e-5, f"{what}: grad {name} differs by {err:.2e} (relative)"


def check_equivalent(fn, sg_name, dtype, Ts, flags=FLAGS, tensor_params=(True, False)):
    sg = get_surrogate(sg_name)
    for T, (v_reset, decay, detach), tp in itertools.product(Ts, flags, tensor_params):
        what = f"{sg_name} {dtype} T={T} v_reset={v_reset} decay_input={decay} detach_reset={detach} tensors={tp}"
        case = make_case(T, dtype, seed=T * 100 + len(sg_name))
        (s1, vl1, vs1), g1 = run(lif_reference, case, v_reset, decay, detach, sg, tp)
        (s2, vl2, vs2), g2 = run(fn, case, v_reset, decay, detach, sg, tp)
        assert 0 < s1.mean() < 1, what  # the case is not degenerate
        assert torch.equal(s2, s1), f"{what}: spikes differ"
        assert torch.equal(vs2, vs1) and torch.equal(vl2, vl1), f"{what}: membrane potentials differ"
        truth = None
        if dtype == torch.float32:
            case64 = tuple(t.double() if torch.is_tensor(t) else tuple(u.double() for u in t) for t in case)
            (s64, _, _), g64 = run(lif_reference, case64, v_reset, decay, detach, sg, tp)
            truth = g64 if torch.equal(s64.float(), s1) else None
        assert_grads_close(g2, g1, what, truth)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sg_name", SURROGATE_NAMES)
def test_cpu_equals_reference(sg_name, dtype):
    # every flag combination (each its own compiled kernel) with atan; two with each other surrogate (a surrogate
    # is one function of u, called the same way whatever the flags)
    flags = FLAGS if sg_name == "atan" else [(0.0, True, False), (None, False, True)]
    check_equivalent(lif_cpu, sg_name, dtype, TS, flags=flags)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sg_name", SURROGATE_NAMES)
def test_triton_interpreted_equals_reference(sg_name, dtype, triton_interpreted):
    # The interpreter runs the kernel in Python: every flag combination at T in {1, 2, 7} and T=64 for one
    # surrogate; two flag combinations at T=7 for the others (a surrogate is one function of u, called the same
    # way whatever the flags; each flag combination is its own compiled kernel, checked with atan).
    two = [(0.0, True, False), (None, False, True)]
    if sg_name == "atan":
        check_equivalent(triton_interpreted, sg_name, dtype, [1, 2, 7], tensor_params=(True,))
        check_equivalent(triton_interpreted, sg_name, dtype, [64], flags=two, tensor_params=(True,))
    else:
        check_equivalent(triton_interpreted, sg_name, dtype, [7], flags=two, tensor_params=(True,))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_gradient_paths(backend, request):
    """Incoming-gradient layouts: none for spikes (loss on v_T only), a broadcast constant (s.sum()), a
    non-contiguous gradient, a non-contiguous input, a broadcast initial state and per-channel tau."""
    fn = lif_cpu if backend == "cpu" else request.getfixturevalue("triton_interpreted")
    sg = get_surrogate("atan")
    T, B, C, L = 5, 2, 3, 40
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(T, L, B, C, generator=g, dtype=torch.float64) * 0.8 + 0.5).permute(0, 2, 3, 1)  # strided
    tau = torch.rand(C, 1, generator=g, dtype=torch.float64) * 3 + 1.0  # per channel
    ramp = torch.arange(T * B * C * L, dtype=x.dtype) / (T * B * C * L)
    losses = {
        "v_last only": lambda s, vl, vs: (vl ** 2).sum(),
        "s.sum()": lambda s, vl, vs: s.sum(),
        "strided grad": lambda s, vl, vs: (s * ramp.reshape(L, C, B, T).permute(3, 2, 1, 0)).sum(),
        "v_seq only": lambda s, vl, vs: (vs * vs).sum(),
    }
    for name, loss_fn in losses.items():
        results = []
        for f in (lif_reference, fn):
            xx = x.detach().clone().permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1).requires_grad_()
            t = tau.clone().requires_grad_()
            v0 = torch.tensor(0.2, dtype=x.dtype).expand(B, C, L)  # stride-0 state
            s, vl, vs = f(xx, v0, 1.0 / t, 1.0, 0.0, True, False, sg, True)
            results.append((s, vl, torch.autograd.grad(loss_fn(s, vl, vs), (xx, t))))
        (s1, vl1, g1), (s2, vl2, g2) = results
        assert torch.equal(s1, s2) and torch.equal(vl1, vl2), name
        for a, b in zip(g2, g1):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
