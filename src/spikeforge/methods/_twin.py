"""The ANN twin of an SNN that shares its weights: the machinery of the ANN-proxy methods (``proxy``, ``snn2ann``).

:func:`build_twin` returns a module with the SNN's forward code and the SNN's own layers, except that every
neuron site holds an ANN unit (ReLU, a spike mapping unit, ...) and every BatchNorm is a shallow copy that
normalises with batch statistics without updating the running ones (in eval mode it reads the SNN's running
statistics).  Nothing is copied that holds data: the twin's containers and BatchNorms share their parameter and
buffer dictionaries with the SNN's, so every parameter and buffer is the same tensor (same ``data_ptr``), also
after ``.to(device)`` or ``.double()``.  The twin runs at ``T = 1`` on the static input (or on the time-average
of a sequence input), so its autograd graph does not grow with ``T``.

:class:`TwinNet` is what a method's ``prepare`` returns: a module that *presents the SNN's own children and
parameters under their own names* (its ``state_dict``, layer names and checkpoints are the plain model's, so
``spikeforge eval`` and ``--resume`` load them into the registered model) and holds the SNN (``net.snn``) and its
twin (``net.ann``) as plain attributes.  ``net(x)`` runs the SNN; subclasses add the training pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import TIME_INVARIANT, MaxPool2d, TimeFold, VotingPool
from ..models.base import SpikingModel
from ..neurons.base import BaseNeuron

#: leaf layers the twin runs unchanged (per-sample, no state over time)
STATELESS = frozenset(TIME_INVARIANT) | {nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.SyncBatchNorm,
                                         VotingPool, MaxPool2d}
#: BatchNorm types the twin copies (shared affine parameters and running statistics)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: containers whose forward only composes their children
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, TimeFold)
#: input encoders whose rate equals the static input (so the twin can take the static input)
RATE_ENCODERS = ("direct", "poisson")


def _stateless(m: nn.Module) -> bool:
    from ..models._common import SeqDropout

    return type(m) in STATELESS or type(m) is SeqDropout


def neuron_sites(model: nn.Module, method: str, neuron_check) -> list[tuple[str, BaseNeuron]]:
    """The ``(path, neuron)`` sites of ``model``, after checking that the twin can mirror every other layer.

    ``neuron_check(path, neuron)`` raises for a neuron the method cannot stand in for.  Raises one
    ``ValueError`` naming the first layer that cannot be mirrored, and why.
    """
    if not isinstance(model, SpikingModel):
        raise ValueError(f"{method}: the model must be a spikeforge SpikingModel (a registered model: the ANN "
                         f"branch reads its T and encoder), got {type(model).__name__}")
    if model.encoder not in RATE_ENCODERS:
        raise ValueError(f"{method}: model.encoder {model.encoder!r} is not a rate code; the ANN branch takes the "
                         f"static input as the input rate (allowed: {', '.join(RATE_ENCODERS)})")
    sites, inside = [], ()
    for path, m in model.named_modules():
        if m is model or (inside and path.startswith(inside)):
            continue
        if isinstance(m, BaseNeuron):
            neuron_check(path, m)
            sites.append((path, m))
            inside = path + "."
            continue
        if any(True for _ in m.children()):
            if isinstance(m, CONTAINERS) or type(m).__module__.startswith("spikeforge.models"):
                continue
        elif _stateless(m):
            continue
        raise ValueError(f"{method}: {type(m).__name__} at {path} cannot be mirrored in the ANN branch (it is "
                         "neither a neuron nor a per-sample layer: convolution, linear, BatchNorm, pooling, "
                         "dropout, flatten)")
    if not sites:
        raise ValueError(f"{method}: {type(model).__name__} has no spiking neuron for the ANN branch to stand in "
                         "for (model.neuron is not a spiking neuron?)")
    return sites


def build_twin(model: nn.Module, site) -> tuple[nn.Module, list[tuple[nn.Module, nn.Module]], dict]:
    """``(twin, pairs, units)``: the ANN twin of ``model`` (neuron sites replaced by ``site(path, neuron)``),
    the ``(original, copy)`` module pairs whose ``training`` flag the twin must follow, and ``{path: unit}``."""
    pairs, units = [], {}

    def rebuild(m, path):
        if isinstance(m, BaseNeuron):
            unit = site(path, m)
            units[path] = unit
            pairs.append((m, unit))
            return unit
        if type(m) in BATCHNORMS:
            bn = copy.copy(m)  # same _parameters / _buffers dicts: shared weight, bias and running statistics
            bn.track_running_stats = False  # train: batch statistics, no update; eval: the running statistics
            pairs.append((m, bn))
            return bn
        new, changed = {}, False
        for name, child in m._modules.items():
            new[name] = child if child is None else rebuild(child, f"{path}.{name}" if path else name)
            changed |= new[name] is not child
        if not changed:
            return m
        twin = copy.copy(m)
        twin.__dict__["_modules"] = new
        pairs.append((m, twin))
        return twin

    twin = rebuild(model, "")
    return twin, pairs, units


class TwinNet(nn.Module):
    """An SNN and its weight-sharing ANN twin; ``state_dict`` and layer names are the SNN's own."""

    def __init__(self, snn: SpikingModel, site):
        super().__init__()
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            d[k] = snn.__dict__[k]  # the SNN's own dictionaries: same names, same tensors
        ann, pairs, units = build_twin(snn, site)
        ann.__dict__["T"] = 1
        ann.__dict__["encoder"] = "direct"
        d["snn"], d["ann"], d["units"], d["_pairs"] = snn, ann, units, pairs
        self._follow_modes()
        self.training = snn.training

    def train(self, mode: bool = True):
        super().train(mode)
        self.snn.training = mode
        self._follow_modes()
        return self

    def _follow_modes(self) -> None:
        """The twin's own modules (copies and units) take the train/eval mode of the SNN modules they mirror."""
        for orig, twin in self._pairs:
            twin.training = orig.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The SNN's output ``[T, B, K]`` (evaluation and deployment)."""
        return self.snn(x)

    def ann_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The twin on the static input (the time-average of a sequence input): ``[1, B, K]``."""
        self._follow_modes()  # a method may have put some SNN layers in eval mode (frozen BatchNorm)
        if torch.is_tensor(x) and x.dim() == self.snn.static_ndim + 1:
            self.snn.check_steps(x, "[T, B, ...]")
            x = x.float().mean(0, keepdim=True) if not x.is_floating_point() else x.mean(0, keepdim=True)
        return self.ann(x)

    def extra_repr(self) -> str:
        return f"snn={type(self.snn).__name__}, ann=weight-sharing twin with {len(self.units)} unit sites"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
