"""Neuron modules: hold parameters only; state goes in and out explicitly."""

from .base import BaseNeuron
from .lif import IF, LIF, PLIF
from .registry import NEURONS, create_neuron, list_neurons

__all__ = ["BaseNeuron", "IF", "LIF", "PLIF", "NEURONS", "create_neuron", "list_neurons"]
