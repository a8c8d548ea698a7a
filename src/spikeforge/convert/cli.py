"""``spikeforge convert RUN_DIR --recipe NAME --T 1,2,4,...``: convert a trained ANN run into an SNN run folder.

The SNN folder holds ``conversion.json`` (recipe, options, source), ``results.json`` (ANN accuracy, SNN accuracy
and spikes/sample per T, conversion seconds, per-layer diagnostics), ``accuracy_vs_T.png``, ``diagnostics.txt``,
``report.md`` and ``checkpoints/snn.safetensors`` (the converted weights and thresholds).

Example:
    spikeforge train --set model.neuron=relu --set model.T=1 --out runs/ann
    spikeforge convert runs/ann --recipe channelwise --T 1,2,4,8,16,32 --set v_init=0.5
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _parse_Ts(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            t = int(part)
        except ValueError:
            raise ValueError(f"--T: {part!r} is not an integer; allowed: a comma-separated list of integers >= 1, "
                             "e.g. 1,2,4,8") from None
        if t < 1:
            raise ValueError(f"--T: {t}; allowed: integers >= 1 (time steps)")
        out.append(t)
    return sorted(set(out))


def _parse_set(items) -> dict:
    import yaml

    out = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--set: {item!r}; allowed: KEY=VALUE (a recipe option, e.g. percentile=99.9)")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def plot_accuracy_vs_T(curves: dict, ann_acc: float | None, path, title: str = "") -> Path:
    """One line per recipe ``{label: {T: accuracy}}`` on a log2 T axis, the ANN as a dashed line."""
    from ..training.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for label, acc in curves.items():
        Ts = sorted(acc)
        ax.plot(Ts, [100 * acc[t] for t in Ts], "o-", ms=3, label=label)
    if ann_acc is not None:
        ax.axhline(100 * ann_acc, ls="--", c="k", lw=1, label="ANN")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps T"), ax.set_ylabel("test accuracy (%)"), ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _run(args) -> int:
    import torch
    from safetensors.torch import save_file

    from ..training.checkpoint import checkpoint_exists, load_checkpoint, load_model_state
    from ..training.data import load_data
    from ..training.runs import RunDir, code_version
    from ..models.build import build_model
    from . import RECIPES, accuracy_vs_T, convert_with, format_diagnostics, layer_diagnostics

    Ts = _parse_Ts(args.T)
    options = _parse_set(args.set)
    entry = RECIPES.get(args.recipe)
    src = RunDir.open(args.run_dir)
    cfg = src.load_config()
    ck = src.best if args.checkpoint == "best" else src.last
    if not checkpoint_exists(ck):
        raise FileNotFoundError(f"{src.path}: no {args.checkpoint} checkpoint ({ck}.safetensors)")
    arrays = load_data(cfg.data, args.data_dir)
    if arrays.sequence:
        raise ValueError(f"run_dir: {src.path} was trained on sequences (data.frames); conversion takes static "
                         "inputs [B, C, H, W]")
    ann = build_model(cfg, arrays)
    load_model_state(ann, load_checkpoint(ck)["model"], f"{ck}.safetensors")
    ann.eval()
    n_cal = args.calib_samples
    x_cal, y_cal = arrays.x_train[:n_cal], arrays.y_train[:n_cal]
    data = (x_cal, y_cal) if entry.meta.get("labelled") or options.get("bo_trials") else x_cal
    xt, yt = arrays.x_test, arrays.y_test
    if args.test_subset:
        xt, yt = xt[:args.test_subset], yt[:args.test_subset]
    options.setdefault("T", max(Ts))
    t0 = time.perf_counter()
    snn = convert_with(args.recipe, ann, data, **options)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        ann_acc = float((ann(xt).mean(0).argmax(1) == yt).float().mean())
    res = accuracy_vs_T(snn, xt, yt, Ts)
    diag_T = args.diag_T or max(Ts)
    rows = layer_diagnostics(ann, snn, xt[:64], diag_T) if entry.meta.get("takes") is None else []
    out = Path(args.out) if args.out else src.path.parent / f"{src.path.name}-snn-{args.recipe}"
    run = RunDir.create(out, force=args.force)
    (run.path / "checkpoints").mkdir(exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in snn.state_dict().items()},
              str(run.path / "checkpoints" / "snn.safetensors"))
    run.write_json("conversion.json", {"recipe": args.recipe, "options": options, "source_run": str(src.path),
                                       "checkpoint": args.checkpoint, "calib_samples": int(x_cal.shape[0]),
                                       "test_samples": int(xt.shape[0]), "T": Ts, "code": code_version()})
    results = {"ann_acc": ann_acc, "acc": {str(t): a for t, a in res["acc"].items()},
               "spikes_per_sample": {str(t): s for t, s in res["spikes_per_sample"].items()},
               "conversion_seconds": seconds, "diagnostics_T": diag_T, "diagnostics": rows}
    run.write_json("results.json", results)
    table = format_diagnostics(rows) if rows else "(no ANN activations to compare: the recipe takes an SNN)"
    (run.path / "diagnostics.txt").write_text(table + "\n")
    plot_accuracy_vs_T({args.recipe: res["acc"]}, ann_acc, run.path / "accuracy_vs_T.png",
                       f"{cfg.model.name} on {cfg.data.name}: {args.recipe}")
    curve = " · ".join(f"T={t}: {100 * a:.2f}%" for t, a in res["acc"].items())
    lines = [f"# {args.recipe}: {cfg.model.name} on {cfg.data.name}", "",
             f"Source ANN run: `{src.path}` ({args.checkpoint}); ANN test accuracy {100 * ann_acc:.2f}% on "
             f"{xt.shape[0]} samples; conversion {seconds:.2f} s on {x_cal.shape[0]} calibration samples.", "",
             "| T | accuracy (%) | spikes/sample |", "|---|---|---|"]
    lines += [f"| {t} | {100 * res['acc'][t]:.2f} | {res['spikes_per_sample'][t]:,.0f} |" for t in Ts]
    lines += ["", f"Per-layer diagnostics at T={diag_T} (64 test samples):", "", "```", table, "```", "",
              "![accuracy vs T](accuracy_vs_T.png)", ""]
    (run.path / "report.md").write_text("\n".join(lines))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(f"{out}: {args.recipe} · ANN {100 * ann_acc:.2f}% · conversion {seconds:.2f} s")
        print(f"SNN accuracy: {curve}")
        print("spikes/sample: " + " · ".join(f"T={t}: {s:,.0f}" for t, s in res["spikes_per_sample"].items()))
        print(f"per-layer diagnostics at T={diag_T}:")
        print(table)
    return 0


def register(sub) -> None:
    from . import RECIPES

    p = sub.add_parser("convert", help="convert a trained ANN run (model.neuron=relu|clip|qcfs) into an SNN",
                       description="Convert RUN_DIR's ANN with a recipe, evaluate the SNN at every T, print the "
                                   "per-layer diagnostics and write an SNN run folder (accuracy-vs-T plot, results, "
                                   "converted weights).  Recipes: " + ", ".join(RECIPES.list()))
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--recipe", default="channelwise", choices=RECIPES.list())
    p.add_argument("--T", default="1,2,4,8,16,32,64,128,256", help="comma-separated time steps to evaluate")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a recipe option (any ConversionConfig field, or the recipe's own), repeatable")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--calib-samples", type=int, default=1024, help="training samples used for calibration")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test samples (0 = all)")
    p.add_argument("--diag-T", type=int, default=0, help="T of the per-layer diagnostics (default: the largest)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="SNN run folder (default: RUN_DIR-snn-RECIPE beside RUN_DIR)")
    p.add_argument("--force", action="store_true", help="overwrite an existing SNN run folder")
    p.add_argument("--json", action="store_true", help="print results.json instead of the summary")
    p.set_defaults(func=_run)
