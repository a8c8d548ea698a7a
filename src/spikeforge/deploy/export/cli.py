"""``spikeforge export RUN_DIR --format nir|onnx -o FILE``: a trained run's model as a NIR graph or an ONNX file."""

from __future__ import annotations

import argparse

FORMATS = ("nir", "onnx")

EPILOG = """examples:
  spikeforge export runs/digits-convnet-20250101-120000 --format nir -o model.nir
  spikeforge export runs/digits-convnet-20250101-120000 --format nir --dt 1e-4 --maxpool-as avg -o snntorch.nir
  spikeforge export runs/digits-convnet-20250101-120000 --format onnx --mode step -o model_step.onnx
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run's model to NIR or ONNX",
                              description="Export the best (or last) checkpoint of RUN_DIR: NIR (BatchNorm folded, "
                                          "continuous-time parameters for step dt) or ONNX (T steps unrolled, or "
                                          "one step with explicit state).",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=FORMATS, help="nir or onnx")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write (.nir or .onnx)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--dt", type=float, default=1.0, help="NIR: step length the continuous parameters are for")
    p.add_argument("--maxpool-as", default="sum", choices=("sum", "avg"),
                   help="NIR: pool node of a max pool on spikes (sum: Norse; avg: snnTorch)")
    p.add_argument("--mode", default="unrolled", choices=("unrolled", "step"), help="ONNX: unrolled or step")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="dataset folder (for the input shape)")
    p.set_defaults(func=_export)


def load_run_model(run_dir, checkpoint: str = "best", data_dir=None):
    """``(model, sample)``: the run's model with its checkpoint loaded (eval mode) and two test inputs."""
    from ...training.checkpoint import checkpoint_exists, load_checkpoint, load_model_state
    from ...training.data import load_data
    from ...training.runs import RunDir
    from ...models.build import build_model

    run = RunDir.open(run_dir)
    cfg = run.load_config()
    ck = run.best if checkpoint == "best" else run.last
    if not checkpoint_exists(ck):
        raise FileNotFoundError(f"{run.path}: no {checkpoint} checkpoint ({ck}.safetensors)")
    arrays = load_data(cfg.data, data_dir)
    model = build_model(cfg, arrays)
    load_model_state(model, load_checkpoint(ck)["model"], f"{ck}.safetensors")
    sample = arrays.x_test[:2]
    if arrays.sequence:  # [B, T, ...] frames -> time-major
        sample = sample.transpose(0, 1)
    return model.eval(), sample


def _export(args) -> int:
    model, sample = load_run_model(args.run_dir, args.checkpoint, args.data_dir)
    if args.format == "nir":
        from .nir import save_nir, to_nir

        save_nir(to_nir(model, sample, dt=args.dt, maxpool_as=args.maxpool_as), args.output)
    else:
        from .onnx import to_onnx

        to_onnx(model, sample, args.output, mode=args.mode, opset=args.opset)
    print(args.output)
    return 0
