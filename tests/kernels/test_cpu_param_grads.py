"""Parameter gradients of the fused CPU kernel of the LIF family against the reference, on each way a parameter
reaches the kernel: a learnable scalar k (PLIF's sigmoid(w)), a learnable per-neuron threshold (STL), a learnable
scalar threshold, a per-channel tau with and without a gradient, both per-neuron and learnable; every hard/soft
reset, detach_reset and decay_input combination (with ATan; two with the other surrogates), float32 and float64, with blocks and rows of
several sizes (block boundaries, streamed and plain stores).  Spikes and membrane potentials must be identical,
gradients within 1e-5 relative (in float32, or within 1e-5 of the float64 reference where the float32
reference's own rounding differs: it sums T x N float32 terms, the kernel accumulates them in float64)."""

import itertools

import pytest
import torch

from spikeforge.functional.lif import plif
from spikeforge.functional.stl import stl
from lif_backends import lif_cpu, lif_reference
from spikeforge.kernels import fused
from spikeforge.surrogate import get_surrogate

FLAGS = list(itertools.product([0.0, None], [False, True], [False, True]))  # v_reset (None=soft), decay, detach
SURROGATES = ["atan", "sigmoid", "triangle"]


def _params(kind, C, L, dtype, g):
    """(k leaves-producing function inputs, th) for one way of passing the parameters; leaves need grad."""
    if kind == "shared":  # float k and threshold: no parameter gradient, the shared-parameter path
        return {}, None
    if kind == "plif":  # learnable scalar k, float threshold
        return {"w": torch.tensor(0.3, dtype=dtype)}, None
    if kind == "stl":  # float k, learnable per-neuron threshold (broadcast over the batch)
        return {}, torch.rand(C, L, generator=g, dtype=dtype) * 0.5 + 0.75
    if kind == "th_scalar":  # learnable scalar threshold
        return {}, torch.tensor(0.9, dtype=dtype)
    if kind == "tau_channel_nograd":  # per-channel tau without gradient: per-neuron k, no parameter gradient
        return {"tau_const": torch.rand(C, 1, generator=g, dtype=dtype) * 3 + 1.0}, None
    if kind == "tau_th_channel":  # learnable per-channel tau and per-neuron threshold
        return ({"tau": torch.rand(C, 1, generator=g, dtype=dtype) * 3 + 1.0},
                torch.rand(C, L, generator=g, dtype=dtype) * 0.5 + 0.75)
    raise ValueError(kind)


KINDS = ["plif", "stl", "th_scalar", "tau_channel_nograd", "tau_th_channel"]


def _run(fn, x, v0, kp, th, outw, v_reset, decay, detach, sg):
    """Outputs and the gradients of a loss on spikes, v_seq and v_T w.r.t. x, v0 and the learnable parameters
    (``outw`` None: the loss is ``s.sum() + v_T.sum()``, whose spike gradient is one number broadcast)."""
    xx, vv = x.clone().requires_grad_(), v0.clone().requires_grad_()
    leaves = [xx, vv]
    k = 0.5
    if "w" in kp:
        w = kp["w"].clone().requires_grad_()
        leaves.append(w)
        k = torch.sigmoid(w)
    elif "tau" in kp:
        tau = kp["tau"].clone().requires_grad_()
        leaves.append(tau)
        k = 1.0 / tau
    elif "tau_const" in kp:
        k = 1.0 / kp["tau_const"]
    v_th = 1.0
    if th is not None:
        v_th = th.clone().requires_grad_()
        leaves.append(v_th)
    s, v_last, v_seq = fn(xx, vv, k, v_th, v_reset, decay, detach, sg, True)
    if outw is None:
        loss = s.sum() + v_last.sum()
    else:
        w_s, w_v, w_last = outw
        loss = (s * w_s).sum() + (v_seq * w_v).sum() + (v_last * w_last).sum()
    return (s, v_last, v_seq), torch.autograd.grad(loss, leaves)


def _rel_err(a, b):
    a, b = a.double(), b.double()
    scale = b.abs().max().clamp_min(1e-12)
    return ((a - b).abs() / torch.maximum(b.abs(), scale)).max().item()


