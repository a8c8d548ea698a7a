"""``report.md`` of a run: summary table, per-epoch metrics and the plots (regenerated from the run folder).

Example:
    >>> from spikeforge.training.report import format_report
    >>> print(format_report("demo", {"model": {"name": "convnet"}, "data": {"name": "digits"}},
    ...                     [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_acc": 0.9,
    ...                       "epoch_seconds": 1.0, "samples_per_s": 100.0, "spikes_per_sample": 10.0}],
    ...                     plots=[]).splitlines()[0])
    # Run demo
"""

from __future__ import annotations

import json

import torch

from . import plots as P
from .runs import RunDir


def format_report(name: str, config: dict, records: list[dict], plots: list[str], code: dict | None = None,
                  summary: dict | None = None, energy: str | None = None) -> str:
    lines = [f"# Run {name}", ""]
    if records:
        last = records[-1]
        best = max(records, key=lambda r: r["test_acc"])
        lines += [
            f"**{config['model']['name']}** on **{config['data']['name']}**, {len(records)} epochs: "
            f"final test accuracy **{100 * last['test_acc']:.2f}%** (best {100 * best['test_acc']:.2f}% at epoch "
            f"{best['epoch']}), {sum(r['epoch_seconds'] for r in records):.1f} s in total, "
            f"{last.get('spikes_per_sample', 0):,.0f} spikes per sample.", ""]
    if energy:
        lines += [energy, ""]
    if code:
        lines += [f"Code: spikeforge {code.get('spikeforge')}, commit {code.get('git_commit') or 'unknown'}, "
                  f"torch {code.get('torch')}.", ""]
    if records:
        lines += ["| epoch | train loss | train acc | test acc | epoch s | samples/s | spikes/sample | peak MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in records:
            lines.append(f"| {r['epoch']} | {r['train_loss']:.4f} | {100 * r['train_acc']:.2f}% | "
                         f"{100 * r['test_acc']:.2f}% | {r['epoch_seconds']:.1f} | {r['samples_per_s']:,.0f} | "
                         f"{r.get('spikes_per_sample', 0):,.0f} | {r.get('peak_memory_mb', 0):,.0f} |")
        lines.append("")
        if records[-1].get("acc_per_step"):
            accs = records[-1]["acc_per_step"]
            lines += ["Accuracy using steps 1..t (last epoch): " +
                      ", ".join(f"t={i + 1}: {100 * a:.2f}%" for i, a in enumerate(accs)), ""]
        if records[-1].get("firing_rates"):
            lines += ["Mean firing rate per layer (last epoch): " +
                      ", ".join(f"{k}: {v:.4f}" for k, v in records[-1]["firing_rates"].items()), ""]
    for p in plots:
        lines += [f"![{p}](plots/{p})", ""]
    lines += ["<details><summary>config</summary>", "", "```json", json.dumps(config, indent=1), "```", "",
              "</details>", ""]
    return "\n".join(lines)


def write_report(run: RunDir, arrays=None, model=None, device=None, checkpoint: str = "best",
                 data_dir=None) -> str:
    """Draw the plots and write ``report.md`` for ``run``; the raster uses ``model`` (else the
    ``checkpoint`` weights) on the first test sample. Returns the report's path."""
    from .checkpoint import atomic_write_text, checkpoint_exists, load_checkpoint, load_model_state

    cfg = run.load_config()
    records = run.read_metrics()
    run.plots.mkdir(parents=True, exist_ok=True)
    made, energy = [], None
    if records:
        P.plot_curves(records, run.plots / "curves.png")
        made.append("curves.png")
        if records[-1].get("acc_per_step"):
            P.plot_latency(records[-1]["acc_per_step"], run.plots / "latency.png")
            made.append("latency.png")
        if records[-1].get("firing_rates"):
            P.plot_firing_rates(records[-1]["firing_rates"], run.plots / "firing_rates.png")
            made.append("firing_rates.png")
    if model is None or arrays is None:
        ck = run.best if checkpoint_exists(run.best) else run.last
        if checkpoint_exists(ck):
            from .data import load_data
            from ..models.build import build_model

            arrays = load_data(cfg.data, data_dir)
            model = build_model(cfg, arrays)
            load_model_state(model, load_checkpoint(ck)["model"], f"{ck}.safetensors")
            device = torch.device("cpu")
    if model is not None and arrays is not None:
        from .data import to_model_input

        x = to_model_input(arrays.x_test[:1].to(device or "cpu"), arrays.sequence)
        from ..energy.report import inference_energy_line

        energy = inference_energy_line(model, to_model_input(arrays.x_test[:64].to(device or "cpu"), arrays.sequence))
        spikes = P.record_spikes(model, x)
        if spikes:
            P.plot_raster(spikes, run.plots / "raster.png")
            made.append("raster.png")
    run_info = run.read_json("run.json") or {}
    text = format_report(run.path.name, cfg.to_dict(), records, made, run_info.get("code"),
                         run.read_json("summary.json"), energy)
    atomic_write_text(run.path / "report.md", text)
    return str(run.path / "report.md")
