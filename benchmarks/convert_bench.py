"""ANN -> SNN conversion: every recipe on the same trained Fashion-MNIST ANN, accuracy at T = 1 ... 256, conversion
seconds, spikes/sample; SpikingJelly 2.0's ``ann2snn`` converter on the same ANN in the same run as the anchor.

Three ANNs of one architecture (zoo ``convnet``, channels 16-32, BatchNorm, max pooling) are trained with Adam on the
same data: ``model.neuron=relu`` (the normalisation recipes, spicalib, offset, hybrid and SpikingJelly),
``clip`` (TCL) and ``qcfs`` (QCFS, L = 8).  Each SNN is simulated once at T = 256; the accuracy at T is that of the
logits averaged over the first T steps (the network is causal, so this is the run at T).  SpikingJelly (installed
with ``pip install --no-deps spikingjelly==2.0.0`` plus ``requests``; its ann2snn needs no torchvision) converts a
plain ``nn.Sequential`` holding the very same modules; spikeforge converts that Sequential too (the traced path) as a
cross-check of the zoo path.

    python benchmarks/convert_bench.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, write_section  # noqa: E402

TS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def train_ann(neuron, neuron_kwargs, x, y, epochs, seed, channels):
    from spikeforge.models import create_model

    torch.manual_seed(seed)
    ann = create_model("convnet", num_classes=10, in_channels=1, neuron=neuron, neuron_kwargs=neuron_kwargs, T=1,
                       input_size=28, channels=channels)
    opt = torch.optim.Adam(ann.parameters(), lr=2e-3, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * ((x.shape[0] + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    ann.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 128):
            idx = order[i:i + 128]
            loss = F.cross_entropy(ann(x[idx]).mean(0), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return ann.eval()


@torch.no_grad()
def ann_accuracy(ann, x, y):
    out = torch.cat([ann(x[i:i + 500]).mean(0) for i in range(0, x.shape[0], 500)])
    return float((out.argmax(1) == y).float().mean())


def plain_sequential(zoo):
    """The zoo convnet's modules as a plain single-step ``nn.Sequential`` (what SpikingJelly's converter takes)."""
    layers = []
    for m in zoo.features:
        inner = getattr(m, "layer", None)
        if inner is None:
            layers.append(nn.ReLU())
        elif isinstance(inner, nn.Sequential):
            layers += [copy.deepcopy(c) for c in inner]
        else:
            layers.append(nn.MaxPool2d(inner.kernel_size))
    layers += [nn.Flatten(), copy.deepcopy(zoo.readout.layer)]
    return nn.Sequential(*layers).eval()


def sj_run(plain, x_cal, xt, yt, T, **recipe_kw):
    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.activation_based.neuron.base_node import BaseNode

    t0 = time.perf_counter()
    loader = [(x_cal[i:i + 256], None) for i in range(0, x_cal.shape[0], 256)]
    recipe = ann2snn.RateCodingRecipe(dataloader=loader, **recipe_kw)
    snn = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(plain))
    seconds = time.perf_counter() - t0
    spikes = torch.zeros(T, dtype=torch.float64)
    step = [0]

    def hook(mod, inp, out):
        spikes[step[0]] += float(out.detach().sum())

    hooks = [m.register_forward_hook(hook) for m in snn.modules() if isinstance(m, BaseNode)]
    correct = torch.zeros(T)
    with torch.no_grad():
        for i in range(0, xt.shape[0], 500):
            functional.reset_net(snn)
            xb, yb = xt[i:i + 500], yt[i:i + 500]
            acc = None
            for t in range(T):
                step[0] = t
                o = snn(xb)
                acc = o if acc is None else acc + o
                correct[t] += float((acc.argmax(1) == yb).sum())
    for h in hooks:
        h.remove()
    acc = {t: float(correct[t - 1]) / xt.shape[0] for t in TS if t <= T}
    sps = spikes.cumsum(0) / xt.shape[0]
    return acc, {t: float(sps[t - 1]) for t in acc}, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--calib", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--channels", default="16,32")
    p.add_argument("--Tmax", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--deadline", type=float, default=0.0, help="unix time after which no new row starts (0: none)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from spikeforge.config import DataConfig
    from spikeforge.convert import accuracy_vs_T, convert_with
    from spikeforge.convert.cli import plot_accuracy_vs_T
    from spikeforge.training.data import load_data

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "?"
    a = load_data(DataConfig(name="fashion_mnist", train_subset=args.train_subset, test_subset=args.test_subset),
                  args.data_dir)
    x, y, xt, yt = a.x_train, a.y_train, a.x_test, a.y_test
    x_cal = x[:args.calib]
    channels = tuple(int(c) for c in args.channels.split(","))
    Ts = tuple(t for t in TS if t <= args.Tmax)
    anns, ann_acc, train_s = {}, {}, {}
    for kind, kw in (("relu", None), ("clip", {"lam": 4.0}), ("qcfs", {"lam": 4.0, "L": 8})):
        t0 = time.perf_counter()
        anns[kind] = train_ann(kind, kw, x, y, args.epochs, args.seed, channels)
        train_s[kind] = time.perf_counter() - t0
        ann_acc[kind] = ann_accuracy(anns[kind], xt, yt)
        print(f"ANN {kind}: {100 * ann_acc[kind]:.2f}% ({train_s[kind]:.0f} s)", flush=True)

    runs = [  # (label, recipe, ann, options)
        ("maxnorm", "maxnorm", "relu", {}),
        ("percentile 99.99", "percentile", "relu", {}),
        ("percentile 99.9", "percentile", "relu", {"percentile": 99.9}),
        ("channelwise 99.99", "channelwise", "relu", {}),
        ("channelwise 99.99 + theta/2", "channelwise", "relu", {"v_init": 0.5}),
        ("channelwise 99.9 + theta/2", "channelwise", "relu", {"percentile": 99.9, "v_init": 0.5}),
        ("lipool (99.99)", "lipool", "relu", {}),
        ("spicalib (99.95, A=2)", "spicalib", "relu", {}),
        ("offset (channelwise + theta/2)", "offset", "relu", {}),
        ("hybrid (channelwise + theta/2, 1 epoch BPTT at T=4)", "hybrid", "relu", {"T": 4, "epochs": 1}),
        ("privatesnn (data-free, 16 images/class)", "privatesnn", "relu", {"n_per_class": 16}),
        ("tcl", "tcl", "clip", {}),
        ("tcl + theta/2", "tcl", "clip", {"v_init": 0.5}),
        ("qcfs (L=8, theta/2)", "qcfs", "qcfs", {}),
        ("qcfs + offset", "offset", "qcfs", {}),
    ]
    plain = plain_sequential(anns["relu"])
    with torch.no_grad():
        diff = float((plain(xt[:200]) - anns["relu"](xt[:200]).mean(0)).abs().max())
    assert diff < 1e-4, f"plain Sequential differs from the zoo ANN by {diff}"

    def recipe_job(recipe, kind, opts, ann=None):
        def job():
            data = (x[:2000], y[:2000]) if recipe == "hybrid" else x_cal
            t0 = time.perf_counter()
            snn = convert_with(recipe, ann if ann is not None else anns[kind], data, **opts)
            seconds = time.perf_counter() - t0
            res = accuracy_vs_T(snn, xt, yt, Ts, max_fold=16384)
            return kind, res["acc"], res["spikes_per_sample"], seconds
        return job

    def cat_job():
        t0 = time.perf_counter()  # TTFS: one spike per neuron, K = 8 bins per layer; accuracy does not depend on T
        snn = convert_with("cat_ttfs", anns["relu"], x_cal, K=8)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            out = torch.cat([snn(xt[i:i + 250])[0] for i in range(0, xt.shape[0], 250)])
        return "relu", {8: float((out.argmax(1) == yt).float().mean())}, {}, seconds

    def sj_job(kw):
        def job():
            acc, sps, seconds = sj_run(plain, x_cal, xt, yt, max(Ts), **kw)
            return "relu", acc, sps, seconds
        return job

    # most informative first: with --deadline the rest are listed as not run
    jobs = [(label, recipe_job(recipe, kind, opts)) for label, recipe, kind, opts in runs[:1]]
    jobs += [("channelwise 99.9 + theta/2", recipe_job("channelwise", "relu", {"percentile": 99.9, "v_init": 0.5})),
             ("SpikingJelly 2.0 ann2snn, max", sj_job({"mode": "max"})),
             ("SpikingJelly 2.0 ann2snn, 99.9% channel-wise + half threshold",
              sj_job({"mode": "99.9%", "channel_wise": True, "half_threshold": True})),
             ("tcl", recipe_job("tcl", "clip", {})),
             ("qcfs (L=8, theta/2)", recipe_job("qcfs", "qcfs", {})),
             ("cat_ttfs (no CAT fine-tune; K=8 bins, 5-bit log weights; T column = K)", cat_job)]
    done = {label for label, _ in jobs}
    jobs += [(label, recipe_job(recipe, kind, opts)) for label, recipe, kind, opts in runs if label not in done]
    jobs += [("channelwise 99.99 + theta/2, traced nn.Sequential",
              recipe_job("channelwise", "relu", {"v_init": 0.5}, ann=plain)),
             ("SpikingJelly 2.0 ann2snn, 99.9%", sj_job({"mode": "99.9%"}))]
    rows, curves, skipped = [], {}, []
    for label, job in jobs:
        if args.deadline and time.time() > args.deadline:
            skipped.append(label)
            continue
        try:
            kind, acc, sps, seconds = job()
        except ImportError as e:  # an anchor that is not installed
            print(f"{label}: skipped ({e})")
            skipped.append(f"{label} ({e})")
            continue
        rows.append((label, kind, acc, sps, seconds))
        if len(acc) > 1:
            curves[label] = acc
        print(f"{label:<52} {seconds:6.2f} s  " + " ".join(f"{100 * acc[t]:.1f}" if t in acc else "-" for t in Ts),
              flush=True)

    if not any(r[0] == "maxnorm" for r in rows):
        print("nothing measured before --deadline; docs/benchmarks.md left unchanged")
        return
    load1 = open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "?"
    head = "| recipe | ANN | " + " | ".join(f"T={t}" for t in Ts) + " | convert s | spikes/sample T=32 |"
    lines = [head, "|" + "---|" * (len(Ts) + 4)]
    for label, kind, acc, sps, seconds in rows:
        lines.append(f"| {label} | {kind} {100 * ann_acc[kind]:.2f} | " +
                     " | ".join(f"{100 * acc[t]:.2f}" if t in acc else "-" for t in Ts) +
                     f" | {seconds:.2f} | {f'{sps[32]:,.0f}' if 32 in sps else '-'} |")
    ours = [r for r in rows if not r[0].startswith(("SpikingJelly", "hybrid", "cat_ttfs"))]
    best = max(ours, key=lambda r: sum(r[2][t] - ann_acc[r[1]] for t in Ts if t <= 8))
    maxnorm = next(r for r in rows if r[0] == "maxnorm")
    within = [t for t in Ts if t <= 8 and best[2][t] >= ann_acc[best[1]] - 0.01]
    ahead = all(best[2][t] > maxnorm[2][t] for t in Ts if t <= 32)
    fig = Path(__file__).resolve().parent.parent / "docs" / "convert_accuracy_vs_T.png"
    pick = {k: v for k, v in curves.items() if k in ("maxnorm", "percentile 99.99", best[0], "tcl",
                                                     "qcfs (L=8, theta/2)", "SpikingJelly 2.0 ann2snn, max",
                                                     "SpikingJelly 2.0 ann2snn, 99.9% channel-wise + half threshold")}
    body = "\n".join([
        "## convert: every recipe on one trained Fashion-MNIST ANN",
        "",
        f"`python benchmarks/convert_bench.py --data-dir ../shared/data --train-subset {args.train_subset} "
        f"--test-subset {args.test_subset} --epochs {args.epochs} --channels {args.channels}"
        f"{f' --threads {args.threads}' if args.threads else ''}` · {started} · load average {load0} -> {load1} "
        "(the machine was shared; accuracy does not depend on it, conversion seconds do)",
        "",
        f"{machine_line()}.  ANN: zoo `convnet` (channels {channels}, BatchNorm, max pooling) trained "
        f"{args.epochs} epochs with Adam on {x.shape[0]} training images; test accuracy on the first "
        f"{xt.shape[0]} test images; calibration on {x_cal.shape[0]} training images.  ANN columns: twin and its "
        f"test accuracy (training {train_s['relu']:.0f} / {train_s['clip']:.0f} / {train_s['qcfs']:.0f} s).",
        "",
        *lines,
        "",
        f"Goal 1 (best recipe within 1% of its ANN at T <= 8): best on T <= 8 is **{best[0]}**; within 1% at "
        f"T = {', '.join(map(str, within)) or 'none'} -> {'met' if within else 'not met'}.  "
        f"Goal 2 (ahead of max-norm at every T <= 32): {'met' if ahead else 'not met'}.",
        "",
        *([f"Not run (--deadline): {'; '.join(skipped)}.", ""] if skipped else []),
        "![accuracy vs T](convert_accuracy_vs_T.png)",
    ])
    if not args.no_write:
        plot_accuracy_vs_T(pick, ann_acc["relu"], fig, "Fashion-MNIST convnet: accuracy vs T")
        write_section("convert", body)
    print(body)


if __name__ == "__main__":
    main()
