"""The execution paths of the generic fused engine (spikeforge.kernels.fused) that the equivalence cases do not
reach: parameters that change over time (GLIF's beta and conductance) in every layout the kernel tables support,
several blocks with runs that straddle block boundaries, channels-last input, the kernels without parameter
gradients, and the backward without replay (a vjp that reads no state).

Float64 and each cell's default surrogate only, so the kernels compiled here are mostly the ones the
equivalence test compiles too."""

import pytest
import torch

from spikeforge.functional import glif, sigma_delta
from spikeforge.functional.alif import ALIF_CELL
from spikeforge.functional.glif import GLIF_CELL, GLIFState
from spikeforge.functional.lifb import LIFB_CELL
from spikeforge.functional.multilevel import MULTILEVEL_CELL
from spikeforge.functional.sigma_delta import SIGMA_DELTA_CELL
from spikeforge.kernels.fused import block_size, vjp_reads_states

DT = torch.float64


def _glif_run(x, params, state, backend, grads=True):
    x = x.detach().clone().requires_grad_()
    ps = {k: v.detach().clone().requires_grad_(grads) for k, v in params.items()}
    st0 = GLIFState(*[t.detach().clone() for t in state])
    s, st, u = glif(x, st0, backend=backend, return_v=True, **ps)
    w = torch.linspace(-1.0, 1.0, s.numel(), dtype=DT).reshape(s.shape)
    ((s * w).sum() + (u * 0.3).sum() + st.u.sum()).backward()
    return s.detach(), u.detach(), x.grad, {k: v.grad for k, v in ps.items()}


def _check_glif(x, params, state, grads=True):
    s1, u1, gx1, gp1 = _glif_run(x, params, state, "cpu", grads)
    s2, u2, gx2, gp2 = _glif_run(x, params, state, "reference", grads)
    assert torch.equal(s1, s2) and torch.equal(u1, u2)
    assert 0.02 < (s2 != 0).to(DT).mean() < 0.98, "degenerate test: no or only spikes"
    torch.testing.assert_close(gx1, gx2, rtol=1e-5, atol=1e-5 * gx2.abs().max().item())
    for k in gp2:
        if gp2[k] is None:
            assert gp1[k] is None, k
            continue
        assert gp1[k].shape == params[k].shape, k
        torch.testing.assert_close(gp1[k], gp2[k], rtol=1e-5, atol=1e-5 * max(gp2[k].abs().max().item(), 1e-30),
                                   msg=k)


def _unit(shape, g, lo=0.1, hi=0.9):
    return (lo + (hi - lo) * torch.rand(shape, generator=g)).to(DT)


# x [T, B, C, N] with N * C not a multiple of the kernel block: several blocks, channel runs across block edges
T, B, C, N = 6, 5, 4, 111


@pytest.mark.parametrize("layout", ["per_step_channel", "per_step_neuron", "batch_and_last", "shared"])
def test_glif_time_varying_parameters_match_reference(layout):
    g = torch.Generator().manual_seed(7)
    seq_shape = {"per_step_channel": (T, 1, C, 1),       # runs of N neurons, one table entry per (t, channel)
                 "per_step_neuron": (T, 1, C, N),        # runs of one neuron
                 "batch_and_last": (T, B, 1, N),         # varying dims not contiguous: expanded over C
                 "shared": (1,)}[layout]
    params = dict(tau=_unit((C, 1), g), v_threshold=_unit((C, 1), g, 0.3, 0.6), leak=_unit((C, 1), g, 0.0, 0.1),
                  v_reset=_unit((C, 1), g, 0.2, 0.6), alpha=_unit((C, 1), g), gamma=_unit((C, 1), g),
                  beta=_unit(seq_shape, g), conductance=_unit(seq_shape, g))
    state = GLIFState(torch.rand(B, C, N, generator=g).to(DT) * 0.5, (torch.rand(B, C, N, generator=g) > 0.5).to(DT))
    x = (torch.rand(T, B, C, N, generator=g) * 0.9).to(DT)
    _check_glif(x, params, state)


