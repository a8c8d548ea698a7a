"""Training benchmark -> the ``training`` section of docs/benchmarks.md.

Two phases (run both, or one with ``--phase``); each saves its numbers as JSON (``--results``) and the
section is rebuilt from whatever results exist:

* ``accuracy``: ``configs/fashion_mnist.yaml`` trained to the end by :func:`spikeforge.training.train`
  (test accuracy per epoch, epochs, wall time), then the same architecture as an ANN (every LIF replaced by
  ReLU, T=1 since a ReLU net gives the same output at every step) trained by the same loop and config.
* ``speed``: the same conv SNN built from spikeforge layers and from SpikingJelly 2.0 layers
  (``SeqToANNContainer`` + multi-step ``LIFNode``, reset before every batch), trained side by
  side by the same loop on the same batches, interleaved, median seconds per step -> seconds per epoch;
  plus the data-loading share of a training step.

    python benchmarks/train_bench.py --data-dir "$SPIKEFORGE_DATA"            # both phases
    python benchmarks/train_bench.py --data-dir "$SPIKEFORGE_DATA" --phase speed
"""

from __future__ import annotations

import os

# Two OpenMP runtimes (torch's and numba's) spin-wait by default; on a shared or oversubscribed machine that
# costs 10-50x. Passive waiting must be chosen before torch loads, and applies to both implementations.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, write_section  # noqa: E402

CONFIG = ROOT / "configs" / "fashion_mnist.yaml"


def relu_variant(model: nn.Module) -> nn.Module:
    """Replace every spiking neuron module by ReLU (the same-architecture ANN)."""
    from spikeforge.neurons.base import BaseNeuron

    for name, m in list(model.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, BaseNeuron):
                setattr(m, cname, nn.ReLU())
    return model


class SJConvNet(nn.Module):
    """The ``convnet`` architecture built from SpikingJelly 2.0 layers (multi-step, torch backend)."""

    def __init__(self, num_classes, in_channels, T, input_size, channels, hidden, tau=2.0, detach_reset=True):
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        def lif():
            return neuron.LIFNode(tau=tau, detach_reset=detach_reset, surrogate_function=surrogate.ATan(),
                                  step_mode="m")

        blocks, c, size = [], in_channels, input_size
        for co in channels:
            blocks += [layer.SeqToANNContainer(nn.Conv2d(c, co, 3, padding=1, bias=False), nn.BatchNorm2d(co)),
                       lif(), layer.SeqToANNContainer(nn.MaxPool2d(2))]
            c, size = co, size // 2
        width = c * size * size
        head = [layer.SeqToANNContainer(nn.Flatten())]
        if hidden:
            head += [layer.SeqToANNContainer(nn.Linear(width, hidden)), lif()]
            width = hidden
        head += [layer.SeqToANNContainer(nn.Linear(width, num_classes))]
        self.net = nn.Sequential(*blocks, *head)
        self.T = T
        self.channels_last = False  # True: feed channels-last steps (spikeforge's default layout), for comparison

    def forward(self, x):
        from spikingjelly.activation_based import functional

        functional.reset_net(self.net)  # SpikingJelly keeps membrane state in the modules
        x_seq = x.unsqueeze(0).repeat(self.T, *([1] * x.dim()))
        if self.channels_last:
            from spikeforge.models.base import channels_last_steps

            x_seq = channels_last_steps(x_seq)
        return self.net(x_seq)


def load_cfg(data_dir, overrides=()):
    from spikeforge.config import TrainConfig

    ov = ["run.progress=false", "run.plots=false"] + list(overrides)
    if data_dir:
        ov.append(f"data.data_dir={data_dir}")
    return TrainConfig.from_yaml(CONFIG, ov)


def phase_accuracy(args) -> dict:
    from spikeforge.training import train
    from spikeforge.training.data import load_data
    from spikeforge.models.build import build_model

    out = {"threads": torch.get_num_threads(), "commit": _commit()}
    ov = [f"run.epochs={args.epochs}"] if args.epochs else []
    cfg = load_cfg(args.data_dir, ov)
    root = Path(args.run_root)
    t0 = time.perf_counter()
    snn_dir = root / "snn"
    if args.resume and (snn_dir / "config.yaml").is_file():
        res = train(cfg, snn_dir, resume=True)  # continue an interrupted benchmark run (same config)
    else:
        res = train(cfg, snn_dir, force=True)
    hist = [json.loads(line) for line in (root / "snn" / "metrics.jsonl").read_text().splitlines()]
    out["snn"] = {"epochs": len(hist), "test_acc": [r["test_acc"] for r in hist], "best": res["best_acc"],
                  "wall_s": time.perf_counter() - t0, "train_s": sum(r["epoch_seconds"] for r in hist),
                  "spikes_per_sample": hist[-1]["spikes_per_sample"], "data_fraction": hist[-1]["data_fraction"]}
    _save(args, "accuracy", out)
    cfg_ann = load_cfg(args.data_dir, ov + ["model.T=1", "loss.name=ce"])
    ann = relu_variant(build_model(cfg_ann, load_data(cfg_ann.data)))
    t0 = time.perf_counter()
    res = train(cfg_ann, root / "ann", force=True, model=ann)
    hist = [json.loads(line) for line in (root / "ann" / "metrics.jsonl").read_text().splitlines()]
    out["ann"] = {"epochs": len(hist), "test_acc": [r["test_acc"] for r in hist], "best": res["best_acc"],
                  "wall_s": time.perf_counter() - t0, "train_s": sum(r["epoch_seconds"] for r in hist)}
    _save(args, "accuracy", out)
    return out


