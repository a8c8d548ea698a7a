"""Build the registered model a training config names, sized for its data (used by training, evaluation, reports,
conversion, export and the energy report)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .registry import MODELS, create_model

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..training.data import Arrays


def build_model(cfg: TrainConfig, arrays: Arrays) -> torch.nn.Module:
    """The registered model ``cfg.model.name`` sized for the data in ``arrays``."""
    if arrays.sequence and cfg.model.T != arrays.x_train.shape[1]:
        raise ValueError(f"model.T: {cfg.model.T} but the data has {arrays.x_train.shape[1]} frames per sample "
                         f"(data.frames); set model.T={arrays.x_train.shape[1]}")
    params = MODELS.describe(cfg.model.name)["params"]
    kw = dict(cfg.model.kwargs)
    if "input_size" in params and "input_size" not in kw:
        kw["input_size"] = arrays.input_size
    if cfg.model.encoder != "direct":
        if "encoder" not in params:
            raise ValueError(f"model.encoder: model {cfg.model.name!r} takes no encoder option")
        kw["encoder"] = cfg.model.encoder
    return create_model(cfg.model.name, num_classes=arrays.num_classes, in_channels=arrays.in_channels,
                        neuron=cfg.model.neuron, neuron_kwargs=dict(cfg.model.neuron_kwargs) or None,
                        T=cfg.model.T, **kw)
