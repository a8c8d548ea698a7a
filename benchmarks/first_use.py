"""A user's own training loop, as written on first use: ``import torch`` before spikeforge, no environment variable.

Times training steps of the zoo ``convnet`` (channels 32/64, hidden 256, LIF, T=4, batch 128, 28x28 input, AdamW,
cross-entropy of the mean output) in a plain loop, with nothing from ``spikeforge.runtime`` called, under:

* ``default``: no environment variable (the library's own choice: ``spikeforge.runtime.omp_wait`` "auto");
* ``OMP_WAIT_POLICY=PASSIVE``: the variable set for the whole process (the library then leaves the pools alone);
* ``spin``: the OpenMP pools left spinning (libgomp's default, what the library did before ``omp_wait``), by
  ``omp_wait("spin")`` at the start of the loop;

each on the otherwise idle machine and with one busy process alongside (``python -c "while True: pass"``).  Every
run is its own process; the configurations are interleaved over ``--rounds`` rounds, and the table gives medians of
the runs' median step times and their ratios to ``OMP_WAIT_POLICY=PASSIVE`` measured in the same rounds.

    python benchmarks/first_use.py             # writes the "first_use" section
    python benchmarks/first_use.py --rounds 1 --steps 5 --no-write               # quick look, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {  # name: (extra environment, omp_wait policy called by the child or None)
    "default": ({}, None),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spin": ({}, "spin"),
}
BASE = "OMP_WAIT_POLICY=PASSIVE"
LOADS = ("idle", "busy")
CLEAN_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")


def child(steps: int, policy: str | None) -> None:
    import torch  # first, as a user's script does

    from spikeforge.models import create_model
    from spikeforge.runtime import omp_wait, omp_wait_state

    torch.manual_seed(0)
    net = create_model("convnet", num_classes=10, in_channels=1, T=4, input_size=28, channels=[32, 64], hidden=256)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step():
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # the first step starts the fused kernels (compiled or loaded from the cache)
    if policy is not None:
        omp_wait(policy)
    for _ in range(3):
        step()
    times, sleeping = [], 0
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        sleeping += omp_wait_state()["waiting"] == "sleep"
    print(json.dumps({"median_s": statistics.median(times), "sleep_share": sleeping / steps,
                      "policy": omp_wait_state()["policy"], "threads": torch.get_num_threads()}))


def _ticks() -> tuple[int, int]:
    """(busy CPU ticks of the machine, from /proc/stat; CPU ticks of this script and its finished children)."""
    import resource

    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    own = sum(getattr(resource.getrusage(w), a) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for a in ("ru_utime", "ru_stime"))
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], round(own * os.sysconf("SC_CLK_TCK"))


def wait_quiet(max_s: float, below: float = 0.15) -> float:
    """Wait (at most ``max_s``) until other processes take less than ``below`` cores over one second; returns
    what they took in the last second."""
    deadline = time.monotonic() + max_s
    while True:
        b0, o0 = _ticks()
        time.sleep(1.0)
        b1, o1 = _ticks()
        others = ((b1 - b0) - (o1 - o0)) / os.sysconf("SC_CLK_TCK")
        if others < below or time.monotonic() > deadline:
            return others


def run_child(name: str, steps: int) -> dict:
    extra, policy = CONFIGS[name]
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(extra)
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps)] + (["--policy", policy] if policy else [])
    b0, o0, t0 = *_ticks(), time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name}: child failed:\n{out.stderr[-3000:]}")
    b1, o1, t1 = *_ticks(), time.monotonic()
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["others"] = ((b1 - b0) - (o1 - o0)) / os.sysconf("SC_CLK_TCK") / (t1 - t0)  # the busy loop included
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run (after 4 warm-up steps)")
    ap.add_argument("--no-write", action="store_true", help="print only (no docs update)")
    ap.add_argument("--wait-quiet", type=float, default=120.0,
                    help="before each idle run, wait up to this many seconds for other processes to go quiet")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--policy", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.steps, args.policy)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import machine_line, write_section

    load0, t_start = os.getloadavg()[0], time.time()
    runs: dict = {}
    names = list(CONFIGS)
    for r in range(args.rounds):
        for load in LOADS:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
            try:
                time.sleep(0.5 if busy else 0)
                for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order each round
                    if busy is None:
                        wait_quiet(args.wait_quiet)
                    res = run_child(name, args.steps)
                    runs.setdefault((load, name), []).append(res)
                    print(f"round {r} {load:4s} {name:24s} {res['median_s'] * 1e3:7.1f} ms  "
                          f"sleeping {res['sleep_share']:.0%}  other processes {res['others']:.2f} cores", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    load1 = os.getloadavg()[0]

    lines = ["| configuration | idle machine: ms / step | vs PASSIVE | with one busy process: ms / step | vs PASSIVE |",
             "|---|---:|---:|---:|---:|"]
    med = {k: statistics.median(v["median_s"] for v in vs) for k, vs in runs.items()}
    for name in names:
        cells = []
        for load in LOADS:
            t, ratio = med[(load, name)], med[(load, name)] / med[(load, BASE)]
            share = statistics.mean(v["sleep_share"] for v in runs[(load, name)])
            note = f" (pools asleep in {share:.0%} of steps)" if name == "default" else ""
            cells += [f"{t * 1e3:.0f}{note}", f"{ratio:.2f}x"]
        label = {"default": "no environment variable (spikeforge's `omp_wait` auto)",
                 "spin": "pools spinning (libgomp's default; spikeforge before `omp_wait`)"}.get(name, f"`{name}`")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    per_run = "; ".join(f"{load} {name}: " + ", ".join(f"{v['median_s'] * 1e3:.0f}" for v in runs[(load, name)])
                        for load in LOADS for name in names)
    others = {load: [v["others"] for n in names for v in runs[(load, n)]] for load in LOADS}
    body = [
        "## First use: a user's own training loop, no environment variable",
        "",
        "`python benchmarks/first_use.py"
        f"{'' if args.rounds == 5 else f' --rounds {args.rounds}'}{'' if args.steps == 12 else f' --steps {args.steps}'}`"
        f" · {machine_line()} · {time.strftime('%Y-%m-%d %H:%M', time.gmtime(t_start))} UTC · load average "
        f"{load0:.1f} at start, {load1:.1f} at end",
        "",
        "Zoo `convnet` (channels 32/64, hidden 256, LIF, T=4, batch 128, 28x28, AdamW), `import torch` before "
        "spikeforge, a plain loop that calls nothing from `spikeforge.runtime`. Each configuration runs in its own "
        f"process, interleaved over {args.rounds} rounds (busy: one `python -c \"while True: pass\"` alongside); "
        f"median over the runs of each run's median of {args.steps} steps after 4 warm-up steps. Ratio > 1: slower "
        "than `OMP_WAIT_POLICY=PASSIVE` in the same rounds. Each idle run waited (up to "
        f"{args.wait_quiet:.0f} s) for other processes to go quiet; during the runs other processes took "
        + ", ".join(f"{statistics.median(others[load]):.2f} cores ({min(others[load]):.2f}-{max(others[load]):.2f})"
                    f" {'on the idle machine' if load == 'idle' else 'with the busy process (counted)'}"
                    for load in LOADS) + " (median, range; from /proc/stat).",
        "",
        *lines,
        "",
        f"Per-run medians (ms): {per_run}.",
    ]
    text = "\n".join(body)
    print(text)
    if not args.no_write:
        write_section("first_use", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
