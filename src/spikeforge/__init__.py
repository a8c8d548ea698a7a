"""spikeforge: train, convert, compress and measure deep spiking neural networks on PyTorch.

Importing spikeforge never initialises CUDA and never compiles kernels; both happen on first use.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# torch (libgomp) and the fused numba kernels each keep an OpenMP thread pool; with the default active
# wait, idle threads of one pool spin on the cores the other needs (measured: a small conv-SNN training
# step 2-4x slower on 2 cores).  Passive waiting avoids it.  It only takes effect when spikeforge is
# imported before torch (as the `spikeforge` command does); set OMP_WAIT_POLICY yourself to override.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
