"""The Triton driver generated from every registered Cell (spikeforge.kernels.cell.CELLS) against the reference
loop, under Triton's CPU interpreter (TRITON_INTERPRET=1, CPU tensors): identical outputs, states within 1e-5
relative (bit-identical in practice), gradients of x, the initial states and every parameter the cell's examples
train within 1e-5 relative, in float32 and float64.  The generated kernels are also compiled for a CUDA GPU
(sm_90, on the CPU), which the interpreter does not do.

On a CUDA machine, ``pytest tests/kernels/test_triton_cells.py`` without TRITON_INTERPRET runs the same checks
with CUDA tensors (see docs/kernels.md).
"""

from __future__ import annotations

import os

import pytest
import torch

import spikeforge.functional  # noqa: F401  (registers every cell)
from spikeforge.functional.glif import GLIF_CELL
from spikeforge.functional.multilevel import MULTILEVEL_CELL
from spikeforge.functional.sigma_delta import SIGMA_DELTA_CELL
from spikeforge.kernels.cell import CELLS, Cell, cell_examples, registered_cell
from spikeforge.kernels.dispatch import run_cell
from spikeforge.surrogate import get_surrogate

GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
DEVICE = "cuda" if GPU else "cpu"
CASES = [(name, i) for name in CELLS.list() for i in range(len(cell_examples(name)))]


@pytest.fixture
def tk(monkeypatch):
    if not GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # read by triton.jit when a kernel is built
    from spikeforge.kernels import triton as tk

    return tk


def _dev(t):
    return t.detach().to(DEVICE).requires_grad_(t.requires_grad) if torch.is_tensor(t) else t


def _run(cell, x, states, params, surrogate, backend, seed=1):
    """Outputs and the gradients of a random linear loss on the outputs, the recorded first state and the final
    states, with respect to x, the initial states and every parameter tensor that requires a gradient."""
    x = x.detach().clone().requires_grad_()
    states = [s.detach().clone().requires_grad_() for s in states]
    params = [p.detach().clone().requires_grad_() if torch.is_tensor(p) and p.requires_grad else p for p in params]
    out, final, vseq = run_cell(cell, x, tuple(states), tuple(params), surrogate, backend, record=True)
    g = torch.Generator().manual_seed(seed)
    w = [torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for t in (out, vseq, *final)]
    loss = sum((t * wt).sum() for t, wt in zip((out, vseq, *final), w))
    leaves = [x, *states] + [p for p in params if torch.is_tensor(p) and p.requires_grad]
    return (out, vseq, *final), torch.autograd.grad(loss, leaves)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _check(cell, ex, x, states, params, label):
    got, g_got = _run(cell, x, states, params, ex.surrogate if ex else "atan", "triton")
    want, g_want = _run(cell, x, states, params, ex.surrogate if ex else "atan", "reference")
    assert torch.equal(got[0], want[0]), f"{label}: outputs differ"
    for name, a, b in zip(("v_seq", *cell.states), got[1:], want[1:]):
        assert _rel(a, b) <= 1e-5, f"{label}: state {name} differs by {_rel(a, b):.1e}"
    names = ["x", *cell.states] + [n for n, p in zip(cell.params, params) if torch.is_tensor(p) and p.requires_grad]
    assert len(names) == len(g_got) == len(g_want)
    for name, a, b in zip(names, g_got, g_want):
        assert a.shape == b.shape and _rel(a, b) <= 1e-5, f"{label}: gradient of {name} differs by {_rel(a, b):.1e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_triton_cell_equals_reference(name, i, dtype, tk):
    """Every registered cell on each of its declared examples."""
    cell = registered_cell(name)
    ex = cell_examples(name, dtype)[i]
    _check(cell, ex, _dev(ex.x), [_dev(s) for s in ex.states], [_dev(p) for p in ex.params], f"{name} {ex.label}")


