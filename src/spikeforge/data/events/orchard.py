"""Orchard ``.bin`` (N-MNIST, N-Caltech101; Orchard et al. 2015).

Each event is 5 bytes: byte 0 = x, byte 1 = y, bit 7 of byte 2 = polarity (1 = ON), the remaining
23 bits (byte 2 bits 6..0, byte 3, byte 4, big-endian) = timestamp in microseconds. As in Orchard's own
reader, an event with ``y == 240`` is a timestamp-overflow marker: it is dropped and every later timestamp
is increased by 2**13 us. The file has no header, so the sensor size comes from the caller or is the
smallest known Orchard sensor holding every event (34x34 N-MNIST, 240x180 N-Caltech101, 304x240 ATIS).
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptFileError
from ._common import Recording, finish_events

SENSORS = ((34, 34, 2), (240, 180, 2), (304, 240, 2))
OVERFLOW_Y = 240
OVERFLOW_US = 1 << 13


def decode_orchard_bin(data, name="<bytes>", sensor_size=None, sort: bool = False) -> Recording:
    """Decode the bytes of an Orchard ``.bin`` file."""
    buf = np.frombuffer(data, np.uint8)
    n, rem = divmod(buf.size, 5)
    if rem:
        raise CorruptFileError(
            name, f"{buf.size} bytes is not a whole number of 5-byte events ({rem} byte(s) left over): "
            "the file is truncated or not an Orchard .bin"
        )
    a = buf.reshape(n, 5)
    # timestamp = low 23 bits of the big-endian bytes 2..4: gather them into little-endian uint32 words
    tb = np.empty((n, 4), np.uint8)
    tb[:, 0] = a[:, 4]
    tb[:, 1] = a[:, 3]
    tb[:, 2] = a[:, 2]
    tb[:, 3] = 0
    t = tb.view("<u4").reshape(n)
    t &= 0x7FFFFF
    x, y, p = a[:, 0], a[:, 1], a[:, 2] >> 7
    overflow = y == OVERFLOW_Y
    if overflow.any():
        t = t.astype(np.int64) + np.cumsum(overflow, dtype=np.int64) * OVERFLOW_US
        keep = ~overflow
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    if sensor_size is None:
        sensor_size = _smallest(x, y, name)
    ev = finish_events(x, y, t, p, sensor_size, name, sort=sort)
    return Recording(ev, tuple(sensor_size))


def _smallest(x, y, name):
    if len(x) == 0:
        return SENSORS[0]
    mx, my = int(x.max()), int(y.max())
    for w, h, c in SENSORS:
        if mx < w and my < h:
            return (w, h, c)
    w, h, _ = SENSORS[-1]
    raise CorruptFileError(name, f"event coordinates up to (x={mx}, y={my}) exceed the largest known {w}x{h} sensor")


def read_orchard_bin(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an Orchard ``.bin`` file (N-MNIST, N-Caltech101)."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_orchard_bin(data, str(path), sensor_size, sort)
