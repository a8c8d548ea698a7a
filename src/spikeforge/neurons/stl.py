"""STL module: LIF with a learnable threshold per neuron, trained jointly with the weights (equations in
:mod:`spikeforge.functional.stl`).

``shape`` is the shape of one sample of the layer's output (e.g. ``(128, 28, 28)``, or ``128`` for a dense
layer): one threshold per neuron, initialised to ``theta0 + heterogeneity * N(0, 1) / 100``.  ``shape=None``
learns one threshold shared by the layer (what a model built from keyword arguments alone gets).
:meth:`STL.freeze` gives the paper's baselines: SL (thresholds fixed) is ``requires_grad_(False)`` on
``theta``; TL (weights fixed) freezes everything else in the model.

Example:
    >>> import torch
    >>> from spikeforge.neurons import STL
    >>> neuron = STL(shape=(16,))
    >>> s = neuron(torch.rand(4, 2, 16) * 3)
    >>> s.sum().backward(); tuple(neuron.theta.grad.shape)
    (16,)
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.stl import stl, stl_threshold_init
from ._zoo import ZooNeuron, check_number
from .registry import NEURONS


class STL(ZooNeuron):
    """LIF (decay factor 0.5, hard reset to 0) with learnable per-neuron thresholds (Sun et al. 2023)."""

    def __init__(self, shape=None, decay=0.5, theta0=2.0, heterogeneity=0.01, surrogate="atan", backend="auto",
                 check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        check_number("decay", decay, low=0.0, high=1.0)
        if shape is None:
            shape = ()
        elif isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not all(isinstance(d, int) and d >= 1 for d in shape):
            raise ValueError(f"shape: expected None, an int or a tuple of ints >= 1 (one sample's shape), got {shape!r}")
        self.shape = tuple(shape)
        self.decay = decay
        self.theta = nn.Parameter(stl_threshold_init(self.shape, theta0, heterogeneity))

    def _seq(self, x_seq, state, return_v):
        if len(self.shape) and tuple(x_seq.shape[2:]) != self.shape:
            raise ValueError(f"x_seq: STL thresholds have shape {self.shape}, expected [T, B, *{self.shape}], got "
                             f"{tuple(x_seq.shape)}")
        theta = self.theta.clamp(min=torch.finfo(self.theta.dtype).tiny)
        return stl(x_seq, theta, state, decay=self.decay, surrogate=self.surrogate, backend=self.backend,
                   return_v=return_v, check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, decay={self.decay}, " + super().extra_repr()


NEURONS.register("stl", help="LIF with a learnable threshold per neuron (Sun et al. 2023, STL-SNN)")(STL)
