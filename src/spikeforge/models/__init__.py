"""Model zoo: ``create_model(name, ...)`` and ``list_models()``; families register themselves."""

from . import small  # noqa: F401  (registers mlp, convnet)
from .base import SpikingModel, make_neuron
from .registry import MODELS, create_model, list_models

__all__ = ["SpikingModel", "make_neuron", "MODELS", "create_model", "list_models"]
