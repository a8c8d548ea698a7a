"""PNG plots of a run (matplotlib, Agg backend: no display needed).

- ``curves.png``: train/test loss and train/test accuracy per epoch;
- ``latency.png``: test accuracy when the prediction uses only steps 1..t, for every t <= T (last epoch);
- ``firing_rates.png``: mean firing rate of each spiking layer (last epoch);
- ``raster.png``: spikes of one test sample, per layer, neurons x time steps.

Example:
    >>> import tempfile
    >>> from spikeforge.training.plots import plot_curves
    >>> recs = [{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "train_acc": 0.5, "test_acc": 0.4},
    ...         {"epoch": 2, "train_loss": 0.5, "test_loss": 0.7, "train_acc": 0.8, "test_acc": 0.7}]
    >>> plot_curves(recs, tempfile.mkdtemp() + "/curves.png").name
    'curves.png'
"""

from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> None:
    """``fig.savefig(path)`` and close it; a failed write names ``path`` (matplotlib's error names no file)."""
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        plt.close(fig)


def plot_curves(records: list[dict], path) -> Path:
    plt = _plt()
    ep = [r["epoch"] for r in records]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [r["train_loss"] for r in records], "o-", label="train")
    if all("test_loss" in r for r in records):
        a.plot(ep, [r["test_loss"] for r in records], "s-", label="test")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [100 * r["train_acc"] for r in records], "o-", label="train")
    b.plot(ep, [100 * r["test_acc"] for r in records], "s-", label="test")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return Path(path)


def plot_latency(acc_per_step: list[float], path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    t = list(range(1, len(acc_per_step) + 1))
    ax.plot(t, [100 * a for a in acc_per_step], "o-")
    ax.set_xlabel("time steps used (t)"), ax.set_ylabel("test accuracy (%)"), ax.grid(alpha=0.3)
    ax.set_xticks(t)
    ax.set_title("accuracy vs time step")
    fig.tight_layout()
    _save(plt, fig, path)
    return Path(path)


def plot_firing_rates(rates: dict[str, float], path) -> Path:
    plt = _plt()
    names = list(rates)
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names) + 2), 3.6))
    ax.bar(range(len(names)), [rates[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("mean firing rate (spikes / neuron / step)"), ax.set_xlabel("layer")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    _save(plt, fig, path)
    return Path(path)


@torch.no_grad()
def record_spikes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spikes ``[T, N]`` of every neuron layer of ``model`` for one sample ``x`` (batch of one)."""
    from ..neurons.base import BaseNeuron

    spikes, handles = {}, []

    def hook(name):
        def fn(module, inputs, output):
            s = output[0] if isinstance(output, tuple) else output
            spikes[name] = s.detach()[:, 0].reshape(s.shape[0], -1).float().cpu()
        return fn

    for name, m in model.named_modules():
        if isinstance(m, BaseNeuron):
            handles.append(m.register_forward_hook(hook(name)))
    was = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return spikes


def plot_raster(spikes: dict[str, torch.Tensor], path, max_neurons: int = 256) -> Path:
    plt = _plt()
    names = list(spikes) or ["(no spiking layers)"]
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names) + 1, 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        s = spikes.get(name)
        if s is None:
            ax.axis("off")
            continue
        s = s[:, :max_neurons]
        t, n = torch.nonzero(s, as_tuple=True)
        ax.scatter((t + 1).numpy(), n.numpy(), s=2, marker="|", color="k")
        ax.set_xlim(0.5, s.shape[0] + 0.5), ax.set_ylim(-1, s.shape[1])
        ax.set_xlabel("time step"), ax.set_title(f"{name} ({s.shape[1]} neurons)", fontsize=9)
    axes[0][0].set_ylabel("neuron")
    fig.tight_layout()
    _save(plt, fig, path)
    return Path(path)
