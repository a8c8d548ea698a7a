"""IDX files (MNIST, Fashion-MNIST), plain or gzipped.

Big-endian: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, one uint32 per dimension, then the data. The data must be exactly
as long as the header says.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import CorruptFileError

IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(raw: bytes, name) -> bytes:
    """Inflate a single-member gzip stream, never to more bytes than its trailer announces."""
    if len(raw) < 18:
        raise CorruptFileError(name, f"gzip file of {len(raw)} bytes is truncated")
    isize = int.from_bytes(raw[-4:], "little")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, max(isize, 1))
    except zlib.error as e:
        raise CorruptFileError(name, f"corrupted gzip data ({e})") from None
    if not d.eof or len(out) != isize:
        raise CorruptFileError(
            name, f"gzip stream is truncated or corrupted (inflated {len(out)} bytes, trailer says {isize})"
        )
    if d.unused_data:
        raise CorruptFileError(name, f"{len(d.unused_data)} unexpected bytes after the gzip stream")
    return out


def decode_idx(raw: bytes, name="<bytes>") -> np.ndarray:
    """Decode IDX bytes (gzip-compressed or not) into a numpy array of the header's type and shape."""
    if raw[:2] == GZIP_MAGIC:
        raw = _gunzip(raw, name)
    if len(raw) < 4:
        raise CorruptFileError(name, f"{len(raw)} bytes is too short for an IDX header")
    z0, z1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if z0 != 0 or z1 != 0 or code not in IDX_TYPES or not 1 <= ndim <= 8:
        raise CorruptFileError(
            name, f"wrong magic number 0x{int.from_bytes(raw[:4], 'big'):08x}: an IDX file starts with 0x0000TTDD "
            "(TT = type 08/09/0B/0C/0D/0E, DD = 1..8 dimensions)"
        )
    hdr = 4 + 4 * ndim
    if len(raw) < hdr:
        raise CorruptFileError(name, f"truncated header: {ndim} dimensions need {hdr} bytes, file has {len(raw)}")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    dtype = np.dtype(IDX_TYPES[code])
    need = dtype.itemsize
    for s in shape:
        need *= s
    have = len(raw) - hdr
    if have != need:
        what = "truncated" if have < need else "has trailing bytes"
        raise CorruptFileError(name, f"header says shape {shape} of {dtype} = {need} data bytes, file has {have}: {what}")
    return np.frombuffer(raw, dtype, offset=hdr).reshape(shape)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not)."""
    with open(path, "rb") as f:
        raw = f.read()
    return decode_idx(raw, str(path))
