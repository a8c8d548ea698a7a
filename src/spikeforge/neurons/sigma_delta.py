"""Sigma-delta quantiser module (equations in :mod:`spikeforge.functional.sigma_delta`).

``omega`` may be changed between epochs to anneal from non-spiking (large) to spiking (small); it is a
setting, not state (see :func:`spikeforge.functional.sigma_delta.omega_schedule`).

Example:
    >>> import torch
    >>> from spikeforge.neurons import SigmaDelta
    >>> q = SigmaDelta(omega=4.0)
    >>> y = q(torch.rand(8, 2, 16))
    >>> bool(((y * 4.0) == (y * 4.0).round()).all())     # multiples of 1/omega
    True
"""

from __future__ import annotations

from ..functional.sigma_delta import activation_bits, sigma_delta
from ._zoo import ZooNeuron, check_number
from .registry import NEURONS


class SigmaDelta(ZooNeuron):
    """Quantised ReLU with temporally diffused error, gain ``omega`` (Voelker et al. 2020)."""

    def __init__(self, omega=1.0, backend="auto", check_inputs=True):
        super().__init__("atan", backend, check_inputs)
        check_number("omega", omega, low=0.0, low_inclusive=False)
        self.omega = omega

    def _seq(self, x_seq, state, return_v):
        check_number("omega", self.omega, low=0.0, low_inclusive=False)
        return sigma_delta(x_seq, state, omega=self.omega, backend=self.backend, return_v=return_v,
                           check_inputs=self.check_inputs)

    def bits(self, y_seq) -> float:
        """Average bits per activation of an output of this quantiser."""
        return activation_bits(y_seq, self.omega)

    def extra_repr(self) -> str:
        return f"omega={self.omega}, backend={self.backend!r}"


NEURONS.register("sigma_delta", help="sigma-delta quantiser: relu quantised with diffused error, gain omega "
                                     "(Voelker et al. 2020)")(SigmaDelta)
