r"""Surrogate gradients for the Heaviside spike function.

Forward: :math:`s = H(u) = [u \ge 0]` with :math:`u = h - \vartheta`.  Backward: :math:`\partial s/\partial u
\approx g'(u)`, where :math:`g` is a smooth *primitive* and :math:`g'` the surrogate derivative.

Each surrogate is defined **once**, here: its derivative is written as a plain function of ``(u, alpha)``
using only arithmetic and the names ``exp``, ``absf``, ``relu``, ``step`` and ``PI``.  Every backend binds
those names to its own math (torch tensors here, scalar math in the numba kernel, ``tl`` in Triton) via
:func:`bind`, so the fused kernels evaluate exactly this formula.  All derivatives are written so that no
intermediate overflows to ``inf - inf`` or ``0 * inf``: at large ``|u|`` they go to 0, never NaN, in
float16, bfloat16, float32 and float64.

=================== ======================================================== ================ ========
name                derivative :math:`g'(u)`                                  primitive g(u)   alpha
=================== ======================================================== ================ ========
atan                :math:`\frac{\alpha/2}{1+(\frac{\pi}{2}\alpha u)^2}`      arctan           2.0
sigmoid             :math:`\alpha\,\sigma(\alpha u)(1-\sigma(\alpha u))`       logistic         4.0
fast_sigmoid        :math:`1/(1+\alpha|u|)^2` (SuperSpike)                    u/(1+a|u|)       25.0
triangle            :math:`\alpha\,\max(0, 1-|u|)` (Bellec et al.)             piecewise quad.  1.0
rectangle           :math:`\alpha\,[|u| < 1/(2\alpha)]`                       clipped linear   1.0
erf                 :math:`\frac{\alpha}{\sqrt\pi}e^{-(\alpha u)^2}`          (1+erf)/2        2.0
piecewise_quadratic :math:`\max(0, \alpha - \alpha^2|u|)` (SpikingJelly)      piecewise quad.  1.0
=================== ======================================================== ================ ========

Example:
    >>> import torch
    >>> from spikeforge.surrogate import get_surrogate, spike
    >>> sg = get_surrogate("atan")
    >>> u = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    >>> s = spike(u, sg)
    >>> s.tolist()
    [0.0, 1.0, 1.0]
    >>> s.sum().backward(); round(u.grad[1].item(), 4)
    1.0
"""

from __future__ import annotations

import builtins
import math
import types
from dataclasses import dataclass
from typing import Callable

import torch

from ._registry import Registry

SURROGATES = Registry("surrogate")


# --- the derivatives, each written once (names resolved by bind()) -------------------------------------
# fmt: off
def atan_grad(u, alpha):
    z = (PI / 2.0) * alpha * u  # noqa: F821
    return (alpha / 2.0) / (1.0 + z * z)


def sigmoid_grad(u, alpha):
    e = exp(-alpha * absf(u))  # noqa: F821  (symmetric, never overflows)
    return alpha * e / ((1.0 + e) * (1.0 + e))


def fast_sigmoid_grad(u, alpha):
    d = 1.0 + alpha * absf(u)  # noqa: F821
    return 1.0 / (d * d)


def triangle_grad(u, alpha):
    return alpha * relu(1.0 - absf(u))  # noqa: F821


def rectangle_grad(u, alpha):
    return alpha * step(0.5 / alpha - absf(u))  # noqa: F821


def erf_grad(u, alpha):
    z = alpha * u
    return (alpha / SQRT_PI) * exp(-(z * z))  # noqa: F821


def piecewise_quadratic_grad(u, alpha):
    return relu(alpha - alpha * alpha * absf(u))  # noqa: F821
# fmt: on


def _t_step(x):
    return (x > 0).to(x.dtype)


TORCH_MATH = {
    "exp": torch.exp,
    "absf": torch.abs,
    "relu": torch.relu,
    "step": _t_step,
    "PI": math.pi,
    "SQRT_PI": math.sqrt(math.pi),
}


