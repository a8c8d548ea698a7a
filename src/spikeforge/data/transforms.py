"""Event transforms: spatial downsampling, denoising, and random crop / flip / roll / time jitter for
augmentation. Each takes an :data:`~spikeforge.data.events.EVENT_DTYPE` array (crop, flip and roll also a
frames tensor ``[T, P, H, W]``) and returns the same kind.

Every transform has ``random`` (False for deterministic ones, whose output may be cached on disk) and
``params()`` (a JSON-able description used as the frame-cache key). Random transforms draw from
``generator`` when given (a ``torch.Generator``), else from torch's global RNG, so ``torch.manual_seed``
and DataLoader worker seeding make them reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from .events._common import check_sensor_size


def _randint(low: int, high: int, generator=None) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _coin(p: float, generator=None) -> bool:
    return p > 0 and float(torch.rand((), generator=generator)) < p


def _is_frames(x) -> bool:
    return isinstance(x, torch.Tensor)


def _check_events(ev):
    if not (isinstance(ev, np.ndarray) and ev.dtype.names and {"x", "y", "t", "p"} <= set(ev.dtype.names)):
        raise TypeError(f"expected an events structured array with fields x, y, t, p, got {type(ev).__name__}")


def accepts_generator(fn) -> bool:
    """Whether ``fn(x, generator=...)`` is allowed."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _call(t, x, generator):
    if generator is not None and accepts_generator(t):
        return t(x, generator=generator)
    return t(x)


