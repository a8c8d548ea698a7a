"""Every registered cell (spikeforge.kernels.cell.CELLS), generated from the registry: its hand-written vjp equals
autograd of its step in float64 at every step of its declared examples, and the examples exercise the cell (spikes
occur and not everywhere).  No compilation: milliseconds per cell.  Every Cell defined in spikeforge.functional is
registered, so a new neuron cannot escape these checks."""

import importlib
import pkgutil

import pytest
import torch

import spikeforge.functional
from spikeforge.kernels.cell import (CELLS, Cell, CellExample, cell_examples, check_vjp, register_cell,
                                     registered_cell)
from spikeforge.kernels.dispatch import run_cell

MODULES = [importlib.import_module(m.name)
           for m in pkgutil.iter_modules(spikeforge.functional.__path__, "spikeforge.functional.")]


def test_every_functional_cell_is_registered():
    cells = {f"{mod.__name__}.{k}": v for mod in MODULES for k, v in vars(mod).items() if isinstance(v, Cell)}
    assert cells, "no Cell found in spikeforge.functional"
    missing = [where for where, c in cells.items() if c.name not in CELLS or registered_cell(c.name) is not c]
    assert not missing, f"cells defined but not registered with register_cell: {missing}"


@pytest.mark.parametrize("name", CELLS.list())
def test_cell_vjp_equals_autograd_of_step(name):
    cell = registered_cell(name)
    examples = cell_examples(name, torch.float64)
    for ex in examples:
        check_vjp(cell, ex)
        out = run_cell(cell, ex.x, ex.states, ex.params, ex.surrogate, backend="reference")[0]
        rate = (out != 0).to(torch.float64).mean().item()
        assert 0.02 < rate < 0.98, f"cell {name!r}, example {ex.label!r}: degenerate (output nonzero at {rate:.2%})"


# a toy adaptive integrate-and-fire cell (soft reset, leak k, adaptation a) and its vjp: right, and with one
# deliberate mistake in the gradient of state a or of parameter k
def _toy_step(x, v, a, vth, k):
    h = v - k * v + x
    s = spike(h - vth - a)  # noqa: F821
    return s, h - vth * s, a * k + s


def _toy_vjp(gs, gv, ga, x, v, a, vth, k, alpha):
    h = v - k * v + x
    s = heav(h - vth - a)  # noqa: F821
    d = dspike(h - vth - a, alpha)  # noqa: F821
    gsum = gs - gv * vth + ga
    gh = gv + gsum * d
    return gh, gh * (ONE - k), -(gsum * d) + ga * k, -(gsum * d) - gv * s, -(gh * v) + ga * a  # noqa: F821


def _toy_vjp_wrong_a(gs, gv, ga, x, v, a, vth, k, alpha):
    h = v - k * v + x
    s = heav(h - vth - a)  # noqa: F821
    d = dspike(h - vth - a, alpha)  # noqa: F821
    gsum = gs - gv * vth + ga
    gh = gv + gsum * d
    return gh, gh * (ONE - k), -(gsum * d) + ga, -(gsum * d) - gv * s, -(gh * v) + ga * a  # noqa: F821


def _toy_vjp_wrong_k(gs, gv, ga, x, v, a, vth, k, alpha):
    h = v - k * v + x
    s = heav(h - vth - a)  # noqa: F821
    d = dspike(h - vth - a, alpha)  # noqa: F821
    gsum = gs - gv * vth + ga
    gh = gv + gsum * d
    return gh, gh * (ONE - k), -(gsum * d) + ga * k, -(gsum * d) - gv * s, -(gh * v)  # noqa: F821


def _toy(name, vjp):
    return Cell(name, _toy_step, vjp, states=("v", "a"), params=("vth", "k"))


def _toy_example(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 2, 5, generator=g) * 2).to(dtype)
    states = (torch.rand(2, 5, generator=g).to(dtype), torch.zeros(2, 5, dtype=dtype))
    return CellExample(x, states, (torch.tensor(0.8, dtype=dtype).requires_grad_(),
                                   torch.full((5,), 0.3, dtype=dtype).requires_grad_()))


def test_right_toy_vjp_passes():
    check_vjp(_toy("toy", _toy_vjp), _toy_example())


@pytest.mark.parametrize("vjp, component", [(_toy_vjp_wrong_a, "state 'a'"), (_toy_vjp_wrong_k, "param 'k'")])
def test_wrong_vjp_fails_naming_cell_and_component(vjp, component):
    with pytest.raises(ValueError, match=rf"cell 'toy_wrong': vjp's gradient of {component} differs from autograd"):
        check_vjp(_toy("toy_wrong", vjp), _toy_example())


