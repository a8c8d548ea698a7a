"""``spikeforge train | eval | report``: parse, resolve the config, call :mod:`spikeforge.training`."""

from __future__ import annotations

import argparse
import json
import sys

TRAIN_EPILOG = """examples:
  spikeforge train                                   # default config on the offline digits set
  spikeforge train --config configs/fashion_mnist.yaml --data-dir /data --set optim.lr=0.01 --set run.epochs=5
  spikeforge train --resume runs/digits-convnet-20250101-120000
  spikeforge train --resume runs/digits-convnet-20250101-120000 --epochs 12   # extend a finished run
  spikeforge train --config configs/mnist.yaml --init-from runs/digits-convnet-20250101-120000  # fine-tune
  torchrun --nproc_per_node=2 -m spikeforge train --config configs/mnist.yaml
"""


def _add_common(p):
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the dataset files (else $SPIKEFORGE_DATA, then the user cache)")
    p.add_argument("--device", default=None, metavar="DEV", help="auto, cpu, cuda or cuda:N (sets run.device)")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a config (default: conv SNN on digits)",
                              description="Train an SNN; the run folder gets config, metrics.jsonl, "
                                          "checkpoints, plots and report.md.",
                              epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, metavar="FILE.yaml", help="YAML config (default: built-in default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=0.01 (repeatable)")
    _add_common(p)
    p.add_argument("--out", "--run-dir", dest="run_dir", default=None, metavar="DIR",
                   help="run folder (default: <run.out_dir>/<name>)")
    p.add_argument("--name", default=None, help="run name under run.out_dir (sets run.name)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue this run from its last checkpoint, with its stored config (--epochs N "
                        "extends a finished run to N epochs)")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR|FILE.safetensors",
                   help="start a new run (any config) from these trained weights")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty run folder")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set run.epochs=N")
    p.add_argument("--seed", type=int, default=None, help="shortcut for --set run.seed=N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="evaluate a run's checkpoint on its test set",
                              description="Evaluate the best (or last) checkpoint of RUN_DIR on the test split; "
                                          "prints accuracy, accuracy per time step and spikes per sample.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_common(e)
    e.set_defaults(func=_eval)

    r = subparsers.add_parser("report", help="write plots and report.md for a run",
                              description="Draw the PNG plots of RUN_DIR and write RUN_DIR/report.md.")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--data-dir", default=None, metavar="DIR", help="dataset folder (for the spike raster)")
    r.set_defaults(func=_report)


def _resolve_config(args):
    from ..config import load_config

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"run.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    if args.name is not None:
        overrides.append(f"run.name={args.name}")
    if args.device is not None:
        overrides.append(f"run.device={args.device}")
    if args.no_progress:
        overrides.append("run.progress=false")
    return load_config(args.config, overrides)


def _train(args) -> int:
    from .trainer import TrainingDivergedError, train

    runtime = None
    if args.resume:
        if args.config or args.overrides or args.seed is not None or args.name or args.force \
                or args.run_dir or args.init_from:
            raise ValueError("--resume continues a run with the config stored in its folder; it takes no "
                             "--config, --set, --seed, --name, --out, --force or --init-from (only --epochs, "
                             "--device, --data-dir and --no-progress)")
        from .runs import RunDir

        cfg = RunDir.open(args.resume).load_config()
        runtime = {}
        if args.device is not None:
            runtime["run.device"] = args.device
        if args.no_progress:
            runtime["run.progress"] = False
        if args.epochs is not None:
            runtime["run.epochs"] = args.epochs
        cfg = cfg.override([f"{k}={v}" for k, v in runtime.items()])
        run_dir, resume = args.resume, True
    else:
        cfg = _resolve_config(args)
        run_dir, resume = args.run_dir, False
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    try:
        train(cfg, run_dir, resume=resume, force=args.force, data_dir=args.data_dir, runtime=runtime,
              init_from=args.init_from)
    except TrainingDivergedError as e:
        print(f"spikeforge train: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("spikeforge train: interrupted; continue with spikeforge train --resume RUN_DIR", file=sys.stderr)
        return 130
    return 0


def _eval(args) -> int:
    from .checkpoint import checkpoint_exists, load_checkpoint, load_model_state
    from .data import load_data
    from .distributed import resolve_device
    from .runs import RunDir
    from ..models.build import build_model
    from .trainer import evaluate

    run = RunDir.open(args.run_dir)
    cfg = run.load_config()
    ck = run.best if args.checkpoint == "best" else run.last
    if not checkpoint_exists(ck):
        raise FileNotFoundError(f"{run.path}: no {args.checkpoint} checkpoint ({ck}.safetensors)")
    device = resolve_device(args.device or cfg.run.device)
    arrays = load_data(cfg.data, args.data_dir)
    model = build_model(cfg, arrays)
    ckpt = load_checkpoint(ck)
    load_model_state(model, ckpt["model"], f"{ck}.safetensors")
    model.to(device)
    ev = evaluate(model, arrays.x_test, arrays.y_test, cfg, arrays.sequence, device=device)
    ev["checkpoint"] = args.checkpoint
    ev["epoch"] = ckpt["meta"].get("epoch")
    try:
        run.write_json(f"eval_{args.checkpoint}.json", ev)
    except OSError as e:  # a read-only or full run folder must not hide the result
        print(f"spikeforge eval: warning: could not save {run.path / f'eval_{args.checkpoint}.json'}: "
              f"{e.strerror or e}", file=sys.stderr)
    if args.json:
        print(json.dumps(ev, indent=1))
    else:
        per_t = ", ".join(f"t={i + 1}: {100 * a:.2f}%" for i, a in enumerate(ev["acc_per_step"]))
        print(f"{run.path} ({args.checkpoint}, epoch {ev['epoch']}): test accuracy {100 * ev['test_acc']:.2f}% on "
              f"{ev['test_samples']} samples · {ev['spikes_per_sample']:,.0f} spikes/sample · per step: {per_t}")
    return 0


def _report(args) -> int:
    from .report import write_report
    from .runs import RunDir

    path = write_report(RunDir.open(args.run_dir), data_dir=args.data_dir)
    print(path)
    return 0
