"""Layers for time-major sequences."""

from .attention import SCTFA, SCTFAttention
from .norm import BNTT, TEBN, TdBN, make_norm
from .pooling import VotingPool
from .stcb import STCB, stcb_rate, stcb_temporal
from .timefold import TimeFold, fold, unfold

__all__ = ["TimeFold", "fold", "unfold", "TdBN", "BNTT", "TEBN", "make_norm", "SCTFA", "SCTFAttention",
           "VotingPool", "STCB", "stcb_rate", "stcb_temporal"]
