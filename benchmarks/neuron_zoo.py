"""Forward+backward time of every recurrent zoo neuron on CPU: fused (numba) vs reference (torch loop), and vs
SpikingJelly 2.0's equivalent where it has one (GatedLIFNode for GLIF, ParametricLIFNode for PLIF).

Run: ``python benchmarks/neuron_zoo.py`` (writes the ``neuron_zoo`` section of docs/benchmarks.md).
Shape T32 x B32 x N4096 (N = C16 x 16 x 16, so per-channel parameters have 16 channels), float32.
Compilation is excluded (warm-up runs); SpikingJelly uses its torch backend (its cupy backend needs CUDA).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, median_time, write_section  # noqa: E402

from spikeforge.neurons import ALIF, GLIF, LIFB, PLIF, STL, MultiLevel, SigmaDelta  # noqa: E402

T, B, C, H, W = 32, 32, 16, 16, 16



def _omp_wait_note() -> str:
    from spikeforge.runtime import omp_wait_state

    st = omp_wait_state()
    return f"policy {st['policy']}, pools {st['waiting'] or 'left to the environment'}"

def _fwd_bwd(module, x, grad):
    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad)

    return run


def _sj_fwd_bwd(module, x, grad):
    from spikingjelly.activation_based import functional as sjf

    def run():
        sjf.reset_net(module)
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(grad)

    return run


def build(name, backend):
    if name == "GLIF":
        return GLIF(num_channels=C, T=T, backend=backend)
    if name == "ALIF":
        return ALIF(backend=backend)
    if name == "STL":
        return STL(shape=(C, H, W), theta0=0.5, backend=backend)
    if name == "sigma-delta":
        return SigmaDelta(omega=4.0, backend=backend)
    if name == "LIFB":
        return LIFB(num_channels=C, backend=backend)
    if name == "multi-level":
        return MultiLevel(cap=4, tau=2.0, backend=backend)
    if name == "PLIF":
        return PLIF(backend=backend)
    raise ValueError(name)


def spikingjelly(name):
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        return None
    if name == "GLIF":
        return neuron.GatedLIFNode(T=T, inplane=C, surrogate_function=surrogate.ATan())
    if name == "PLIF":
        return neuron.ParametricLIFNode(step_mode="m", surrogate_function=surrogate.ATan())
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=11, help="timed runs of each fused kernel (the median is kept)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x = (torch.rand(T, B, C, H, W) * 1.5).requires_grad_()
    grad = torch.randn(T, B, C, H, W)
    load_before = os.getloadavg()
    rows = []
    for name in ("GLIF", "ALIF", "STL", "sigma-delta", "LIFB", "multi-level", "PLIF"):
        t_fused = median_time(_fwd_bwd(build(name, "cpu"), x, grad), repeat=args.repeat, warmup=2)
        t_ref = median_time(_fwd_bwd(build(name, "reference"), x, grad), repeat=max(3, args.repeat // 2 + 2), warmup=1)
        sj = spikingjelly(name)
        t_sj = median_time(_sj_fwd_bwd(sj, x, grad), repeat=max(3, args.repeat // 2 + 2), warmup=1) if sj else None
        # one thread (torch and numba): far less sensitive to the other jobs on the machine
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t1_fused = median_time(_fwd_bwd(build(name, "cpu"), x, grad), repeat=args.repeat, warmup=1)
        t1_ref = median_time(_fwd_bwd(build(name, "reference"), x, grad), repeat=max(3, args.repeat // 2 + 2), warmup=1)
        torch.set_num_threads(threads)
        rows.append((name, t_fused, t_ref, t_sj, t1_fused, t1_ref))
        print(f"{name:<12} fused {t_fused * 1e3:8.1f} ms  reference {t_ref * 1e3:8.1f} ms  "
              f"x{t_ref / t_fused:5.1f}  | 1 thread: fused {t1_fused * 1e3:6.1f} ms reference {t1_ref * 1e3:6.1f} ms "
              f"x{t1_ref / t1_fused:5.1f}" + (f"  spikingjelly {t_sj * 1e3:8.1f} ms" if t_sj else ""), flush=True)
    load_after = os.getloadavg()
    lines = [
        "## Neuron zoo: fused CPU kernels vs reference loops (forward + backward)",
        "",
        "`python benchmarks/neuron_zoo.py` · " + machine_line(),
        "",
        f"Load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end, on 2 cores "
        "shared with other jobs: wall times are noisy and the reference loop (many small multi-threaded torch ops) "
        "suffers more from contention than the fused kernels.",
        "",
        f"Input `[T={T}, B={B}, C={C}, {H}, {W}]` float32 (N = 4096 per sample), `out.backward(g)` with random g; "
        "median wall time, compile excluded. Fused = `backend='cpu'` (the generic numba driver of "
        "`spikeforge.kernels.fused`: vectorised row loops, in segment mode here (every parameter is shared or "
        "per channel, so the loops take them as scalars), the backward replays the forward per block, GLIF's "
        "conductance current is computed inside the kernel; STL and "
        "PLIF run the LIF family's cell), reference = the plain "
        "torch loop (`backend='reference'`). SpikingJelly 2.0 (`--no-deps`), torch backend: `GatedLIFNode` for "
        "GLIF, `ParametricLIFNode` for PLIF. The machine is shared (2 cores), so expect noise; "
        f"the first columns use torch's default {torch.get_num_threads()} threads, the 1-thread columns "
        "`torch.set_num_threads(1)` (the fused kernels follow torch's thread count). "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; the pools' waiting as chosen by "
        f"`spikeforge.runtime.omp_wait` at the end: {_omp_wait_note()} (see docs/core.md, Threads).",
        "",
        "| neuron | fused (ms) | reference (ms) | fused speed-up | fused, 1 thread (ms) | reference, 1 thread (ms) "
        f"| speed-up, 1 thread | SpikingJelly 2.0 (ms) | fused vs SpikingJelly |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, tf, tr, ts, tf1, tr1 in rows:
        sj_cols = f"{ts * 1e3:.0f} | {ts / tf:.1f}x" if ts else "— | —"
        lines.append(f"| {name} | {tf * 1e3:.0f} | {tr * 1e3:.0f} | {tr / tf:.1f}x | {tf1 * 1e3:.1f} | {tr1 * 1e3:.1f} "
                     f"| {tr1 / tf1:.1f}x | {sj_cols} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("neuron_zoo", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
