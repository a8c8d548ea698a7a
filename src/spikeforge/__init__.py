"""spikeforge: train, convert, compress and measure deep spiking neural networks on PyTorch.

Importing spikeforge never initialises CUDA and never compiles kernels; both happen on first use.  The subpackages
load on first access (``import spikeforge as sf; sf.neurons.LIF``), so ``import spikeforge`` itself loads neither
torch nor numba.  How the OpenMP thread pools of torch and of the fused kernels wait is chosen when the fused kernels
start, whatever the import order and with no environment variable (:func:`spikeforge.runtime.omp_wait`).
"""

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
