"""Energy of a trained run: per-layer inference table, a bar chart, and the one line ``report.md`` carries."""

from __future__ import annotations

import torch

from .counters import count_ops
from .profiles import DEFAULT_PROFILE, energy_table, get_profile


def _si(pj: float) -> str:
    for unit, k in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if pj >= k:
            return f"{pj / k:.3g} {unit}"
    return f"{pj:.3g} pJ"


def inference_energy(model, x: torch.Tensor, profile=DEFAULT_PROFILE) -> dict:
    """``{"rows", "total_pj", "synops", "macs", "profile"}`` per sample for inputs ``x``."""
    prof = get_profile(profile)
    ops = count_ops(model, x)
    rows = energy_table(ops, prof)
    return {"rows": rows, "total_pj": sum(r["e_total"] for r in rows), "synops": ops.total("synops"),
            "macs": ops.total("macs"), "neuron_updates": ops.total("neuron_updates"), "profile": prof.name,
            "counts": ops}


def inference_energy_line(model, x: torch.Tensor, profile=DEFAULT_PROFILE) -> str:
    """One sentence: energy per inference and its SynOps / MACs, with the profile named."""
    e = inference_energy(model, x, profile)
    return (f"Inference energy: {_si(e['total_pj'])} per sample ({e['synops']:,.0f} SynOps, {e['macs']:,.0f} "
            f"MACs, {e['neuron_updates']:,.0f} neuron updates; profile {e['profile']}, {len(x)} test samples; "
            f"`spikeforge energy RUN_DIR` for the table).")


def format_table(rows: list[dict]) -> str:
    lines = ["| layer | type | SynOps | MACs | neuron updates | energy | share |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['type']} | {r['synops']:,.0f} | {r['macs']:,.0f} | "
                     f"{r['neuron_updates']:,.0f} | {_si(r['e_total'])} | {100 * r['share']:.1f}% |")
    return "\n".join(lines)


def plot_energy(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    left = [0.0] * len(rows)
    for key, label in (("e_ac", "SynOps"), ("e_mac", "MACs"), ("e_neuron_update", "neuron updates"),
                       ("e_mem_read", "memory reads"), ("e_mem_write", "memory writes")):
        vals = [r[key] for r in rows]
        if any(vals):
            ax.barh(names, vals, left=left, label=label)
            left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("energy per sample (pJ)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["inference_energy", "inference_energy_line", "format_table", "plot_energy"]