def bind(fn: Callable, namespace: dict) -> Callable:
    """Return a copy of ``fn`` whose global names (``exp``, ``absf``, ...) resolve in ``namespace`` (plus the
    builtins, which tools that walk a function's globals, e.g. the ONNX exporter's tracer, expect to find)."""
    g = dict(namespace)
    g.setdefault("__builtins__", builtins)
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate derivative: ``name``, width/slope ``alpha``, the derivative source and its primitive."""

    name: str
    alpha: float
    grad_source: Callable  # derivative(u, alpha) written with bind()-able names
    primitive_fn: Callable  # smooth g(u, alpha) with g' = derivative; torch only, used for checks

    def __post_init__(self):
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"surrogate {self.name!r}: alpha must be a finite number > 0, got {self.alpha!r}")

    def derivative(self, u: torch.Tensor) -> torch.Tensor:
        return _torch_grad(self.grad_source)(u, self.alpha)

    def primitive(self, u: torch.Tensor) -> torch.Tensor:
        return self.primitive_fn(u, self.alpha)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return spike(u, self)


_TORCH_CACHE: dict = {}


def _torch_grad(src):
    fn = _TORCH_CACHE.get(src)
    if fn is None:
        fn = _TORCH_CACHE[src] = bind(src, TORCH_MATH)
    return fn


def _fast_sigmoid_primitive(u, a):
    return 0.5 + u / (1.0 + a * u.abs())


def _triangle_primitive(u, a):
    c = u.clamp(-1.0, 1.0)
    return a * (c - c * c.abs() / 2.0)


def _pq_primitive(u, a):
    c = u.clamp(-1.0 / a, 1.0 / a)
    return a * c - a * a * c * c.abs() / 2.0 + 0.5


_DEFS = {
    # name: (grad source, primitive, default alpha)
    "atan": (atan_grad, lambda u, a: torch.atan(math.pi / 2 * a * u) / math.pi + 0.5, 2.0),
    "sigmoid": (sigmoid_grad, lambda u, a: torch.sigmoid(a * u), 4.0),
    "fast_sigmoid": (fast_sigmoid_grad, _fast_sigmoid_primitive, 25.0),
    "triangle": (triangle_grad, _triangle_primitive, 1.0),
    "rectangle": (rectangle_grad, lambda u, a: (a * u + 0.5).clamp(0.0, 1.0), 1.0),
    "erf": (erf_grad, lambda u, a: 0.5 * (1.0 + torch.erf(a * u)), 2.0),
    "piecewise_quadratic": (piecewise_quadratic_grad, _pq_primitive, 1.0),
}


def _make_factory(name, src, prim, default_alpha):
    def factory(alpha: float = default_alpha) -> Surrogate:
        return Surrogate(name, float(alpha), src, prim)

    factory.__name__ = name
    factory.__doc__ = f"{name} surrogate derivative (default alpha={default_alpha})."
    return factory


for _name, (_src, _prim, _alpha) in _DEFS.items():
    SURROGATES.register(_name)(_make_factory(_name, _src, _prim, _alpha))


def get_surrogate(surrogate: str | Surrogate = "atan", alpha: float | None = None) -> Surrogate:
    """Resolve a name (or pass through a :class:`Surrogate`); ``alpha=None`` keeps the default width."""
    if isinstance(surrogate, Surrogate):
        return surrogate if alpha is None else Surrogate(surrogate.name, float(alpha), surrogate.grad_source,
                                                         surrogate.primitive_fn)
    if not isinstance(surrogate, str) or surrogate.lower() not in SURROGATES:
        raise ValueError(
            f"surrogate: unknown value {surrogate!r}; allowed: {', '.join(SURROGATES.list())} "
            "or a spikeforge.surrogate.Surrogate"
        )
    return SURROGATES.create(surrogate) if alpha is None else SURROGATES.create(surrogate, alpha=alpha)


class SpikeFn(torch.autograd.Function):
    """Heaviside forward (``u >= 0``), surrogate derivative backward."""

    @staticmethod
    def forward(ctx, u, surrogate):
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_s):
        (u,) = ctx.saved_tensors
        return grad_s * ctx.surrogate.derivative(u), None


def spike(u: torch.Tensor, surrogate: str | Surrogate = "atan") -> torch.Tensor:
    """Spike where ``u >= 0``; gradient by the named surrogate."""
    return SpikeFn.apply(u, get_surrogate(surrogate))


class PrimitiveFn(torch.autograd.Function):
    """Smooth primitive forward, surrogate derivative backward: gradcheck proves derivative = d primitive."""

    @staticmethod
    def forward(ctx, u, surrogate):
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return surrogate.primitive(u)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ctx.surrogate.derivative(u), None
