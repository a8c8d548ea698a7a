"""Argument validation shared by every neuron function: one clear ValueError naming the argument."""

from __future__ import annotations

import math
import numbers

import torch


def check_seq(x_seq, name: str = "x_seq") -> torch.Tensor:
    if not torch.is_tensor(x_seq):
        raise ValueError(f"{name}: expected a torch.Tensor of layout [T, B, ...], got {type(x_seq).__name__}")
    if x_seq.dim() < 2:
        raise ValueError(
            f"{name}: expected a time-major tensor [T, B, ...] (at least 2 dims), got shape {tuple(x_seq.shape)}; "
            "add a time axis, e.g. x.unsqueeze(0) for one step or an encoder for static input"
        )
    if not x_seq.is_floating_point():
        raise ValueError(f"{name}: dtype {x_seq.dtype} is not floating point; allowed: float16, bfloat16, "
                         "float32, float64 (convert with .float())")
    if x_seq.shape[0] < 1:
        raise ValueError(f"{name}: the time axis T must be >= 1, got shape {tuple(x_seq.shape)}")
    return x_seq


def check_step(x_t, name: str = "x_t") -> torch.Tensor:
    if not torch.is_tensor(x_t) or not x_t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor [B, ...], got "
                         f"{getattr(x_t, 'dtype', type(x_t).__name__)}")
    if x_t.dim() < 1:
        raise ValueError(f"{name}: expected [B, ...] (at least 1 dim), got a scalar")
    return x_t


def _values(p):
    if torch.is_tensor(p):
        return p.detach()
    return torch.tensor(float(p))


def _within(f: float, low, low_inclusive, high, high_inclusive) -> bool:
    ok = math.isfinite(f)
    if ok and low is not None:
        ok = f >= low if low_inclusive else f > low
    if ok and high is not None:
        ok = f <= high if high_inclusive else f < high
    return ok


def check_number(name: str, value, *, low=None, low_inclusive=True, high=None, high_inclusive=True,
                 allow_tensor=True):
    """Validate a scalar (or, if allowed, every element of a tensor) against bounds."""
    if type(value) is float or type(value) is int:  # the common case first (bool is not int here)
        if _within(float(value), low, low_inclusive, high, high_inclusive):
            return value
    elif torch.is_tensor(value):
        if not allow_tensor:
            raise ValueError(f"{name}: expected a number, got a tensor")
        if not value.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")
        if value.numel() == 0 or torch.compiler.is_compiling():  # values are data: checked in eager runs only
            return value
        # one reduction for the common case (a NaN makes both NaN, an inf one of them: not within)
        v_min, v_max = torch.aminmax(value.detach())
        if _within(float(v_min), low, low_inclusive, high, high_inclusive) and \
                _within(float(v_max), low, low_inclusive, high, high_inclusive):
            return value
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    elif _within(float(value), low, low_inclusive, high, high_inclusive):  # no tensor round trip
        return value
    v = _values(value)
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    bad = None
    if low is not None:
        bad = (v < low) if low_inclusive else (v <= low)
    if high is not None:
        b2 = (v > high) if high_inclusive else (v >= high)
        bad = b2 if bad is None else (bad | b2)
    if bad is not None and bool(bad.any()):
        lo = "" if low is None else (f"{'>=' if low_inclusive else '>'} {low}")
        hi = "" if high is None else (f"{'<=' if high_inclusive else '<'} {high}")
        rng = " and ".join(x for x in (lo, hi) if x)
        shown = value if not torch.is_tensor(value) else f"tensor with min {v.min().item():g}, max {v.max().item():g}"
        raise ValueError(f"{name}: got {shown}; allowed: {rng}")
    return value


def check_v_reset(v_reset):
    if v_reset is None:
        return None
    check_number("v_reset", v_reset, allow_tensor=False)
    return float(v_reset)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))