def test_segment_mode_matches_reference_with_runs_cut_by_blocks(monkeypatch):
    # every parameter constant on runs of >= SEG_MIN neurons (per channel of 128 neurons; the conductance per step
    # and channel): the kernels take the parameters as scalars, one row call per run, and blocks of 144 (2 threads)
    # or 288 neurons cut the runs
    import spikeforge.kernels.fused as fused

    modes = []
    seg_mode = fused._segment_mode
    monkeypatch.setattr(fused, "_segment_mode", lambda tabs, itemsize: modes.append(seg_mode(tabs, itemsize))
                        or modes[-1])
    g = torch.Generator().manual_seed(23)
    Cs, M = 3, 128
    params = dict(tau=_unit((Cs, 1), g), v_threshold=_unit((Cs, 1), g, 0.3, 0.6), leak=_unit((Cs, 1), g, 0.0, 0.1),
                  v_reset=_unit((Cs, 1), g, 0.2, 0.6), alpha=_unit((Cs, 1), g), gamma=_unit((Cs, 1), g),
                  beta=_unit((Cs, 1), g), conductance=_unit((T, 1, Cs, 1), g))
    state = GLIFState(torch.rand(3, Cs, M, generator=g).to(DT) * 0.5, (torch.rand(3, Cs, M, generator=g) > 0.5).to(DT))
    _check_glif((torch.rand(T, 3, Cs, M, generator=g) * 0.9).to(DT), params, state)
    assert modes == [(True, True)]  # segment mode, runs 64-byte aligned
    assert fused.SEG_MIN <= M


