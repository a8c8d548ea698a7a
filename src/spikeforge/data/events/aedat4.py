"""AEDAT 4.0 (iniVation DV): ``#!AER-DAT4.0\\r\\n``, an int32 length and an ``IOHeader`` flatbuffer
(compression, data-table position, XML info node naming each stream), then packets until the data table:
int32 stream id, int32 byte size, and a (compressed) size-prefixed flatbuffer. Event packets
(identifier ``EVTS``) hold a vector of 16-byte structs: int64 t (us), int16 x, int16 y, bool on, 3 pad.

Compression: none, LZ4 (frame format, the DV default) and LZ4-high are read with the ``lz4`` package;
ZSTD needs the optional ``zstandard`` package. A packet is inflated incrementally and never past the size
its own size prefix declares (at most ``MAX_PACKET``), so a small frame that inflates to gigabytes is refused.
The first event stream in the info node is read; the sensor size is its ``sizeX`` x ``sizeY``.
"""

from __future__ import annotations

import struct
from xml.etree import ElementTree

import numpy as np

from ..errors import CorruptFileError
from ._common import EVENT_DTYPE, Recording, check_sensor_size, header_dimension, validate_events

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSION = {0: "none", 1: "lz4", 2: "lz4_high", 3: "zstd", 4: "zstd_high"}
DV_EVENT_SIZE = 16  # int64 t, int16 x, int16 y, bool on, 3 pad: the layout of EVENT_DTYPE
MAX_PACKET = 1 << 28  # decompressed bytes per packet; DV writes far smaller packets