def phase_speed(args) -> dict:
    from spikeforge.training.data import load_data
    from spikeforge.training.losses import compute_loss
    from spikeforge.models.build import build_model
    from spikeforge.training.trainer import build_optimizer

    cfg = load_cfg(args.data_dir)
    arrays = load_data(cfg.data)
    kw = cfg.model.kwargs
    torch.manual_seed(0)
    ours = build_model(cfg, arrays)
    sj = SJConvNet(arrays.num_classes, arrays.in_channels, cfg.model.T, arrays.input_size, kw["channels"],
                   kw.get("hidden", 0), tau=cfg.model.neuron_kwargs.get("tau", 2.0),
                   detach_reset=cfg.model.neuron_kwargs.get("detach_reset", False))
    sj_cl = SJConvNet(arrays.num_classes, arrays.in_channels, cfg.model.T, arrays.input_size, kw["channels"],
                      kw.get("hidden", 0), tau=cfg.model.neuron_kwargs.get("tau", 2.0),
                      detach_reset=cfg.model.neuron_kwargs.get("detach_reset", False))
    sj_cl.channels_last = True
    models = {"spikeforge": ours, "spikingjelly": sj, "spikingjelly_cl": sj_cl}
    opts = {k: build_optimizer(cfg, m) for k, m in models.items()}
    bs = cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    times = {k: [] for k in models}
    data_times = []

    def step(name, idx):
        m, opt = models[name], opts[name]
        t0 = time.perf_counter()
        xb, yb = arrays.x_train[idx], arrays.y_train[idx]
        t1 = time.perf_counter()
        out = m(xb)
        loss = compute_loss(cfg.loss.name, out, yb, cfg.loss.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t0

    for i in range(args.warmup + args.steps):
        idx = torch.randint(0, len(arrays.y_train), (bs,), generator=g)
        names = list(models)
        for name in (names if i % 2 == 0 else names[::-1]):
            dt_data, dt = step(name, idx)
            if i >= args.warmup:
                times[name].append(dt)
                if name == "spikeforge":
                    data_times.append(dt_data)
    steps_per_epoch = -(-len(arrays.y_train) // bs)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"batch_size": bs, "steps": args.steps, "steps_per_epoch": steps_per_epoch,
           "step_s": med, "epoch_s": {k: v * steps_per_epoch for k, v in med.items()},
           "speedup": med["spikingjelly"] / med["spikeforge"],
           "data_fraction": statistics.median(data_times) / med["spikeforge"],
           "backend": _first_neuron(ours).resolved_backend(torch.zeros(1)), "threads": torch.get_num_threads()}
    _save(args, "speed", out)
    return out


def _commit() -> str | None:
    """The checked-out commit (short hash) the accuracy run used, if this is a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _first_neuron(model):
    from spikeforge.neurons.base import BaseNeuron

    return next(m for m in model.modules() if isinstance(m, BaseNeuron))


def _save(args, name, obj):
    p = Path(args.results) / f"train_bench_{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj, indent=1))


def _load(args, name):
    p = Path(args.results) / f"train_bench_{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def render(args) -> str:
    cfg = load_cfg(args.data_dir)
    kw = cfg.model.kwargs
    lines = [f"## training", "",
             f"Command: `python benchmarks/train_bench.py --data-dir \"$SPIKEFORGE_DATA\"` (the folder holding "
             f"`fashion-mnist/`) · {machine_line()}", "",
             f"Model: `convnet` channels {kw['channels']}, hidden {kw.get('hidden', 0)}, LIF (tau "
             f"{cfg.model.neuron_kwargs.get('tau', 2.0)}), T={cfg.model.T}, {cfg.loss.name} loss, {cfg.optim.name} "
             f"lr {cfg.optim.lr}, batch {cfg.data.batch_size} (`configs/fashion_mnist.yaml`). The machine's 2 cores "
             "were shared with other jobs while this ran, so times are upper bounds.", ""]
    acc = _load(args, "accuracy")
    partial = Path(args.run_root) / "snn" / "metrics.jsonl"
    if not acc and partial.is_file() and partial.read_text().strip():
        hist = [json.loads(line) for line in partial.read_text().splitlines()]
        lines += ["### Fashion-MNIST accuracy (target >= 93.0%): run not finished", "",
                  f"The SNN run stopped or is still going after {len(hist)} of {cfg.run.epochs} epochs "
                  f"({sum(r['epoch_seconds'] for r in hist) / 60:.0f} min of training on the shared cores); test "
                  "accuracy per epoch so far: " + ", ".join(f"{100 * r['test_acc']:.2f}%" for r in hist) +
                  f". Finish it with `python benchmarks/train_bench.py --data-dir "$SPIKEFORGE_DATA" --phase accuracy "
                  "--resume` (it continues from the last checkpoint); the ANN row follows it.", ""]
    if acc:
        s = acc["snn"]
        lines += ["### Fashion-MNIST accuracy (target >= 93.0%)", "",
                  "| network | epochs | final test acc | best test acc | training wall time |",
                  "|---|---:|---:|---:|---:|",
                  f"| SNN (LIF, T={cfg.model.T}) | {s['epochs']} | {100 * s['test_acc'][-1]:.2f}% | "
                  f"{100 * s['best']:.2f}% | {s['train_s'] / 60:.1f} min |"]
        if "ann" in acc:
            a = acc["ann"]
            lines.append(f"| same architecture, ReLU (ANN, T=1) | {a['epochs']} | {100 * a['test_acc'][-1]:.2f}% | "
                         f"{100 * a['best']:.2f}% | {a['train_s'] / 60:.1f} min |")
        lines += ["", "SNN test accuracy per epoch: " + ", ".join(f"{100 * v:.2f}" for v in s["test_acc"]),
                  f"; {s['spikes_per_sample']:,.0f} spikes per sample." +
                  (f" Recorded at commit `{acc['commit']}`; a later commit changes this model's execution only where "
                   "docs/models.md says so (memory order, fused pooling: the same network and values up to the "
                   "rounding order of the convolutions)." if acc.get("commit") else ""), ""]
        if s["best"] < 0.93:
            lines += [f"**Target not reached**: {100 * s['best']:.2f}% after {s['epochs']} epochs (the budget that "
                      "fit on 2 shared CPU cores); a longer run of the same config is expected to go higher, but "
                      "this table records only what was measured.", ""]
    sp = _load(args, "speed")
    if sp:
        lines += ["### Epoch time: spikeforge vs SpikingJelly 2.0 (same network, same loop, target >= 2x)", "",
                  "| implementation | s / step (median) | s / epoch (60k samples) |", "|---|---:|---:|",
                  f"| spikeforge (neuron backend `{sp['backend']}`) | {sp['step_s']['spikeforge']:.4f} | "
                  f"{sp['epoch_s']['spikeforge']:.0f} |",
                  f"| SpikingJelly 2.0 (multi-step `LIFNode`, plain torch) | {sp['step_s']['spikingjelly']:.4f} | "
                  f"{sp['epoch_s']['spikingjelly']:.0f} |",
                  *([f"| SpikingJelly 2.0 fed channels-last input (not the baseline; shows the layout's share) | "
                     f"{sp['step_s']['spikingjelly_cl']:.4f} | {sp['epoch_s']['spikingjelly_cl']:.0f} |"]
                    if "spikingjelly_cl" in sp["step_s"] else []), "",
                  f"Speed-up: **{sp['speedup']:.2f}x** (median of {sp['steps']} interleaved steps of batch "
                  f"{sp['batch_size']}, forward + backward + AdamW step). Data loading (indexing the in-memory "
                  f"batch) is **{100 * sp['data_fraction']:.2f}%** of a training step (target <= 5%).", ""]
        if sp["speedup"] < 2:
            lines += [f"**Speed target not reached** ({sp['speedup']:.2f}x < 2x): both networks run the same torch "
                      "convolutions, BatchNorm and pooling, which dominate the step at this size; only the neuron "
                      "layers differ. Both ran in one process with `OMP_WAIT_POLICY=PASSIVE` (set by the script).", ""]
        lines += ["Where the speed comes from: spikeforge's conv models run in channels-last memory order from the "
                  "first convolution on (oneDNN's faster convolution and BatchNorm kernels; the fused neurons keep "
                  "that order), compute the direct-coded first conv + BN once instead of T times and hand its "
                  "gradient back in the same order (BatchNorm's backward is 3.5x slower with mixed orders), fuse "
                  "the neurons (the first LIF layer reads its repeated input step once instead of a T-fold copy), "
                  "and pool with a fused max-pool kernel (1-byte window positions, one write of the input "
                  "gradient; bit-identical to `nn.MaxPool2d`). All networks ran in "
                  "one process with `spikeforge.runtime.keep_freed_memory()` (as `spikeforge train` does), which "
                  "helps every network alike.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--phase", choices=("all", "accuracy", "speed", "render"), default="all")
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation (speed phase)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted accuracy run")
    ap.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "spikeforge_bench"))
    ap.add_argument("--run-root", default=str(Path(tempfile.gettempdir()) / "spikeforge_bench" / "runs"))
    args = ap.parse_args(argv)
    from spikeforge.runtime import keep_freed_memory

    keep_freed_memory()  # as `spikeforge train` does
    if args.phase in ("all", "speed"):
        print(json.dumps(phase_speed(args), indent=1))
    if args.phase in ("all", "accuracy"):
        print(json.dumps(phase_accuracy(args), indent=1))
    write_section("training", render(args))


if __name__ == "__main__":
    main()
