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
from ._common import Recording, make_events, smallest_sensor, validate_events

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
    y = a[:, 1]
    b2 = a[:, 2]
    t = (b2 & 0x7F).astype(np.int64)
    t <<= 16
    t |= a[:, 3].astype(np.int64) << 8
    t |= a[:, 4]
    overflow = y == OVERFLOW_Y
    if overflow.any():
        t += np.cumsum(overflow, dtype=np.int64) * OVERFLOW_US
        keep = ~overflow
        ev = make_events(a[keep, 0], y[keep], t[keep], b2[keep] >> 7)
    else:
        ev = make_events(a[:, 0], y, t, b2 >> 7)
    if sensor_size is None:
        sensor_size = smallest_sensor(ev, SENSORS, name)
    ev = validate_events(ev, sensor_size, name, sort=sort)
    return Recording(ev, tuple(sensor_size))


def read_orchard_bin(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an Orchard ``.bin`` file (N-MNIST, N-Caltech101)."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_orchard_bin(data, str(path), sensor_size, sort)
