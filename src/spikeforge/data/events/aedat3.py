"""AEDAT 3.1 (cAER; DVS128 Gesture): ``#`` header ending in ``#!END-HEADER``, then event packets.

Each packet has a 28-byte little-endian header (int16 eventType, int16 eventSource, int32 eventSize,
int32 eventTSOffset, int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid)
followed by ``eventCapacity * eventSize`` bytes. Polarity events (type 1, 8 bytes): uint32 data with
bit 0 = valid, bit 1 = polarity (1 = ON), bits 2-16 = y, bits 17-31 = x; then int32 timestamp (us), extended
to 64 bits with ``eventTSOverflow << 31``. Packets of other types (frames, IMU, special) are skipped;
invalid events are dropped.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from ..errors import CorruptFileError
from ._common import Recording, check_sensor_size, make_events, validate_events
from .aedat2 import split_header

MAGIC = b"#!AER-DAT3.1"
END_HEADER = b"#!END-HEADER"
PACKET_HEADER = struct.Struct("<hhiiiiii")
POLARITY_EVENT = 1
SOURCES = (("dvs128", (128, 128, 2)), ("davis240", (240, 180, 2)), ("davis346", (346, 260, 2)),
           ("dvxplorer", (640, 480, 2)))


def _sensor_from_header(lines):
    for line in lines:
        m = re.match(rb"#Source\s+\d+:\s*(\S+)", line)
        if m:
            src = m.group(1).decode("ascii", "replace").lower()
            for key, size in SOURCES:
                if key in src:
                    return size
    return None


def decode_aedat31(data, name="<bytes>", sensor_size=None, sort: bool = False) -> Recording:
    """Decode the bytes of an AEDAT 3.1 file (polarity events only)."""
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise CorruptFileError(name, f"wrong magic number {bytes(data[:12])!r}: an AEDAT 3.1 file starts with {MAGIC!r}")
    lines, pos = split_header(data, name)
    if not lines or lines[-1].strip() != END_HEADER:
        raise CorruptFileError(name, f"header does not end with {END_HEADER!r}: truncated or corrupted header")
    size = sensor_size if sensor_size is not None else _sensor_from_header(lines)
    if size is None:
        raise CorruptFileError(name, "no known '#Source' camera in the header: pass sensor_size")
    size = check_sensor_size(size)
    n = len(data)
    words, overflows = [], []
    while pos < n:
        if n - pos < PACKET_HEADER.size:
            raise CorruptFileError(name, f"truncated packet header at byte {pos} ({n - pos} of 28 bytes)")
        etype, _src, esize, tsoff, tsovf, cap, num, valid = PACKET_HEADER.unpack_from(data, pos)
        where = f"packet at byte {pos}"
        pos += PACKET_HEADER.size
        if esize <= 0 or cap < 0 or num < 0 or valid < 0 or num > cap or valid > num or tsovf < 0:
            raise CorruptFileError(
                name, f"{where}: bad packet header (eventSize={esize}, capacity={cap}, number={num}, valid={valid}, "
                f"tsOverflow={tsovf})"
            )
        length = cap * esize
        if length > n - pos:
            raise CorruptFileError(name, f"{where}: needs {length} data bytes but only {n - pos} remain: truncated file")
        if etype == POLARITY_EVENT and num:
            if esize != 8 or tsoff != 4:
                raise CorruptFileError(name, f"{where}: polarity events must be 8 bytes with timestamp at 4, "
                                       f"got eventSize={esize}, eventTSOffset={tsoff}")
            words.append(np.frombuffer(data, "<u4", count=2 * num, offset=pos))
            overflows.append(np.full(num, tsovf, np.int64))
        pos += length
    if words:
        w = np.concatenate(words)
        ovf = np.concatenate(overflows)
    else:
        w = np.zeros(0, "<u4")
        ovf = np.zeros(0, np.int64)
    d = w[0::2]
    t = w[1::2].view("<i4").astype(np.int64)
    if (t < 0).any():
        raise CorruptFileError(name, "negative 31-bit timestamp in a polarity event")
    t |= ovf << 31
    ok = (d & 1) == 1
    if not ok.all():
        d, t = d[ok], t[ok]
    ev = make_events((d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, t, (d >> 1) & 1)
    ev = validate_events(ev, size, name, sort=sort)
    return Recording(ev, size)


def read_aedat31(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an AEDAT 3.1 file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_aedat31(data, str(path), sensor_size, sort)
