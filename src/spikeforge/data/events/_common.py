"""The event record every reader returns, and the checks every reader applies before returning it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import CorruptFileError

#: One event: timestamp ``t`` in microseconds (int64), pixel ``x``, ``y`` (int16), polarity ``p`` (0 = OFF, 1 = ON).
#: 16 bytes, laid out exactly as AEDAT 4 stores events (t @ 0, x @ 8, y @ 10, p @ 12, 3 padding bytes), so
#: AEDAT 4 packets decode with one copy and every field is aligned. Use the field names, not positions.
EVENT_DTYPE = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "u1"],
                        "offsets": [0, 8, 10, 12], "itemsize": 16})


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


SENSOR_MAX = 32767  # x and y are int16


def header_dimension(name, field: str, text) -> int:
    """A sensor width/height read from a file's header: a whole number in 1..:data:`SENSOR_MAX`, else a
    :class:`CorruptFileError` naming the file and the field."""
    raw = text.decode("ascii", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    v = raw.strip()
    if not (v.isascii() and v.isdigit()) or not 1 <= int(v) <= SENSOR_MAX:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise CorruptFileError(name, f"header field {field} is {shown!r}; allowed: a whole number in 1..{SENSOR_MAX}")
    return int(v)


def check_sensor_size(sensor_size) -> tuple[int, int, int]:
    try:
        w, h, c = (int(v) for v in sensor_size)
    except (TypeError, ValueError):
        raise ValueError(f"sensor_size must be (W, H, polarities), got {sensor_size!r}") from None
    if w < 1 or h < 1 or c < 1 or w > SENSOR_MAX or h > SENSOR_MAX:
        raise ValueError(f"sensor_size must be positive (W, H, polarities) below 32768, got {sensor_size!r}")
    return (w, h, c)


def _first(mask) -> int:
    return int(np.argmax(mask))


def check_components(x, y, t, p, sensor_size, name, sort: bool = False):
    """Check event components against the sensor and time order, with one reduction per check on the fast
    path (masks are only built to describe a failure). Returns a stable sort order when ``sort=True`` and
    timestamps go backwards, else None; raises :class:`CorruptFileError` naming ``name``.
    """
    w, h, c = check_sensor_size(sensor_size)
    n = len(t)
    if n == 0:
        return None
    signed = x.dtype.kind == "i" or y.dtype.kind == "i"
    if int(x.max()) >= w or int(y.max()) >= h or (signed and (int(x.min()) < 0 or int(y.min()) < 0)):
        bad = (x < 0) | (x >= w) | (y < 0) | (y >= h)
        i = _first(bad)
        raise CorruptFileError(
            name, f"event {i} at (x={int(x[i])}, y={int(y[i])}) lies outside the {w}x{h} sensor "
            f"({int(bad.sum())} of {n} events do)"
        )
    if not np.isscalar(p) and len(p):
        pmax = int(p.max())
        if pmax >= max(c, 1) or (c == 1 and pmax != 0) or (p.dtype.kind == "i" and int(p.min()) < 0):
            i = _first((p < 0) | (p >= c))
            raise CorruptFileError(name, f"event {i} has polarity {int(p[i])}, but the sensor has {c} polarity channel(s)")
    back = t[1:] < t[:-1]
    if back.any():
        if sort:
            return np.argsort(t, kind="stable")
        i = _first(back) + 1
        raise CorruptFileError(
            name, f"timestamps go backwards at event {i} (t={int(t[i])} us after t={int(t[i - 1])} us; "
            f"{int(back.sum())} such steps); pass sort=True to sort them"
        )
    return None


def finish_events(x, y, t, p, sensor_size, name, sort: bool = False) -> np.ndarray:
    """Check the components, then pack them into an :data:`EVENT_DTYPE` array (sorted if asked)."""
    order = check_components(x, y, t, p, sensor_size, name, sort)
    ev = make_events(x, y, t, p)
    return ev if order is None else ev[order]


def validate_events(events: np.ndarray, sensor_size, name, sort: bool = False) -> np.ndarray:
    """Check ``events`` against the sensor and time order; raise :class:`CorruptFileError` naming ``name``.

    Timestamps must never go backwards; with ``sort=True`` they are stably sorted instead (a loud, explicit
    choice for recordings known to be slightly out of order).
    """
    order = check_components(events["x"], events["y"], events["t"], events["p"], sensor_size, name, sort)
    return events if order is None else events[order]
