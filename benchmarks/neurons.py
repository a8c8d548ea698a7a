"""LIF forward + backward on CPU: spikeforge backends vs SpikingJelly 2.0, snnTorch and Norse.

Dynamics: beta 0.5 (tau 2, decay_input=False), threshold 1, hard reset to 0, ATan surrogate (alpha 2); the loss is
``spikes.sum()``.  Every anchor is configured to the same dynamics and its spikes are checked to be identical to
spikeforge's before it is timed (see benchmarks/README.md for how each one was matched).  The floor is one
in-place pass over the input (``x.neg_()``).  A second floor, the *traffic floor*, times the memory traffic that any
forward + backward of this loss must do, with no arithmetic and no overhead: write the spikes from x, read them for
the sum, write dL/dx from x (``s.copy_(x); s.sum(); gx.copy_(x)``).  Where the input fits in the last-level cache the
one-pass floor runs at cache speed while the traffic floor spills to DRAM, so the two differ by more than 3x.
Times are medians of repeated runs after warm-up (numba compilation happens in the warm-up).  Saved bytes/element:
distinct storages the autograd graph keeps for backward.

Each library is timed in its own process with the environment the script was started with (the script sets no
variable such as OMP_WAIT_POLICY, which would change every library's speed: see docs/benchmarks.md), and the
processes are interleaved over ``--rounds`` rounds; a cell is the median over the rounds of each process's median.

Run:  python benchmarks/neurons.py   (writes the "neurons" section)
      python benchmarks/neurons.py --quick --rounds 1                  (smaller inputs, prints only)
"""

from __future__ import annotations

import os

import argparse
import gc
import importlib.util
import sys
import weakref
import json
import statistics
import subprocess
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, median_time, write_section  # noqa: E402


CONFIGS = [
    ("T8·B32·N4096", 8, (32, 4096)),
    ("T32·B32·N4096", 32, (32, 4096)),
    ("T128·B16·N1024", 128, (16, 1024)),
    ("T4·B32·(64×32×32)", 4, (32, 64, 32, 32)),
]
QUICK = [("T8·B4·N1024", 8, (4, 1024)), ("T32·B2·N512", 32, (2, 512))]
LIF_KW = dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan")


def make_input(T, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, *shape, generator=g) * 0.5 + 0.5


# --- implementations: each returns fn(x) -> spikes [T, ...] (fresh state every call) -------------------------
def spikeforge_fn(backend, **overrides):
    from spikeforge.functional import lif

    kw = {**LIF_KW, **overrides}
    return lambda x: lif(x, backend=backend, **kw)[0]


def spikingjelly_fn():
    from spikingjelly.activation_based import functional, neuron, surrogate

    node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=2.0), detach_reset=False, step_mode="m")

    def run(x):
        functional.reset_net(node)
        return node(x)

    return run


def snntorch_fn():
    import snntorch as snn
    from snntorch import surrogate

    # reset_delay=False: reset in the step that fired (spikeforge/SpikingJelly order); "zero" = hard reset to 0
    cell = snn.Leaky(beta=0.5, threshold=1.0, spike_grad=surrogate.atan(alpha=2.0), reset_mechanism="zero",
                     reset_delay=False)

    def run(x):
        mem = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            spk, mem = cell(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return run


def norse_fn():
    from norse.torch import LIF, LIFParameters

    # dt * tau_syn_inv = 1 empties the synaptic current every step, so v_t = v + 0.5 ((0 - v) + x_t): LIF with
    # decay_input=True.  Fed 2x it is beta-0.5 dynamics; spikeforge is timed on the same input and settings
    # (decay_input=True, detached reset, SuperSpike = fast_sigmoid alpha 100) for this column.
    p = LIFParameters(tau_syn_inv=torch.as_tensor(1000.0), tau_mem_inv=torch.as_tensor(500.0),
                      v_leak=torch.as_tensor(0.0), v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0),
                      method="super", alpha=torch.as_tensor(100.0))
    layer = LIF(p=p, dt=1e-3)
    return lambda x: layer(2.0 * x)[0]


NORSE_KEY = "spikeforge (Norse's setup)"
NORSE_MATCH = dict(decay_input=True, detach_reset=True, surrogate="fast_sigmoid")


def norse_match_fn(backend="auto"):
    from spikeforge.functional import lif

    kw = {**LIF_KW, **NORSE_MATCH}
    from spikeforge.surrogate import get_surrogate

    kw["surrogate"] = get_surrogate("fast_sigmoid", 100.0)
    return lambda x: lif(2.0 * x, backend=backend, **kw)[0]


