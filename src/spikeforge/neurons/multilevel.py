"""Multi-level (burst-count) spiking module (equations in :mod:`spikeforge.functional.multilevel`).

Example:
    >>> import torch
    >>> from spikeforge.neurons import MultiLevel
    >>> n = MultiLevel(cap=4)(torch.rand(6, 2, 10) * 5)
    >>> bool(((n >= 0) & (n <= 4) & (n == n.round())).all())
    True
"""

from __future__ import annotations

from ..functional.multilevel import multilevel
from ._zoo import ZooNeuron, check_number
from .registry import NEURONS


class MultiLevel(ZooNeuron):
    """IF/LIF emitting 0..``cap`` spikes per step with a soft reset; ``cap=1`` is the binary neuron."""

    def __init__(self, cap=4, tau=None, v_threshold=1.0, surrogate="atan", backend="auto", check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"cap: expected an integer >= 1, got {cap!r}")
        if tau is not None:
            check_number("tau", tau, low=1.0)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
        self.cap, self.tau, self.v_threshold = cap, tau, v_threshold

    def _seq(self, x_seq, state, return_v):
        return multilevel(x_seq, state, cap=self.cap, tau=self.tau, v_threshold=self.v_threshold,
                          surrogate=self.surrogate, backend=self.backend, return_v=return_v,
                          check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"cap={self.cap}, tau={self.tau}, v_threshold={self.v_threshold}, " + super().extra_repr()


NEURONS.register("multilevel", help="integer (burst-count) spikes up to a cap, soft reset; cap=1 is binary")(MultiLevel)
