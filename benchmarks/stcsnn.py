"""STCSNN (STCB net, spike-count equivalent gradient) vs the same-size surrogate-gradient nets at T = 1, 2, 4 on
Fashion-MNIST (card slssnn-stcsnn.md, check 3) -> the ``stcsnn`` section of docs/benchmarks.md.

Rows, all with conv3x3 -> BN -> neuron -> maxpool2 at the same channels and a linear readout:

* ``stcsnn``: ``configs/stcsnn_fashion_mnist.yaml`` (IF, soft reset, equivalent gradient; the shipped default);
* ``stcsnn, card block``: leaky hard-reset STCB (decay 0.5 learnable) with its exact equivalent gradient;
* ``stcsnn, surrogate``: the same STCB (IF, soft reset) trained by BPTT with the atan surrogate;
* ``convnet LIF``: the zoo's conv net with LIF (tau 2, atan surrogate, BPTT; the Fashion-MNIST config's neuron).

    python benchmarks/stcsnn.py --data-dir ../shared/data --train-subset 5000 --test-subset 2000 --epochs 2

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
from _report import machine_line, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "stcsnn_fashion_mnist.yaml"
VARIANTS = {
    "stcsnn": [],
    "stcsnn, card block": ["model.kwargs.decay=0.5", "model.kwargs.learn_decay=true", "model.kwargs.reset=hard"],
    "stcsnn, surrogate": ["model.kwargs.gradient=surrogate"],
    "convnet LIF": ["model.name=convnet", "model.neuron_kwargs={tau: 2.0, surrogate: atan, detach_reset: true}"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--T", default="1,2,4")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from spikeforge.config import load_config
    from spikeforge.training import train

    Ts = [int(t) for t in args.T.split(",")]
    budget = [f"data.train_subset={args.train_subset}", f"data.test_subset={args.test_subset}",
              f"run.epochs={args.epochs}", "run.plots=false", "run.progress=false", "run.device=cpu",
              "run.checkpoint_every_steps=0"]
    acc = {}
    for name, extra in VARIANTS.items():
        for T in Ts:
            cfg = load_config(str(CONFIG), budget + extra + [f"model.T={T}"])
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                res = train(cfg, Path(tmp) / "run", data_dir=args.data_dir, verbose=False)
            fin = res["final"]
            acc[name, T] = (fin["test_acc"], fin["spikes_per_sample"])
            print(f"{name} T={T}: {100 * fin['test_acc']:.2f}%  {fin['spikes_per_sample']:,.0f} spikes/sample  "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    lines = ["| net | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---:|" * len(Ts)]
    for name in VARIANTS:
        lines.append(f"| {name} | " + " | ".join(f"{100 * acc[name, T][0]:.2f}% ({acc[name, T][1]:,.0f})"
                                                  for T in Ts) + " |")
    cmd = "python benchmarks/stcsnn.py --data-dir ../shared/data " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--data-dir") and a != args.data_dir)
    body = (f"## stcsnn: STCB net vs same-size surrogate-gradient nets (Fashion-MNIST)\n\nCommand: `{cmd.strip()}` · "
            f"{machine_line()} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"Train subset {args.train_subset}, test subset {args.test_subset}, {args.epochs} epoch(s), channels "
            "32/64, AdamW 2e-3 cosine, CE on the mean output; test accuracy (spikes per sample).\n\n"
            + "\n".join(lines))
    if not args.no_write:
        write_section("stcsnn", body)
    print(body)


if __name__ == "__main__":
    main()
