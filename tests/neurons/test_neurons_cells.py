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