class _FlatBuffer:
    """Bounds-checked reads of the few flatbuffer constructs AEDAT 4 uses."""

    def __init__(self, buf, name, what):
        self.buf, self.name, self.what = buf, name, what

    def _need(self, pos, size):
        if pos < 0 or pos + size > len(self.buf):
            raise CorruptFileError(self.name, f"{self.what}: flatbuffer offset {pos} (+{size}) outside its {len(self.buf)} bytes")

    def u16(self, pos):
        self._need(pos, 2)
        return struct.unpack_from("<H", self.buf, pos)[0]

    def i32(self, pos):
        self._need(pos, 4)
        return struct.unpack_from("<i", self.buf, pos)[0]

    def u32(self, pos):
        self._need(pos, 4)
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i64(self, pos):
        self._need(pos, 8)
        return struct.unpack_from("<q", self.buf, pos)[0]

    def root(self, pos=0):
        return pos + self.u32(pos)

    def field(self, table, index):
        """Absolute position of field ``index`` of ``table``, or None when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        if vsize < 4 or vsize % 2:
            raise CorruptFileError(self.name, f"{self.what}: bad flatbuffer vtable size {vsize}")
        if 4 + 2 * index >= vsize:
            return None
        off = self.u16(vtable + 4 + 2 * index)
        return table + off if off else None

    def indirect(self, pos):
        return pos + self.u32(pos)

    def string(self, pos):
        start = self.indirect(pos)
        n = self.u32(start)
        self._need(start + 4, n)
        return bytes(self.buf[start + 4:start + 4 + n])


def _lz4_reader(payload):
    """(read(n): at most n more inflated bytes, complete(): whether the frame ended)."""
    import lz4.frame

    d = lz4.frame.LZ4FrameDecompressor()
    pending = [payload]

    def read(n):
        if d.eof or (not pending and d.needs_input):
            return b""
        return d.decompress(pending.pop() if pending else b"", max_length=n)

    return read, lambda: d.eof


def _zstd_reader(payload):
    """As :func:`_lz4_reader`; zstd's stream object has no output limit, so the input goes in 64-byte
    pieces, each of which inflates to at most a few 128 KiB blocks."""
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    view, pos, buf = memoryview(payload), 0, bytearray()

    def read(n):
        nonlocal pos
        while len(buf) < n and pos < len(view) and not d.eof:
            buf.extend(d.decompress(view[pos:pos + 64]))
            pos += 64
        out = bytes(buf[:n])
        del buf[:n]
        return out

    return read, lambda: d.eof


def _read_exact(read, n):
    parts, got = [], 0
    while got < n:
        chunk = read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _decompress(payload, compression, name, where):
    """Inflate an event packet, never past the size its own 4-byte size prefix declares (plus one byte, to
    detect a stream that goes on): a small frame that inflates to gigabytes is refused after a few bytes."""
    if compression == "none":
        return payload
    try:
        if compression.startswith("lz4"):
            read, done = _lz4_reader(payload)
        else:
            try:
                read, done = _zstd_reader(payload)
            except ImportError:
                raise CorruptFileError(name, "packets are ZSTD-compressed: install the 'zstandard' package to read them") from None
        head = _read_exact(read, 4)
        if len(head) < 4:
            raise CorruptFileError(name, f"{where}: {compression} packet inflates to {len(head)} bytes, too short for its "
                                  "size prefix: truncated or corrupted")
        declared = struct.unpack("<I", head)[0]
        if declared > MAX_PACKET:
            raise CorruptFileError(name, f"{where}: packet size prefix {declared} is over the limit of {MAX_PACKET} bytes")
        body = _read_exact(read, declared)
        if len(body) < declared:
            raise CorruptFileError(
                name, f"{where}: {compression} packet inflates to {4 + len(body)} bytes, its size prefix says {4 + declared}: "
                "truncated or corrupted")
        if _read_exact(read, 1):
            raise CorruptFileError(
                name, f"{where}: {compression} packet inflates past the {4 + declared} bytes its size prefix declares")
        if not done():
            raise CorruptFileError(name, f"{where}: {compression} frame is incomplete")
        return head + body
    except CorruptFileError:
        raise
    except Exception as e:  # lz4/zstd raise RuntimeError or their own error types on bad streams
        raise CorruptFileError(name, f"{where}: cannot decompress {compression} data ({e})") from None


def _streams(xml: str, name):
    """(id, type identifier, sizeX, sizeY) of each stream in the IOHeader's info node."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        raise CorruptFileError(name, f"IOHeader info node is not valid XML ({e})") from None
    out = []
    for node in root.iter("node"):
        if node.get("name") != "outInfo":
            continue
        for stream in node.findall("node"):
            sid = stream.get("name", "")
            if not (sid.isascii() and sid.isdigit()):
                continue
            attrs = {a.get("key"): (a.text or "") for a in stream.findall("attr")}
            info = {}
            for sub in stream.findall("node"):
                if sub.get("name") == "info":
                    info = {a.get("key"): (a.text or "") for a in sub.findall("attr")}
            out.append((int(sid), attrs.get("typeIdentifier", ""), info.get("sizeX"), info.get("sizeY")))
    return sorted(out, key=lambda s: s[0])


