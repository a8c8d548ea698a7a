"""IDX files (MNIST, Fashion-MNIST), plain or gzipped.

Big-endian: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions, one uint32 per dimension, then the data. The data must be exactly
as long as the header says. A gzipped file is inflated incrementally, header first, and never to more than
the header's byte count plus one (so a small ``.gz`` that inflates to gigabytes is refused at once).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .errors import CorruptFileError

IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # deflate cannot inflate one byte to more than 1032 (258-byte matches of 2 bits)
_IN_CHUNK = 1 << 16


class _Gunzip:
    """Inflate a single-member gzip stream in pieces of exactly the size asked for."""

    def __init__(self, raw, name):
        self.raw, self.name, self.pos = memoryview(raw), name, 0
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""

    def read_into(self, out: memoryview) -> int:
        """Fill ``out`` (bytes) as far as the stream goes; the number of bytes written."""
        filled = 0
        while filled < len(out) and not self.d.eof:
            drained = not self.pending and self.pos >= len(self.raw)
            if not self.pending and not drained:
                self.pending = self.raw[self.pos:self.pos + _IN_CHUNK]
                self.pos += _IN_CHUNK
            try:
                chunk = self.d.decompress(self.pending, len(out) - filled)
            except zlib.error as e:
                raise CorruptFileError(self.name, f"corrupted gzip data ({e})") from None
            self.pending = self.d.unconsumed_tail
            if drained and not chunk:
                break
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        return bytes(buf[:self.read_into(memoryview(buf))])

    def finish(self, expected: int) -> None:
        """Check that the stream ends here (after ``expected`` inflated bytes), with its trailer intact."""
        if self.read(1):
            raise CorruptFileError(
                self.name, f"gzip stream inflates to more than the {expected} bytes its IDX header declares: "
                "has trailing bytes")
        if not self.d.eof:
            raise CorruptFileError(self.name, "gzip stream is truncated (no end-of-stream marker and trailer)")
        extra = len(self.d.unused_data) + max(0, len(self.raw) - self.pos)
        if extra:
            raise CorruptFileError(self.name, f"{extra} unexpected bytes after the gzip stream")


def _header(read, name, gz: bool):
    head = read(4)
    src = "inflated gzip stream" if gz else "file"
    if len(head) < 4:
        raise CorruptFileError(name, f"{len(head)} bytes ({src}) is too short for an IDX header")
    z0, z1, code, ndim = head
    if z0 != 0 or z1 != 0 or code not in IDX_TYPES or not 1 <= ndim <= 8:
        raise CorruptFileError(
            name, f"{'inflated gzip data has ' if gz else ''}wrong magic number 0x{int.from_bytes(head, 'big'):08x}: "
            "an IDX file starts with 0x0000TTDD "
            "(TT = type 08/09/0B/0C/0D/0E, DD = 1..8 dimensions)"
        )
    hdr = 4 + 4 * ndim
    dims = read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise CorruptFileError(name, f"truncated header: {ndim} dimensions need {hdr} bytes, {src} has {4 + len(dims)}")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = np.dtype(IDX_TYPES[code])
    need = dtype.itemsize
    for s in shape:
        need *= s
    return hdr, shape, dtype, need


def decode_idx(raw: bytes, name="<bytes>") -> np.ndarray:
    """Decode IDX bytes (gzip-compressed or not) into a numpy array of the header's type and shape."""
    if raw[:2] == GZIP_MAGIC:
        return _decode_idx_gz(raw, name)
    pos = 0

    def read(n):
        nonlocal pos
        out = raw[pos:pos + n]
        pos += len(out)
        return bytes(out)

    hdr, shape, dtype, need = _header(read, name, gz=False)
    have = len(raw) - hdr
    if have != need:
        what = "truncated" if have < need else "has trailing bytes"
        raise CorruptFileError(name, f"header says shape {shape} of {dtype} = {need} data bytes, file has {have}: {what}")
    return np.frombuffer(raw, dtype, offset=hdr).reshape(shape)


def _decode_idx_gz(raw: bytes, name) -> np.ndarray:
    if len(raw) < 18:
        raise CorruptFileError(name, f"gzip file of {len(raw)} bytes is truncated")
    g = _Gunzip(raw, name)
    hdr, shape, dtype, need = _header(g.read, name, gz=True)
    limit = DEFLATE_MAX_RATIO * len(raw)
    if need > limit:
        raise CorruptFileError(
            name, f"header says shape {shape} of {dtype} = {need} data bytes, more than a {len(raw)}-byte gzip "
            f"file can hold (at most {limit}): truncated or corrupted")
    out = np.empty(need, np.uint8)
    have = g.read_into(memoryview(out))
    if have < need:
        raise CorruptFileError(
            name, f"header says shape {shape} of {dtype} = {need} data bytes, the gzip stream has {have}: truncated")
    g.finish(hdr + need)  # zlib checks the trailer's CRC-32 and length on the way
    return out.view(dtype).reshape(shape)


def read_idx_shape(path) -> tuple[int, ...]:
    """The shape an IDX file's header declares, reading (and inflating) only its first bytes."""
    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    gz = raw[:2] == GZIP_MAGIC
    if gz:
        read = _Gunzip(raw, str(path)).read
    else:
        view = memoryview(raw)
        pos = [0]

        def read(n):
            out = bytes(view[pos[0]:pos[0] + n])
            pos[0] += len(out)
            return out

    return _header(read, str(path), gz)[1]


def read_idx(path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not)."""
    with open(path, "rb") as f:
        raw = f.read()
    return decode_idx(raw, str(path))
