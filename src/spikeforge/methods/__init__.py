"""Training methods: one file per method, each registered in :data:`METHODS` (see :mod:`.base`)."""

from . import bptt  # noqa: F401  (registers itself)
from . import noise_single_step  # noqa: F401
from . import ottt, tbptt  # noqa: F401
from . import proxy, snn2ann  # noqa: F401
from . import bntt_exit  # noqa: F401
from . import hybrid_spiking  # noqa: F401
from . import bats, nif  # noqa: F401
from . import albsnn, hoyer, stl  # noqa: F401
from .base import Method, StepContext, StepResult
from .registry import METHODS, create_method

__all__ = ["METHODS", "Method", "StepContext", "StepResult", "create_method"]
