"""The Triton driver generated from every Cell against the reference loop, under Triton's CPU interpreter
(TRITON_INTERPRET=1, CPU tensors): identical spikes, states within 1e-5 relative (bit-identical in practice),
gradients of x, the initial states and every parameter within 1e-5 relative, in float32 and float64.  The
generated kernels are also compiled for a CUDA GPU (sm_90, on the CPU), which the interpreter does not do.

On a CUDA machine, ``pytest tests/kernels/test_triton_cells.py`` without TRITON_INTERPRET runs the same checks
with CUDA tensors (see docs/kernels.md).
"""

from __future__ import annotations

import os

import pytest
import torch

from spikeforge.functional.alif import ALIF_CELL
from spikeforge.functional.glif import GLIF_CELL
from spikeforge.functional.lifb import LIFB_CELL
from spikeforge.functional.multilevel import MULTILEVEL_CELL
from spikeforge.functional.sigma_delta import SIGMA_DELTA_CELL
from spikeforge.kernels.cell import reference_seq
from spikeforge.surrogate import get_surrogate

T, SHAPE = 4, (2, 3, 50)  # N = 300: two programs of BLOCK = 256, the second one masked
GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
DEVICE = "cuda" if GPU else "cpu"


def _params(cell, dtype, g):
    """Example parameters covering every table layout: a Python float, one value, per channel (Q = 3 runs of 50),
    per neuron (inner = 1), per step and channel, per step and shared; constant parameters as floats."""
    C = SHAPE[1]

    def r(*shape, lo=0.2, hi=0.9):  # multiples of 1/4: many steps land exactly on a threshold
        return torch.round((torch.rand(*shape, generator=g, dtype=dtype) * (hi - lo) + lo) * 4) / 4

    def one(v):
        return torch.tensor(v, dtype=dtype)

    if cell is ALIF_CELL:  # k, v_threshold, beta, rho, v_reset, hard
        return (r(C, 1), r(1, SHAPE[2], lo=0.5, hi=1.0), one(0.25), one(0.875), 0.0, 1.0)
    if cell is GLIF_CELL:  # tau, v_threshold, leak, v_reset, alpha, gamma, beta [T, ...], conductance [T, ...]
        return (one(0.25), r(C, 1, lo=0.3, hi=0.6), one(0.0625), 0.5, one(0.5625), r(C, 1), r(T, 1, C, 1),
                r(T, 1, 1, 1))
    if cell is LIFB_CELL:  # tau, v_threshold, burst_threshold, beta
        return (r(C, SHAPE[2], lo=0.3, hi=0.7), one(1.0), one(2.0), one(2.0))
    if cell is MULTILEVEL_CELL:  # k, v_threshold, cap (compiled in)
        return (one(0.25), r(C, 1, lo=0.6, hi=0.9), 3.0)
    if cell is SIGMA_DELTA_CELL:  # omega
        return (r(C, 1, lo=0.7, hi=2.0),)
    raise AssertionError(f"no example parameters for cell {cell.name!r}")


CELLS = [ALIF_CELL, GLIF_CELL, LIFB_CELL, MULTILEVEL_CELL, SIGMA_DELTA_CELL]


@pytest.fixture
def tk(monkeypatch):
    if not GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by triton.jit when a kernel is built
    from spikeforge.kernels import triton as tk

    return tk