class Compose:
    """Apply transforms in order. ``split_cacheable()`` separates the leading deterministic ones.

    Example:
        >>> from spikeforge.data import ToFrame
        >>> c = Compose([Downsample((34, 34, 2), factor=2), ToFrame((17, 17, 2), n_time_bins=4), RandomFlip((17, 17, 2))])
        >>> [type(t).__name__ for t in c.split_cacheable()[0].transforms]
        ['Downsample', 'ToFrame']
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)

    @property
    def random(self) -> bool:
        return any(getattr(t, "random", True) for t in self.transforms)

    def __call__(self, x, generator=None):
        for t in self.transforms:
            x = _call(t, x, generator)
        return x

    def split_cacheable(self) -> tuple["Compose", "Compose"]:
        """(longest deterministic prefix, the rest)."""
        k = 0
        while k < len(self.transforms) and getattr(self.transforms[k], "random", True) is False:
            k += 1
        return Compose(self.transforms[:k]), Compose(self.transforms[k:])

    def params(self) -> dict:
        return {"name": "Compose", "transforms": [transform_params(t) for t in self.transforms]}

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def transform_params(t) -> dict:
    """``t.params()``; a transform without one cannot key a cache, which is an error, not a guess."""
    fn = getattr(t, "params", None)
    if fn is None:
        raise ValueError(f"transform {t!r} has no params(); it cannot be part of a cached (deterministic) prefix")
    return fn()


class Downsample:
    """Spatial downsampling: ``x -> x // fx``, ``y -> y // fy``; the sensor becomes ceil(W/fx) x ceil(H/fy).

    Example:
        >>> from spikeforge.data.events import make_events
        >>> d = Downsample((34, 34, 2), factor=2)
        >>> d.out_sensor_size, d(make_events([33], [5], [0], [1]))[["x", "y"]].tolist()
        ((17, 17, 2), [(16, 2)])
    """

    random = False

    def __init__(self, sensor_size, factor=2):
        self.sensor_size = check_sensor_size(sensor_size)
        fx, fy = (factor, factor) if np.isscalar(factor) else factor
        if int(fx) != fx or int(fy) != fy or fx < 1 or fy < 1:
            raise ValueError(f"factor must be a positive integer or (fx, fy), got {factor!r}")
        self.fx, self.fy = int(fx), int(fy)
        W, H, P = self.sensor_size
        self.out_sensor_size = (-(-W // self.fx), -(-H // self.fy), P)

    def __call__(self, events, generator=None):
        _check_events(events)
        out = events.copy()
        out["x"] //= self.fx
        out["y"] //= self.fy
        return out

    def params(self):
        return {"name": "Downsample", "sensor_size": list(self.sensor_size), "factor": [self.fx, self.fy]}

    def __repr__(self):
        return f"Downsample(sensor_size={self.sensor_size}, factor=({self.fx}, {self.fy}))"


_baf_kernel = None


def _background_activity_keep(x, y, t, W, H, filter_time):
    global _baf_kernel
    if _baf_kernel is None:
        import numba

        @numba.njit(cache=False, nogil=True)
        def kernel(x, y, t, W, H, filter_time):
            never = -(1 << 62)
            last = np.full((H + 2, W + 2), never, np.int64)
            keep = np.zeros(x.shape[0], np.bool_)
            for i in range(x.shape[0]):
                xi = x[i] + 1
                yi = y[i] + 1
                ti = t[i]
                ok = False
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        if (dx != 0 or dy != 0) and ti - last[yi + dy, xi + dx] <= filter_time:
                            ok = True
                keep[i] = ok
                last[yi, xi] = ti
            return keep

        _baf_kernel = kernel
    return _baf_kernel(x, y, t, W, H, filter_time)


class Denoise:
    """Background-activity filter (Delbruck 2008): keep an event only if one of its 8 neighbouring pixels
    had an event at most ``filter_time`` us earlier. Every event (kept or not) updates its own pixel.

    Example:
        >>> from spikeforge.data.events import make_events
        >>> ev = make_events([5, 6, 20], [5, 5, 20], [0, 100, 200], [1, 1, 1])
        >>> Denoise((34, 34, 2), filter_time=1000)(ev)["x"].tolist()   # the lone event at (20, 20) goes
        [6]
    """

    random = False

    def __init__(self, sensor_size, filter_time=10_000):
        self.sensor_size = check_sensor_size(sensor_size)
        if not filter_time > 0:
            raise ValueError(f"filter_time must be positive (microseconds), got {filter_time!r}")
        self.filter_time = int(filter_time)

    def __call__(self, events, generator=None):
        _check_events(events)
        W, H, _ = self.sensor_size
        x, y = events["x"], events["y"]
        if len(events) and (x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H):
            raise ValueError(f"events outside the {W}x{H} sensor given to Denoise")
        keep = _background_activity_keep(np.ascontiguousarray(x), np.ascontiguousarray(y),
                                         np.ascontiguousarray(events["t"]), W, H, self.filter_time)
        return events[keep]

    def params(self):
        return {"name": "Denoise", "sensor_size": list(self.sensor_size), "filter_time": self.filter_time}

    def __repr__(self):
        return f"Denoise(sensor_size={self.sensor_size}, filter_time={self.filter_time})"


class RandomCrop:
    """Random ``size`` = (w, h) window of the sensor; events outside it are dropped and the rest shifted.
    Works on events or frames ``[..., H, W]``. The output sensor is (w, h, P)."""

    random = True

    def __init__(self, sensor_size, size):
        self.sensor_size = check_sensor_size(sensor_size)
        w, h = (size, size) if np.isscalar(size) else size
        W, H, P = self.sensor_size
        if not (1 <= w <= W and 1 <= h <= H):
            raise ValueError(f"crop size {(w, h)} must fit the {W}x{H} sensor")
        self.w, self.h = int(w), int(h)
        self.out_sensor_size = (self.w, self.h, P)

    def __call__(self, x, generator=None):
        W, H, _ = self.sensor_size
        ox = _randint(0, W - self.w, generator)
        oy = _randint(0, H - self.h, generator)
        if _is_frames(x):
            return x[..., oy:oy + self.h, ox:ox + self.w]
        _check_events(x)
        keep = (x["x"] >= ox) & (x["x"] < ox + self.w) & (x["y"] >= oy) & (x["y"] < oy + self.h)
        out = x[keep]
        out["x"] -= ox
        out["y"] -= oy
        return out

    def params(self):
        return {"name": "RandomCrop", "sensor_size": list(self.sensor_size), "size": [self.w, self.h]}

    def __repr__(self):
        return f"RandomCrop(sensor_size={self.sensor_size}, size=({self.w}, {self.h}))"


class RandomFlip:
    """Flip left-right with probability ``p_x``, up-down with ``p_y``, swap polarities with ``p_polarity``.
    Works on events or frames ``[T, P, H, W]``."""

    random = True

    def __init__(self, sensor_size, p_x=0.5, p_y=0.0, p_polarity=0.0):
        self.sensor_size = check_sensor_size(sensor_size)
        for v in (p_x, p_y, p_polarity):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"flip probabilities must be in [0, 1], got {v!r}")
        self.p_x, self.p_y, self.p_polarity = float(p_x), float(p_y), float(p_polarity)

    def __call__(self, x, generator=None):
        fx, fy, fp = _coin(self.p_x, generator), _coin(self.p_y, generator), _coin(self.p_polarity, generator)
        W, H, P = self.sensor_size
        if _is_frames(x):
            dims = [d for d, f in ((-1, fx), (-2, fy), (-3, fp)) if f]
            return x.flip(dims) if dims else x
        _check_events(x)
        if not (fx or fy or fp):
            return x
        out = x.copy()
        if fx:
            out["x"] = W - 1 - out["x"]
        if fy:
            out["y"] = H - 1 - out["y"]
        if fp and P == 2:
            out["p"] = 1 - out["p"]
        return out

    def params(self):
        return {"name": "RandomFlip", "sensor_size": list(self.sensor_size), "p_x": self.p_x, "p_y": self.p_y,
                "p_polarity": self.p_polarity}

    def __repr__(self):
        return f"RandomFlip(sensor_size={self.sensor_size}, p_x={self.p_x}, p_y={self.p_y}, p_polarity={self.p_polarity})"


class RandomRoll:
    """Shift by a random (dx, dy) in [-max_shift, max_shift]^2 with wrap-around (NDA's roll).
    Works on events or frames ``[..., H, W]``."""

    random = True

    def __init__(self, sensor_size, max_shift=3):
        self.sensor_size = check_sensor_size(sensor_size)
        mx, my = (max_shift, max_shift) if np.isscalar(max_shift) else max_shift
        if mx < 0 or my < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift!r}")
        self.mx, self.my = int(mx), int(my)

    def __call__(self, x, generator=None):
        dx = _randint(-self.mx, self.mx, generator)
        dy = _randint(-self.my, self.my, generator)
        W, H, _ = self.sensor_size
        if _is_frames(x):
            return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        _check_events(x)
        out = x.copy()
        out["x"] = (out["x"].astype(np.int64) + dx) % W
        out["y"] = (out["y"].astype(np.int64) + dy) % H
        return out

    def params(self):
        return {"name": "RandomRoll", "sensor_size": list(self.sensor_size), "max_shift": [self.mx, self.my]}

    def __repr__(self):
        return f"RandomRoll(sensor_size={self.sensor_size}, max_shift=({self.mx}, {self.my}))"


class TimeJitter:
    """Add Gaussian noise of standard deviation ``std`` us to every timestamp (rounded), then re-sort
    stably; events pushed before 0 are dropped when ``drop_negative``. Events only."""

    random = True

    def __init__(self, std=100.0, drop_negative=True):
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std!r}")
        self.std, self.drop_negative = float(std), bool(drop_negative)

    def __call__(self, events, generator=None):
        if _is_frames(events):
            raise TypeError("TimeJitter works on events, not frames: put it before ToFrame")
        _check_events(events)
        noise = torch.randn(len(events), generator=generator, dtype=torch.float64).numpy() * self.std
        out = events.copy()
        out["t"] += np.rint(noise).astype(np.int64)
        if self.drop_negative:
            out = out[out["t"] >= 0]
        return out[np.argsort(out["t"], kind="stable")]

    def params(self):
        return {"name": "TimeJitter", "std": self.std, "drop_negative": self.drop_negative}

    def __repr__(self):
        return f"TimeJitter(std={self.std}, drop_negative={self.drop_negative})"
