"""AEDAT 2.0 (jAER): ``#``-comment header lines, then big-endian (uint32 address, int32 timestamp in us) pairs.

Address formats (picked from the header's ``# AEChip:`` line, or ``address_format=``):

* ``dvs128`` (DVS128, CIFAR10-DVS as originally published): bit 0 = polarity type (0 = ON, as jAER),
  bits 1-7 = raw x, bits 8-14 = y; x is mirrored as jAER does (``x = 127 - raw_x``). Bit 15 marks a
  special/external event; such events are not pixel events and are dropped.
* ``davis`` (DAVIS240/346): bit 31 = 0 for DVS events (APS and IMU samples are dropped), bits 22-30 = y,
  bits 12-21 = x, bit 11 = polarity (1 = ON), bit 10 = external input (dropped). Raw fields, no mirroring.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import CorruptFileError
from ._common import Recording, check_sensor_size, finish_events

MAGIC = b"#!AER-DAT2.0"
# AEChip class name fragment -> (address format, sensor size)
CHIPS = (
    ("dvs128", ("dvs128", (128, 128, 2))),
    ("davis346", ("davis", (346, 260, 2))),
    ("davis240", ("davis", (240, 180, 2))),
    ("davis128", ("davis", (128, 128, 2))),
)
MAX_HEADER = 1 << 20


def split_header(data, name, magic_prefix=b"#") -> tuple[list[bytes], int]:
    """Header lines (``#...``, CRLF or LF terminated) and the offset of the first data byte."""
    lines = []
    pos = 0
    n = len(data)
    while pos < n and data[pos:pos + 1] == magic_prefix:
        end = data.find(b"\n", pos, pos + MAX_HEADER)
        if end < 0:
            raise CorruptFileError(name, "header line never ends (no newline): truncated or not AEDAT")
        lines.append(bytes(data[pos:end]).rstrip(b"\r"))
        pos = end + 1
        if pos > MAX_HEADER:
            raise CorruptFileError(name, f"header is longer than {MAX_HEADER} bytes")
    return lines, pos


def _chip(lines) -> tuple[str, tuple] | None:
    for line in lines:
        m = re.match(rb"#\s*AEChip:\s*(\S+)", line)
        if m:
            chip = m.group(1).decode("ascii", "replace").lower()
            for key, val in CHIPS:
                if key in chip:
                    return val
            return ("unknown:" + chip, None)
    return None


def decode_aedat2(data, name="<bytes>", sensor_size=None, address_format=None, sort: bool = False) -> Recording:
    """Decode the bytes of an AEDAT 2.0 file."""
    if not bytes(data[: len(MAGIC)]) == MAGIC:
        raise CorruptFileError(name, f"wrong magic number {bytes(data[:12])!r}: an AEDAT 2.0 file starts with {MAGIC!r}")
    lines, pos = split_header(data, name)
    chip = _chip(lines)
    size = None
    if address_format is None:
        if chip is not None and chip[1] is not None:
            address_format, size = chip
        elif chip is not None:
            raise CorruptFileError(name, f"unknown AEChip {chip[0][8:]!r}; pass address_format='dvs128' or 'davis'")
    body = len(data) - pos
    if body % 8:
        raise CorruptFileError(
            name, f"{body} data bytes after the header is not a whole number of 8-byte events: truncated file"
        )
    # one big-endian uint64 per event: high 32 bits = address, low 32 bits = timestamp
    raw = np.frombuffer(data, ">u8", offset=pos).astype(np.uint64) if body else np.zeros(0, np.uint64)
    addr = (raw >> 32).astype(np.uint32)
    t = raw.astype(np.uint32).view(np.int32)
    if address_format is None:
        # no AEChip line: the published DVS128 files (CIFAR10-DVS); refuse when addresses cannot be DVS128
        if addr.size and int(addr.max()) >= 1 << 16:
            raise CorruptFileError(
                name, "no '# AEChip:' header line and addresses do not fit DVS128; pass address_format='davis'"
            )
        address_format = "dvs128"
    if address_format == "dvs128":
        keep = (addr & 0xFFFF8000) == 0
        if not keep.all():
            addr, t = addr[keep], t[keep]
        a16 = addr.astype(np.uint16)  # DVS128 addresses fit 15 bits: work on 2-byte words
        x = 127 - ((a16 >> 1) & 0x7F)
        y = (a16 >> 8) & 0x7F
        p = 1 - (a16 & 1)
        size = size or (128, 128, 2)
    elif address_format == "davis":
        keep = (addr & 0x80000400) == 0
        if not keep.all():
            addr, t = addr[keep], t[keep]
        x = (addr >> 12) & 0x3FF
        y = (addr >> 22) & 0x1FF
        p = (addr >> 11) & 1
        if size is None and sensor_size is None:
            raise CorruptFileError(name, "DAVIS address format but no known AEChip: pass sensor_size")
    else:
        raise ValueError(f"address_format must be 'dvs128' or 'davis', got {address_format!r}")
    sensor = check_sensor_size(sensor_size if sensor_size is not None else size)
    ev = finish_events(x, y, t, p, sensor, name, sort=sort)
    return Recording(ev, sensor)


def read_aedat2(path, sensor_size=None, address_format=None, sort: bool = False) -> Recording:
    """Read an AEDAT 2.0 (jAER) file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_aedat2(data, str(path), sensor_size, address_format, sort)
