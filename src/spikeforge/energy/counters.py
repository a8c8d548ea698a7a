r"""Operation counters by hooks: synaptic operations, MACs, neuron updates and memory accesses per layer.

For every Linear / Conv (any subclass) call, with input :math:`x` and output :math:`y`:

* input made of events (every value a non-negative integer: spikes, or spike counts) — accumulates,
  :math:`\mathrm{SynOps} = \sum_{o} \sum_{i \in RF(o)} x_i` (each event costs one accumulate per synapse it
  drives: spikes x fan-out, exact at borders and strides; computed as a convolution of :math:`x` with a
  ones kernel);
* any other input (analog pixels of a direct-coded first layer, membrane-level shortcuts, ANN parts, real
  memories) — dense multiply-accumulates, :math:`\mathrm{MACs} = |y| \cdot C_{in}/g \cdot \prod k`.

A layer run once for a sequence that repeats one step (``TimeFold``'s shortcut for direct coding) is counted
``T`` times: hardware computes it every step.  Every spiking module (:func:`~spikeforge.analysis.monitor.
spiking_types`, including neurons run through ``.step()``) adds one *neuron update* per neuron per step, one
membrane read and one write, and its spikes.  Weight reads: one per SynOp or MAC (no reuse: an upper bound,
as in Lemaire et al. 2022).  Not counted: normalisation (folds into the weights at inference), pooling,
residual additions, attention's element-wise gates, surrogate functions.  Operations outside modules are
added per model type (:data:`EXTRA_OPS`: the LMU's fixed Legendre memory update, :math:`d^2 + d` MACs a step).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> from spikeforge.neurons import LIF
    >>> from spikeforge.energy import count_ops
    >>> net = nn.Sequential(TimeFold(nn.Linear(4, 3)), LIF(backend="reference"), TimeFold(nn.Linear(3, 2)))
    >>> x = torch.tensor([[[1.0, 0.0, 0.0, 1.0]]]).expand(2, 1, 4)      # [T=2, B=1, 4] events
    >>> ops = count_ops(net, x)
    >>> ops.layers["0.layer"].synops                                          # 2 spikes x 3 targets x 2 steps
    12.0
    >>> ops.layers["1"].neuron_updates                                  # 3 neurons x 2 steps
    6.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis.monitor import NeuronTap, neuron_modules

COUNTS = ("synops", "macs", "neuron_updates", "spikes", "weight_reads", "state_reads", "state_writes")


@dataclass
class LayerOps:
    """Operation counts of one layer (totals over the calls seen; :meth:`OpCounts.per_sample` divides)."""

    name: str
    type: str
    synops: float = 0.0
    macs: float = 0.0
    neuron_updates: float = 0.0
    spikes: float = 0.0
    weight_reads: float = 0.0
    state_reads: float = 0.0
    state_writes: float = 0.0
    dense_ops: float = 0.0      # what the layer would cost dense (MACs if every input were non-zero)
    fan_in: int = 0
    out_elems: float = 0.0      # output elements per call, summed (SATA's K E_h E_w per step)
    in_elems: float = 0.0
    kernel: tuple = ()
    in_shape: tuple = ()        # per-sample input / output shape of the last call (no time, no batch)
    out_shape: tuple = ()

    def scaled(self, k: float) -> "LayerOps":
        d = asdict(self)
        for f in COUNTS + ("dense_ops", "out_elems", "in_elems"):
            d[f] = d[f] * k
        return LayerOps(**d)

    @property
    def input_sparsity(self) -> float:
        """1 - SynOps / dense ops (the fraction of synaptic work skipped); 0 for analog-input (MAC) layers."""
        if not self.dense_ops or self.macs:
            return 0.0
        return 1.0 - self.synops / self.dense_ops


@dataclass
class OpCounts:
    layers: dict
    samples: int

    def per_sample(self) -> "OpCounts":
        n = max(self.samples, 1)
        return OpCounts({k: v.scaled(1.0 / n) for k, v in self.layers.items()}, 1)

    def total(self, key: str) -> float:
        return float(sum(getattr(v, key) for v in self.layers.values()))

    def totals(self) -> dict:
        return {k: self.total(k) for k in COUNTS}


def _is_events(x: torch.Tensor) -> bool:
    x = x.detach()
    if not x.is_floating_point():
        return bool((x >= 0).all())
    return bool(((x >= 0) & (x == torch.round(x))).all())


def _conv_fn(m):
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(m.kernel_size)]


def synapse_counts(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, int, tuple]:
    """``(synops, dense_macs, fan_in, kernel)`` of one call of Linear/Conv ``m`` on input ``x`` (output ``y``);
    synops is 0 when ``x`` is not made of events."""
    if isinstance(m, nn.Linear):
        fan_in, kernel = m.in_features, ()
        dense = float(y.numel()) * fan_in
        syn = float(x.detach().double().sum()) * m.out_features if _is_events(x) else 0.0
        return syn, dense, fan_in, kernel
    g = m.groups
    fan_in = m.in_channels // g
    kernel = tuple(m.kernel_size)
    for k in kernel:
        fan_in *= k
    dense = float(y.numel()) * fan_in
    syn = 0.0
    if _is_events(x):
        xd = x.detach().to(torch.float64)
        ones = xd.new_ones(g, m.in_channels // g, *kernel)
        z = _conv_fn(m)(xd, ones, None, m.stride, m.padding, m.dilation, g)
        syn = float(z.sum()) * (m.out_channels // g)
    return syn, dense, fan_in, kernel


def _lmu_extra(module, inputs, output):
    seq = module.to_sequence(inputs[0])
    T, B = seq.shape[0], seq.shape[1]
    d = module.order
    return {"macs": float(T * B * (d * d + d))}


def _extra_ops():
    from ..models.lmu import SpikingLMU

    return {SpikingLMU: _lmu_extra}


EXTRA_OPS = _extra_ops
"""Model types with operations outside modules: ``{type: fn(module, inputs, output) -> {count: value}}``."""


class OpCounter:
    """Count operations while open (a context manager); ``counts()`` gives :class:`OpCounts` so far."""

    def __init__(self, model: nn.Module):
        from ..layers.timefold import TimeFold, repeats_one_step

        self.model = model
        self.layers: dict[str, LayerOps] = {}
        self.samples = 0
        self._repeat = [1]
        self._handles = []
        syn_types = (nn.Linear, nn.modules.conv._ConvNd)
        for name, m in model.named_modules():
            if isinstance(m, syn_types) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
                self._handles.append(m.register_forward_hook(self._syn_hook(name)))
            if isinstance(m, TimeFold):
                def pre(mod, args, _r=repeats_one_step):
                    self._repeat.append(args[0].shape[0] if _r(args[0]) else 1)

                def post(mod, args, out):
                    self._repeat.pop()

                self._handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
            for typ, fn in EXTRA_OPS().items():
                if isinstance(m, typ):
                    self._handles.append(m.register_forward_hook(self._extra_hook(name or type(m).__name__, fn)))
        self._tap = NeuronTap(neuron_modules(model), self._neuron)

    def _layer(self, name, m) -> LayerOps:
        lo = self.layers.get(name)
        if lo is None:
            lo = self.layers[name] = LayerOps(name, type(m).__name__)
        return lo

    def _syn_hook(self, name):
        def hook(m, inputs, output):
            x = inputs[0]
            syn, dense, fan_in, kernel = synapse_counts(m, x, output)
            r = self._repeat[-1]
            lo = self._layer(name, m)
            lo.fan_in, lo.kernel = fan_in, kernel
            nd = len(kernel) + 1 if kernel else 1           # per-sample dims: (C, *spatial) or (features,)
            lo.in_shape, lo.out_shape = tuple(x.shape[-nd:]), tuple(output.shape[-nd:])
            lo.dense_ops += r * dense
            lo.out_elems += r * output.numel()
            lo.in_elems += r * x.numel()
            if _is_events(x):
                lo.synops += r * syn
                lo.weight_reads += r * syn
            else:
                lo.macs += r * dense
                lo.weight_reads += r * dense
        return hook

    def _extra_hook(self, name, fn):
        def hook(m, inputs, output):
            lo = self._layer(f"{name}:extra", m)
            for k, v in fn(m, inputs, output).items():
                setattr(lo, k, getattr(lo, k) + v)
        return hook

    def _neuron(self, name, module, x_seq, s, t0):
        lo = self._layer(name, module)
        n = float(s.numel())
        lo.neuron_updates += n
        lo.state_reads += n
        lo.state_writes += n
        lo.spikes += float(s.detach().double().sum())
        lo.out_elems += n

    def add_samples(self, n: int) -> None:
        self.samples += int(n)

    def counts(self) -> OpCounts:
        return OpCounts(dict(self.layers), self.samples)

    def close(self) -> None:
        self._tap.close()
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def batch_size(model: nn.Module, x: torch.Tensor) -> int:
    """Samples in ``x``: a static batch ``[B, ...]`` (a zoo model's ``static_ndim`` dims, or any batch of a
    spike-time model) or a sequence ``[T, B, ...]`` (a plain module's input)."""
    nd = getattr(model, "static_ndim", None)
    if nd is not None:
        return int(x.shape[0] if x.dim() == nd else x.shape[1])
    return int(x.shape[0] if hasattr(model, "spike_times") else x.shape[1])


@torch.no_grad()
def count_ops(model: nn.Module, x: torch.Tensor, per_sample: bool = True) -> OpCounts:
    """Run ``model(x)`` once (eval mode) and return its operation counts, per sample by default.  ``x``: what
    the model takes (a static batch or a time-major sequence; a plain module gets ``[T, B, ...]``)."""
    was = model.training
    model.eval()
    try:
        with OpCounter(model) as c:
            model(x)
            c.add_samples(batch_size(model, x))
    finally:
        model.train(was)
    out = c.counts()
    return out.per_sample() if per_sample else out


__all__ = ["COUNTS", "LayerOps", "OpCounts", "OpCounter", "count_ops", "synapse_counts", "batch_size",
           "EXTRA_OPS"]
