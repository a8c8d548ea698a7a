"""Forward+backward time of every registered cell on CUDA: the generated Triton driver (``backend='triton'``) vs the
reference torch loop (``backend='reference'``), float32.

Run on a CUDA machine: ``python benchmarks/triton_cells.py`` (writes the ``triton_cells`` section of
docs/benchmarks.md).  ``--interpret`` runs the same code on CPU tensors under Triton's interpreter with a tiny
shape (a smoke test of the script; nothing is timed or written).  Each cell runs on its first declared example
(``spikeforge.kernels.cell.cell_examples``) widened to ``T`` steps and about ``N`` neurons per step along the batch
dim, with the parameters as the example declares them (shared, per channel or per neuron).  Compilation is
excluded (warm-up runs); every timed run ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, median_time, write_section  # noqa: E402


def widen(ex, T: int, n_target: int, device):
    """``ex``'s inputs with ``T`` steps and the batch dim grown so one step holds about ``n_target`` neurons."""
    T0, B0 = ex.x.shape[0], ex.x.shape[1]
    per = math.prod(ex.x.shape[2:])
    B = max(B0, -(-n_target // per))

    def grow(t, time_dim: bool):
        t = t.detach()
        if time_dim and t.dim() == ex.x.dim() and t.shape[0] == T0 > 1:  # a per-step table: repeat its steps
            t = t.repeat((-(-T // T0),) + (1,) * (t.dim() - 1))[:T]
        b = 1 if time_dim and t.dim() == ex.x.dim() else 0  # the batch dim, when t has one
        if t.dim() == ex.x.dim() - 1 + b and t.shape[b] == B0 > 1:
            reps = [1] * t.dim()
            reps[b] = -(-B // B0)
            t = t.repeat(reps).narrow(b, 0, B)
        return t.to(device)

    x = grow(ex.x, True)
    states = tuple(grow(s, False) for s in ex.states)
    params = tuple(grow(p, True).requires_grad_(p.requires_grad) if torch.is_tensor(p) else p for p in ex.params)
    return x.requires_grad_(), states, params


def fwd_bwd(cell, x, states, params, surrogate, backend, sync):
    from spikeforge.kernels.dispatch import run_cell

    grad = torch.randn_like(x)

    def run():
        x.grad = None
        out, _, _ = run_cell(cell, x, states, params, surrogate, backend)
        out.backward(grad)
        sync()

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--T", type=int, default=32, help="time steps")
    ap.add_argument("--neurons", type=int, default=131072, help="neurons per step (about; B x C x ...)")
    ap.add_argument("--repeat", type=int, default=21, help="timed runs of each (the median is kept)")
    ap.add_argument("--interpret", action="store_true", help="CPU smoke test under TRITON_INTERPRET=1")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
        device, sync, args.T, args.neurons, args.repeat = "cpu", (lambda: None), 4, 64, 1
    elif not torch.cuda.is_available():
        print("triton_cells: needs a CUDA device (or --interpret for a CPU smoke test)", file=sys.stderr)
        return 2
    else:
        device, sync = "cuda", torch.cuda.synchronize

    import spikeforge.functional  # noqa: F401  (registers every cell)
    from spikeforge.kernels.cell import CELLS, cell_examples, registered_cell

    torch.manual_seed(0)
    rows = []
    for name in CELLS.list():
        cell = registered_cell(name)
        ex = cell_examples(name, torch.float32)[0]
        x, states, params = widen(ex, args.T, args.neurons, device)
        times = [median_time(fwd_bwd(cell, x, states, params, ex.surrogate, b, sync), repeat=args.repeat,
                             warmup=1 if args.interpret else 3) for b in ("triton", "reference")]
        rows.append((name, ex.label, tuple(x.shape), *times))
        print(f"{name:<12} {str(tuple(x.shape)):<22} triton {times[0] * 1e3:8.2f} ms  reference "
              f"{times[1] * 1e3:8.2f} ms  x{times[1] / times[0]:6.1f}", flush=True)
    if args.interpret or args.no_write:
        return 0
    lines = [
        "## Triton driver: every registered cell on CUDA (forward + backward)",
        "",
        f"`python benchmarks/triton_cells.py` · {torch.cuda.get_device_name()} · " + machine_line(),
        "",
        f"Each cell's first declared example widened to T={args.T} and about {args.neurons} neurons per step, "
        "float32, `out.backward(g)` with random g; median wall time after warm-up (compile excluded). Triton = "
        "the driver generated from the cell (`kernels/triton.py`), reference = the plain torch loop.",
        "",
        "| cell | example | input | Triton (ms) | reference (ms) | speed-up |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, label, shape, tt, tr in rows:
        lines.append(f"| {name} | {label or '—'} | {list(shape)} | {tt * 1e3:.2f} | {tr * 1e3:.2f} "
                     f"| {tr / tt:.1f}x |")
    write_section("triton_cells", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
