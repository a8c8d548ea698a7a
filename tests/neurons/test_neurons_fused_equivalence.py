"""Every recurrent zoo neuron: the fused CPU path and the reference path give identical spikes and states and
matching gradients (input, initial state and every parameter), in float64 and float32.

The fused kernels compile per (cell, dtype, surrogate) and, for the multi-level cell, per cap: the cases use the
defaults other tests use too (cap 4, each cell's default surrogate), so a cold cache compiles each kernel once.  The
per-channel parameters make runs of N neurons: 37 in float64, shorter than ``fused.SEG_MIN``, so the kernels read
parameter rows; 96 in float32, so they run in segment mode (scalar parameters per run, runs cut by the blocks).
Each dtype thus compiles one mode, and both modes are checked for every cell."""

import zlib

import pytest
import torch

from spikeforge.functional import ALIFState, GLIFState, LIFBState, LIFState, alif, glif, lifb, multilevel, sigma_delta
from spikeforge.functional.sigma_delta import SigmaDeltaState

T, B, C = 12, 3, 4
N_ROWS, N_SEG = 37, 96  # neurons per channel: parameter rows (float64) and segment mode (float32)


def _n(dtype):
    return N_ROWS if dtype == torch.float64 else N_SEG


def _glif_case(dtype, g):
    ch = lambda lo, hi: (lo + (hi - lo) * torch.rand(C, 1, generator=g)).to(dtype)  # noqa: E731
    params = dict(tau=ch(0.1, 0.9), v_threshold=ch(0.3, 0.6), leak=ch(0.0, 0.1), v_reset=ch(0.2, 0.6),
                  alpha=ch(0.2, 0.9), beta=ch(0.1, 0.9), gamma=ch(0.1, 0.9),
                  conductance=torch.rand(T, 1, C, 1, generator=g).to(dtype))
    state = GLIFState(torch.rand(B, C, _n(dtype), generator=g).to(dtype) * 0.5,
                      (torch.rand(B, C, _n(dtype), generator=g) > 0.5).to(dtype))
    return glif, params, state, 0.9


def _alif_case(dtype, g, v_reset=0.0):
    params = dict(tau=(1.0 + 3 * torch.rand(C, 1, generator=g)).to(dtype),
                  tau_adapt=(2.0 + 10 * torch.rand(C, 1, generator=g)).to(dtype),
                  beta=(0.5 * torch.rand(C, 1, generator=g)).to(dtype), v_threshold=torch.tensor(0.8, dtype=dtype),
                  v_reset=v_reset)
    state = ALIFState(torch.rand(B, C, _n(dtype), generator=g).to(dtype) * 0.5, torch.rand(B, C, _n(dtype), generator=g).to(dtype))
    return alif, params, state, 2.0


def _sigma_delta_case(dtype, g):
    params = dict(omega=(0.5 + 4 * torch.rand(C, 1, generator=g)).to(dtype))
    return sigma_delta, params, SigmaDeltaState(torch.rand(B, C, _n(dtype), generator=g).to(dtype)), 1.5


def _lifb_case(dtype, g):
    params = dict(tau=(0.3 + 0.6 * torch.rand(C, 1, generator=g)).to(dtype), v_threshold=torch.tensor(1.0, dtype=dtype),
                  burst_threshold=(1.5 + torch.rand(C, 1, generator=g)).to(dtype),
                  beta=(1.0 + 2 * torch.rand(C, 1, generator=g)).to(dtype))
    return lifb, params, LIFBState(torch.rand(B, C, _n(dtype), generator=g).to(dtype)), 2.5


def _multilevel_case(dtype, g):
    params = dict(cap=4, tau=2.0, v_threshold=(0.4 + 0.5 * torch.rand(C, 1, generator=g)).to(dtype))
    return multilevel, params, LIFState(torch.rand(B, C, _n(dtype), generator=g).to(dtype)), 2.0


