"""Every registered cell (spikeforge.kernels.cell.CELLS) on the fused CPU backend equals the reference loop on
its declared examples: identical outputs, final states and recorded states, and gradients of x, the initial states
and every parameter that requires one within 1e-5 relative.  Generated from the registry: no hand-kept list.

``cpu`` (the generated numba driver) runs each example in float64 as declared (per-channel parameters make runs of
a few neurons: the kernels read parameter rows) and in float32 widened to ``N_SEG`` neurons per channel (runs of at
least ``fused.SEG_MIN``: segment mode, scalar parameters per run), so each dtype compiles one mode and both modes
are checked for every cell.  A cell with several examples (branches compiled as separate kernels, e.g. LIF's hard
and soft reset) runs each in one dtype, alternating, so every example is checked once.  ``triton`` (the generated
Triton driver) is checked on the same registry and examples, under Triton's CPU interpreter, in float32 and
float64, by tests/kernels/test_triton_cells.py."""

import pytest
import torch

import spikeforge.functional  # noqa: F401  (registers the cells)
from spikeforge.functional import ALIFState, alif
from spikeforge.kernels.cell import CELLS, CellExample, cell_examples, registered_cell
from spikeforge.kernels.dispatch import run_cell

N_SEG = 100  # neurons per channel in the float32 runs of the cpu backend: segment mode
BACKENDS = [("cpu", torch.float64), ("cpu", torch.float32)]


def _widen(ex: CellExample, n: int) -> CellExample:
    """The example with its last dim (neurons per channel, ``M``) repeated to ``n``: tensors whose last dim is
    ``M`` are tiled; per-channel and shared parameters (last dim 1) are kept."""
    m = ex.x.shape[-1]

    def tile(t):
        if not torch.is_tensor(t) or t.dim() == 0 or t.shape[-1] != m or m == 1:
            return t
        r = t.detach().repeat(*([1] * (t.dim() - 1)), -(-n // m))[..., :n]
        return r.requires_grad_(t.requires_grad)

    return CellExample(tile(ex.x), tuple(tile(s) for s in ex.states), tuple(tile(p) for p in ex.params),
                       ex.surrogate, ex.label)


def _run(cell, ex: CellExample, backend: str, dtype):
    """Outputs, final states, recorded first state, and the gradients of a loss on all three with respect to x,
    the initial states and every parameter tensor that requires a gradient."""
    x = ex.x.detach().to(dtype).requires_grad_()
    st0 = [s.detach().to(dtype).requires_grad_() for s in ex.states]
    ps = [p.detach().to(dtype).requires_grad_(p.requires_grad) if torch.is_tensor(p) else p for p in ex.params]
    out, st, v_seq = run_cell(cell, x, tuple(st0), tuple(ps), ex.surrogate, backend, record=True)
    w = torch.linspace(-1.0, 1.0, out.numel(), dtype=dtype).reshape(out.shape)
    loss = (out * w).sum() + sum((t * (i + 0.5)).sum() for i, t in enumerate(st)) + (v_seq * 0.3).sum()
    loss.backward()
    grads = {"x": x.grad, **{f"state {n!r}": t.grad for n, t in zip(cell.states, st0)},
             **{f"param {n!r}": p.grad for n, p in zip(cell.params, ps) if torch.is_tensor(p) and p.requires_grad}}
    return out.detach(), [t.detach() for t in st], v_seq.detach(), grads


def _abs_contributions(cell, ex, dtype, name):
    """Sum of |per-neuron contributions| to a broadcast parameter's gradient: the scale a float32 reduction's
    rounding error is proportional to.  Two correct kernels sum the contributions in different orders, so where
    they cancel (a scalar threshold) the reduced gradient differs by a few ulps of this sum, not of the result."""
    i = cell.params.index(name)
    p = ex.params[i]
    full = ex.x.shape if name in cell.seq_params else ex.x.shape[1:]
    wide = p.detach().expand(torch.broadcast_shapes(p.shape, full)).contiguous().requires_grad_()
    expanded = CellExample(ex.x, ex.states, ex.params[:i] + (wide,) + ex.params[i + 1:], ex.surrogate, ex.label)
    return _run(cell, expanded, "reference", dtype)[3][f"param {name!r}"].abs().sum().item()


def _segment_expected(cell, ex: CellExample) -> bool:
    """Whether the cpu kernels take the example's parameters as scalars per run (runs of >= SEG_MIN neurons)."""
    from spikeforge.kernels.fused import SEG_MIN

    arrays = [p for n, p in zip(cell.params, ex.params) if torch.is_tensor(p) and p.numel() > 1
              and n not in cell.const_params]
    return all(p.shape[-1] == 1 for p in arrays) and (not arrays or ex.x.shape[-1] >= SEG_MIN)


@pytest.mark.parametrize("backend, dtype", BACKENDS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("name", CELLS.list())
def test_backend_equals_reference(name, backend, dtype, monkeypatch):
    cell = registered_cell(name)
    import spikeforge.kernels.fused as fused

    modes = []
    seg_mode = fused._segment_mode
    monkeypatch.setattr(fused, "_segment_mode", lambda tabs, itemsize: modes.append(seg_mode(tabs, itemsize))
                        or modes[-1])
    examples = cell_examples(name, dtype)
    for i, ex in enumerate(examples):
        if len(examples) > 1 and i % 2 != (dtype == torch.float32):
            continue  # several examples (separate kernels, e.g. hard and soft reset): each runs in one dtype
        if dtype == torch.float32:
            ex = _widen(ex, N_SEG)
        what = f"cell {name!r}{f' ({ex.label})' if ex.label else ''}, backend {backend!r}, {dtype}"
        modes.clear()
        o1, st1, v1, g1 = _run(cell, ex, backend, dtype)
        assert modes and all(m[0] == _segment_expected(cell, ex) for m in modes), (what, modes)
        o2, st2, v2, g2 = _run(cell, ex, "reference", dtype)
        assert torch.equal(o1, o2), f"{what}: outputs differ"
        for n, a, b in zip(("v_seq", *cell.states), (v1, *st1), (v2, *st2)):
            assert torch.equal(a, b), f"{what}: state {n} differs"
        assert g1.keys() == g2.keys()
        for k in g2:
            atol = 1e-5 * max(g2[k].abs().max().item(), 1e-30)
            if dtype == torch.float32 and k.startswith("param"):
                atol += 8 * torch.finfo(dtype).eps * _abs_contributions(cell, ex, dtype, k.split("'")[1])
            torch.testing.assert_close(g1[k], g2[k], rtol=1e-5, atol=atol, msg=f"{what}: gradient of {k} differs")


def test_fused_backend_rejects_what_it_cannot_run(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # tests/conftest.py turns the interpreter on, which takes CPU tensors
    x = torch.rand(3, 2, 4)
    with pytest.raises(ValueError, match="triton"):
        alif(x, backend="triton")
    with pytest.raises(ValueError, match="dtype"):
        alif(x.to(torch.bfloat16), backend="cpu")
    with pytest.raises(ValueError, match="NaN"):
        alif(torch.full((3, 2, 4), float("nan")), backend="cpu")
    with pytest.raises(ValueError, match="state"):
        alif(x, state=ALIFState(torch.zeros(5), torch.zeros(2, 4)))
