"""Pure neuron functions over time-major sequences: ``<name>(x_seq, state=None, ...) -> (spikes, state)``."""

from .lif import LIFState, if_, if_step, lif, lif_family_seq, lif_step, plif, plif_step

__all__ = ["LIFState", "if_", "if_step", "lif", "lif_family_seq", "lif_step", "plif", "plif_step"]

# neuron zoo (issue 5)
from .alif import ALIFState, alif, alif_step  # noqa: E402
from .glif import GLIFState, glif, glif_step  # noqa: E402
from .sigma_delta import SigmaDeltaState, activation_bits, sigma_delta, sigma_delta_step  # noqa: E402
from .stl import stl, stl_step, stl_threshold_init  # noqa: E402

__all__ += ["ALIFState", "alif", "alif_step", "GLIFState", "glif", "glif_step", "SigmaDeltaState",
            "activation_bits", "sigma_delta", "sigma_delta_step", "stl", "stl_step", "stl_threshold_init"]
from .hoyer import hoyer_extremum, hoyer_regularizer, hoyer_spike  # noqa: E402
from .lifb import LIFBPairState, LIFBState, lifb, lifb_pair, lifb_step  # noqa: E402
from .multilevel import multilevel, multilevel_step  # noqa: E402
from .nif import encode_time, nif_conv2d, nif_spike_time  # noqa: E402

__all__ += ["hoyer_extremum", "hoyer_regularizer", "hoyer_spike", "LIFBPairState", "LIFBState", "lifb",
            "lifb_pair", "lifb_step", "multilevel", "multilevel_step", "encode_time", "nif_conv2d", "nif_spike_time"]
from .noisy_if import noisy_if, noisy_if_expectation, noisy_if_step  # noqa: E402

__all__ += ["noisy_if", "noisy_if_expectation", "noisy_if_step"]

# every other module of this package (a new neuron's file): imported, so its cell registers itself, and the names in
# its __all__ exported here
from .._registry import import_submodules as _import_submodules  # noqa: E402

_import_submodules(__name__, __path__, globals(), __all__)
