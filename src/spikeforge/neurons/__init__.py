"""Neuron modules: hold parameters only; state goes in and out explicitly."""

from .base import BaseNeuron
from .lif import IF, LIF, PLIF
from .registry import NEURONS, create_neuron, list_neurons

__all__ = ["BaseNeuron", "IF", "LIF", "PLIF", "NEURONS", "create_neuron", "list_neurons"]

# neuron zoo (issue 5)
from .alif import ALIF  # noqa: E402
from .glif import GLIF  # noqa: E402
from .sigma_delta import SigmaDelta  # noqa: E402
from .stl import STL  # noqa: E402

__all__ += ["ALIF", "GLIF", "SigmaDelta", "STL"]
from .hoyer import HoyerSpike  # noqa: E402
from .lifb import LIFB, LIFBPair, decouple_lifb  # noqa: E402
from .multilevel import MultiLevel  # noqa: E402
from .nif import NIFConv2d, NIFLinear  # noqa: E402

__all__ += ["HoyerSpike", "LIFB", "LIFBPair", "decouple_lifb", "MultiLevel", "NIFConv2d", "NIFLinear"]
from .noisy_if import NoisyIF  # noqa: E402

__all__ += ["NoisyIF"]
from .activations import QCFS, Clip, ReLU  # noqa: E402  (ANN-twin activations, issue 16)

__all__ += ["ReLU", "Clip", "QCFS"]

# every other module of this package (a new neuron's file): imported, so its neuron registers itself, and the names in
# its __all__ exported here
from .._registry import import_submodules as _import_submodules  # noqa: E402

_import_submodules(__name__, __path__, globals(), __all__)
