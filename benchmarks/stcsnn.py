"""STCSNN (STCB net, spike-count equivalent gradient) vs the same-size surrogate-gradient nets at T = 1, 2, 4 on
Fashion-MNIST (card slssnn-stcsnn.md, check 3) -> the ``stcsnn`` section of docs/benchmarks.md.

Rows, all with conv3x3 -> BN -> neuron -> maxpool2 at the same channels and a linear readout:

* ``stcsnn``: ``configs/stcsnn_fashion_mnist.yaml`` (IF, soft reset, equivalent gradient; the shipped default);
* ``stcsnn card-block``: leaky hard-reset STCB (decay 0.5 learnable) with its exact equivalent gradient;
* ``stcsnn surrogate``: the same STCB (IF, soft reset) trained by BPTT with the atan surrogate;
* ``convnet-lif``: the zoo's conv net with LIF (tau 2, atan surrogate, BPTT; the Fashion-MNIST config's neuron).

    python benchmarks/stcsnn.py --data-dir ../shared/data --train-subset 5000 --test-subset 2000 --epochs 2
    python benchmarks/stcsnn.py --data-dir ../shared/data --variants convnet-lif     # re-measure one row

``--variants`` re-measures only the rows named and keeps the others (same budget); each row is dated.

Accuracy only (each run's seconds are printed but not compared: the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, read_section, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "stcsnn_fashion_mnist.yaml"
VARIANTS = {
    "stcsnn": [],
    "stcsnn card-block": ["model.kwargs.decay=0.5", "model.kwargs.learn_decay=true", "model.kwargs.reset=hard"],
    "stcsnn surrogate": ["model.kwargs.gradient=surrogate"],
    "convnet-lif": ["model.name=convnet", "model.neuron_kwargs={tau: 2.0, surrogate: atan, detach_reset: true}"],
}


def kept_rows(section, budget_line, header, replaced) -> dict[str, str]:
    """Rows of an earlier table with the same budget and columns, for variants not re-measured now."""
    if not section or budget_line not in section or header not in section:
        return {}
    rows = {}
    for line in section.split(header, 1)[1].splitlines()[2:]:
        if not line.startswith("| "):
            break
        name = line.split("|")[1].strip()
        if name in VARIANTS and name not in replaced:
            rows[name] = line
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--T", default="1,2,4")
    ap.add_argument("--variants", default=None, help="comma-separated row names to (re)measure; the other rows "
                                                        "of an earlier table with the same budget are kept")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--from-log", default=None, help="record the rows of an interrupted run of this script (its "
                                                     "stderr lines 'NAME T=t: ACC%%  SPIKES spikes/sample') "
                                                     "instead of training")
    args = ap.parse_args()
    from spikeforge.config import load_config
    from spikeforge.training import train

    Ts = [int(t) for t in args.T.split(",")]
    budget = [f"data.train_subset={args.train_subset}", f"data.test_subset={args.test_subset}",
              f"run.epochs={args.epochs}", "run.plots=false", "run.progress=false", "run.device=cpu",
              "run.checkpoint_every_steps=0"]
    run = args.variants.split(",") if args.variants else list(VARIANTS)
    bad = [v for v in run if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--variants: unknown {bad[0]!r}; available: {', '.join(VARIANTS)}")
    acc = {}
    if args.from_log:
        import re

        for line in Path(args.from_log).read_text().splitlines():
            m = re.match(r"(.+) T=(\d+): ([\d.]+)%  ([\d,]+) spikes/sample", line)
            if m and m.group(1) in run:
                acc[m.group(1), int(m.group(2))] = (float(m.group(3)) / 100, float(m.group(4).replace(",", "")))
        missing = [(n, T) for n in run for T in Ts if (n, T) not in acc]
        if missing:
            raise SystemExit(f"--from-log: no result for {missing[0][0]!r} at T={missing[0][1]}")
    for name in run if not args.from_log else []:
        extra = VARIANTS[name]
        for T in Ts:
            cfg = load_config(str(CONFIG), budget + extra + [f"model.T={T}"])
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = train(cfg, Path(tmp) / "run", data_dir=args.data_dir, verbose=False)
            fin = res["final"]
            acc[name, T] = (fin["test_acc"], fin["spikes_per_sample"])
            print(f"{name} T={T}: {100 * fin['test_acc']:.2f}%  {fin['spikes_per_sample']:,.0f} spikes/sample  "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    header = "| net | " + " | ".join(f"T={T}" for T in Ts) + " | measured (UTC) |"
    budget_line = (f"Train subset {args.train_subset}, test subset {args.test_subset}, {args.epochs} epoch(s), "
                   "channels 32/64, AdamW 2e-3 cosine, CE on the mean output; test accuracy (spikes per sample).")
    rows = kept_rows(read_section("stcsnn"), budget_line, header, set(run))
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for name in run:
        rows[name] = (f"| {name} | " + " | ".join(f"{100 * acc[name, T][0]:.2f}% ({acc[name, T][1]:,.0f})"
                                                  for T in Ts) + f" | {stamp} |")
    lines = [header, "|---|" + "---:|" * len(Ts) + "---|"] + [rows[n] for n in VARIANTS if n in rows]
    cmd = "python benchmarks/stcsnn.py --data-dir ../shared/data " + " ".join(
        a for a in sys.argv[1:]
        if not a.startswith(("--data-dir", "--from-log")) and a not in (args.data_dir, args.from_log))
    body = (f"## stcsnn: STCB net vs same-size surrogate-gradient nets (Fashion-MNIST)\n\nCommand: `{cmd.strip()}` · "
            f"{machine_line()} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            + budget_line + "\n\n" + "\n".join(lines))
    if not args.no_write:
        write_section("stcsnn", body)
    print(body)


if __name__ == "__main__":
    main()
