"""spikeforge: train, convert, compress and measure deep spiking neural networks on PyTorch.

Importing spikeforge never initialises CUDA and never compiles kernels; both happen on first use.  The subpackages
load on first access (``import spikeforge as sf; sf.neurons.LIF``), so ``import spikeforge`` itself loads neither
torch nor numba.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _submodules() -> set:
    """The public submodules and subpackages (every ``spikeforge/<name>`` not starting with ``_``)."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def __getattr__(name: str):
    if not name.startswith("_") and name in _submodules():
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also binds it here: loaded once
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _submodules())

# torch (libgomp) and the fused numba kernels each keep an OpenMP thread pool; with the default active
# wait, idle threads of one pool spin on the cores the other needs (measured: a small conv-SNN training
# step 2-4x slower on 2 cores).  Passive waiting avoids it.  It only takes effect when spikeforge is
# imported before torch (as the `spikeforge` command does); set OMP_WAIT_POLICY yourself to override.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