CASES = {
    "lifb": _lifb_case,
    "multilevel": _multilevel_case,
    "glif": _glif_case,
    "alif_hard": _alif_case,
    "alif_soft": lambda dtype, g: _alif_case(dtype, g, v_reset=None),
    "sigma_delta": _sigma_delta_case,
}


def _run(fn, x, params, state, backend, dtype):
    x = x.detach().clone().requires_grad_()
    ps = {k: (v.detach().clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in params.items()}
    st0 = type(state)(*[t.detach().clone().requires_grad_() for t in state])
    out, st, v_seq = fn(x, st0, backend=backend, return_v=True, **ps)
    w = torch.linspace(-1.0, 1.0, out.numel(), dtype=dtype).reshape(out.shape)
    loss = (out * w).sum() + sum((t * (i + 0.5)).sum() for i, t in enumerate(st)) + (v_seq * 0.3).sum()
    loss.backward()
    grads = {"x": x.grad, **{f"state.{i}": t.grad for i, t in enumerate(st0)},
             **{k: v.grad for k, v in ps.items() if torch.is_tensor(v)}}
    return out.detach(), [t.detach() for t in st], v_seq.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_cpu_equals_reference(case, dtype, monkeypatch):
    import spikeforge.kernels.fused as fused

    modes = []
    seg_mode = fused._segment_mode
    monkeypatch.setattr(fused, "_segment_mode", lambda tabs, itemsize: modes.append(seg_mode(tabs, itemsize))
                        or modes[-1])
    g = torch.Generator().manual_seed(zlib.crc32(case.encode()) % 1000)  # str hash() varies per process
    fn, params, state, scale = CASES[case](dtype, g)
    x = (torch.rand(T, B, C, _n(dtype), generator=g) * scale).to(dtype)
    o1, st1, v1, g1 = _run(fn, x, params, state, "cpu", dtype)
    assert modes and all(m[0] == (dtype == torch.float32) for m in modes), modes
    o2, st2, v2, g2 = _run(fn, x, params, state, "reference", dtype)
    assert torch.equal(o1, o2), "outputs differ"
    assert 0.02 < (o2 != 0).to(torch.float64).mean() < 0.98, "degenerate test: no or only spikes"
    for a, b in zip(st1, st2):
        assert torch.equal(a, b), "final states differ"
    assert torch.equal(v1, v2)
    for k in g2:
        if g2[k] is None:
            assert g1[k] is None
            continue
        scale_k = g2[k].abs().max().item()
        atol = 1e-5 * max(scale_k, 1e-30)
        if dtype == torch.float32 and k in params:
            atol += 8 * torch.finfo(dtype).eps * _abs_contributions(fn, x, params, state, k)
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=atol, msg=k)


def _abs_contributions(fn, x, params, state, name):
    """Sum of |per-neuron contributions| to a broadcast parameter's gradient: the scale a float32 reduction's
    rounding error is proportional to.  Two correct kernels sum the contributions in different orders, so where
    they cancel (a scalar threshold) the reduced gradient differs by a few ulps of this sum, not of the result."""
    p = params[name]
    full = x.shape if p.dim() == x.dim() else x.shape[1:]
    expanded = dict(params, **{name: p.expand(torch.broadcast_shapes(p.shape, full)).contiguous()})
    _, _, _, grads = _run(fn, x, expanded, state, "reference", x.dtype)
    return grads[name].abs().sum().item()


def test_fused_backend_rejects_what_it_cannot_run():
    x = torch.rand(3, 2, 4)
    with pytest.raises(ValueError, match="triton"):
        alif(x, backend="triton")
    with pytest.raises(ValueError, match="dtype"):
        alif(x.to(torch.bfloat16), backend="cpu")
    with pytest.raises(ValueError, match="NaN"):
        alif(torch.full((3, 2, 4), float("nan")), backend="cpu")
    with pytest.raises(ValueError, match="state"):
        alif(x, state=ALIFState(torch.zeros(5), torch.zeros(2, 4)))