def _check(kind, sg_name, dtype, T, B, C, L, seed, flags=FLAGS, const_gs=False):
    g = torch.Generator().manual_seed(seed)
    sg = get_surrogate(sg_name)
    x = torch.randn(T, B, C, L, generator=g, dtype=dtype) * 0.8 + 0.45
    v0 = torch.randn(B, C, L, generator=g, dtype=dtype) * 0.3
    outw = (torch.randn(T, B, C, L, generator=g, dtype=dtype), torch.randn(T, B, C, L, generator=g, dtype=dtype),
            torch.randn(B, C, L, generator=g, dtype=dtype))
    if const_gs:
        outw = None
    kp, th = _params(kind, C, L, dtype, g)
    names = ["x", "v0", *(["k"] if {"w", "tau"} & kp.keys() else []), *(["v_th"] if th is not None else [])]
    for v_reset, decay, detach in flags:
        what = f"{kind} {sg_name} {dtype} T={T} N={B * C * L} v_reset={v_reset} decay={decay} detach={detach}"
        (s1, vl1, vs1), g1 = _run(lif_reference, x, v0, kp, th, outw, v_reset, decay, detach, sg)
        (s2, vl2, vs2), g2 = _run(lif_cpu, x, v0, kp, th, outw, v_reset, decay, detach, sg)
        assert 0 < s1.float().mean() < 1, what  # not degenerate
        assert torch.equal(s2, s1), f"{what}: spikes differ"
        assert torch.equal(vs2, vs1) and torch.equal(vl2, vl1), f"{what}: membrane potentials differ"
        assert len(g2) == len(names)
        truth = None
        if dtype == torch.float32:  # the float64 reference on the same inputs, where it gives the same spikes
            kp64 = {n: t.double() for n, t in kp.items()}
            th64 = None if th is None else th.double()
            (s64, _, _), g64 = _run(lif_reference, x.double(), v0.double(), kp64, th64,
                                    None if outw is None else tuple(t.double() for t in outw), v_reset, decay,
                                    detach, sg)
            truth = g64 if torch.equal(s64.float(), s1) else None
        for i, name in enumerate(names):
            err = _rel_err(g2[i], g1[i])
            err_t = _rel_err(g2[i], truth[i]) if truth is not None else float("inf")
            assert err <= 1e-5 or err_t <= 1e-5, f"{what}: grad {name} differs by {err:.2e} (relative)"
            assert g2[i].dtype == g1[i].dtype and g2[i].shape == g1[i].shape, f"{what}: grad {name} layout"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("sg_name", SURROGATES)
@pytest.mark.parametrize("kind", KINDS)
def test_param_grads_match_reference(kind, sg_name, dtype):
    # N = 2 * 3 * 37: an odd row length (vector remainders), several blocks per row; every flag combination (each
    # its own compiled kernel) with atan, two with the other surrogates
    flags = FLAGS if sg_name == "atan" else [(0.0, True, False), (None, False, True)]
    _check(kind, sg_name, dtype, T=9, B=2, C=3, L=37, seed=10 * KINDS.index(kind) + SURROGATES.index(sg_name),
           flags=flags)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_param_grads_streamed_and_long(kind, dtype, monkeypatch):
    """Every output streamed (rows of 64-byte multiples, blocks at multiples of 16), a longer sequence and several
    blocks: the parameter path's non-temporal stores and its per-block accumulators."""
    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    _check(kind, "atan", dtype, T=40, B=4, C=4, L=64, seed=7, flags=[(0.0, True, False), (None, False, True)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_plif_and_stl_functional_cpu_equals_reference(dtype):
    """The functional PLIF (learnable scalar w) and STL (learnable per-neuron threshold) on the cpu backend."""
    g = torch.Generator().manual_seed(3)
    T, B, C, H = 12, 3, 4, 20
    x = torch.rand(T, B, C, H, generator=g, dtype=dtype) * 1.5
    gs = torch.randn(T, B, C, H, generator=g, dtype=dtype)
    w0 = torch.tensor(-0.2, dtype=dtype)
    th0 = 0.5 + 0.01 * torch.randn(C, H, generator=g, dtype=dtype)
    for name, fn, p0 in (("plif", lambda xx, p, be: plif(xx, p, backend=be), w0),
                         ("stl", lambda xx, p, be: stl(xx, p, backend=be), th0)):
        res = []
        for be in ("reference", "cpu"):
            xx, p = x.clone().requires_grad_(), p0.clone().requires_grad_()
            s, _ = fn(xx, p, be)
            res.append((s, torch.autograd.grad((s * gs).sum(), (xx, p))))
        (s1, (gx1, gp1)), (s2, (gx2, gp2)) = res
        assert torch.equal(s1, s2), name
        assert 0 < s1.mean() < 1, name
        torch.testing.assert_close(gx2, gx1, rtol=1e-5, atol=1e-6 * gx1.abs().max().item(), msg=name)
        torch.testing.assert_close(gp2, gp1, rtol=1e-5, atol=1e-5 * gp1.abs().max().item(), msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("const_gs", [False, True], ids=["weighted", "sum"])
def test_param_grads_many_small_blocks(dtype, stream, const_gs, monkeypatch):
    """Many backward blocks of 16 neurons (the last one partial): the per-block buffers, the prefetch of the next
    block's rows and the float64 sums over blocks; a spike gradient that is one number (s.sum()) too."""
    monkeypatch.setattr(fused, "HIST_BYTES", 1)  # the smallest blocks: 16 neurons
    if stream:
        monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    T, B, C, L = 6, 3, 4, 99  # N = 1188: many 16-neuron blocks, N not a multiple of them
    assert fused.bwd_block(1024, B * C * L, T, 1, 4) == 16 and (B * C * L) % 16
    for kind in ("shared", "plif", "stl", "tau_th_channel", "tau_channel_nograd"):
        _check(kind, "atan", dtype, T=T, B=B, C=C, L=L, seed=11, flags=[(0.0, True, False), (None, False, True)],
               const_gs=const_gs)
