"""Resonate-and-fire module (equations in :mod:`spikeforge.functional.resonate`).

Example:
    >>> import math, torch
    >>> from spikeforge.neurons import RF
    >>> neuron = RF(omega=2 * math.pi / 8, decay=0.9)
    >>> s, state = neuron(torch.rand(8, 4, 16), return_state=True)
    >>> tuple(s.shape), tuple(state.w.shape)
    ((8, 4, 16), (4, 16))
"""

from __future__ import annotations

import math

from ..functional.resonate import rf
from ._zoo import ZooNeuron, check_number
from .registry import NEURONS

__all__ = ["RF"]


class RF(ZooNeuron):
    """Resonate-and-fire: a damped oscillator (eigenfrequency ``omega`` radians per step, damping ``decay`` per
    step) that spikes when the imaginary part of its state reaches ``v_threshold``."""

    def __init__(self, omega=2 * math.pi / 8, decay=0.9, v_threshold=1.0, surrogate="atan", backend="auto",
                 check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        check_number("omega", omega, low=0.0, high=math.pi)
        check_number("decay", decay, low=0.0, high=1.0, low_inclusive=False)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
        self.omega, self.decay, self.v_threshold = omega, decay, v_threshold

    def _seq(self, x_seq, state, return_v):
        return rf(x_seq, state, omega=self.omega, decay=self.decay, v_threshold=self.v_threshold,
                  surrogate=self.surrogate, backend=self.backend, return_v=return_v, check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"omega={self.omega}, decay={self.decay}, v_threshold={self.v_threshold}, " + super().extra_repr()


NEURONS.register("rf", help="resonate-and-fire: a damped oscillator that fires at its eigenfrequency "
                            "(Izhikevich 2001)")(RF)
