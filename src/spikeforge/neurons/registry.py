"""The neuron registry: every neuron module registers itself at the bottom of its own file."""

from .._registry import Registry

NEURONS = Registry("neuron")


def create_neuron(name: str, **kwargs):
    """Build a registered neuron module by name, e.g. ``create_neuron("lif", tau=2.0)``."""
    return NEURONS.create(name, **kwargs)


def list_neurons() -> list[str]:
    return NEURONS.list()
