"""Events -> frames: per-pixel event counts in time bins, one channel per polarity.

For events sorted by time, ``frames[b, c, y, x]`` counts the events at pixel (x, y) with polarity channel
``c`` (``p``, or 0 for a single-channel sensor) that fall in time bin ``b``:

* ``n_time_bins=T`` (``split_by="time"``): T equal bins over [t_0, t_last]; ``b = (t - t_0) * T // (t_last - t_0 + 1)``.
* ``time_window=dt``: ``b = (t - t_0) // dt``; T = bins needed, or ``n_time_bins`` (later events dropped).
* ``split_by="number"``: T bins of ``N // T`` consecutive events, the remainder in the last bin
  (SpikingJelly's ``split_by='number'``).

``t_0`` is the first event's timestamp unless ``t_start`` is given (earlier events are then dropped).
"""

from __future__ import annotations

import numpy as np
import torch

from .events._common import check_sensor_size

SPLITS = ("time", "number")
MAX_FRAME_ELEMENTS = 1 << 31


def _check_args(n_time_bins, time_window, split_by):
    if split_by not in SPLITS:
        raise ValueError(f"split_by must be one of {SPLITS}, got {split_by!r}")
    if n_time_bins is None and time_window is None:
        raise ValueError("give n_time_bins (fixed number of frames) or time_window (fixed frame length in us)")
    if n_time_bins is not None and (int(n_time_bins) != n_time_bins or n_time_bins < 1):
        raise ValueError(f"n_time_bins must be a positive integer, got {n_time_bins!r}")
    if time_window is not None:
        if split_by == "number":
            raise ValueError("split_by='number' takes n_time_bins, not time_window")
        if not time_window > 0:
            raise ValueError(f"time_window must be positive (microseconds), got {time_window!r}")


def time_bins(events, n_time_bins=None, time_window=None, split_by="time", t_start=None):
    """(bin index int64 [N'], keep mask or None, T) for ``events``; see the module docstring."""
    _check_args(n_time_bins, time_window, split_by)
    n = len(events)
    if split_by == "number":
        T = int(n_time_bins)
        di = n // T
        if di == 0:
            return np.full(n, T - 1, np.int64), None, T
        b = np.arange(n, dtype=np.int64)
        b //= di
        np.minimum(b, T - 1, out=b)
        return b, None, T
    t = events["t"]
    if n == 0:
        return np.zeros(0, np.int64), None, int(n_time_bins) if n_time_bins else 1
    t0 = int(t[0]) if t_start is None else int(t_start)
    keep = None
    if time_window is not None:
        b = t - t0
        b //= int(time_window)
        T = int(n_time_bins) if n_time_bins is not None else max(int(b[-1]) + 1, 1)
        if b[0] < 0 or b[-1] >= T:
            keep = (b >= 0) & (b < T)
            b = b[keep]
    else:
        T = int(n_time_bins)
        if t_start is not None and t[0] < t0:
            keep = t >= t0
            t = t[keep]
            if len(t) == 0:
                return np.zeros(0, np.int64), keep, T
        dur = int(t[-1]) - t0 + 1
        b = t - t0
        b *= T
        b //= dur
    if len(b) and (b.min() < 0 or b.max() >= T):
        raise ValueError("events are not sorted by time (sort them, e.g. read_events(..., sort=True))")
    return b, keep, T


def events_to_frames(events, sensor_size, n_time_bins=None, time_window=None, split_by="time", t_start=None,
                     dtype=np.float32) -> np.ndarray:
    """Count events into frames ``[T, P, H, W]`` (see the module docstring for the binning).

    Example:
        >>> from spikeforge.data.events import make_events
        >>> ev = make_events([0, 1, 1], [0, 0, 1], [0, 50, 99], [1, 0, 1])
        >>> f = events_to_frames(ev, (2, 2, 2), n_time_bins=2)
        >>> f.shape, float(f[0, 1, 0, 0]), float(f[1, 0, 0, 1]), float(f[1, 1, 1, 1]), float(f.sum())
        ((2, 2, 2, 2), 1.0, 1.0, 1.0, 3.0)
    """
    W, H, P = check_sensor_size(sensor_size)
    b, keep, T = time_bins(events, n_time_bins, time_window, split_by, t_start)
    if T * P * H * W > MAX_FRAME_ELEMENTS:
        raise ValueError(f"{T} frames of {P}x{H}x{W} is {T * P * H * W} values (more than {MAX_FRAME_ELEMENTS}); "
                         "use a larger time_window or set n_time_bins")
    ev = events if keep is None else events[keep]
    if len(ev) == 0:
        return np.zeros((T, P, H, W), dtype)
    x, y = ev["x"], ev["y"]
    if int(x.min()) < 0 or int(x.max()) >= W or int(y.min()) < 0 or int(y.max()) >= H:
        raise ValueError(f"events outside the {W}x{H} sensor given to events_to_frames")
    idx = b  # reuse the bin array: idx = ((b * P + c) * H + y) * W + x
    if P > 1:
        p = ev["p"]
        if int(p.max()) >= P:
            raise ValueError(f"polarity {int(p.max())} does not fit {P} channels")
        idx *= P
        idx += p
    idx *= H
    idx += y
    idx *= W
    idx += x
    counts = np.bincount(idx, minlength=T * P * H * W)
    return counts.astype(dtype, copy=False).reshape(T, P, H, W)


class ToFrame:
    """Transform: events -> float32 frames tensor ``[T, P, H, W]`` (see :func:`events_to_frames`).

    Example:
        >>> from spikeforge.data.events import make_events
        >>> ToFrame((34, 34, 2), n_time_bins=10)(make_events([1], [2], [0], [1])).shape
        torch.Size([10, 2, 34, 34])
    """

    random = False

    def __init__(self, sensor_size, n_time_bins=None, time_window=None, split_by="time"):
        self.sensor_size = check_sensor_size(sensor_size)
        _check_args(n_time_bins, time_window, split_by)
        self.n_time_bins, self.time_window, self.split_by = n_time_bins, time_window, split_by

    def __call__(self, events, generator=None):
        return torch.from_numpy(events_to_frames(events, self.sensor_size, self.n_time_bins, self.time_window,
                                                 self.split_by))

    def params(self) -> dict:
        return {"name": "ToFrame", "sensor_size": list(self.sensor_size), "n_time_bins": self.n_time_bins,
                "time_window": self.time_window, "split_by": self.split_by}

    def __repr__(self):
        return (f"ToFrame(sensor_size={self.sensor_size}, n_time_bins={self.n_time_bins}, "
                f"time_window={self.time_window}, split_by={self.split_by!r})")
