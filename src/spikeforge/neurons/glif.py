"""GLIF module: gated LIF with every membrane parameter and gate learnable (equations in
:mod:`spikeforge.functional.glif`).

Every parameter is stored as a logit and used through ``sigmoid``, so it stays in (0, 1): ``tau``, ``v_threshold``,
``leak``, ``v_reset``, the gates ``alpha`` (exponential decay vs linear leak), ``beta`` (constant vs time-dependent
conductance), ``gamma`` (hard vs soft reset), and the conductance ``c`` (per time step when ``T`` is given).
With ``num_channels`` every parameter is per channel (dim 2 of ``[T, B, C, ...]``), as in the paper's
channel-wise GLIF; otherwise one value per layer.  ``hard_gates=True`` binarises the gates in the forward
pass (``sigmoid > 0.5``) with a straight-through gradient.  Init follows the official code: tau 0.25, V_th 0.5,
V_re = V_th, c 0.5, l = V_th / (2T), gates (0.6, 0.8, 0.6) mapped by ``g -> (g - 0.5) / 2 + 0.5``, or logits
~ U(-0.1, 0.1) with ``random_gates``.  The paper trains the gate logits with lr/10 and no weight decay:
:meth:`GLIF.param_groups` returns those groups.

Example:
    >>> import torch
    >>> from spikeforge.neurons import GLIF
    >>> neuron = GLIF(num_channels=8, T=4)
    >>> s = neuron(torch.rand(4, 2, 8, 5, 5))      # [T, B, C, H, W]
    >>> tuple(s.shape), sorted(neuron.values())[:3]
    ((4, 2, 8, 5, 5), ['alpha', 'beta', 'conductance'])
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.glif import glif
from ..kernels.cell import StraightThroughFn
from ._zoo import ZooNeuron, channel_view, check_num_channels, check_number, logit
from .registry import NEURONS

_UNIT = ("tau", "v_threshold", "leak", "v_reset", "conductance")
_GATES = ("alpha", "beta", "gamma")


class GLIF(ZooNeuron):
    """Gated LIF (Yao et al., NeurIPS 2022) with learnable per-layer or per-channel parameters in (0, 1)."""

    def __init__(self, num_channels=None, T=None, tau=0.25, v_threshold=0.5, v_reset=None, leak=None,
                 conductance=0.5, gates=(0.6, 0.8, 0.6), random_gates=False, hard_gates=False,
                 surrogate="rectangle", backend="auto", check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        self.num_channels = check_num_channels(num_channels)
        if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
            raise ValueError(f"T: expected None or an integer >= 1 (conductance per time step), got {T!r}")
        self.T = T
        v_reset = v_threshold if v_reset is None else v_reset
        leak = v_threshold / (2 * (T or 4)) if leak is None else leak
        init = {"tau": tau, "v_threshold": v_threshold, "leak": leak, "v_reset": v_reset,
                "conductance": conductance}
        for name, value in init.items():
            check_number(name, value, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                         allow_tensor=False)
        if not isinstance(gates, (tuple, list)) or len(gates) != 3:
            raise ValueError(f"gates: expected three values (alpha, beta, gamma) in (0, 1), got {gates!r}")
        for name, g in zip(_GATES, gates):
            check_number(f"gates ({name})", g, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False,
                         allow_tensor=False)
        self.random_gates = bool(random_gates)
        self.hard_gates = bool(hard_gates)
        shape = () if num_channels is None else (num_channels,)
        for name in _UNIT:
            pshape = ((T, *shape) if T is not None else shape) if name == "conductance" else shape
            setattr(self, f"w_{name}", nn.Parameter(torch.full(pshape, logit(init[name]))))
        for name, g in zip(_GATES, gates):
            w = (torch.rand(shape) * 0.2 - 0.1) if random_gates else torch.full(shape, logit((g - 0.5) * 0.5 + 0.5))
            setattr(self, f"w_{name}", nn.Parameter(w))

    def values(self) -> dict:
        """The parameters in (0, 1) after ``sigmoid`` (gates before binarisation), detached."""
        return {name: torch.sigmoid(getattr(self, f"w_{name}").detach()) for name in _UNIT + _GATES}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups of the paper: membrane parameters at ``lr``, gate logits at ``lr / 10``, both with no
        weight decay."""
        return [{"params": [getattr(self, f"w_{n}") for n in _UNIT], "lr": lr, "weight_decay": 0.0},
                {"params": [getattr(self, f"w_{n}") for n in _GATES], "lr": lr / 10, "weight_decay": 0.0}]

    def _seq(self, x_seq, state, return_v):
        v = {}
        for name in _UNIT + _GATES:
            w = getattr(self, f"w_{name}")
            p = torch.sigmoid(w)
            if name in _GATES and self.hard_gates:
                p = StraightThroughFn.apply((p > 0.5).to(p.dtype), p)
            if name == "conductance" and self.T is not None:
                if x_seq.shape[0] != self.T:
                    raise ValueError(f"x_seq: GLIF built with T={self.T} (conductance per time step) got "
                                     f"{x_seq.shape[0]} steps; use T={x_seq.shape[0]} or T=None")
                tail = [1] * (x_seq.dim() - 3)
                if self.num_channels is not None:
                    p = p.to(x_seq.dtype).reshape(self.T, 1, self.num_channels, *tail)
                else:
                    p = p.to(x_seq.dtype).reshape(self.T, *([1] * (x_seq.dim() - 1)))
            else:
                p = channel_view(p, x_seq, self.num_channels, "GLIF")
            v[name] = p
        return glif(x_seq, state, tau=v["tau"], v_threshold=v["v_threshold"], leak=v["leak"],
                    v_reset=v["v_reset"], alpha=v["alpha"], beta=v["beta"], gamma=v["gamma"],
                    conductance=v["conductance"], surrogate=self.surrogate, backend=self.backend,
                    return_v=return_v, check_inputs=self.check_inputs)

    def step(self, x_t, state=None):
        if self.T is not None:
            raise ValueError(f"step: this GLIF has a conductance per time step (T={self.T}); run the whole sequence "
                             "with forward(), or build it with T=None for step-by-step use")
        return super().step(x_t, state)

    def extra_repr(self) -> str:
        return (f"num_channels={self.num_channels}, T={self.T}, hard_gates={self.hard_gates}, "
                + super().extra_repr())


NEURONS.register("glif", help="gated LIF with learnable gates, tau, threshold, leak, reset, conductance "
                              "(Yao et al. 2022)")(GLIF)
