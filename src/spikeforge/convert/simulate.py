"""Running a converted SNN for many T at once, and its per-layer diagnostics.

A converted network is causal and starts from the same state, so its first ``t`` steps at ``T = 256`` are the
whole run at ``T = t``: :func:`accuracy_vs_T` runs once, at the largest ``T``, and reads the accuracy (prediction =
argmax of the logits averaged over the first ``t`` steps) and the spikes per sample at every requested ``t``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert import ConversionConfig, accuracy_vs_T, convert
    >>> ann = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x = torch.rand(32, 8)
    >>> snn = convert(ann, ConversionConfig(), calibration_data=x)
    >>> res = accuracy_vs_T(snn, x, ann(x).argmax(1), Ts=(4, 256))
    >>> res["acc"][256] >= 0.9
    True
"""

from __future__ import annotations

import torch
from torch import nn

from ..neurons.base import BaseNeuron
from .core import ThresholdIF, prepare_ann


def _check_Ts(Ts) -> list[int]:
    Ts = list(Ts)
    if not Ts:
        raise ValueError("T: an empty list; allowed: one or more integers >= 1")
    for t in Ts:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"T: {t!r}; allowed: integers >= 1 (time steps)")
    return sorted(set(Ts))


@torch.no_grad()
def run_sequence(snn: nn.Module, x: torch.Tensor, T: int, max_fold: int = 4096, spikes: bool = False):
    """``snn``'s per-step logits ``[T, N, K]`` for the static batch ``x [N, ...]`` (and, with ``spikes``, the
    spikes per step summed over neurons and samples, ``[T]``), in chunks of at most ``max_fold`` step-samples."""
    T = _check_Ts([T])[0]
    was_T, was_training = snn.T, snn.training
    snn.T = T
    snn.eval()
    outs, per_step = [], torch.zeros(T, dtype=torch.float64)
    counters = []

    def hook(mod, inp, s):
        per_step.add_(s.detach().reshape(s.shape[0], -1).sum(1).double().cpu())

    if spikes:
        counters = [m.register_forward_hook(hook) for m in snn.modules() if isinstance(m, BaseNeuron)]
    try:
        bs = max(1, max_fold // T)
        dev = next(snn.parameters()).device
        for i in range(0, x.shape[0], bs):
            outs.append(snn(x[i:i + bs].to(dev)).float().cpu())
    finally:
        snn.T = was_T
        snn.train(was_training)
        for h in counters:
            h.remove()
    out = torch.cat(outs, 1)
    return (out, per_step) if spikes else out


@torch.no_grad()
def accuracy_vs_T(snn: nn.Module, x: torch.Tensor, y: torch.Tensor, Ts=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                  max_fold: int = 4096) -> dict:
    """``{"acc": {t: accuracy}, "spikes_per_sample": {t: spikes}, "pred": {t: predictions}}`` from one run at
    ``max(Ts)`` steps."""
    Ts = _check_Ts(Ts)
    out, per_step = run_sequence(snn, x, Ts[-1], max_fold, spikes=True)
    cum = out.cumsum(0)
    spk = per_step.cumsum(0) / x.shape[0]
    y = y.cpu()
    acc, sps, pred = {}, {}, {}
    for t in Ts:
        p = cum[t - 1].argmax(1)
        pred[t] = p
        acc[t] = float((p == y).float().mean())
        sps[t] = float(spk[t - 1])
    return {"acc": acc, "spikes_per_sample": sps, "pred": pred}


@torch.no_grad()
def layer_diagnostics(ann: nn.Module, snn: nn.Module, x: torch.Tensor, T: int) -> list[dict]:
    """Per converted site: the ANN activation vs the SNN's rate (``|mean_t y_t - clip(a, 0, theta)|`` in units of
    ``theta``, mean over neurons), saturation (fraction of neurons spiking at every step), dead neurons (active in
    the ANN, ``a > theta/10``, but silent in the SNN), and the spike rate."""
    net, zoo = prepare_ann(ann)
    acts, seqs = {}, {}
    ann_sites = {n: m for n, m in net.named_modules()}
    snn_sites = {n: m for n, m in snn.named_modules() if isinstance(m, ThresholdIF)}
    prefix = "net." if not zoo else ""
    handles = []
    for n, m in snn_sites.items():
        a_name = n[len(prefix):] if n.startswith(prefix) else n
        if a_name not in ann_sites:
            continue
        handles.append(ann_sites[a_name].register_forward_hook(
            lambda mod, i, o, n=n: acts.__setitem__(n, o.detach().float())))
        handles.append(m.neuron.register_forward_hook(lambda mod, i, o, n=n: seqs.__setitem__(n, o.detach().float())))
    try:
        net(x)
        run_sequence(snn, x, T, max_fold=T * x.shape[0])  # one chunk: the hooks see every sample
    finally:
        for h in handles:
            h.remove()
    rows = []
    for n, m in snn_sites.items():
        if n not in acts or n not in seqs:
            continue
        s = seqs[n]                     # [T, B, ...] spikes (0/1)
        a = acts[n]
        if zoo:
            a = a.mean(0)               # the twin runs at T = 1: [1, B, ...]
        if s.shape[1] != x.shape[0]:    # a traced graph's folded [T*B, ...]
            s = s.reshape(T, x.shape[0], *s.shape[1:])
        th = m.theta.float()
        thv = th.reshape(-1, *([1] * (a.dim() - 2))) if th.dim() else th
        rate = s.mean(0)
        target = torch.minimum(a.clamp_min(0), thv.expand_as(a)) / thv
        rows.append({"layer": n, "theta": float(th.mean()), "rate_error": float((rate - target).abs().mean()),
                     "ann_mean": float(target.mean()), "snn_rate": float(rate.mean()),
                     "saturated": float((rate >= 1.0).float().mean()),
                     "dead": float(((target > 0.1) & (rate == 0)).float().mean())})
    return rows


def format_diagnostics(rows: list[dict]) -> str:
    head = f"{'layer':<28} {'theta':>8} {'ANN/theta':>9} {'SNN rate':>9} {'|err|':>7} {'sat %':>6} {'dead %':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['layer']:<28} {r['theta']:>8.3f} {r['ann_mean']:>9.4f} {r['snn_rate']:>9.4f} "
                     f"{r['rate_error']:>7.4f} {100 * r['saturated']:>6.2f} {100 * r['dead']:>7.2f}")
    return "\n".join(lines)


__all__ = ["run_sequence", "accuracy_vs_T", "layer_diagnostics", "format_diagnostics"]
