"""Hardware realism on a Fashion-MNIST conv SNN -> sections ``hardware_quant``, ``hardware_noise``,
``hardware_crossbar`` and ``hardware_energy`` of docs/benchmarks.md.

One small budget, stated in every section: a ``convnet`` (channels 16, 32; T = 4; direct coding) trained with
BPTT on the first ``--train-subset`` training images for ``--epochs`` epochs, evaluated on the first
``--test-subset`` test images.  Then:

* weights at fp32, 8, 4, 2, 1 bits: post-training (PTQ, per-channel scales calibrated once) and after
  ``--qat-epochs`` of quantisation-aware fine-tuning (learning rate x 0.1);
* Gaussian weight noise of 1, 5, 10, 20 % of each layer's weight RMS (fixed per inference, 3 draws);
* crossbars of 32, 64, 128 (R_on 20 kOhm, on/off 10; R_wire 1 Ohm per segment with 10 % device-to-device
  variation, and IR drop alone with R_wire 2.5, R_source = R_sink 50 Ohm) at T = 1, 2, 4, 8, 16 (the model
  trained at T = 4, run for T steps);
* energy per inference (Horowitz 45 nm profiles) and of one training epoch (SATA model) against the ANN of
  the same shape (``model.neuron=relu``, T = 1).

    python benchmarks/hardware.py --data-dir ../shared/data

Accuracy only (no timing): run it with the shared benchmark lock and ``nice``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, write_section  # noqa: E402


def _cfg(args, out, epochs, lr=None, neuron="lif", T=4):
    from spikeforge.config import TrainConfig

    sets = ["data.name=fashion_mnist", f"data.train_subset={args.train_subset}",
            f"data.test_subset={args.test_subset}", "data.batch_size=64", f"model.T={T}", f"model.neuron={neuron}",
            "model.kwargs.channels=[16, 32]", f"run.epochs={epochs}", "run.progress=false", "run.device=cpu",
            f"run.seed={args.seed}"]
    if lr is not None:
        sets.append(f"optim.lr={lr}")
    return TrainConfig().override(sets)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-subset", type=int, default=6000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--xbar-test", type=int, default=500, help="test images for the crossbar rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/hardware-bench", help="scratch run folders")
    p.add_argument("--only", default="quant,noise,crossbar,energy")
    p.add_argument("--reuse", action="store_true", help="reuse the trained SNN in --out (same settings)")
    args = p.parse_args(argv)
    if args.data_dir:
        os.environ["SPIKEFORGE_DATA"] = args.data_dir

    import torch

    from spikeforge.deploy import QuantConfig, quantize_, weight_noise_
    from spikeforge.deploy.crossbar import CrossbarConfig, to_crossbar
    from spikeforge.energy import (PROFILES, ann_training_energy, count_ops, layers_from_counts, sata_energy,
                                   total_energy)
    from spikeforge.training import train
    from spikeforge.training.data import load_data
    from spikeforge.training.trainer import evaluate

    torch.set_num_threads(2)
    only = set(args.only.split(","))
    t0 = time.time()
    cfg = _cfg(args, args.out, args.epochs)
    if args.reuse and (Path(args.out) / "snn" / "summary.json").exists():
        res = {"run_dir": str(Path(args.out) / "snn")}
    else:
        res = train(cfg, args.out + "/snn", force=True, verbose=False)
    arrays = load_data(cfg.data, args.data_dir)
    from spikeforge.training.checkpoint import load_checkpoint, load_model_state
    from spikeforge.training.runs import RunDir
    from spikeforge.models.build import build_model

    model = build_model(cfg, arrays)
    last = RunDir.open(res["run_dir"]).last
    load_model_state(model, load_checkpoint(last)["model"], f"{last}.safetensors")
    model.eval()

    def acc(m, n=None, T=None):
        c = cfg if T is None else cfg.override([f"model.T={T}"])
        xs, ys = (arrays.x_test, arrays.y_test) if n is None else (arrays.x_test[:n], arrays.y_test[:n])
        T0 = m.T
        m.T = c.model.T                                  # the direct encoder repeats the image model.T times
        try:
            return 100 * evaluate(m, xs, ys, c, arrays.sequence, warn_bn=False)["test_acc"]
        finally:
            m.T = T0

    fp32 = acc(model)
    budget = (f"Budget: `convnet` (channels 16, 32; T = 4; LIF; direct coding), BPTT {args.epochs} epochs on the first "
              f"{args.train_subset} Fashion-MNIST training images, tested on the first {args.test_subset} test images "
              f"(seed {args.seed}). fp32 accuracy **{fp32:.2f}%**. Command: `python benchmarks/hardware.py "
              f"--data-dir ../shared/data` ({machine_line()}; load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}).")

    if "quant" in only:
        rows = ["| weights | PTQ | QAT ({} ep) | QAT - fp32 |".format(args.qat_epochs), "|---|---:|---:|---:|",
                f"| fp32 | {fp32:.2f}% | - | - |"]
        for bits, scheme in ((8, "uniform"), (4, "uniform"), (2, "uniform"), (1, "uniform"), (5, "log2"),
                             (2, "ternary")):
            m = copy.deepcopy(model)
            quantize_(m, QuantConfig(bits=bits, scheme=scheme, mode="ptq"))
            a_ptq = acc(m)
            q = copy.deepcopy(model)
            quantize_(q, QuantConfig(bits=bits, scheme=scheme, mode="qat"))
            tc = _cfg(args, args.out, args.qat_epochs, lr=cfg.optim.lr * 0.1)
            train(tc, args.out + f"/qat{bits}{scheme}", force=True, verbose=False, model=q)
            q.eval()
            a_qat = acc(q)
            label = f"{bits}-bit {QuantConfig(bits=bits, scheme=scheme).kind}"
            rows.append(f"| {label} | {a_ptq:.2f}% | {a_qat:.2f}% | {a_qat - fp32:+.2f} |")
        body = ["### Quantised weights (deploy.quantize_)", "", budget, "",
                "Per-channel symmetric scales; QAT fine-tunes the trained SNN with the straight-through quantiser "
                "(learning rate x 0.1). Goal (seed 000): 8- and 4-bit within 1% of fp32 after QAT.", "", *rows]
        write_section("hardware_quant", "\n".join(body))
        print("\n".join(body))

    if "noise" in only:
        rows = ["| sigma / weight RMS | accuracy (mean of 3 draws) | min | max |", "|---:|---:|---:|---:|",
                f"| 0 | {fp32:.2f}% | | |"]
        for sigma in (0.01, 0.05, 0.10, 0.20):
            accs = []
            for k in range(3):
                m = copy.deepcopy(model)
                weight_noise_(m, sigma, generator=torch.Generator().manual_seed(k))
                accs.append(acc(m))
            rows.append(f"| {100 * sigma:.0f}% | {sum(accs) / 3:.2f}% | {min(accs):.2f}% | {max(accs):.2f}% |")
        body = ["### Weight noise (deploy.weight_noise_)", "", budget, "",
                "Gaussian noise relative to each layer's weight RMS, drawn once per inference run (a programmed chip), "
                "every Linear/Conv.", "", *rows]
        write_section("hardware_noise", "\n".join(body))
        print("\n".join(body))

    if "crossbar" in only:
        n = args.xbar_test
        Ts = (1, 2, 4, 8, 16)
        ideal = [acc(model, n, T) for T in Ts]
        rows = ["| crossbar | " + " | ".join(f"T={T}" for T in Ts) + " |", "|---|" + "---:|" * len(Ts),
                "| ideal (W @ s) | " + " | ".join(f"{a:.2f}%" for a in ideal) + " |"]
        for label, kw in (("R_wire 1, d2d 10%", dict(r_wire=1.0, sigma_d2d=0.1)),
                          ("IR drop only: R_wire 2.5, R_source = R_sink 50", dict(r_wire=2.5, r_source=50.0,
                                                                                   r_sink=50.0))):
            for tile in (32, 64, 128):
                xb = to_crossbar(model, CrossbarConfig(tile=tile, seed=args.seed, **kw))
                accs = [acc(xb, n, T) for T in Ts]
                rows.append(f"| {label}, {tile}x{tile} | " + " | ".join(
                    f"{a:.2f}% ({a - i:+.1f})" for a, i in zip(accs, ideal)) + " |")
        body = ["### Memristive crossbars (deploy.crossbar)", "", budget, "",
                f"Every Conv/Linear on tiles (differential pairs, R_on 20 kOhm, on/off 10, linear devices; resistances "
                f"in Ohm per cell segment / driver / sense amplifier); the model trained at T = 4 is run for T steps; "
                f"first {n} test images (one image = {100 / n:.2f} points). In brackets: change vs the ideal model at "
                f"the same T.", "", *rows]
        write_section("hardware_crossbar", "\n".join(body))
        print("\n".join(body))

    if "energy" in only:
        x = arrays.x_test[:64]
        snn = count_ops(model, x)
        ann_cfg = _cfg(args, args.out, 1, neuron="relu", T=1)
        ann = build_model(ann_cfg, arrays).eval()
        ann_ops = count_ops(ann, x)
        rows = ["| profile | SNN (T=4) per inference | ANN (T=1) per inference | SNN / ANN |", "|---|---:|---:|---:|"]
        for name in ("horowitz45-fp32-compute", "horowitz45-fp32", "horowitz45-int8"):
            es, ea = total_energy(snn, PROFILES[name]), total_energy(ann_ops, PROFILES[name])
            rows.append(f"| {name} | {es / 1e3:.1f} nJ | {ea / 1e3:.1f} nJ | {es / ea:.2f} |")
        layers, sp = layers_from_counts(snn)
        tr = sata_energy(layers, T=4, s_s=sp)
        ta = ann_training_energy(layers)
        ntrain = len(arrays.y_train)
        body = ["### Energy: inference and one training epoch, SNN vs the same-shape ANN (energy/)", "", budget, "",
                f"Counts per sample on 64 test images: SNN {snn.total('synops'):,.0f} SynOps + "
                f"{snn.total('macs'):,.0f} MACs (the analog first layer, x T) + {snn.total('neuron_updates'):,.0f} "
                f"neuron updates; ANN {ann_ops.total('macs'):,.0f} MACs.", "", *rows, "",
                f"Training (BPTT, SATA model: 16-bit PE array, DRAM/SRAM/scratchpad traffic, measured input-spike "
                f"sparsities {', '.join(f'{s:.2f}' for s in sp)}, s_du = 0.7): one epoch of {ntrain} images "
                f"{tr['total'] * ntrain * 1e-6:.1f} uJ for the SNN vs {ta['total'] * ntrain * 1e-6:.1f} uJ for the ANN "
                f"(**{tr['total'] / ta['total']:.2f}x**; backward pass {100 * tr['bwd'] / tr['total']:.0f}% of the "
                f"SNN's)."]
        write_section("hardware_energy", "\n".join(body))
        print("\n".join(body))
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
