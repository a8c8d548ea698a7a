"""IF, LIF and PLIF modules (equations in :mod:`spikeforge.functional.lif`).

Example:
    >>> import torch
    >>> from spikeforge.neurons import LIF
    >>> neuron = LIF(tau=2.0)
    >>> x = torch.rand(8, 4, 16)               # [T, B, N]
    >>> s = neuron(x)                          # spikes, same shape
    >>> s, state = neuron(x, return_state=True)
    >>> s2, state = neuron(x, state)           # continue the sequence
    >>> s_t, state = neuron.step(x[0], state)  # one step
    >>> tuple(s.shape)
    (8, 4, 16)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..functional._checks import check_bool, check_number
from ..functional.lif import lif_family_seq
from .base import BaseNeuron
from .registry import NEURONS


class LIF(BaseNeuron):
    """Leaky integrate-and-fire; defaults equal SpikingJelly's multi-step ``LIFNode``."""

    def __init__(self, tau=2.0, v_threshold=1.0, v_reset: float | None = 0.0, decay_input=True,
                 detach_reset=False, surrogate="atan", backend="auto", check_inputs=True):
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, backend, check_inputs)
        check_number("tau", tau, low=1.0)
        self.tau = tau
        self.decay_input = check_bool("decay_input", decay_input)

    def _k(self, x_seq):
        return 1.0 / self.tau

    def _seq(self, x_seq, state, return_v):
        return lif_family_seq(x_seq, state, k=self._k(x_seq), v_threshold=self.v_threshold,
                              v_reset=self.v_reset, decay_input=self.decay_input, detach_reset=self.detach_reset,
                              surrogate=self.surrogate, backend=self.backend, return_v=return_v,
                              check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(BaseNeuron):
    """Integrate-and-fire: no leak, :math:`h_t = v_{t-1} + x_t`."""

    def _seq(self, x_seq, state, return_v):
        return lif_family_seq(x_seq, state, k=0.0, v_threshold=self.v_threshold, v_reset=self.v_reset,
                              decay_input=False, detach_reset=self.detach_reset, surrogate=self.surrogate,
                              backend=self.backend, return_v=return_v, check_inputs=self.check_inputs)


class PLIF(LIF):
    """Parametric LIF (Fang et al., ICCV 2021): learnable ``w`` with ``1/tau = sigmoid(w)``.

    ``init_tau`` sets ``w = -log(init_tau - 1)``; ``num_channels`` makes tau per channel (dim 1 of ``[B, C, ...]``),
    otherwise one tau is shared by the layer, as in the paper.
    """

    def __init__(self, init_tau=2.0, v_threshold=1.0, v_reset: float | None = 0.0, decay_input=True,
                 detach_reset=False, surrogate="atan", backend="auto", check_inputs=True,
                 num_channels: int | None = None):
        check_number("init_tau", init_tau, low=1.0, low_inclusive=False)
        super().__init__(init_tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, backend,
                         check_inputs)
        shape = () if num_channels is None else (int(num_channels),)
        self.num_channels = num_channels
        self.w = nn.Parameter(torch.full(shape, -math.log(init_tau - 1.0)))

    def _k(self, x_seq):
        k = torch.sigmoid(self.w).to(x_seq.dtype)
        if self.num_channels is not None:
            if x_seq.dim() < 3 or x_seq.shape[2] != self.num_channels:
                raise ValueError(f"x_seq: PLIF with num_channels={self.num_channels} expects [T, B, C, ...] "
                                 f"with C={self.num_channels}, got shape {tuple(x_seq.shape)}")
            k = k.reshape(-1, *([1] * (x_seq.dim() - 3)))
        return k

    @property
    def tau_value(self) -> torch.Tensor:
        return 1.0 / torch.sigmoid(self.w.detach())

    def extra_repr(self) -> str:
        return f"init_tau={self.tau}, num_channels={self.num_channels}, " + BaseNeuron.extra_repr(self)


NEURONS.register("if", help="integrate-and-fire, no leak")(IF)
NEURONS.register("lif", help="leaky integrate-and-fire (SpikingJelly LIFNode defaults)")(LIF)
NEURONS.register("plif", help="parametric LIF with learnable time constant (Fang et al. 2021)")(PLIF)