def test_segment_mode_needs_long_runs():
    from spikeforge.kernels.fused import SEG_MIN, _param_table, _segment_mode

    shape, n = (2, 4, SEG_MIN), 8 * SEG_MIN
    per_channel = _param_table(torch.rand(4, 1), 1, shape, n, DT)
    per_neuron = _param_table(torch.rand(4, SEG_MIN), 1, shape, n, DT)
    short = _param_table(torch.rand(4 * SEG_MIN // 2, 1), 1, (2, 4 * SEG_MIN // 2, 2), n, DT)
    shared = _param_table(0.5, 1, shape, n, DT)
    assert _segment_mode([per_channel, shared], 8) == (True, True)
    assert _segment_mode([per_channel, per_neuron], 8)[0] is False
    assert _segment_mode([short], 8)[0] is False
    assert _segment_mode([], 8)[0] is False            # no array parameter: nothing to gain


def test_glif_channels_last_input_matches_reference():
    g = torch.Generator().manual_seed(3)
    Hh = Ww = 5
    params = dict(tau=_unit((C, 1, 1), g), v_threshold=_unit((C, 1, 1), g, 0.3, 0.6),
                  leak=_unit((C, 1, 1), g, 0.0, 0.1), v_reset=_unit((C, 1, 1), g, 0.2, 0.6),
                  alpha=_unit((C, 1, 1), g), gamma=_unit((C, 1, 1), g), beta=_unit((C, 1, 1), g),
                  conductance=_unit((T, 1, C, 1, 1), g))
    state = GLIFState(torch.zeros(B, C, Hh, Ww, dtype=DT), torch.zeros(B, C, Hh, Ww, dtype=DT))
    x = (torch.rand(T * B, C, Hh, Ww, generator=g) * 0.9).to(DT).contiguous(memory_format=torch.channels_last)
    x = x.reshape(T, B, C, Hh, Ww)
    assert not x.is_contiguous()
    _check_glif(x, params, state)


def test_glif_kernel_without_parameter_gradients():
    # no parameter requires a gradient: the backward kernel that computes none of them
    g = torch.Generator().manual_seed(11)
    params = dict(tau=_unit((C, 1), g), v_threshold=_unit((C, 1), g, 0.3, 0.6), leak=_unit((C, 1), g, 0.0, 0.1),
                  v_reset=_unit((C, 1), g, 0.2, 0.6), alpha=_unit((C, 1), g), gamma=_unit((C, 1), g),
                  beta=_unit((C, 1), g), conductance=_unit((T, 1, C, 1), g))
    state = GLIFState(torch.rand(B, C, N, generator=g).to(DT) * 0.5, torch.zeros(B, C, N, dtype=DT))
    _check_glif((torch.rand(T, B, C, N, generator=g) * 0.9).to(DT), params, state, grads=False)


def test_glif_time_varying_parameter_must_broadcast():
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="conductance"):
        glif(x, conductance=torch.full((5, 1, 1), 0.5))


def test_sigma_delta_backward_skips_the_replay_and_matches_reference():
    # its vjp reads no state (straight through), so its backward runs without replaying the forward
    assert not vjp_reads_states(SIGMA_DELTA_CELL)
    assert all(vjp_reads_states(c) for c in (GLIF_CELL, ALIF_CELL, LIFB_CELL, MULTILEVEL_CELL))
    g = torch.Generator().manual_seed(5)
    x0 = (torch.rand(T, B, C, N, generator=g) * 1.5 - 0.3).to(DT)
    w = torch.randn(T, B, C, N, generator=g).to(DT)
    res = []
    for backend in ("cpu", "reference"):
        x = x0.clone().requires_grad_()
        y, st = sigma_delta(x, omega=3.0, backend=backend)   # float omega: the kernel without parameter gradients
        ((y * w).sum() + st.v.sum()).backward()
        res.append((y.detach(), x.grad))
    assert torch.equal(res[0][0], res[1][0])
    torch.testing.assert_close(res[0][1], res[1][1], rtol=1e-5, atol=1e-7)


def test_block_size_keeps_the_block_buffer_small():
    assert block_size(4, 4) == 1024
    assert block_size(20, 4) == 256          # e.g. GLIF's backward: 2 x 2 states, 8 parameters, 8 gradients
    assert block_size(20, 8) == 128
    assert block_size(1000, 8) == 128        # never below 128


def test_backward_blocks_are_long_for_few_rows_and_short_for_many():
    from spikeforge.functional.lif import LIF_CELL
    from spikeforge.kernels.fused import _bwd_cap

    assert _bwd_cap(LIF_CELL, (), 4, True) == 16384  # 5 rows: 320 KB of L2, few row calls per element
    all_grads = tuple(i for i, p in enumerate(GLIF_CELL.params) if p not in GLIF_CELL.no_grad_params)
    assert _bwd_cap(GLIF_CELL, all_grads, 4) == 256  # 20 rows: the buffer stays in L1


@pytest.mark.parametrize("cell", ["multilevel", "sigma_delta"])
def test_streaming_stores_and_short_blocks_match_reference(cell, monkeypatch):
    # outputs written by non-temporal stores (forced here for a small output: rows 64-byte aligned, N a multiple of
    # 16) and blocks shorter than the compiled block size (the run's block length is chosen per call).  The
    # streaming kernels are a compile-time variant generated the same way for every cell: two cells keep the compile
    # time down -- multi-level (a replay; shared parameters: segment mode) and sigma-delta (no replay; a per-neuron
    # omega: parameter rows)
    import spikeforge.kernels.fused as fused
    from spikeforge.functional import multilevel

    monkeypatch.setattr(fused, "STREAM_MIN_BYTES", 0)
    modes = []
    seg_mode = fused._segment_mode
    monkeypatch.setattr(fused, "_segment_mode", lambda tabs, itemsize: modes.append(seg_mode(tabs, itemsize))
                        or modes[-1])
    g = torch.Generator().manual_seed(13)
    x0 = (torch.rand(5, 4, 3, 64, generator=g) * 2.0).to(DT)      # N = 768: 64-byte rows, several blocks
    w = torch.randn(x0.shape, generator=g).to(DT)
    omega = (2.5 + torch.rand(3, 64, generator=g)).to(DT)
    fn, kw = {"multilevel": (multilevel, {"cap": 4}), "sigma_delta": (sigma_delta, {"omega": omega})}[cell]
    res = []
    for backend in ("cpu", "reference"):
        x = x0.clone().requires_grad_()
        out, st = fn(x, backend=backend, **kw)
        ((out * w).sum() + st[0].sum()).backward()
        res.append((out.detach(), x.grad))
    assert fused._stream(res[0][0].reshape(5, -1).numpy(), fused.run_block(1024, 768))
    assert modes == [(cell == "multilevel", True)]
    assert torch.equal(res[0][0], res[1][0])
    torch.testing.assert_close(res[0][1], res[1][1], rtol=1e-5, atol=1e-7)


def test_lifb_backward_computes_only_the_needed_parameter_gradient():
    # only beta requires a gradient (the LIFB module's case): the backward kernel specialised for it
    from spikeforge.functional import lifb

    g = torch.Generator().manual_seed(17)
    x0 = (torch.rand(T, B, C, N, generator=g) * 2.5).to(DT)
    beta0 = (1.0 + 2 * torch.rand(C, 1, generator=g)).to(DT)
    res = []
    for backend in ("cpu", "reference"):
        x = x0.clone().requires_grad_()
        beta = beta0.clone().requires_grad_()
        tau = torch.full((C, 1), 0.5, dtype=DT)                    # a tensor that needs no gradient
        o, st = lifb(x, tau=tau, beta=beta, backend=backend)
        w = torch.linspace(-1.0, 1.0, o.numel(), dtype=DT).reshape(o.shape)
        ((o * w).sum() + st.u.sum()).backward()
        res.append((o.detach(), x.grad, beta.grad, tau.grad))
    assert torch.equal(res[0][0], res[1][0])
    assert res[0][3] is None and res[1][3] is None
    torch.testing.assert_close(res[0][1], res[1][1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res[0][2], res[1][2], rtol=1e-5, atol=1e-5 * res[1][2].abs().max().item())
