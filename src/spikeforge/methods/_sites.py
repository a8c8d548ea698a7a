"""Neuron sites of a model: find them, learn their input shapes with one dry forward pass, replace them in place.

Used by the methods that give each neuron site parameters shaped like its input (``hoyer``: a Hoyer threshold
per channel; ``stl``: a threshold per neuron).  A model built from ``model.neuron``/``model.neuron_kwargs``
alone gets the same neuron at every site, with no knowledge of the site's width; ``prepare`` rebuilds them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..neurons.base import BaseNeuron
from ._twin import unwrap


def as_number(value):
    """``value`` as a float when it is a numeric string (YAML 1.1 reads ``1e-8`` without a dot as a string; the
    ``--set`` override parser too), else ``value`` unchanged, for the caller's validation to judge."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def sites(model: nn.Module) -> list[tuple[str, BaseNeuron]]:
    """``(path, neuron)`` of every neuron module of ``model`` (not looking inside a neuron)."""
    out, inside = [], None
    for path, m in unwrap(model).named_modules():
        if inside is not None and path.startswith(inside):
            continue
        if isinstance(m, BaseNeuron):
            out.append((path, m))
            inside = path + "."
    return out


def check_site_types(model: nn.Module, method: str, kind: type, neuron_name: str) -> list[tuple[str, BaseNeuron]]:
    """The sites, after checking each is a ``kind``; otherwise one ``ValueError`` naming the first that is not."""
    found = sites(model)
    if not found:
        raise ValueError(f"{method}: {type(model).__name__} has no neuron site; allowed: a model with "
                         f"model.neuron={neuron_name}")
    for path, m in found:
        if not isinstance(m, kind):
            raise ValueError(f"{method}: the neuron at {path} is {type(m).__name__}, not {kind.__name__}; allowed: "
                             f"model.neuron={neuron_name}")
    return found


def dry_input(model: nn.Module, method: str, batch: int = 2) -> torch.Tensor:
    """A zero static batch ``[batch, C, S, S]`` for the model (needs ``in_channels`` and ``input_size``)."""
    c, s = getattr(model, "in_channels", None), getattr(model, "input_size", None)
    if not isinstance(c, int) or not isinstance(s, int):
        raise ValueError(f"{method}: {type(model).__name__} has no in_channels/input_size attributes, so the "
                         "sites' shapes cannot be found; allowed: a registered image model (e.g. convnet, mlp)")
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else "cpu"
    return torch.zeros(batch, c, s, s, dtype=dtype, device=device)


def site_input_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """``{path: shape of one sample of the site's input}`` (``[T, B, *shape]`` minus ``T, B``), from one forward
    pass in eval mode without gradient (running statistics are not touched)."""
    shapes, handles = {}, []
    for path, m in sites(model):
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, path=path: shapes.__setitem__(path, tuple(args[0].shape[2:]))))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return shapes


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Set the submodule at dotted ``path`` to ``new``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)
