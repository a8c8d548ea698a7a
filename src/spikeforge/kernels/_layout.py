"""Flattening of parameters, state and gradients to the ``[T, N]`` / ``[N]`` layout every fused backend uses."""

from __future__ import annotations

import torch


def param_vec(p, like: torch.Tensor, N: int, shape) -> torch.Tensor:
    """A parameter as a flat vector of length 1 (shared) or N (per neuron, broadcast over [B, ...])."""
    if not torch.is_tensor(p):
        return torch.full((1,), float(p), dtype=like.dtype, device=like.device)
    p = p.detach().to(device=like.device, dtype=like.dtype)
    if p.numel() == 1:
        return p.reshape(1).contiguous()
    return p.expand(shape).reshape(N).contiguous()


def state_vec(v0: torch.Tensor, N: int) -> torch.Tensor:
    """The initial state as a vector of length N, or of length 1 when it is one value broadcast (stride 0)."""
    v0 = v0.detach()
    if N > 1 and v0.numel() == N and all(st == 0 for st in v0.stride()):
        return v0[(0,) * v0.dim()].reshape(1).contiguous()
    return v0.reshape(N).contiguous()


def is_const(g: torch.Tensor) -> bool:
    """True for a gradient that is one value broadcast everywhere (e.g. from ``s.sum().backward()``)."""
    return g.numel() > 1 and all(st == 0 for st in g.stride())
