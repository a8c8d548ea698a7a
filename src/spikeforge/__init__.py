"""spikeforge: train, convert, compress and measure deep spiking neural networks on PyTorch.

Importing spikeforge never initialises CUDA and never compiles kernels; both happen on first use.
"""

__version__ = "0.1.0"
