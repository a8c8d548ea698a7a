r"""Integer neuron state, as neuromorphic chips hold it: quantised membrane, threshold and leak.

For every IF / LIF / PLIF neuron, with a ``bits``-bit signed membrane register covering
:math:`[-v_{max}, v_{max})` (default :math:`v_{max} = 2\vartheta`), step :math:`\Delta = v_{max} / 2^{b-1}`:

.. math::
    \hat\vartheta = \Delta\,\mathrm{round}(\vartheta/\Delta),\qquad
    \hat k = 2^{-\mathrm{round}(\log_2 (1/k))}\ \text{(the leak as a right shift)},\qquad
    v_t \leftarrow \Delta\,\mathrm{clamp}(\mathrm{round}(v_t/\Delta), -2^{b-1}, 2^{b-1}-1)

after every step (the stored state is an integer times :math:`\Delta`).  Rounding has a straight-through
gradient, so a model can be fine-tuned through it.  The neuron then runs one step at a time (the state is
rounded between steps).  ``dequantize_neurons_`` restores the float neurons.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.neurons import LIF
    >>> from spikeforge.deploy.neuron_quant import quantize_neurons_
    >>> net = nn.Sequential(LIF(tau=3.0, v_threshold=1.0, backend="reference"))
    >>> quantize_neurons_(net, bits=6)
    >>> s, state = net[0](torch.rand(5, 2, 4), return_state=True)
    >>> delta = 2.0 / 2 ** 5
    >>> bool(torch.equal(state.v / delta, torch.round(state.v / delta))), net[0].tau
    (True, 4.0)
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn


def _ste_round(x):
    return x + (torch.round(x) - x).detach()


def _pow2_k(k):
    if torch.is_tensor(k):
        q = torch.exp2(-torch.round(-torch.log2(k.clamp_min(1e-12))))
        return k + (q - k).detach()
    return 0.0 if k == 0 else 2.0 ** -round(-math.log2(k))


def _int_seq(self, x_seq, state, return_v):
    from ..functional.lif import LIFState

    delta, lo, hi = self._int_state
    outs, vs, st = [], [], state
    for t in range(x_seq.shape[0]):
        out = type(self)._seq(self, x_seq[t:t + 1], st, return_v)
        v = out[1].v
        vq = delta * torch.clamp(_ste_round(v / delta), lo, hi)
        st = LIFState(vq)
        outs.append(out[0])
        if return_v:
            vs.append(delta * torch.clamp(_ste_round(out[2] / delta), lo, hi))
    s = torch.cat(outs)
    return (s, st, torch.cat(vs)) if return_v else (s, st)


def _int_k(self, x_seq):
    return _pow2_k(type(self)._k(self, x_seq))


def quantize_neurons_(model: nn.Module, bits: int = 8, v_max: float | None = None) -> None:
    """Integer membrane (``bits`` signed bits over ``[-v_max, v_max)``, default ``v_max = 2 * threshold``),
    threshold on the membrane grid and leak as a power of two, for every IF/LIF/PLIF neuron of ``model``."""
    from ..neurons.base import BaseNeuron
    from ..neurons.lif import IF, LIF, PLIF

    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits: expected an integer in 2..32 (membrane register width), got {bits!r}")
    if v_max is not None and (isinstance(v_max, bool) or not isinstance(v_max, (int, float)) or not v_max > 0):
        raise ValueError(f"v_max: expected a number > 0 (membrane range) or None (2 x threshold), got {v_max!r}")
    neurons = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseNeuron)]
    if not neurons:
        raise ValueError("quantize_neurons_: model has no neuron modules; allowed: a model with IF/LIF/PLIF neurons")
    for name, m in neurons:
        if type(m) not in (IF, LIF, PLIF):
            raise ValueError(f"quantize_neurons_: layer {name!r} ({type(m).__name__}) cannot be handled; allowed "
                             f"neuron types: IF, LIF, PLIF")
        if "_int_state" in m.__dict__:
            raise ValueError(f"quantize_neurons_: layer {name!r} is already quantised; call dequantize_neurons_")
    for name, m in neurons:
        vm = float(v_max) if v_max is not None else 2.0 * float(m.v_threshold)
        delta = vm / 2 ** (bits - 1)
        m._int_state = (delta, -2 ** (bits - 1), 2 ** (bits - 1) - 1)
        m._float_params = (m.v_threshold, getattr(m, "tau", None))
        m.v_threshold = max(round(m.v_threshold / delta), 1) * delta
        if type(m) is LIF:
            m.tau = 1.0 / _pow2_k(1.0 / m.tau)
        elif type(m) is PLIF:
            m._k = types.MethodType(_int_k, m)
        m._seq = types.MethodType(_int_seq, m)


def dequantize_neurons_(model: nn.Module) -> None:
    """Undo :func:`quantize_neurons_`."""
    for m in model.modules():
        if "_int_state" not in m.__dict__:
            continue
        m.v_threshold, tau = m._float_params
        if tau is not None:
            m.tau = tau
        for attr in ("_int_state", "_float_params", "_seq", "_k"):
            m.__dict__.pop(attr, None)


__all__ = ["quantize_neurons_", "dequantize_neurons_"]
