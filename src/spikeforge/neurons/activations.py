r"""ANN activations for the ANN twin of every zoo model (``model.neuron=relu``, ``clip`` or ``qcfs``).

They sit where a model puts its spiking neurons, take the same time-major ``[T, B, ...]`` tensor (build the ANN
with ``model.T=1``) and return a tensor of the same shape; they hold parameters only, like the neurons.
:func:`spikeforge.convert.convert` replaces each of them by an IF neuron.

- ``relu``: :math:`y = \max(x, 0)`.
- ``clip`` (TCL, Ho & Chang, DAC 2021): :math:`y = \min(\max(x, 0), \lambda)`
  with a trainable bound :math:`\lambda` per layer and the PACT gradients
  :math:`\partial y/\partial x = 1[0 < x < \lambda]`, :math:`\partial y/\partial\lambda = 1[x \ge \lambda]`.
  The paper's :math:`\tfrac{\beta}{2}\sum_l\lambda_l^2` term is the optimiser's weight decay on
  :math:`\lambda` (``optim.weight_decay``).
- ``qcfs`` (Bu et al., ICLR 2022, quantisation-clip-floor-shift):
  :math:`y = \tfrac{\lambda}{L}\,\lfloor \mathrm{clamp}(x/\lambda, 0, 1)\,L + \tfrac12\rfloor` with a
  trainable :math:`\lambda` and a straight-through floor, as in the authors' code.

Example:
    >>> import torch
    >>> from spikeforge.neurons import NEURONS
    >>> act = NEURONS.create("clip", lam=2.0)
    >>> act(torch.tensor([[-1.0, 1.0, 3.0]])).tolist()
    [[0.0, 1.0, 2.0]]
    >>> NEURONS.create("qcfs", lam=1.0, L=4)(torch.tensor([[0.3, 0.6]])).tolist()
    [[0.25, 0.5]]
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_number
from .registry import NEURONS


class Activation(nn.Module):
    """Base of the ANN activations: elementwise, no state; ``step(x_t, state)`` returns ``(y_t, state)``."""

    #: the conversion threshold this activation states by itself (``None``: measure it from data)
    def bound(self):
        return None

    def step(self, x_t: torch.Tensor, state=None):
        return self(x_t), state


class ReLU(Activation):
    """``max(x, 0)``."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class PACTClipFn(torch.autograd.Function):
    """``clamp(x, 0, lam)`` with the PACT gradients (``lam`` a 0-dim tensor)."""

    @staticmethod
    def forward(ctx, x, lam):
        lam_x = lam.to(x.dtype)
        ctx.save_for_backward(x, lam_x)
        return torch.minimum(torch.relu(x), lam_x)

    @staticmethod
    def backward(ctx, g):
        x, lam = ctx.saved_tensors
        gx = g * ((x > 0) & (x < lam)).to(g.dtype)
        glam = (g * (x >= lam).to(g.dtype)).sum().reshape(()).to(lam.dtype)
        return gx, glam


class Clip(Activation):
    """TCL's trainable clipping ``min(max(x, 0), lam)``; ``lam`` is one learnable number per layer."""

    def __init__(self, lam: float = 4.0, trainable: bool = True):
        super().__init__()
        check_number("lam", lam, low=0.0, low_inclusive=False, allow_tensor=False)
        self.lam = nn.Parameter(torch.tensor(float(lam)), requires_grad=bool(trainable))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return PACTClipFn.apply(x, self.lam)

    def bound(self):
        return self.lam.detach().abs()

    def extra_repr(self) -> str:
        return f"lam={float(self.lam):.4g}"


class FloorSTEFn(torch.autograd.Function):
    """``floor(x)`` with the identity gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, g):
        return g


class QCFS(Activation):
    """Quantisation-clip-floor-shift: ``lam / L * floor(clamp(x / lam, 0, 1) * L + shift)``."""

    def __init__(self, lam: float = 8.0, L: int = 8, shift: float = 0.5):
        super().__init__()
        check_number("lam", lam, low=0.0, low_inclusive=False, allow_tensor=False)
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ValueError(f"L: expected an integer >= 1 (quantisation levels), got {L!r}")
        check_number("shift", shift, low=0.0, high=1.0, allow_tensor=False)
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.L = L
        self.shift = float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.lam.to(x.dtype)
        q = FloorSTEFn.apply(torch.clamp(x / lam, 0.0, 1.0) * self.L + self.shift) / self.L
        return q * lam

    def bound(self):
        return self.lam.detach().abs()

    def extra_repr(self) -> str:
        return f"lam={float(self.lam):.4g}, L={self.L}, shift={self.shift}"


#: activation types :func:`spikeforge.convert.convert` turns into IF neurons
ACTIVATIONS = (ReLU, Clip, QCFS, nn.ReLU, nn.ReLU6, nn.Hardtanh)

NEURONS.register("relu", help="ANN twin: ReLU (not spiking; for training the ANN that convert() turns into an "
                              "SNN)")(ReLU)
NEURONS.register("clip", help="ANN twin: TCL trainable clipping min(max(x,0),lam) (Ho & Chang 2021)")(Clip)
NEURONS.register("qcfs", help="ANN twin: quantisation-clip-floor-shift activation (Bu et al. 2022)")(QCFS)

__all__ = ["Activation", "ReLU", "Clip", "QCFS", "PACTClipFn", "FloorSTEFn", "ACTIVATIONS"]