def test_triton_parameter_tables_every_layout(tk):
    """GLIF with its parameters in every layout the tables take: a Python float, one value, per channel (Q = 3 runs
    of 50 neurons), per neuron (inner = 1), per step and channel, per step and shared; N = 300 neurons (two programs
    of 256, the second one masked)."""
    g = torch.Generator().manual_seed(0)
    T, B, C, M = 4, 2, 3, 50

    def r(*shape, lo=0.1, hi=0.9):
        return (torch.rand(*shape, generator=g) * (hi - lo) + lo).requires_grad_()

    params = (torch.tensor(0.25).requires_grad_(), r(C, 1, lo=0.3, hi=0.6), r(C, M, lo=0.0, hi=0.1), 0.5, r(C, 1),
              r(1), r(T, 1, C, 1), r(T, 1, 1, 1))
    x = torch.rand(T, B, C, M, generator=g) * 0.9
    states = (torch.rand(B, C, M, generator=g) * 0.5, (torch.rand(B, C, M, generator=g) > 0.5).float())
    _check(GLIF_CELL, None, _dev(x), [_dev(s) for s in states], [_dev(p) for p in params], "glif layouts")


# a cell that puts every helper of a step on its boundary: with inputs in multiples of 1/8, h - vth is exactly 0 at
# some steps (spike), h / vth an exact integer (mspike, floor), x exactly 0 (relu), h exactly 0 or 1 (clamp)
def _edges_step(x, v, w, vth, cap):
    h = v + x
    s = spike(h - vth)  # noqa: F821
    n = mspike(h, vth, cap)  # noqa: F821
    w1 = relu(x) + floor(h) + clamp(h, ZERO, ONE) + ste(h / vth, x) + spike(ONE - relu(x))  # noqa: F821
    return s + (cap + ONE) * n, h - vth * s, w1 + w * ZERO  # noqa: F821


def _edges_vjp(gs, gv1, gw1, x, v, w, vth, cap, alpha):  # not used (the test checks the forward)
    return gs, gv1, gw1, ZERO * vth, ZERO * cap  # noqa: F821


EDGES = Cell("edges", _edges_step, _edges_vjp, states=("v", "w"), params=("vth", "cap"), no_grad_params=("cap",),
             const_params=("cap",))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_triton_helpers_on_their_boundaries(dtype, tk):
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(-4, 12, (4, 2, 70), generator=g) / 8).to(DEVICE, dtype)
    states = tuple((torch.randint(-4, 5, (2, 70), generator=g) / 8).to(DEVICE, dtype) for _ in range(2))
    params = (torch.tensor([0.5, 0.75], dtype=dtype).repeat(35).to(DEVICE), 2.0)
    got = run_cell(EDGES, x, states, params, backend="triton", record=True)
    want = run_cell(EDGES, x, states, params, backend="reference", record=True)
    assert (x == 0).any() and (got[0] % 3 == 1).any()  # the boundaries are reached
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    for a, b in zip(got[1], want[1]):
        assert torch.equal(a, b)


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
    for dtype, flags in variants:
        key = f"{cell.name} {consts} {dtype} flags={flags}"
        try:
            ptx = tk.cell_ptx(cell, getattr(torch, dtype), get_surrogate("atan"), tuple(consts), tuple(grads),
                              flags=flags)
            res[key] = {k: [".entry cell_" + k in v, "div.full" in v or "div.approx" in v, "fma." in v]
                        for k, v in ptx.items()}
        except Exception as e:  # reported by the test, with the cell's name
            res[key] = repr(e)[-2000:]
