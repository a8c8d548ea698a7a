"""Flattening of parameters, state and gradients to the ``[T, N]`` / ``[N]`` layout every fused backend uses."""

from __future__ import annotations

import torch


def state_vec(v0: torch.Tensor, N: int) -> torch.Tensor:
    """The initial state as a vector of length N, or of length 1 when it is one value broadcast (stride 0)."""
    v0 = v0.detach()
    if N > 1 and v0.numel() == N and not any(v0.stride()):
        return v0[(0,) * v0.dim()].reshape(1).contiguous()
    return v0.reshape(N).contiguous()


def is_const(g: torch.Tensor) -> bool:
    """True for a gradient that is one value broadcast everywhere (e.g. from ``s.sum().backward()``)."""
    return g.numel() > 1 and not any(g.stride())


# --- memory order -------------------------------------------------------------------------------------
# The fused CPU kernels walk memory as ``[T, N]``.  A channels-last conv output ``[T, B, C, H, W]`` is dense but
# not C-contiguous; instead of copying it to C order (and handing the next conv a C-order tensor it must convert
# back), the kernels run on the permuted view whose C order *is* the memory order, and the outputs are permuted
# back, so they keep the input's layout.  Elementwise neurons do not care in which order they visit neurons.


def step_perm(x_seq: torch.Tensor) -> tuple | None:
    """The order of the step dims ``[B, ...]`` of ``x_seq`` from the largest stride to the smallest, when it
    makes one step dense and differs from the logical order (e.g. channels-last); None otherwise (the caller
    then uses C order).  The time dim may have any stride (a ``direct``-coded input has stride 0)."""
    if x_seq.dim() < 3 or x_seq.is_contiguous():  # C order (the common case, checked first: it is cheap)
        return None
    step = x_seq[0]
    order = tuple(sorted(range(step.dim()), key=lambda d: -step.stride(d)))  # stable: ties keep logical order
    if order == tuple(range(step.dim())) or not step.permute(order).is_contiguous():
        return None
    return order


def _inverse(order: tuple) -> tuple:
    inv = [0] * len(order)
    for i, d in enumerate(order):
        inv[d] = i
    return tuple(inv)


def permute_seq(t: torch.Tensor, order: tuple, inverse: bool = False) -> torch.Tensor:
    """``[T, B, ...]`` with its step dims put in ``order`` (or back, with ``inverse``); a view."""
    o = _inverse(order) if inverse else order
    return t.permute(0, *(d + 1 for d in o))


def permute_step(p, order: tuple, inverse: bool = False):
    """A float or a tensor broadcastable to one step ``[B, ...]``, with its dims put in ``order``; a view."""
    if not torch.is_tensor(p) or p.dim() == 0:
        return p
    o = _inverse(order) if inverse else order
    p = p.reshape((1,) * (len(o) - p.dim()) + tuple(p.shape))
    return p.permute(o)
