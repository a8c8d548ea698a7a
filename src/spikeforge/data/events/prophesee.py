"""Prophesee/Chronocam ``.dat`` "Event2d" (EVT 2.0 DAT; N-CARS, ATIS recordings).

``%``-comment header lines, then one byte event type (0 = Event2d) and one byte event size (8), then
8-byte little-endian events: uint32 timestamp (us), uint32 data with x = bits 0-13, y = bits 14-27,
polarity = bits 28-31 (0 or 1). The sensor is ``% Width``/``% Height`` when the header has them, else
the 304x240 ATIS.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import CorruptFileError
from ._common import Recording, check_sensor_size, finish_events, header_dimension
from .aedat2 import split_header

ATIS = (304, 240, 2)


def decode_prophesee_dat(data, name="<bytes>", sensor_size=None, sort: bool = False) -> Recording:
    """Decode the bytes of a Prophesee ``.dat`` Event2d file."""
    if bytes(data[:1]) != b"%":
        raise CorruptFileError(name, f"wrong magic number {bytes(data[:8])!r}: a Prophesee .dat starts with a '%' header")
    lines, pos = split_header(data, name, magic_prefix=b"%")
    text = b"\n".join(lines)
    width = re.search(rb"^%[ \t]*Width[ \t]+(.*)$", text, re.M)
    height = re.search(rb"^%[ \t]*Height[ \t]+(.*)$", text, re.M)
    if sensor_size is None:
        if width and height:
            sensor_size = (header_dimension(name, "'% Width'", width.group(1)),
                           header_dimension(name, "'% Height'", height.group(1)), 2)
        else:
            sensor_size = ATIS
    sensor = check_sensor_size(sensor_size)
    if len(data) - pos < 2:
        raise CorruptFileError(name, "truncated: no event type/size bytes after the header")
    etype, esize = data[pos], data[pos + 1]
    if etype != 0 or esize != 8:
        raise CorruptFileError(name, f"event type {etype} / size {esize} is not Event2d (type 0, 8 bytes)")
    pos += 2
    body = len(data) - pos
    if body % 8:
        raise CorruptFileError(name, f"{body} event bytes is not a whole number of 8-byte events: truncated file")
    raw = np.frombuffer(data, "<u4", offset=pos) if body else np.zeros(0, "<u4")
    d = raw[1::2]
    p = d >> 28
    if (p > 1).any():
        raise CorruptFileError(name, f"polarity field {int(p.max())} is not 0 or 1")
    ev = finish_events(d & 0x3FFF, (d >> 14) & 0x3FFF, raw[0::2], p, sensor, name, sort=sort)
    return Recording(ev, sensor)


def read_prophesee_dat(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read a Prophesee ``.dat`` Event2d file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_prophesee_dat(data, str(path), sensor_size, sort)