# the toy cell with kept values for the fused backward: h, a, and v (read only by the gradient of k)
def _toy_keep(x, v, a, vth, k):
    return v - k * v + x, a, v


def _toy_vjp_kept(gs, gv, ga, h, a, v, vth, k, alpha):
    s = heav(h - vth - a)  # noqa: F821
    d = dspike(h - vth - a, alpha)  # noqa: F821
    gsum = gs - gv * vth + ga
    gh = gv + gsum * d
    return gh, gh * (ONE - k), -(gsum * d) + ga * k, -(gsum * d) - gv * s, -(gh * v) + ga * a  # noqa: F821


def _toy_vjp_kept_wrong_k(gs, gv, ga, h, a, v, vth, k, alpha):
    s = heav(h - vth - a)  # noqa: F821
    d = dspike(h - vth - a, alpha)  # noqa: F821
    gsum = gs - gv * vth + ga
    gh = gv + gsum * d
    return gh, gh * (ONE - k), -(gsum * d) + ga * k, -(gsum * d) - gv * s, -(gh * v)  # noqa: F821


def _toy_kept(name, vjp_kept=_toy_vjp_kept, keep_for=((), (), ("k",))):
    return Cell(name, _toy_step, _toy_vjp, states=("v", "a"), params=("vth", "k"), keep=_toy_keep,
                vjp_kept=vjp_kept, keep_for=keep_for)


def test_kept_values_right_pass_and_wrong_fail_naming_what_differs():
    check_vjp(_toy_kept("toy_kept"), _toy_example())
    with pytest.raises(ValueError, match=r"cell 'toy_bad': vjp_kept's gradient of param 'k' differs from vjp's"):
        check_vjp(_toy_kept("toy_bad", _toy_vjp_kept_wrong_k), _toy_example())
    # a is read by every gradient: declaring it needed only for k's gradient is caught
    with pytest.raises(ValueError, match=r"vjp_kept's gradient of x differs from vjp's .* kept value 1 zeroed"):
        check_vjp(_toy_kept("toy_bad", keep_for=((), ("k",), ())), _toy_example())
    with pytest.raises(ValueError, match="keep returns 3 values; keep_for has 2 entries"):
        check_vjp(_toy_kept("toy_bad", keep_for=((), ())), _toy_example())
    with pytest.raises(ValueError, match="keep and vjp_kept go together"):
        Cell("toy_bad", _toy_step, _toy_vjp, states=("v", "a"), params=("vth", "k"), keep=_toy_keep)


@pytest.mark.parametrize("k_grad", [True, False], ids=["k needs a gradient", "k fixed"])
def test_kept_values_in_the_fused_backward_equal_the_reference(k_grad):
    """The cpu backward stores the kept values (v only when k needs a gradient) and runs vjp_kept on them."""
    from spikeforge.kernels.dispatch import run_cell
    from spikeforge.kernels.fused import _kept

    cell = _toy_kept("toy_kept_fused")
    assert _kept(cell, (0, 1) if k_grad else (0,)) == ((0, 1, 2) if k_grad else (0, 1))
    ex = _toy_example(torch.float64)
    res = []
    for backend in ("cpu", "reference"):
        x = ex.x.clone().requires_grad_()
        st = tuple(s.clone().requires_grad_() for s in ex.states)
        vth, k = ex.params[0].detach().clone().requires_grad_(), ex.params[1].detach().clone().requires_grad_(k_grad)
        out, (v, a), _ = run_cell(cell, x, st, (vth, k), backend=backend)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        leaves = [x, *st, vth, *([k] if k_grad else [])]
        res.append((out.detach(), torch.autograd.grad((out * w).sum() + v.sum() + a.square().sum(), leaves)))
    assert torch.equal(res[0][0], res[1][0])
    for got, want in zip(res[0][1], res[1][1]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_register_cell_rejects_what_is_not_a_cell():
    with pytest.raises(ValueError, match="register_cell: expected a Cell, got str"):
        register_cell("lif")


def test_cell_examples_must_match_the_cell(monkeypatch):
    cell = _toy("toy_mismatch", _toy_vjp)
    monkeypatch.setattr(CELLS, "_entries", dict(CELLS._entries))  # register into a copy, restored afterwards
    register_cell(cell)(lambda dtype, g: CellExample(torch.zeros(2, 1, dtype=dtype), (torch.zeros(1),), (0.5, 0.1)))
    with pytest.raises(ValueError, match="cell 'toy_mismatch': example '' has 1 states and 2 params; the cell has 2"):
        cell_examples("toy_mismatch")
    with pytest.raises(ValueError, match="unknown cell 'nope'"):
        cell_examples("nope")
