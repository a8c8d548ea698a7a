"""Firing-rate monitor: spikes per layer per time step, without touching the model's code.

Every spikeforge neuron computes through ``_seq`` — both ``forward`` (a whole sequence) and ``.step`` (one
step, as SCTFA and the LMU run their neurons) — so :class:`NeuronTap` wraps that one method on each neuron
instance while it is open.  Other spike sources (:func:`spike_sources`: STCB layers, NIF spike-time layers,
the BATS MLP) are read through a forward hook or the method that returns their spikes.  A neuron call with
``state=None`` starts a sequence at t = 0; a call that carries a state continues at the next step.  The energy
counters use the same tap.

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


def _identity(output):
    return [("", output[0] if isinstance(output, tuple) else output)]


def _fired(z_out):
    """Single-spike layers (NIF) return spike times ``z``: a neuron fired where ``z`` is finite."""
    return [("", torch.isfinite(z_out).to(z_out.dtype).unsqueeze(0))]


def _bats_layers(outs):
    return [(f".weights.{i}", o.counts.unsqueeze(0)) for i, o in enumerate(outs)]


def spike_sources() -> list[tuple[type, str, object]]:
    """Where each kind of spiking module emits its spikes: ``(type, where, to_spikes)``; ``where`` is ``"_seq"``
    (spikeforge neurons: ``forward`` and ``.step`` both compute there), ``"forward"`` (a forward hook) or a
    method name; ``to_spikes(output) -> [(name suffix, spikes [T', B, ...])]``."""
    from ..layers.stcb import STCB
    from ..models.spike_time import BATSMLP
    from ..neurons.base import BaseNeuron
    from ..neurons.lifb import LIFBPair
    from ..neurons.nif import NIFConv2d, NIFLinear

    return [(BaseNeuron, "_seq", None), (STCB, "forward", _identity), (LIFBPair, "forward", _identity),
            (NIFLinear, "forward", _fired), (NIFConv2d, "forward", _fired), (BATSMLP, "spike_times", _bats_layers)]


def spiking_types() -> tuple[type, ...]:
    """Module types that emit spikes: every neuron (:class:`~spikeforge.neurons.base.BaseNeuron`), layers that
    fuse a synapse with a neuron (STCB) or pair neurons (LIFBPair, from ``decouple_lifb``), and the spike-time
    layers and models (NIF layers, the BATS MLP)."""
    return tuple(t for t, _, _ in spike_sources())


def neuron_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every spiking module of ``model`` (:func:`spiking_types`) by qualified name."""
    types_ = spiking_types()
    return {n: m for n, m in model.named_modules() if isinstance(m, types_)}


class NeuronTap:
    """Call ``fn(name, module, x_seq, s_seq, t0)`` after every spike-emitting computation in ``modules``:
    ``x_seq`` is the input (``[T', B, ...]`` for neurons), ``s_seq`` the spikes ``[T', B, ...]`` (``T' = 1``
    for a ``.step``) and ``t0`` the time index of its first step.  Spikeforge neurons are tapped at ``_seq``
    (``forward`` and ``.step`` alike), other sources (:func:`spike_sources`) through a forward hook or by
    wrapping the method that returns their spikes.  :meth:`close` restores the modules."""

    def __init__(self, modules: dict[str, nn.Module], fn):
        self._fn = fn
        self._t: dict[str, int] = {}
        self._patched: list[tuple[nn.Module, str, object]] = []
        self._handles = []
        sources = spike_sources()
        for name, m in modules.items():
            where, to_spikes = next(((w, f) for t, w, f in sources if isinstance(m, t)), ("forward", _identity))
            if where == "_seq":
                self._patch(m, "_seq", self._wrap_seq(name, m, m._seq))
            elif where == "forward":
                self._handles.append(m.register_forward_hook(self._hook(name, to_spikes)))
            else:
                self._patch(m, where, self._wrap_method(name, m, getattr(m, where), to_spikes))

    def _patch(self, m, attr, fn):
        self._patched.append((m, attr, m.__dict__.get(attr)))
        setattr(m, attr, fn)

    def _wrap_seq(self, name, module, seq):
        def _seq(x_seq, state, return_v):
            out = seq(x_seq, state, return_v)
            t0 = 0 if state is None else self._t.get(name, 0)
            s = out[0]
            self._t[name] = t0 + s.shape[0]
            self._fn(name, module, x_seq, s, t0)
            return out

        return _seq

    def _emit(self, name, module, x, output, to_spikes):
        for suffix, s in to_spikes(output):
            self._fn(name + suffix, module, x, s, 0)

    def _hook(self, name, to_spikes):
        def hook(module, inputs, output):
            self._emit(name, module, inputs[0] if inputs else None, output, to_spikes)

        return hook

    def _wrap_method(self, name, module, method, to_spikes):
        def wrapped(*args, **kwargs):
            out = method(*args, **kwargs)
            self._emit(name, module, args[0] if args else None, out, to_spikes)
            return out

        return wrapped

    def close(self) -> None:
        for m, attr, previous in reversed(self._patched):
            if previous is None:
                m.__dict__.pop(attr, None)
            else:
                setattr(m, attr, previous)
        self._patched = []
        for h in self._handles:
            h.remove()
        self._handles = []


class FiringRateMonitor:
    """Count spikes of every neuron module (or those given), per time step, through a :class:`NeuronTap`.

    ``counts[name]`` is a float64 tensor ``[T]`` of total spikes per time step, ``neurons[name]`` the number
    of neurons per sample, ``samples[name]`` the number of samples seen.  State lives in the monitor, never in
    the model; :meth:`close` (or leaving the ``with`` block) restores the model.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None):
        if modules is None:
            modules = neuron_modules(model)
        if not modules:
            raise ValueError("FiringRateMonitor: the model has no neuron modules to monitor")
        self.counts: dict[str, torch.Tensor] = {}
        self.neurons: dict[str, int] = {}
        self.samples: dict[str, int] = {}
        self._tap = NeuronTap(modules, self._record)

    def _record(self, name, module, x_seq, s, t0):
        with torch.no_grad():
            T, B = s.shape[0], s.shape[1]
            per_t = s.detach().reshape(T, -1).sum(1).double().cpu()
        c = self.counts.get(name)
        if c is None:
            c = self.counts[name] = torch.zeros(0, dtype=torch.float64)
            self.samples[name] = 0
        if c.shape[0] < t0 + T:
            c = self.counts[name] = torch.cat([c, c.new_zeros(t0 + T - c.shape[0])])
        c[t0:t0 + T] += per_t
        if t0 == 0:
            self.samples[name] += B
        self.neurons[name] = s[0, 0].numel()

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
        self._tap.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