def _case(cell, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # multiples of 1/8 (and parameters of 1/16): sums and products stay exact, so some steps sit exactly on a
    # threshold, where `>=` and `>` differ
    x = torch.randint(-4, 15, (T, *SHAPE), generator=g).to(dtype) / 8
    states = tuple(torch.randint(-2, 3, SHAPE, generator=g).to(dtype) / 8 for _ in cell.states)
    params = _params(cell, dtype, g)
    weights = [torch.randn(T, *SHAPE, generator=g, dtype=dtype) for _ in range(2)]
    weights += [torch.randn(*SHAPE, generator=g, dtype=dtype) for _ in cell.states]
    dev = lambda t: t.to(DEVICE) if torch.is_tensor(t) else t  # noqa: E731
    return dev(x), [dev(s) for s in states], [dev(p) for p in params], [dev(w) for w in weights]


def _seq_rank(cell, params):
    # seq parameters reach the drivers with x_seq's rank (as the dispatcher hands them on)
    return [p.reshape((1,) * (1 + len(SHAPE) - p.dim()) + tuple(p.shape))
            if n in cell.seq_params and torch.is_tensor(p) else p for n, p in zip(cell.params, params)]


def _run(fn, cell, case, sg):
    """Outputs and the gradients of a loss on the outputs, the recorded first state and the final states with
    respect to x, the initial states and every parameter that takes a gradient."""
    x, states, params, w = case
    leaves = [x.clone().requires_grad_()] + [s.clone().requires_grad_() for s in states]
    ps = []
    for n, p in zip(cell.params, _seq_rank(cell, params)):
        if torch.is_tensor(p) and n not in cell.no_grad_params:
            p = p.clone().requires_grad_()
            leaves.append(p)
        ps.append(p)
    out, final, vseq = fn(cell, leaves[0], tuple(leaves[1:1 + cell.n_states]), tuple(ps), sg, True)
    loss = (out * w[0]).sum() + (vseq * w[1]).sum() + sum((f * wf).sum() for f, wf in zip(final, w[2:]))
    return (out, vseq, *final), torch.autograd.grad(loss, leaves)


def _reference(cell, x, states, params, sg, record):
    # floats as tensors of x's dtype, as the dispatcher hands them to the reference loop
    params = [p if torch.is_tensor(p) else torch.tensor(p, dtype=x.dtype, device=x.device) for p in params]
    return reference_seq(cell, x, states, params, sg, record)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_triton_cell_equals_reference(cell, dtype, tk):
    sg = get_surrogate("atan")
    case = _case(cell, dtype)
    got, g_got = _run(tk.run_cell, cell, case, sg)
    want, g_want = _run(_reference, cell, case, sg)
    assert torch.equal(got[0], want[0]), f"{cell.name}: outputs differ"
    for name, a, b in zip(("v_seq", *cell.states), got[1:], want[1:]):
        assert _rel(a, b) <= 1e-5, f"{cell.name}: state {name} differs"
    names = ["x", *cell.states] + [n for n, p in zip(cell.params, case[2])
                                   if torch.is_tensor(p) and n not in cell.no_grad_params]
    for name, a, b in zip(names, g_got, g_want):
        assert a.shape == b.shape and _rel(a, b) <= 1e-5, f"{cell.name}: gradient of {name} differs"


def _cell_ref(cell) -> str:
    """``module:NAME`` of the module attribute holding ``cell``."""
    import sys

    mod = sys.modules[cell.step.__module__]
    return next(f"{mod.__name__}:{k}" for k, v in vars(mod).items() if v is cell)


# Compiles every cell's kernels in a fresh process: Triton's interpreter leaves triton.language patched after a
# kernel calls a jit function (the other tests of this file), and the compiler then fails on the patched names.
_COMPILE = """
import importlib, json, sys
import torch
from spikeforge.kernels import triton as tk
from spikeforge.surrogate import get_surrogate
res = {}
for ref, consts, grads, variants in json.loads(sys.argv[1]):
    mod, name = ref.split(":")
    cell = getattr(importlib.import_module(mod), name)
    for flags in variants:
        try:
            ptx = tk.cell_ptx(cell, torch.float32, get_surrogate("atan"), tuple(consts), tuple(grads), flags=flags)
            res[f"{cell.name} flags={flags}"] = {k: [".entry cell_" + k in v, "div.full" in v or "div.approx" in v,
                                                     "fma." in v] for k, v in ptx.items()}
        except Exception as e:  # reported by the test, with the cell's name
            res[f"{cell.name} flags={flags}"] = repr(e)[-2000:]
print(json.dumps(res))
"""


def test_triton_cells_compile_for_cuda():
    """The generated kernels of every cell go through Triton's compiler to PTX for sm_90 (no GPU needed), which
    the interpreter never does (it runs code the compiler rejects, e.g. a loop value that changes type, or a
    helper without a module name), with every compile-time flag on (and, for one cell, off).  The forward divides in float32 as torch
    does (`div.rn`, not Triton's default `div.full`) and nothing is contracted into an FMA, so spikes on the GPU
    are those of the reference."""
    import json
    import subprocess
    import sys

    todo = []
    for j, cell in enumerate(CELLS):
        params = _params(cell, torch.float32, torch.Generator().manual_seed(0))
        consts = [float(p) for n, p in zip(cell.params, params) if n in cell.const_params]
        grads = [i for i, n in enumerate(cell.params) if n not in cell.no_grad_params]
        # the flags switch code paths of the driver, the same for every cell: all off for one cell only
        todo.append((_cell_ref(cell), consts, grads, [True, False] if j == 0 else [True]))
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(todo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(res) == len(CELLS) + 1
    for key, r in res.items():
        assert isinstance(r, dict), f"{key}: {r}"
        for k, (entry, approx_div, fma) in r.items():
            # the backward may divide approximately in a surrogate derivative (2 ulp), never in the step it replays
            assert entry and not (approx_div and k == "fwd") and not fma, \
                f"{key} {k}: entry {entry}, approx div {approx_div}, fma {fma}"


def test_triton_cell_bad_input(tk, monkeypatch):
    sg = get_surrogate("atan")
    x = torch.rand(T, *SHAPE)
    v = (torch.zeros(SHAPE),)
    with pytest.raises(ValueError, match=r"backend='triton': dtype torch.float16 is not supported \(float32, float64\)"):
        tk.run_cell(SIGMA_DELTA_CELL, x.half(), (v[0].half(),), (1.0,), sg)
    with pytest.raises(ValueError, match=r"cap: the Triton kernel of 'multilevel' needs one value for the whole layer"):
        tk.run_cell(MULTILEVEL_CELL, x, v, (0.5, 1.0, torch.tensor([2.0, 3.0])), sg)
    with pytest.raises(ValueError, match=r"conductance: 3 time steps but x_seq has 4"):
        tk.run_cell(GLIF_CELL, x, v * 2, (0.25, 0.5, 0.06, 0.5, 0.5, 0.5, 0.5, torch.rand(3, 1, 1, 1)), sg)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not GPU:
        with pytest.raises(ValueError, match=r"backend='triton': x_seq is on cpu; the triton backend needs CUDA"):
            tk.run_cell(SIGMA_DELTA_CELL, x, v, (1.0,), sg)


def test_dispatch_runs_the_triton_driver_for_cells(tk):
    """``backend="triton"`` reaches the generated driver through the one dispatcher and the functional API (a
    per-step parameter without a time dim, as a user passes it, included)."""
    from spikeforge.functional.alif import alif
    from spikeforge.kernels.dispatch import run_cell

    x, states, params, _ = _case(GLIF_CELL, torch.float32)
    params = list(params)
    out, grads = [], []
    for backend in ("triton", "reference"):
        c = torch.tensor([[0.25], [0.5], [0.75]], requires_grad=True)  # a per-step parameter, the same every step
        params[7] = c
        o = run_cell(GLIF_CELL, x, tuple(states), tuple(params), backend=backend, record=True)
        out.append(o)
        grads.append(torch.autograd.grad((o[0] * x).sum() + o[2].sum(), c)[0])
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][2], out[1][2])
    assert _rel(grads[0], grads[1]) <= 1e-5
    s, st = alif(x, backend="triton")
    s_ref, st_ref = alif(x, backend="reference")
    assert torch.equal(s, s_ref) and torch.equal(st.a, st_ref.a)
