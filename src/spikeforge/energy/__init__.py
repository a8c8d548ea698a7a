"""Energy: operation counters by hooks, per-op energy profiles, SATA-style BPTT training energy.

``count_ops(model, x)`` -> per-layer SynOps / MACs / neuron updates / memory accesses; ``energy_table(counts,
profile)`` prices them (named 45 nm profiles after Horowitz, ISSCC 2014, or a YAML file);
:mod:`spikeforge.energy.training` gives the training energy of BPTT against the same-shape ANN.
"""

from .counters import COUNTS, LayerOps, OpCounter, OpCounts, count_ops
from .profiles import DEFAULT_PROFILE, PROFILES, EnergyProfile, energy_table, get_profile, load_profile, total_energy
from .training import SATALayer, VGG5_CIFAR10, ann_training_energy, layers_from_counts, sata_energy

__all__ = ["COUNTS", "LayerOps", "OpCounter", "OpCounts", "count_ops", "DEFAULT_PROFILE", "PROFILES", "EnergyProfile",
           "energy_table", "get_profile", "load_profile", "total_energy", "SATALayer", "VGG5_CIFAR10",
           "ann_training_energy", "sata_energy", "layers_from_counts"]