BASELINE = "spikeforge auto, baseline"  # --baseline PATH: the same call on another source tree (e.g. an old commit)


ANCHORS = {  # name: (module to look for, factory)
    "SpikingJelly 2.0": ("spikingjelly", spikingjelly_fn),
    "snnTorch": ("snntorch", snntorch_fn),
    "Norse": ("norse", norse_fn),
}


def installed(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


# --- measurements ---------------------------------------------------------------------------------------------
def fwd_bwd(fn, x):
    def run():
        x.grad = None
        fn(x).sum().backward()

    return run


class _Saved:
    def __init__(self, t):
        self.t = t


def saved_bytes_per_element(fn, x) -> float:
    packed = []

    def pack(t):
        h = _Saved(t)
        packed.append(weakref.ref(h))
        return h

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        out = fn(x)
    gc.collect()
    storages = {}
    for ref in packed:
        h = ref()
        if h is not None:
            st = h.t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
    del out
    return sum(storages.values()) / x.numel()


OURS = "spikeforge auto ({auto})"


def child(name: str, configs, repeat: int) -> dict:
    """Time one library (or the floors) on every config in this process; spikes are checked against spikeforge's
    reference backend (plain torch, computed here too)."""
    if name == "floors":
        out = {}
        for cname, T, shape in configs:
            x0 = make_input(T, shape)
            floor_x = x0.clone()
            s_buf, gx_buf = torch.empty_like(x0), torch.empty_like(x0)

            def traffic():
                s_buf.copy_(x0)
                s_buf.sum()
                gx_buf.copy_(x0)

            out[cname] = {"floor": median_time(lambda: floor_x.neg_(), repeat=repeat),
                          "traffic": median_time(traffic, repeat=repeat)}
        return out
    if name.startswith("spikeforge"):
        fns = {name: spikeforge_fn("auto" if name.startswith("spikeforge auto") else "reference")}
        if name.startswith("spikeforge auto") and name != BASELINE and installed("norse"):
            fns[NORSE_KEY] = norse_match_fn()
    else:
        fns = {name: ANCHORS[name][1]()}
    out = {}
    for cname, T, shape in configs:
        x0 = make_input(T, shape)
        x = x0.clone().requires_grad_()
        res = {}
        for key, fn in fns.items():
            with torch.no_grad():
                want = (norse_match_fn("reference") if key in ("Norse", NORSE_KEY) else spikeforge_fn("reference"))(x0)
                got = fn(x0).to(want.dtype)
            if not torch.equal(got, want):
                res[key] = {"time": None, "note": f"{key} at {cname}: {int((got != want).sum())} of {want.numel()} "
                            "spikes differ from spikeforge's reference; not timed"}
                continue
            res[key] = {"time": median_time(fwd_bwd(fn, x), repeat=repeat)}
            if cname == configs[0][0] and key != NORSE_KEY:
                res[key]["saved"] = saved_bytes_per_element(fn, x)
        out[cname] = res
    return out


def run_child(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
    env = None  # the environment the script was started with
    if name == BASELINE:  # the baseline tree's spikeforge is imported first
        src = str(Path(args.baseline).resolve() / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{name}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, print only (no docs update)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="processes per library, interleaved")
    ap.add_argument("--baseline", metavar="PATH", help="also time spikeforge from the source tree at PATH (e.g. "
                    "`git worktree add ../old <commit>`), interleaved with this one")
    ap.add_argument("--baseline-label", default="old tree", help="how the docs name the baseline (e.g. a commit)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else CONFIGS
    if args.child:
        print(json.dumps(child(args.child, configs, args.repeat)))
        return 0
    from spikeforge.kernels.dispatch import resolve_backend

    ours = OURS.format(auto=resolve_backend("auto", torch.zeros(1, 1)))
    names = [ours, *([BASELINE] if args.baseline else []), "spikeforge reference"]
    missing = []
    for name, (mod, _) in ANCHORS.items():
        if installed(mod):
            names.append(name)
        else:
            missing.append(f"{name} (`{mod}` not installed: skipped)")
    load0 = os.getloadavg()[0]
    results: dict = {}  # (name, config, key) -> [times]
    floors: dict = {}
    saved: dict = {}
    notes: set = set()
    procs = ["floors", *names]
    for r in range(args.rounds):
        for name in procs[r % len(procs):] + procs[:r % len(procs)]:  # rotate the order each round
            got = run_child(name, args)
            print(f"round {r} {name}: " + ", ".join(
                f"{c}: " + ("/".join(f"{v * 1e3:.3f}" for v in d.values()) if name == "floors" else
                            "/".join("-" if v["time"] is None else f"{v['time'] * 1e3:.3f}" for v in d.values()))
                for c, d in got.items()) + f" ms  (load {os.getloadavg()[0]:.2f})", flush=True)
            for cname, d in got.items():
                if name == "floors":
                    for k, v in d.items():
                        floors.setdefault((cname, k), []).append(v)
                    continue
                for key, v in d.items():
                    if v["time"] is None:
                        notes.add(v["note"])
                    else:
                        results.setdefault((cname, key), []).append(v["time"])
                    if "saved" in v:
                        saved[key] = v["saved"]
    med = {k: statistics.median(v) for k, v in results.items()}
    has_norse_match = any(k[1] == NORSE_KEY for k in med)
    rows = []
    for cname, T, shape in configs:
        times = {n: med.get((cname, n)) for n in [*names, NORSE_KEY]}
        rows.append((cname, make_input(T, shape).numel(), statistics.median(floors[(cname, "floor")]),
                     statistics.median(floors[(cname, "traffic")]), times))

    head = "| config | elements | floor (1 pass) | traffic floor | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for cname, numel, floor, traffic_floor, times in rows:
        base = times[ours]
        cells = []
        for name in names:
            t = times.get(name)
            if t is None:
                cells.append("spikes differ")
            elif name == ours:
                cells.append(f"**{t * 1e3:.2f} ms** ({t / floor:.1f} passes; {t / traffic_floor:.1f}x traffic floor)")
            else:
                ref_t = times[NORSE_KEY] if name == "Norse" else base
                cells.append(f"{t * 1e3:.2f} ms (**{t / ref_t:.1f}x**)")
        lines.append(f"| {cname} | {numel:,} | {floor * 1e3:.3f} ms | {traffic_floor * 1e3:.3f} ms "
                     f"({traffic_floor / floor:.1f} passes) | " + " | ".join(cells) + " |")
    lines.append("| saved for backward, B/element (" + configs[0][0] + ") | | | | "
                 + " | ".join(f"{saved[n]:.2f}" if n in saved else "–" for n in names) + " |")
    flags = " --quick" if args.quick else ""
    flags += "" if args.rounds == 3 else f" --rounds {args.rounds}"
    flags += "" if args.repeat == 15 else f" --repeat {args.repeat}"
    flags += f" --baseline <{args.baseline_label}>" if args.baseline else ""
    body = [
        "## neurons: LIF forward + backward (CPU)",
        "",
        f"`python benchmarks/neurons.py{flags}` · {machine_line()} · float32 · "
        f"each library in its own process, {args.rounds} interleaved rounds, median of {args.repeat} runs after 2 "
        f"warm-up runs per process · OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} · "
        f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end (other jobs share the cores when "
        "it exceeds the core count)",
        "",
        "beta 0.5 (tau 2, decay_input False), threshold 1, hard reset 0, ATan alpha 2, loss = spikes.sum(). "
        f"Cells: median time of forward + backward and, for {ours}, the number of in-place memory passes over "
        "the input it costs and its ratio to the traffic floor; for the others, how many times slower than it they "
        "are. The traffic floor is the memory traffic any forward + backward of this loss needs, timed with plain "
        "copies (`s.copy_(x); s.sum(); gx.copy_(x)`: no arithmetic, no call overhead), and shown in passes too. "
        "The LIF family is a Cell (`functional/lif.py`, `LIF_CELL`) run by the generic numba driver every neuron "
        f"uses (`kernels/fused.py`). `{BASELINE}` (with `--baseline PATH`): the same call on the source tree at "
        "PATH, for an old-vs-new comparison in one run. "
        "Spikes of every column were checked identical to spikeforge's reference backend before timing. Every "
        "library runs with its own defaults: the script sets no environment variable (`OMP_WAIT_POLICY=PASSIVE` "
        "for all would slow the anchors more than spikeforge and inflate the ratios).",
        "",
        *lines,
    ]
    if "Norse" in names and has_norse_match:
        body += ["", "Norse's LIF integrates a synaptic current; it is set to the same beta-0.5 LIF (see "
                 "benchmarks/README.md), which takes decay_input=True on input 2x, a detached reset and "
                 "SuperSpike, so its ratio is against spikeforge timed on that same setup (spikes identical): "
                 + ", ".join(f"{c}: {t[NORSE_KEY] * 1e3:.2f} ms" for c, _, _, _, t in rows if t[NORSE_KEY]) + "."]
    if missing:
        body += ["", "Not installed: " + "; ".join(missing) + "."]
    if notes:
        body += ["", *[f"- {n}" for n in sorted(notes)]]
    text = "\n".join(body)
    print(text)
    if not args.quick:
        write_section("neurons", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
