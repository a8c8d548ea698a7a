"""The best Fashion-MNIST recipe at T <= 4 (``configs/fashion_mnist_best.yaml``) -> the ``fashion_mnist_best``
section of docs/benchmarks.md.

Trains the config to the end with :func:`spikeforge.training.train` (the loop ``spikeforge train`` runs), then
writes the final and best test accuracy, the training wall time (every epoch including its test pass), the
machine, the load average and the command, plus the table of exploratory runs kept in ``EXPLORED`` below (what
was tried on the way and did not win).

    python benchmarks/fashion_mnist_best.py --data-dir ../shared/data
    python benchmarks/fashion_mnist_best.py --data-dir ../shared/data --report-only   # rewrite from the run folder

The goal is stated in wall minutes, so run it alone: ``--lock FILE`` takes an exclusive ``flock`` on FILE (the
benchmark lock the other scripts share) before training and the section says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "fashion_mnist_best.yaml"
SECTION = "fashion_mnist_best"
GOAL_ACC, GOAL_MIN = 95.0, 30.0

#: exploratory runs on the full training and test sets, each in its own process while other jobs loaded the 2 cores
#: (load average 5-17, so no timings): (change vs configs/fashion_mnist.yaml, epochs, test acc, note)
EXPLORED: list[tuple[str, str, str, str]] = [
    ("T=1", "4 of a 5-epoch schedule", "91.12%",
     "train accuracy 94.48% already: over-fits without augmentation; stopped (12 min/epoch under load)"),
    ("T=1, channels 64/128/256, crop_flip", "1 of 5", "84.60%",
     "stopped: 5.4 min/epoch under load, no chance to finish before the timed run"),
    ("T=1, channels 64/128, crop_flip, label smoothing 0.1, 18 epochs", "0", "-",
     "stopped before its first epoch ended (load 13); T=1 multilevel (cap 4) and T=2 without augmentation the same"),
    ("T=2, crop_flip, label smoothing 0.1 (this config)", "17", "92.37%",
     "under-fits: train accuracy (augmented) 93.27% at the end; test 91.97% at epoch 13, where configs/"
     "fashion_mnist.yaml (T=4, no augmentation) had 93.42%"),
]

#: what the measurements above say, printed under the table
CONCLUSION = (
    "Reading: this recipe is the best measured within 30 minutes, but it is below `configs/fashion_mnist.yaml` "
    "(93.48% at T=4 without augmentation, 16 epochs, 49.1 min at commit 9b24bfd, section `training`). Halving T bought "
    "the time; the random shifts and flips then cost more accuracy than they gave back in 17 epochs at this width "
    "(its training accuracy on augmented batches ended at 93.27%: the net under-fits them). Untried for lack of "
    "quiet CPU time: T=2 without augmentation for ~20 epochs, a wider net at T=1, multilevel neurons.")


def _commit(run_dir: Path) -> str:
    """The code version the run recorded when training started (``run.json``), short form."""
    try:
        full = json.loads((run_dir / "run.json").read_text())["code"]["git_commit"] or "unknown"
    except (OSError, KeyError, ValueError):
        return "unknown"
    sha, _, rest = full.partition("+")
    return sha[:7] + (f"+{rest}" if rest else "")


def _load_avg() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args) -> dict:
    import fcntl

    from spikeforge.config import TrainConfig
    from spikeforge.training import train

    lock = None
    if args.lock:
        lock = open(args.lock, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)  # held until the process exits

    cfg = TrainConfig.from_yaml(CONFIG).override(["run.progress=false"])
    load_before = _load_avg()
    t0 = time.perf_counter()
    train(cfg, args.run_dir, force=True, data_dir=args.data_dir)
    wall = time.perf_counter() - t0
    info = {"load_before": load_before, "load_after": _load_avg(), "wall_seconds": wall, "machine": machine_line(),
            "exclusive_lock": lock is not None, "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (Path(args.run_dir) / "bench.json").write_text(json.dumps(info, indent=1))
    return info


def report(args) -> str:
    run_dir = Path(args.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    info = json.loads((run_dir / "bench.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    from spikeforge.config import TrainConfig

    cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    acc, best = 100 * summary["test_acc"], 100 * summary["best_acc"]
    minutes = summary["train_wall_seconds"] / 60
    met = acc >= GOAL_ACC and minutes <= GOAL_MIN
    m, d, o, s, l_ = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.loss
    lines = [
        "## Fashion-MNIST: the best recipe at T <= 4 on 2 CPU cores",
        "",
        f"Command: `python benchmarks/fashion_mnist_best.py --data-dir ../shared/data --lock LOCKFILE` (LOCKFILE: the "
        "benchmark lock the other scripts share; trains "
        f"`configs/fashion_mnist_best.yaml`; the same as `spikeforge train --config configs/fashion_mnist_best.yaml "
        f"--data-dir ../shared/data`) · {info['machine']} · commit `{_commit(run_dir)}` (at the start of training) "
        f"· finished {info['finished_utc']} · load average before/after {info['load_before']} / {info['load_after']} "
        f"({'with' if info.get('exclusive_lock') else 'without'} the benchmark lock held exclusively)",
        "",
        f"Recipe: `{m.name}` {dict(m.kwargs)}, neuron `{m.neuron}` {dict(m.neuron_kwargs)}, T={m.T}, "
        f"augment `{d.augment}` (padding {d.crop_padding}), batch {d.batch_size}, {o.name} lr {o.lr} "
        f"weight decay {o.weight_decay}, {s.name} schedule (warm-up {s.warmup_epochs} epochs), loss `{l_.name}` "
        f"(label smoothing {l_.label_smoothing}), {summary['epochs']} epochs, method `{summary['method']}`.",
        "",
        "| goal | test acc (final) | best epoch's acc | training wall time | spikes / sample | goal met |",
        "|---|---:|---:|---:|---:|---|",
        f"| >= {GOAL_ACC:.1f}% in <= {GOAL_MIN:.0f} min | {acc:.2f}% | {best:.2f}% (epoch {summary['best_epoch']}) | "
        f"{minutes:.1f} min | {summary['spikes_per_sample']:,.0f} | {'yes' if met else 'no'} |",
        "",
        "Test accuracy per epoch: " + ", ".join(f"{100 * r['test_acc']:.2f}" for r in records) + ".",
        "Training wall time is the sum of the epochs' times, each including its pass over the 10,000 test images; "
        f"the whole command took {info['wall_seconds'] / 60:.1f} min (data loading and the final report included).",
    ]
    if not met:
        gap = []
        if acc < GOAL_ACC:
            gap.append(f"{GOAL_ACC - acc:.2f} points short of {GOAL_ACC:.1f}%")
        if minutes > GOAL_MIN:
            gap.append(f"{minutes - GOAL_MIN:.1f} min over {GOAL_MIN:.0f} min")
        lines += ["", "Goal not met: " + "; ".join(gap) + "."]
    if EXPLORED:
        lines += ["", "### What was tried on the way",
                  "",
                  "Full training and test sets, one run each, while other jobs shared the cores (load average "
                  "5-17, so no timings). Changes are relative to `configs/fashion_mnist.yaml`.",
                  "",
                  "| change | epochs | test acc | note |", "|---|---|---:|---|"]
        lines += [f"| {c} | {e} | {a} | {n} |" for c, e, a, n in EXPLORED]
    lines += ["", CONCLUSION]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("SPIKEFORGE_DATA"),
                   help="folder holding fashion-mnist/ (default: $SPIKEFORGE_DATA)")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "fashion_mnist_best"), help="run folder (replaced)")
    p.add_argument("--lock", default=None, help="file to hold an exclusive flock on while training")
    p.add_argument("--report-only", action="store_true", help="rewrite the section from an existing run folder")
    args = p.parse_args(argv)
    if not args.report_only:
        run(args)
    body = report(args)
    write_section(SECTION, body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
