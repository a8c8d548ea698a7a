"""Eager vs ``torch.compile`` (default inductor, CPU): one training step (forward, backward, SGD step).

Compilation is excluded (timed separately: the first compiled step); the median of ``--repeat`` steps after
``--warmup`` untimed ones.  In the compiled model the fused neuron kernels run as the custom operators of
``spikeforge.kernels.ops`` (``cell_fwd``/``cell_bwd`` for every cell, the LIF family included).  A case
is ``MODEL`` or ``MODEL:NEURON`` (the zoo model with that neuron).  Writes the ``compile`` section of
docs/benchmarks.md.

    python benchmarks/compile_bench.py            # convnet (LIF), convnet with ALIF, mlp; batch 32, T 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, median_time, write_section  # noqa: E402

from spikeforge.models import create_model  # noqa: E402

CASES = {
    "convnet": dict(in_channels=1, input_size=28, channels=(32, 64)),
    "mlp": dict(in_channels=1, input_size=28, hidden=(256,)),
}


def _step_fn(model, fwd, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(fwd(x).mean(0), y)
        loss.backward()
        opt.step()

    return step


def run(case: str, batch: int, T: int, repeat: int, warmup: int) -> dict:
    name, _, neuron = case.partition(":")
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, T=T, neuron=neuron or "lif", **CASES[name])
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    eager = median_time(_step_fn(model, model, x, y), repeat=repeat, warmup=warmup)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    step = _step_fn(model, compiled, x, y)
    t0 = time.perf_counter()
    step()  # compiles forward and backward
    compile_s = time.perf_counter() - t0
    comp = median_time(step, repeat=repeat, warmup=warmup)
    return {"model": name, "neuron": neuron or "lif", "eager_ms": 1e3 * eager, "compiled_ms": 1e3 * comp, "compile_s": compile_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="convnet,convnet:alif,mlp", help="cases MODEL or MODEL:NEURON")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    a = p.parse_args(argv)
    rows = []
    for case in a.models.split(","):
        r = run(case, a.batch, a.T, a.repeat, a.warmup)
        rows.append(r)
        print(f"{case}: eager {r['eager_ms']:.1f} ms/step, compiled {r['compiled_ms']:.1f} ms/step "
              f"(x{r['eager_ms'] / r['compiled_ms']:.2f}), compile {r['compile_s']:.0f} s", flush=True)
    body = [
        "## compile: eager vs `torch.compile(fullgraph=True)` training step (`benchmarks/compile_bench.py`)",
        "",
        f"{machine_line()} · float32 · batch {a.batch}, T {a.T}, MNIST-size input · median of {a.repeat} steps "
        f"after {a.warmup} warm-up; compile time is the first compiled step (forward + backward).",
        f"Command: `python benchmarks/compile_bench.py --models {a.models} --batch {a.batch} --T {a.T}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        "| model | neuron | eager ms/step | compiled ms/step | speed-up | compile s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        body.append(f"| {r['model']} | {r['neuron']} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | "
                    f"{r['eager_ms'] / r['compiled_ms']:.2f}x | {r['compile_s']:.0f} |")
    body += ["", "The neurons are the same fused kernels in both columns (custom operators when compiled); what "
             "inductor can change is the rest of the step (convolutions, BatchNorm, pooling, the optimiser).  A "
             "compiled non-LIF cell's backward operator replays the cell's forward first (it rebuilds the parameter "
             "tables the backward kernel reads), so it pays one more forward per step than eager."]
    if a.no_write:
        print("\n".join(body))
    else:
        write_section("compile", "\n".join(body) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