def decode_aedat4(data, name="<bytes>", sensor_size=None, sort: bool = False) -> Recording:
    """Decode the bytes of an AEDAT 4.0 file (the first event stream)."""
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise CorruptFileError(name, f"wrong magic number {bytes(data[:14])!r}: an AEDAT 4.0 file starts with {MAGIC!r}")
    n = len(data)
    pos = len(MAGIC)
    if n < pos + 4:
        raise CorruptFileError(name, "truncated before the IOHeader length")
    hlen = struct.unpack_from("<i", data, pos)[0]
    pos += 4
    if hlen <= 0 or hlen > n - pos:
        raise CorruptFileError(name, f"IOHeader length {hlen} does not fit in the file ({n - pos} bytes left)")
    fb = _FlatBuffer(memoryview(data)[pos:pos + hlen], name, "IOHeader")
    pos += hlen
    table = fb.root()
    f = fb.field(table, 0)
    code = fb.i32(f) if f is not None else 0
    if code not in COMPRESSION:
        raise CorruptFileError(name, f"unknown compression type {code} in the IOHeader")
    compression = COMPRESSION[code]
    f = fb.field(table, 1)
    table_pos = fb.i64(f) if f is not None else -1
    f = fb.field(table, 2)
    xml = fb.string(f).decode("utf-8", "replace") if f is not None else ""
    streams = [s for s in _streams(xml, name) if s[1] == "EVTS"]
    if not streams:
        raise CorruptFileError(name, "the IOHeader info node lists no event stream (typeIdentifier EVTS)")
    sid, _, sx, sy = streams[0]
    if sensor_size is None:
        if sx is None or sy is None:
            raise CorruptFileError(name, f"event stream {sid} has no sizeX/sizeY in the info node: pass sensor_size")
        sensor_size = (header_dimension(name, f"sizeX of event stream {sid}", sx),
                       header_dimension(name, f"sizeY of event stream {sid}", sy), 2)
    sensor = check_sensor_size(sensor_size)
    end = table_pos if 0 < table_pos <= n else n
    if table_pos > n:
        raise CorruptFileError(name, f"data table position {table_pos} is past the end of the file ({n} bytes)")
    view = memoryview(data)
    # decode each packet's 16-byte event structs (laid out exactly like EVENT_DTYPE) straight into the output,
    # grown geometrically, so each decompressed packet is copied once while still hot in cache
    ratio = 1 if compression == "none" else 3
    cap = (end - pos) * ratio // EVENT_DTYPE.itemsize + 1024
    ev = np.empty(cap, EVENT_DTYPE)
    count = 0
    seen = set()  # stream ids the packets carry
    while pos < end:
        if end - pos < 8:
            raise CorruptFileError(name, f"truncated packet header at byte {pos}")
        stream, size = struct.unpack_from("<ii", data, pos)
        where = f"packet at byte {pos}"
        pos += 8
        if size < 0 or size > end - pos:
            raise CorruptFileError(name, f"{where}: size {size} does not fit in the {end - pos} bytes left: truncated file")
        seen.add(stream)
        if stream == sid:
            body = _event_packet(_decompress(view[pos:pos + size], compression, name, where), name, where)
            k = len(body) // EVENT_DTYPE.itemsize
            if count + k > cap:
                cap = max(2 * cap, count + k)
                grown = np.empty(cap, EVENT_DTYPE)
                grown[:count] = ev[:count]
                ev = grown
            ev[count:count + k].view(np.uint8)[:] = np.frombuffer(body, np.uint8)
            count += k
        pos += size
    if sid not in seen:
        others = f"packets carry stream id(s) {', '.join(map(str, sorted(seen)))}" if seen else "the file holds no packets"
        raise CorruptFileError(
            name, f"no packet belongs to event stream {sid} named by the info node (event streams: "
            f"{', '.join(str(s[0]) for s in streams)}); {others}")
    ev = ev[:count] if 2 * count >= cap else ev[:count].copy()
    if ev.size and ev["p"].max() > 1:
        raise CorruptFileError(name, "event polarity byte is neither 0 nor 1")
    ev = validate_events(ev, sensor, name, sort=sort)
    return Recording(ev, sensor)


def _event_packet(raw, name, where):
    if len(raw) < 12:
        raise CorruptFileError(name, f"{where}: event packet of {len(raw)} bytes is too short")
    prefix = struct.unpack_from("<I", raw, 0)[0]
    if prefix != len(raw) - 4:
        raise CorruptFileError(name, f"{where}: size prefix {prefix} != packet body {len(raw) - 4} bytes")
    fb = _FlatBuffer(memoryview(raw)[4:], name, where)
    if bytes(fb.buf[4:8]) != b"EVTS":
        raise CorruptFileError(name, f"{where}: packet identifier {bytes(fb.buf[4:8])!r} is not b'EVTS'")
    table = fb.root()
    f = fb.field(table, 0)
    if f is None:
        return b""
    vec = fb.indirect(f)
    count = fb.u32(vec)
    size = count * DV_EVENT_SIZE
    fb._need(vec + 4, size)
    return fb.buf[vec + 4:vec + 4 + size]  # the packed event structs, copied once by the final join


def read_aedat4(path, sensor_size=None, sort: bool = False) -> Recording:
    """Read an AEDAT 4.0 file."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_aedat4(data, str(path), sensor_size, sort)
