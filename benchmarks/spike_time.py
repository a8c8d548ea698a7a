"""Exact spike-time methods (``bats``, ``nif``) against BPTT and the same-shape ANN -> the ``spike_time`` section
of docs/benchmarks.md.

Per dataset (MNIST, Fashion-MNIST), on the same budget (train subset, epochs, batch size) and one after the
other, each run in its own process so that its peak RSS is its own:

* ``bats``: the card's 784-800-10 BATS net (spike-count loss) and ``bptt`` on a same-size spiking MLP
  (784-800-10 LIF, direct coding, T steps): test accuracy, training seconds per epoch, peak RSS and its rise over
  the process's RSS after loading the data, spikes per sample (hidden + output; input spikes apart), and the
  classification latency (the time of the output spike after which the count prediction no longer changes).
* ``nif``: a NIF net vs the ReLU ANN of the same shape (``model.kwargs.mode=relu``, plain backprop), then the
  trained NIF net's robustness: weights fake-quantised after training (symmetric uniform, per neuron, via
  :mod:`spikeforge.deploy.quant`) at 8/4/2 bits, and Gaussian weight noise of 1/5/10% of each layer's weight RMS
  (:mod:`spikeforge.deploy.noise`, 3 draws, mean), plus the latency (first output spike, in units of tau_syn).

    python benchmarks/spike_time.py --data-dir ../shared/data
    python benchmarks/spike_time.py --data-dir ../shared/data --train-subset 4000 --epochs 2 --datasets mnist
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, write_section  # noqa: E402

COMMON = ["data.normalize=false", "data.augment=none", "run.progress=false", "run.plots=false", "run.device=cpu",
          "schedule.name=constant", "optim.weight_decay=0.0"]


def configs(args) -> dict[str, list[str]]:
    """The four runs of one dataset (same batch size and epochs for all)."""
    base = COMMON + [f"data.train_subset={args.train_subset}", f"data.test_subset={args.test_subset}",
                     f"run.epochs={args.epochs}", f"data.batch_size={args.batch_size}", "data.eval_batch_size=250"]
    nif_model = f"model.kwargs={{hidden: [{args.nif_hidden}]}}"
    return {
        "bats": base + ["method.name=bats", "model.name=bats_mlp", "optim.name=adam", "optim.lr=0.003"],
        "bptt": base + ["method.name=bptt", "model.name=mlp", "model.kwargs={hidden: [800]}", f"model.T={args.T}",
                        "model.neuron=lif", "optim.name=adam", "optim.lr=0.001"],
        "nif": base + ["method.name=nif", "model.name=nif_mlp", nif_model, "optim.name=adam", "optim.lr=0.001"],
        "relu_ann": base + ["method.name=bptt", "model.name=nif_mlp",
                            f"model.kwargs={{hidden: [{args.nif_hidden}], mode: relu}}", "optim.name=adam",
                            "optim.lr=0.001"],
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@__import__("torch").no_grad()
def _bats_stats(model, x, y):
    """Accuracy, spikes per sample (hidden + output), input spikes per sample, dropped pairs, mean latency (s)."""
    import numpy as np

    correct = spikes = inputs = dropped = 0
    lat = []
    for i in range(0, len(y), 250):
        t_in = model.encode(x[i:i + 250])
        outs = model.spike_times(t_in)
        pred = model.scores(outs).argmax(-1)
        correct += int((pred == y[i:i + 250]).sum())
        spikes += sum(int(o.counts.sum()) for o in outs)
        inputs += int(torch_isfinite(t_in).sum())
        dropped += sum(int(o.dropped.sum()) for o in outs)
        times = outs[-1].times.double().numpy()
        for b in range(times.shape[0]):
            ev = sorted((t, k) for k in range(times.shape[1]) for t in times[b, k] if math.isfinite(t))
            if not ev:
                continue
            counts = np.zeros(times.shape[1])
            first = np.full(times.shape[1], model.t_max)
            final, decided = int(pred[b]), None
            for t, k in ev:  # the prediction after each output spike, by the model's own rule
                counts[k] += 1
                first[k] = min(first[k], t)
                cur = int(np.argmax(counts + 0.5 * (1.0 - first / model.t_max)))
                if cur != final:
                    decided = None
                elif decided is None:
                    decided = t
            if decided is not None:
                lat.append(decided)
    n = len(y)
    return {"acc": correct / n, "spikes_per_sample": spikes / n, "input_spikes_per_sample": inputs / n,
            "dropped": dropped, "latency_s": float(np.mean(lat)) if lat else float("nan")}


def torch_isfinite(t):
    import torch

    return torch.isfinite(t)


@__import__("torch").no_grad()
def _nif_acc(model, x, y):
    correct = 0
    for i in range(0, len(y), 250):
        correct += int((model(x[i:i + 250])[0].argmax(-1) == y[i:i + 250]).sum())
    return correct / len(y)


@__import__("torch").no_grad()
def _nif_stats(model, x, y):
    """Neurons that fire per sample (hidden + output) and the mean first output spike time (tau_syn units)."""
    import torch

    from spikeforge.functional.nif import SENTINEL

    fired, first = 0, []
    for i in range(0, len(y), 250):
        z = model.encode(x[i:i + 250])
        stages = [(True, model.layers)] if hasattr(model, "layers") else [(False, model.features), (True, model.head)]
        for flatten, seq in stages:
            z = z.flatten(1) if flatten else z
            for layer in seq:
                z = model._run(layer, z)
                fired += int((z < SENTINEL).sum())
        first.append(torch.log(z.min(-1).values.double()))
    return {"spikes_per_sample": fired / len(y), "latency_tau": float(torch.cat(first).mean())}


def run_one(name: str, overrides: list[str], data_dir: str) -> dict:
    """Child process: load the data (the baseline RSS), warm the kernels on 2 samples, then train and measure."""
    import torch

    from spikeforge.config import TrainConfig
    from spikeforge.models.build import build_model
    from spikeforge.training import train
    from spikeforge.training.data import load_data

    cfg = TrainConfig().override(overrides)
    arrays = load_data(cfg.data, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg.override(["data.batch_size=2", "data.train_subset=2", "data.test_subset=2",
                            "data.eval_batch_size=2", "run.epochs=1"]), Path(tmp) / "warm", data_dir=data_dir,
              verbose=False)
    rss0 = _rss_mb()
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, arrays)
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, Path(tmp) / "run", data_dir=data_dir, model=model, verbose=False)
    fin = res["final"]
    out = {"test_acc": fin["test_acc"], "s_per_epoch": fin["train_seconds"], "samples_per_s": fin["samples_per_s"],
           "peak_rss_mb": _rss_mb(), "rss_rise_mb": _rss_mb() - rss0, "T": fin["T"],
           "spikes_per_sample": fin["spikes_per_sample"]}
    x, y = arrays.x_test, arrays.y_test
    model.eval()
    if name == "bats":
        out.update(_bats_stats(model, x, y))
    if name == "nif":
        from spikeforge.deploy import QuantConfig, clear_noise_, dequantize_
        from spikeforge.methods.nif import nif_weight_noise_, quantize_nif_

        out.update(_nif_stats(model, x, y))
        out["float_acc"] = _nif_acc(model, x, y)
        for bits in (8, 4, 2):
            quantize_nif_(model, QuantConfig(bits=bits))
            out[f"q{bits}"] = _nif_acc(model, x, y)
            dequantize_(model, keep_quantized=False)
        for sigma in (0.01, 0.05, 0.10):
            accs = []
            for seed in range(3):
                nif_weight_noise_(model, sigma, generator=torch.Generator().manual_seed(seed))
                accs.append(_nif_acc(model, x, y))
            clear_noise_(model)
            out[f"noise{int(sigma * 100)}"] = sum(accs) / len(accs)
    if name == "relu_ann":
        out["float_acc"] = _nif_acc(model, x, y)
    return out


def nif_kernel_rows(batch=64, n_in=784, n_out=400) -> list[str]:
    """Forward + backward of one NIF dense layer: the fused kernels vs the reference closed form (median of 5)."""
    import torch

    from _report import median_time
    from spikeforge.functional.nif import nif_spike_time
    from spikeforge.kernels.nif_numba import nif_spike_time_numba

    g = torch.Generator().manual_seed(0)
    z = torch.exp(3 * torch.rand(batch, n_in, generator=g))
    w = (torch.rand(n_out, n_in, generator=g) * 8 / n_in).requires_grad_(True)
    bw = torch.zeros(n_out, requires_grad=True)
    rows = []
    for name, fn in (("reference (functional/nif.py)", nif_spike_time), ("fused numba (kernels/nif_numba.py)",
                                                                       nif_spike_time_numba)):
        sec = median_time(lambda: fn(z, w, bw).sum().backward(), repeat=5, warmup=1)
        rows.append(f"| {name} | {batch} x {n_in} -> {n_out} | {1000 * sec:.0f} |")
    return rows


def spawn(name, overrides, data_dir) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data-dir", data_dir]
    for o in overrides:
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="")
    p.add_argument("--datasets", default="mnist,fashion_mnist")
    p.add_argument("--train-subset", type=int, default=4000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--T", type=int, default=8, help="time steps of the BPTT baseline")
    p.add_argument("--nif-hidden", type=int, default=400)
    p.add_argument("--results", default=None, help="JSON file of finished runs: reused, and each new run added")
    p.add_argument("--child", default=None)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.set, args.data_dir)))
        return
    t_start = time.time()
    cache = json.loads(Path(args.results).read_text()) if args.results and Path(args.results).is_file() else {}
    res = {}
    for ds in args.datasets.split(","):
        for name, ov in configs(args).items():
            key = f"{ds}/{name}"
            if key not in cache:
                cache[key] = spawn(name, [f"data.name={ds}"] + ov, args.data_dir)
                if args.results:
                    Path(args.results).write_text(json.dumps(cache, indent=1))
            res[(ds, name)] = cache[key]
            print(ds, name, json.dumps(cache[key]), flush=True)
    body = [f"## Exact spike-time methods: BATS and NIF (`benchmarks/spike_time.py`)\n",
            f"Command: `python benchmarks/spike_time.py --data-dir ../shared/data --train-subset {args.train_subset} "
            f"--test-subset {args.test_subset} --epochs {args.epochs}` · {machine_line()} · "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · total {time.time() - t_start:.0f} s. "
            f"Train subset {args.train_subset}, test subset {args.test_subset}, {args.epochs} epoch(s), batch "
            f"{args.batch_size}, Adam, every run in its own process, one after the other (the machine was shared: "
            "seconds are indicative). BATS runs on the numba CPU kernels (CPU only).\n",
            "### BATS vs BPTT on a same-size MLP (784-800-10)\n",
            "| dataset | method | test acc | s / epoch | peak RSS MB | RSS rise MB | spikes/sample (hidden+out) | "
            "input spikes/sample | latency (ms) | dropped |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in args.datasets.split(","):
        b, t = res[(ds, "bats")], res[(ds, "bptt")]
        body.append(f"| {ds} | bats (count loss) | {100 * b['test_acc']:.2f}% | {b['s_per_epoch']:.1f} | "
                    f"{b['peak_rss_mb']:.0f} | {b['rss_rise_mb']:.0f} | {b['spikes_per_sample']:.0f} | "
                    f"{b['input_spikes_per_sample']:.0f} | {1000 * b['latency_s']:.1f} | {b['dropped']} |")
        body.append(f"| {ds} | bptt (LIF, T={args.T}) | {100 * t['test_acc']:.2f}% | {t['s_per_epoch']:.1f} | "
                    f"{t['peak_rss_mb']:.0f} | {t['rss_rise_mb']:.0f} | {t['spikes_per_sample']:.0f} | - | - | - |")
    body += ["", f"### NIF (784-{args.nif_hidden}-10) vs the same-shape ReLU ANN, and NIF robustness\n",
             "| dataset | NIF acc | ReLU ANN acc | gap | NIF s / epoch | ANN s / epoch | NIF firing neurons/sample | "
             "latency (tau_syn) | 8 bit | 4 bit | 2 bit | noise 1% | noise 5% | noise 10% |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds in args.datasets.split(","):
        n, a = res[(ds, "nif")], res[(ds, "relu_ann")]
        body.append(f"| {ds} | {100 * n['test_acc']:.2f}% | {100 * a['test_acc']:.2f}% | "
                    f"{100 * (n['test_acc'] - a['test_acc']):+.2f} pt | {n['s_per_epoch']:.1f} | "
                    f"{a['s_per_epoch']:.1f} | {n['spikes_per_sample']:.0f} | {n['latency_tau']:.2f} | "
                    f"{100 * n['q8']:.2f}% | {100 * n['q4']:.2f}% | {100 * n['q2']:.2f}% | {100 * n['noise1']:.2f}% | "
                    f"{100 * n['noise5']:.2f}% | {100 * n['noise10']:.2f}% |")
    body.append("\nQuantisation is post-training (the float-trained net, weights fake-quantised per neuron); "
                "training under quantisation is `method.kwargs.quant_bits`. Noise: one fixed draw per layer, "
                "mean of 3 draws.")
    body += ["", "### NIF layer kernels (forward + backward, float32 in, median of 5)\n",
             "| implementation | shape | ms |", "|---|---|---|", *nif_kernel_rows()]
    write_section("spike_time", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
