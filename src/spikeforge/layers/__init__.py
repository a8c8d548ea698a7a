"""Layers for time-major sequences."""

from .norm import BNTT, TEBN, TdBN, make_norm
from .timefold import TimeFold, fold, unfold

__all__ = ["TimeFold", "fold", "unfold", "TdBN", "BNTT", "TEBN", "make_norm"]
