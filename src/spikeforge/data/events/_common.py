"""The event record every reader returns, and the checks every reader applies before returning it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import CorruptFileError

#: One event: pixel ``x``, ``y`` (int16), timestamp ``t`` in microseconds (int64), polarity ``p`` (0 = OFF, 1 = ON).
EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "u1")])


class Recording(NamedTuple):
    """What :func:`~spikeforge.data.read_events` returns: ``events, sensor_size = read_events(path)``."""

    events: np.ndarray
    sensor_size: tuple[int, int, int]  # (W, H, number of polarities)


def make_events(x, y, t, p) -> np.ndarray:
    """Pack four equal-length arrays into an :data:`EVENT_DTYPE` structured array (no checks)."""
    n = len(t)
    ev = np.empty(n, EVENT_DTYPE)
    ev["x"] = x
    ev["y"] = y
    ev["t"] = t
    ev["p"] = p
    return ev


def check_sensor_size(sensor_size) -> tuple[int, int, int]:
    try:
        w, h, c = (int(v) for v in sensor_size)
    except (TypeError, ValueError):
        raise ValueError(f"sensor_size must be (W, H, polarities), got {sensor_size!r}") from None
    if w < 1 or h < 1 or c < 1 or w > 32767 or h > 32767:
        raise ValueError(f"sensor_size must be positive (W, H, polarities) below 32768, got {sensor_size!r}")
    return (w, h, c)


def validate_events(events: np.ndarray, sensor_size, name, sort: bool = False) -> np.ndarray:
    """Check ``events`` against the sensor and time order; raise :class:`CorruptFileError` naming ``name``.

    Timestamps must never go backwards; with ``sort=True`` they are stably sorted instead (a loud, explicit
    choice for recordings known to be slightly out of order).
    """
    w, h, c = check_sensor_size(sensor_size)
    n = len(events)
    if n == 0:
        return events
    x, y, t, p = events["x"], events["y"], events["t"], events["p"]
    bad = (x < 0) | (x >= w) | (y < 0) | (y >= h)
    if bad.any():
        i = int(np.argmax(bad))
        raise CorruptFileError(
            name, f"event {i} at (x={int(x[i])}, y={int(y[i])}) lies outside the {w}x{h} sensor "
            f"({int(bad.sum())} of {n} events do)"
        )
    if c == 1:
        badp = p != 0
    else:
        badp = p >= c
    if badp.any():
        i = int(np.argmax(badp))
        raise CorruptFileError(name, f"event {i} has polarity {int(p[i])}, but the sensor has {c} polarity channel(s)")
    back = t[1:] < t[:-1]
    if back.any():
        if sort:
            return events[np.argsort(t, kind="stable")]
        i = int(np.argmax(back)) + 1
        raise CorruptFileError(
            name, f"timestamps go backwards at event {i} (t={int(t[i])} us after t={int(t[i - 1])} us; "
            f"{int(back.sum())} such steps); pass sort=True to sort them"
        )
    return events


def smallest_sensor(events: np.ndarray, candidates, name) -> tuple[int, int, int]:
    """The first of ``candidates`` (W, H, C) holding every event; error if none does."""
    if len(events) == 0:
        return tuple(candidates[0])
    mx, my = int(events["x"].max()), int(events["y"].max())
    for w, h, c in candidates:
        if mx < w and my < h:
            return (w, h, c)
    w, h, _ = candidates[-1]
    raise CorruptFileError(name, f"event coordinates up to (x={mx}, y={my}) exceed the largest known {w}x{h} sensor")
