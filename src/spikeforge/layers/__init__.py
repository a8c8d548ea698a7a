"""Layers for time-major sequences."""

from .attention import SCTFA, SCTFAttention
from .norm import BNTT, TEBN, TdBN, make_norm
from .pooling import MaxPool2d, VotingPool
from .stcb import STCB, stcb_expected_count, stcb_rate, stcb_temporal
from .timefold import TIME_INVARIANT, TimeFold, fold, repeats_one_step, unfold
from .ws import ScaledWSConv2d, ScaledWSLinear, scaled_ws

__all__ = ["TimeFold", "fold", "unfold", "repeats_one_step", "TIME_INVARIANT", "TdBN", "BNTT", "TEBN", "make_norm", "SCTFA", "SCTFAttention",
           "MaxPool2d", "VotingPool", "STCB", "stcb_expected_count", "stcb_rate", "stcb_temporal",
           "ScaledWSConv2d", "ScaledWSLinear", "scaled_ws"]

from .spike_mapping import STSU, ReSU, resu, straight_through, stsu  # noqa: E402

__all__ += ["ReSU", "STSU", "resu", "stsu", "straight_through"]
