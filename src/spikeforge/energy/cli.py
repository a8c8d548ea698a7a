"""``spikeforge energy RUN_DIR``: per-layer inference energy of a trained run, and BPTT training energy (SATA)
against the same-shape ANN; prints the table and writes ``energy.json``, ``energy.md`` and ``plots/energy.png``."""

from __future__ import annotations

import json


def _run(args) -> int:
    from ..training.checkpoint import atomic_write_text, checkpoint_exists, load_checkpoint, load_model_state
    from ..training.data import load_data, to_model_input
    from ..training.runs import RunDir
    from ..models.build import build_model
    from .profiles import get_profile
    from .report import format_table, inference_energy, plot_energy
    from .training import ann_training_energy, layers_from_counts, sata_energy

    if args.samples < 1:
        raise ValueError(f"--samples: expected an integer >= 1, got {args.samples}")
    prof = get_profile(args.profile)
    run = RunDir.open(args.run_dir)
    cfg = run.load_config()
    ck = run.best if args.checkpoint == "best" else run.last
    if not checkpoint_exists(ck):
        raise FileNotFoundError(f"{run.path}: no {args.checkpoint} checkpoint ({ck}.safetensors)")
    arrays = load_data(cfg.data, args.data_dir)
    model = build_model(cfg, arrays)
    load_model_state(model, load_checkpoint(ck)["model"], f"{ck}.safetensors")
    x = to_model_input(arrays.x_test[:args.samples], arrays.sequence)
    e = inference_energy(model, x, prof)
    layers, sparsity = layers_from_counts(e["counts"])
    T = int(getattr(model, "T", cfg.model.T))
    train = sata_energy(layers, T=T, s_s=sparsity) if layers else None
    ann = ann_training_energy(layers) if layers else None
    out = {"profile": prof.name, "profile_costs_pj": prof.costs, "samples": len(x),
           "inference_pj_per_sample": e["total_pj"], "synops": e["synops"], "macs": e["macs"],
           "neuron_updates": e["neuron_updates"], "layers": e["rows"]}
    if train:
        n = len(arrays.y_train)
        out["training"] = {"model": "SATA (Yin et al. 2023), s_du=0.7, 16-bit", "T": T,
                           "input_sparsity": dict(zip([lay.name for lay in layers], sparsity)),
                           "snn_pj_per_sample": train["total"], "ann_pj_per_sample": ann["total"],
                           "snn_epoch_j": train["total"] * n * 1e-12, "ann_epoch_j": ann["total"] * n * 1e-12,
                           "ratio": train["total"] / ann["total"]}
    table = format_table(e["rows"])
    text = [f"# Energy of {run.path.name}", "",
            f"Inference, per sample ({len(x)} test samples), profile **{prof.name}**: "
            f"{e['total_pj'] / 1e6:.4g} uJ; {e['synops']:,.0f} SynOps, {e['macs']:,.0f} MACs.", "", table, ""]
    if train:
        t = out["training"]
        text += [f"Training (BPTT, SATA model, T={T}, measured input sparsities): {t['snn_epoch_j']:.4g} J per epoch "
                 f"of {len(arrays.y_train)} samples vs {t['ann_epoch_j']:.4g} J for the same-shape ANN "
                 f"({t['ratio']:.2f}x).", ""]
    run.plots.mkdir(parents=True, exist_ok=True)
    plot_energy(e["rows"], run.plots / "energy.png")
    atomic_write_text(run.path / "energy.md", "\n".join(text))
    run.write_json("energy.json", out)
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "layers"}, indent=1))
    else:
        print("\n".join(text))
        print(f"wrote {run.path / 'energy.md'}, {run.path / 'energy.json'}, {run.plots / 'energy.png'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("energy", help="per-layer inference energy and BPTT training energy of a run",
                       description="Count SynOps, MACs, neuron updates and memory accesses of RUN_DIR's model on "
                                   "test samples, price them with an energy profile, and estimate BPTT training "
                                   "energy (SATA) against the same-shape ANN.  Writes energy.md, energy.json and "
                                   "plots/energy.png in RUN_DIR.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--profile", default="horowitz45-fp32-compute", metavar="NAME|FILE.yaml",
                   help="energy profile: horowitz45-{fp32,int32,fp16,int8}[-compute] or a YAML file")
    p.add_argument("--samples", type=int, default=64, help="test samples to count on (default 64)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)
