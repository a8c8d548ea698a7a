"""Pure neuron functions over time-major sequences: ``<name>(x_seq, state=None, ...) -> (spikes, state)``."""

from .lif import LIFState, if_, if_step, lif, lif_family_seq, lif_step, plif, plif_step

__all__ = ["LIFState", "if_", "if_step", "lif", "lif_family_seq", "lif_step", "plif", "plif_step"]
