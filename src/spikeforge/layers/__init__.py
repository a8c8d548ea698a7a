"""Layers for time-major sequences."""

from .timefold import TimeFold, fold, unfold

__all__ = ["TimeFold", "fold", "unfold"]
