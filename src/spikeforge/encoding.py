r"""Encoders: static input ``[B, ...]`` -> spike or current sequence ``[T, B, ...]``.

- ``direct``: the analogue input repeated T times (the first layer's neurons do the encoding).
- ``poisson``: Bernoulli spikes with :math:`P(s_t = 1) = \mathrm{clip}(x, 0, 1)` per step, from a seeded
  generator (same seed, same spikes).
- ``latency`` (time-to-first-spike): one spike per input at :math:`t = \mathrm{round}((1 - x)(T - 1))`, so
  larger values fire earlier; inputs <= ``threshold`` never fire.  Inputs are expected in [0, 1].

Example:
    >>> import torch
    >>> from spikeforge.encoding import encode
    >>> x = torch.tensor([[0.0, 0.5, 1.0]])
    >>> encode("latency", x, T=3)[:, 0].tolist()
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
"""

from __future__ import annotations

import torch

from ._registry import Registry

ENCODERS = Registry("encoder")


def _check(x, T):
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor [B, ...], got {getattr(x, 'dtype', type(x).__name__)}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")


@ENCODERS.register("direct", help="repeat the analogue input at every step")
def direct(x: torch.Tensor, T: int) -> torch.Tensor:
    _check(x, T)
    return x.unsqueeze(0).expand(T, *x.shape)


@ENCODERS.register("poisson", help="Bernoulli rate coding with probability clip(x, 0, 1)")
def poisson(x: torch.Tensor, T: int, seed: int | None = None, generator: torch.Generator | None = None):
    _check(x, T)
    if generator is None and seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    p = x.clamp(0.0, 1.0).unsqueeze(0).expand(T, *x.shape)
    u = torch.rand(p.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (u < p).to(x.dtype)


@ENCODERS.register("latency", help="time-to-first-spike: one spike at round((1 - x)(T - 1))")
def latency(x: torch.Tensor, T: int, threshold: float = 0.0) -> torch.Tensor:
    _check(x, T)
    xc = x.clamp(0.0, 1.0)
    t_fire = torch.round((1.0 - xc) * (T - 1)).long()
    steps = torch.arange(T, device=x.device).view(T, *([1] * x.dim()))
    out = (steps == t_fire.unsqueeze(0)) & (xc > threshold).unsqueeze(0)
    return out.to(x.dtype)


def encode(name: str, x: torch.Tensor, T: int, **kwargs) -> torch.Tensor:
    """Encode with a registered encoder by name."""
    return ENCODERS.get(name).factory(x, T, **kwargs)
