"""ALIF module: LIF with an adaptive threshold (equations in :mod:`spikeforge.functional.alif`).

Example:
    >>> import torch
    >>> from spikeforge.neurons import ALIF
    >>> neuron = ALIF(tau=2.0, tau_adapt=20.0, beta=0.2)
    >>> s, state = neuron(torch.rand(8, 4, 16) * 2, return_state=True)
    >>> tuple(s.shape), tuple(state.a.shape)
    ((8, 4, 16), (4, 16))
"""

from __future__ import annotations

from ..functional._checks import check_v_reset
from ..functional.alif import alif
from ._zoo import ZooNeuron, check_number
from .registry import NEURONS


class ALIF(ZooNeuron):
    """Adaptive LIF: every spike raises the threshold by ``beta``; the rise decays with ``tau_adapt`` steps."""

    def __init__(self, tau=2.0, tau_adapt=20.0, beta=0.2, v_threshold=1.0, v_reset: float | None = 0.0,
                 surrogate="atan", backend="auto", check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        check_number("tau", tau, low=1.0)
        check_number("tau_adapt", tau_adapt, low=0.0, low_inclusive=False)
        check_number("beta", beta, low=0.0)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
        self.tau, self.tau_adapt, self.beta, self.v_threshold = tau, tau_adapt, beta, v_threshold
        self.v_reset = check_v_reset(v_reset)

    def _seq(self, x_seq, state, return_v):
        return alif(x_seq, state, tau=self.tau, tau_adapt=self.tau_adapt, beta=self.beta,
                    v_threshold=self.v_threshold, v_reset=self.v_reset, surrogate=self.surrogate,
                    backend=self.backend, return_v=return_v, check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, tau_adapt={self.tau_adapt}, beta={self.beta}, v_threshold={self.v_threshold}, "
                f"v_reset={self.v_reset}, " + super().extra_repr())


NEURONS.register("alif", help="LIF with an adaptive threshold that decays with its own time constant")(ALIF)
