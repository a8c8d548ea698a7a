"""Firing-rate monitor: spikes per layer per time step, without touching the model's code.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> from spikeforge.neurons import LIF
    >>> from spikeforge.analysis import FiringRateMonitor
    >>> net = nn.Sequential(TimeFold(nn.Linear(4, 8)), LIF())
    >>> with FiringRateMonitor(net) as mon:
    ...     _ = net(torch.rand(5, 2, 4) * 3)
    >>> list(mon.rates_per_step())          # layer names
    ['1']
    >>> len(mon.rates_per_step()['1'])      # one rate per time step
    5
"""

from __future__ import annotations

import torch
from torch import nn


class FiringRateMonitor:
    """Attach forward hooks to every neuron module (or those given) and accumulate spike counts.

    ``counts[name]`` is a float64 tensor ``[T]`` of total spikes per time step, ``neurons[name]`` the number
    of neurons per sample, ``samples[name]`` the number of samples seen.  State lives in the monitor, never in
    the model; :meth:`close` (or leaving the ``with`` block) removes the hooks.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None):
        from ..neurons.base import BaseNeuron

        if modules is None:
            modules = {n: m for n, m in model.named_modules() if isinstance(m, BaseNeuron)}
        if not modules:
            raise ValueError("FiringRateMonitor: the model has no neuron modules to monitor")
        self.counts: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.samples: dict[str, int] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            s = output[0] if isinstance(output, tuple) else output
            with torch.no_grad():
                T, B = s.shape[0], s.shape[1]
                per_t = s.detach().reshape(T, -1).sum(1).double().cpu()
            if name in self.counts and self.counts[name].shape[0] == T:
                self.counts[name] += per_t
                self.samples[name] += B
            else:
                self.counts[name] = per_t
                self.samples[name] = B
            self.neurons[name] = s[0, 0].numel()

        return hook

    def reset(self) -> None:
        self.counts.clear()
        self.neurons.clear()
        self.samples.clear()

    def rates_per_step(self) -> dict[str, list[float]]:
        """Mean firing rate (spikes per neuron per step) of each layer at each time step."""
        return {n: (c / (self.neurons[n] * self.samples[n])).tolist() for n, c in self.counts.items()}

    def mean_rates(self) -> dict[str, float]:
        return {n: float(sum(r) / len(r)) for n, r in self.rates_per_step().items()}

    def mean_rate(self) -> float:
        """Mean firing rate over all monitored neurons and steps."""
        tot = sum(float(c.sum()) for c in self.counts.values())
        den = sum(self.neurons[n] * self.samples[n] * len(c) for n, c in self.counts.items())
        return tot / den if den else 0.0

    def spikes_per_sample(self) -> float:
        """Total spikes per input sample, summed over layers and steps."""
        return sum(float(c.sum()) / self.samples[n] for n, c in self.counts.items())

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
