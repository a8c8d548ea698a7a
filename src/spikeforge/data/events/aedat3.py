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
from ._common import Recording, check_sensor_size, finish_events
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
    words, overflows, counts = [], [], []
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
            words.append(memoryview(data)[pos:pos + 8 * num])
            overflows.append(tsovf)
            counts.append(num)
        pos += length
    # one uint64 per event: low 32 bits = data word, high 32 bits = timestamp (contiguous, vectorised below)
    w = np.frombuffer(b"".join(words), "<u8")
    d = w.astype(np.uint32)
    t = (w >> 32).astype(np.uint32).view(np.int32)
    if len(t) and int(t.min()) < 0:
        raise CorruptFileError(name, "negative 31-bit timestamp in a polarity event")
    if any(overflows):
        t = t.astype(np.int64) | (np.repeat(np.asarray(overflows, np.int64), counts) << 31)
    if len(d) and int((d & 1).min()) == 0:
        ok = (d & 1) == 1
        d, t = d[ok], t[ok]
    ev = finish_events((d >> 17).astype(np.uint16), ((d >> 2) & 0x7FFF).astype(np.uint16), t,
                       ((d >> 1) & 1).astype(np.uint8), size, name, sort=sort)
    return Recording(ev, size)


def read_aedat31(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an AEDAT 3.1 file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_aedat31(data, str(path), sensor_size, sort)