print(json.dumps(res))
"""


def test_triton_cells_compile_for_cuda():
    """The generated kernels of every registered cell go through Triton's compiler to PTX for sm_90 (no GPU
    needed), which the interpreter never does (it runs code the compiler rejects, e.g. a loop value that changes
    type, or a helper without a module name), in float32 with every compile-time flag on (and, for one cell,
    off, and in float64).  The forward divides in float32 as torch does (`div.rn`, not Triton's default
    `div.full`) and nothing is contracted into an FMA, so spikes on the GPU are those of the reference."""
    import json
    import subprocess
    import sys

    todo = []
    for name in CELLS.list():
        cell = registered_cell(name)
        grads = [i for i, n in enumerate(cell.params) if n not in cell.no_grad_params]
        consts = {tuple(float(p) for n, p in zip(cell.params, ex.params) if n in cell.const_params)
                  for ex in cell_examples(name, torch.float32)}  # each set of constants is its own kernel
        for c in sorted(consts):
            # float32 with every flag on; the flags (code paths of the driver, the same for every cell) all off and
            # float64 for one cell only
            variants = [("float32", True)] + ([] if todo else [("float32", False), ("float64", True)])
            todo.append((_cell_ref(cell), c, grads, variants))
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(todo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(res) == len(todo) + 2
    for key, r in res.items():
        assert isinstance(r, dict), f"{key}: {r}"
        for k, (entry, approx_div, fma) in r.items():
            # the backward may divide approximately in a surrogate derivative (2 ulp), never in the step it replays
            assert entry and not (approx_div and k == "fwd") and not fma, \
                f"{key} {k}: entry {entry}, approx div {approx_div}, fma {fma}"


def test_triton_cell_bad_input(tk, monkeypatch):
    sg = get_surrogate("atan")
    x = torch.rand(4, 2, 3, 5, device=DEVICE)
    v = (torch.zeros(2, 3, 5, device=DEVICE),)
    with pytest.raises(ValueError, match=r"backend='triton': dtype torch.float16 is not supported \(float32, float64"):
        tk.run_cell(SIGMA_DELTA_CELL, x.half(), (v[0].half(),), (1.0,), sg)
    with pytest.raises(ValueError, match=r"cap: the Triton kernel of 'multilevel' needs one value for the whole layer"):
        tk.run_cell(MULTILEVEL_CELL, x, v, (0.5, 1.0, torch.tensor([2.0, 3.0], device=DEVICE)), sg)
    with pytest.raises(ValueError, match=r"conductance: 3 time steps but x_seq has 4"):
        tk.run_cell(GLIF_CELL, x, v * 2, (0.25, 0.5, 0.06, 0.5, 0.5, 0.5, 0.5, torch.rand(3, 1, 1, 1, device=DEVICE)),
                    sg)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not GPU:
        with pytest.raises(ValueError, match=r"backend='triton': x_seq is on cpu; the triton backend needs CUDA"):
            tk.run_cell(SIGMA_DELTA_CELL, x, v, (1.0,), sg)


def test_functional_api_reaches_the_triton_driver(tk):
    """``backend="triton"`` reaches the generated driver through the functional API and the one dispatcher."""
    from spikeforge.functional.alif import alif

    x = (torch.rand(4, 2, 30) * 1.5).to(DEVICE)
    s, st = alif(x, backend="triton")
    s_ref, st_ref = alif(x, backend="reference")
    assert torch.equal(s, s_ref) and torch.equal(st.a, st_ref.a) and s.any()


@pytest.mark.parametrize("name", ["alif"])
def test_triton_repeated_input(name, tk):
    """An input repeated over time (expanded, stride 0, as direct coding gives it) is read as its one row; outputs
    and the gradient of that row as the reference's."""
    cell = registered_cell(name)
    ex = cell_examples(name, torch.float32)[0]
    res = []
    for backend in ("triton", "reference"):
        x0 = _dev(ex.x[0]).detach().requires_grad_()
        x = x0.unsqueeze(0).expand(ex.x.shape)
        assert x.stride(0) == 0
        out, final, _ = run_cell(cell, x, tuple(_dev(s) for s in ex.states), tuple(_dev(p) for p in ex.params),
                                 ex.surrogate, backend)
        w = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
        res.append((out, final, torch.autograd.grad((out * w).sum() + final[0].sum(), x0)[0]))
    (o1, f1, g1), (o2, f2, g2) = res
    assert torch.equal(o1, o2) and all(_rel(a, b) <= 1e-5 for a, b in zip(f1, f2)) and _rel(g1, g2) <= 1e-5
