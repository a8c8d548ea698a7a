"""The ``METHODS`` registry (one :class:`~spikeforge._registry.Registry`) and ``create_method``."""

from __future__ import annotations

from .._registry import Registry

METHODS = Registry("method")


def create_method(name: str, kwargs: dict | None = None):
    """The registered method ``name`` with its validated ``Config`` built from ``kwargs``."""
    from .base import build_config

    cls = METHODS.get(name).factory
    return cls(build_config(cls, dict(kwargs or {})))
