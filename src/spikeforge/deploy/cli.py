"""``spikeforge quantize RUN_DIR --bits 4 [--qat-epochs N]``: the accuracy of a trained run with quantised weights
(post-training, and after quantisation-aware fine-tuning), written to a new run folder."""

from __future__ import annotations

import copy
import json


def _run(args) -> int:
    from ..training.checkpoint import atomic_write_text, checkpoint_exists, load_checkpoint, load_model_state
    from ..training.data import load_data
    from ..training.runs import RunDir
    from ..models.build import build_model
    from ..training.trainer import evaluate, train
    from .quant import QuantConfig, quantize_, storage_bits

    if args.qat_epochs < 0:
        raise ValueError(f"--qat-epochs: expected an integer >= 0, got {args.qat_epochs}")
    qcfg = QuantConfig(bits=args.bits, scheme=args.scheme, per_channel=not args.per_tensor, mode="ptq")
    run = RunDir.open(args.run_dir)
    cfg = run.load_config()
    ck = run.best if args.checkpoint == "best" else run.last
    if not checkpoint_exists(ck):
        raise FileNotFoundError(f"{run.path}: no {args.checkpoint} checkpoint ({ck}.safetensors)")
    arrays = load_data(cfg.data, args.data_dir)
    model = build_model(cfg, arrays)
    load_model_state(model, load_checkpoint(ck)["model"], f"{ck}.safetensors")
    model.eval()
    out_dir = args.out or str(run.path.parent / f"{run.path.name}-w{args.bits}{args.scheme}")
    out = RunDir.create(out_dir, force=args.force)

    def acc(m):
        return evaluate(m, arrays.x_test, arrays.y_test, cfg, arrays.sequence, warn_bn=False)["test_acc"]

    rows = [{"weights": "fp32", "mode": "-", "test_acc": acc(model), "weight_bits": sum(storage_bits(model).values())}]
    ptq = copy.deepcopy(model)
    quantize_(ptq, qcfg)
    rows.append({"weights": f"{args.bits}-bit {qcfg.kind}", "mode": "PTQ", "test_acc": acc(ptq),
                 "weight_bits": sum(storage_bits(ptq).values())})
    if args.state_bits:
        from .neuron_quant import quantize_neurons_

        quantize_neurons_(ptq, bits=args.state_bits)
        rows.append({"weights": f"{args.bits}-bit {qcfg.kind} + {args.state_bits}-bit membrane", "mode": "PTQ",
                     "test_acc": acc(ptq), "weight_bits": sum(storage_bits(ptq).values())})
    if args.qat_epochs:
        qat = copy.deepcopy(model)
        quantize_(qat, QuantConfig(bits=args.bits, scheme=args.scheme, per_channel=not args.per_tensor, mode="qat"))
        tcfg = cfg.override([f"run.epochs={args.qat_epochs}", f"optim.lr={cfg.optim.lr * args.lr_scale}"])
        train(tcfg, out_dir + "/qat", force=True, data_dir=args.data_dir, model=qat, verbose=not args.quiet)
        qat.eval()
        rows.append({"weights": f"{args.bits}-bit {qcfg.kind}", "mode": f"QAT {args.qat_epochs} ep",
                     "test_acc": acc(qat), "weight_bits": sum(storage_bits(qat).values())})
    lines = [f"# Quantised weights of {run.path.name}", "",
             f"Config: {qcfg} (QAT: the same, scales following the weights; fine-tuned with lr x {args.lr_scale}).",
             "", "| weights | mode | test acc | weight storage (kbit) |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['weights']} | {r['mode']} | {100 * r['test_acc']:.2f}% | {r['weight_bits'] / 1e3:,.1f} |")
    text = "\n".join(lines) + "\n"
    out.write_json("quantize.json", {"source_run": str(run.path), "quant": qcfg.__dict__, "rows": rows})
    atomic_write_text(out.path / "report.md", text)
    print(text)
    print(f"wrote {out.path / 'report.md'}")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("quantize", help="accuracy of a run with quantised weights (PTQ, optional QAT fine-tune)",
                       description="Quantise RUN_DIR's weights (deploy.quantize_), evaluate post-training "
                                   "quantisation and, with --qat-epochs, quantisation-aware fine-tuning; writes a new "
                                   "run folder with the accuracy table (report.md, quantize.json).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--bits", type=int, default=8, help="weight bits, 1..8 (default 8)")
    p.add_argument("--scheme", default="uniform", help="uniform, log2, ternary or binary (default uniform)")
    p.add_argument("--per-tensor", action="store_true", help="one scale per tensor (default: per output channel)")
    p.add_argument("--state-bits", type=int, default=0,
                   help="also integer neuron state: membrane register bits, threshold on its grid, leak a shift")
    p.add_argument("--qat-epochs", type=int, default=0, help="epochs of quantisation-aware fine-tuning (default 0)")
    p.add_argument("--lr-scale", type=float, default=0.1, help="QAT learning rate = run's lr x this (default 0.1)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", default=None, metavar="DIR", help="new run folder (default RUN_DIR-w<bits><scheme>)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="dataset folder")
    p.add_argument("--quiet", action="store_true", help="no training log")
    p.add_argument("--json", action="store_true", help="also print the rows as JSON")
    p.set_defaults(func=_run)
