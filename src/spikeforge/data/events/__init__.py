"""Event-file readers, one per format, behind :func:`read_events` (format detected from the file).

Every reader returns ``Recording(events, sensor_size)``: a structured array of :data:`EVENT_DTYPE`
(``x``, ``y``, ``t`` in microseconds as int64, ``p`` in {0, 1}) checked against the sensor and time order,
and the sensor size ``(W, H, polarities)``. Bad files raise :class:`~spikeforge.data.errors.CorruptFileError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CorruptFileError, UnknownFormatError
from ._common import EVENT_DTYPE, Recording, make_events, validate_events
from .aedat2 import decode_aedat2, read_aedat2
from .aedat3 import decode_aedat31, read_aedat31
from .aedat4 import decode_aedat4, read_aedat4
from .orchard import decode_orchard_bin, read_orchard_bin
from .prophesee import decode_prophesee_dat, read_prophesee_dat

FORMATS = ("aedat2", "aedat3.1", "aedat4", "orchard_bin", "prophesee_dat")

_MAGICS = (
    (b"#!AER-DAT2.0", "aedat2"),
    (b"#!AER-DAT3.1", "aedat3.1"),
    (b"#!AER-DAT4.0", "aedat4"),
)
_HDF5 = b"\x89HDF\r\n\x1a\n"


def detect_format(path, head: bytes | None = None) -> str:
    """The format of an event file, from its magic number (or, for header-less ``.bin``, its extension)."""
    path = Path(path)
    if head is None:
        with open(path, "rb") as f:
            head = f.read(64)
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    if head.startswith(b"#!AER-DAT"):
        raise UnknownFormatError(path, f"unsupported AEDAT version {head[:14]!r} (supported: 2.0, 3.1, 4.0)")
    if head.startswith(_HDF5):
        raise UnknownFormatError(path, "an HDF5 container (e.g. SHD) holds many samples: use get_dataset('shd', ...)")
    suffix = path.suffix.lower()
    if head.startswith(b"%") and suffix == ".dat":
        return "prophesee_dat"
    if suffix in (".bin", ".bs2"):
        return "orchard_bin"
    raise UnknownFormatError(
        path, f"unknown event-file format (first bytes {head[:16]!r}); known: AEDAT 2.0/3.1/4.0 by magic number, "
        "Orchard '.bin' and Prophesee '.dat' by extension"
    )


def read_events(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an event file of any supported format: ``events, sensor_size = read_events(path)``.

    ``sensor_size`` (W, H, polarities) overrides the file's own (or the format's default) and every event
    is checked to lie inside it. Timestamps going backwards raise, unless ``sort=True`` sorts them.

    Example:
        >>> import numpy as np, tempfile, os
        >>> raw = np.array([[3, 4, 0x80, 0, 10], [5, 6, 0, 0, 20]], np.uint8)   # two N-MNIST events
        >>> path = os.path.join(tempfile.mkdtemp(), "00001.bin"); raw.tofile(path)
        >>> events, size = read_events(path)
        >>> size, events["x"].tolist(), events["t"].tolist(), events["p"].tolist()
        ((34, 34, 2), [3, 5], [10, 20], [1, 0])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"event file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    fmt = detect_format(path, data[:64])
    name = os.fspath(path)
    if fmt == "aedat2":
        return decode_aedat2(data, name, sensor_size, sort=sort)
    if fmt == "aedat3.1":
        return decode_aedat31(data, name, sensor_size, sort=sort)
    if fmt == "aedat4":
        return decode_aedat4(data, name, sensor_size, sort=sort)
    if fmt == "prophesee_dat":
        return decode_prophesee_dat(data, name, sensor_size, sort=sort)
    return decode_orchard_bin(data, name, sensor_size, sort=sort)


__all__ = [
    "EVENT_DTYPE", "FORMATS", "Recording", "CorruptFileError", "UnknownFormatError", "detect_format",
    "make_events", "read_events", "validate_events",
    "read_aedat2", "read_aedat31", "read_aedat4", "read_orchard_bin", "read_prophesee_dat",
    "decode_aedat2", "decode_aedat31", "decode_aedat4", "decode_orchard_bin", "decode_prophesee_dat",
]
