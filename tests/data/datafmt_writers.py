"""Writers producing tiny files in each real format, used by the data tests (and the data benchmark).

Each ``*_bytes`` function is the inverse of the matching reader in ``spikeforge.data``; none of them
shares code with the readers, so a round trip checks both against the format description.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np

from spikeforge.data.events import EVENT_DTYPE


def random_events(rng: np.random.Generator, n: int, sensor=(34, 34, 2), t_max=300_000, t0=0) -> np.ndarray:
    """``n`` random events inside ``sensor`` with non-decreasing timestamps."""
    w, h, c = sensor
    ev = np.empty(n, EVENT_DTYPE)
    ev["x"] = rng.integers(0, w, n)
    ev["y"] = rng.integers(0, h, n)
    ev["t"] = np.sort(rng.integers(0, t_max, n)) + t0
    ev["p"] = rng.integers(0, c, n) if c > 1 else 0
    return ev


# ---------------------------------------------------------------- idx (MNIST)
def idx_bytes(arr: np.ndarray, gz: bool = False) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    a = np.asarray(arr)
    if a.dtype.kind in "iuf" and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder(">"))
    raw = bytes([0, 0, codes[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    return gzip.compress(raw, mtime=0) if gz else raw


# ---------------------------------------------------------------- CIFAR
class Py2Pickler:
    """Emit a protocol-2 pickle the way Python 2's cPickle wrote the CIFAR batches (str -> BINSTRING)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")

    def obj(self, v):
        o = self.out
        if v is None:
            o += b"N"
        elif v is True or v is False:
            o += b"\x88" if v else b"\x89"
        elif isinstance(v, int):
            if 0 <= v < 256:
                o += b"K" + bytes([v])
            else:
                o += b"J" + struct.pack("<i", v)
        elif isinstance(v, bytes):  # a Python 2 str
            o += (b"U" + bytes([len(v)]) if len(v) < 256 else b"T" + struct.pack("<I", len(v))) + v
        elif isinstance(v, str):
            b = v.encode("utf-8")
            o += b"X" + struct.pack("<I", len(b)) + b
        elif isinstance(v, tuple):
            o += b"("
            for x in v:
                self.obj(x)
            o += b"t"
        elif isinstance(v, list):
            o += b"]("
            for x in v:
                self.obj(x)
            o += b"e"
        elif isinstance(v, dict):
            o += b"}("
            for k, x in v.items():
                self.obj(k)
                self.obj(x)
            o += b"u"
        elif isinstance(v, np.ndarray):
            self.array(v)
        else:
            raise TypeError(type(v))

    def glob(self, module: str, name: str):
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def array(self, a: np.ndarray):
        # numpy (py2) ndarray.__reduce__: _reconstruct(ndarray, (0,), 'b') + BUILD (1, shape, dtype, False, data)
        self.glob("numpy.core.multiarray", "_reconstruct")
        self.out += b"("
        self.glob("numpy", "ndarray")
        self.obj((0,))
        self.obj(b"b")
        self.out += b"tR"
        self.out += b"("
        self.obj(1)
        self.obj(tuple(a.shape))
        self.glob("numpy", "dtype")
        self.obj((a.dtype.str[1:].encode(), 0, 1))
        self.out += b"R"
        self.obj((3, b"|" if a.dtype.itemsize == 1 else a.dtype.str[:1].encode(), None, None, None, -1, -1, 0))
        self.out += b"b"
        self.obj(False)
        self.obj(np.ascontiguousarray(a).tobytes())
        self.out += b"tb"

    def dumps(self, v) -> bytes:
        self.obj(v)
        self.out += b"."
        return bytes(self.out)


def cifar_pickle_bytes(images: np.ndarray, labels, label_key: bytes | tuple = b"labels", extra=True) -> bytes:
    """A python-version CIFAR batch (dict with bytes keys; images uint8 [N, 3, 32, 32] stored as [N, 3072])."""
    n = len(images)
    d = {b"batch_label": b"training batch 1 of 5"} if extra else {}
    d[b"data"] = images.reshape(n, 3072).astype(np.uint8)
    if isinstance(label_key, tuple):
        for k, v in zip(label_key, labels):
            d[k] = [int(x) for x in v]
    else:
        d[label_key] = [int(x) for x in labels]
    if extra:
        d[b"filenames"] = [f"img_{i}.png".encode() for i in range(n)]
    return Py2Pickler().dumps(d)


def cifar_meta_bytes(names, key=b"label_names") -> bytes:
    return Py2Pickler().dumps({key: [n.encode() for n in names], b"num_cases_per_batch": 10000})


def cifar_binary_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Binary CIFAR records: label byte(s) then 3072 pixel bytes. ``labels`` is [N] or [N, 2] (coarse, fine)."""
    lab = np.asarray(labels, np.uint8).reshape(len(images), -1)
    return np.concatenate([lab, images.reshape(len(images), 3072).astype(np.uint8)], axis=1).tobytes()


# ---------------------------------------------------------------- Orchard .bin
def orchard_bin_bytes(ev: np.ndarray) -> bytes:
    a = np.empty((len(ev), 5), np.uint8)
    t = ev["t"].astype(np.int64)
    assert (t < 1 << 23).all()
    a[:, 0] = ev["x"]
    a[:, 1] = ev["y"]
    a[:, 2] = (ev["p"].astype(np.uint8) << 7) | ((t >> 16) & 0x7F).astype(np.uint8)
    a[:, 3] = (t >> 8) & 0xFF
    a[:, 4] = t & 0xFF
    return a.tobytes()


# ---------------------------------------------------------------- AEDAT 2.0 (jAER)
def aedat2_bytes(ev: np.ndarray, chip: str | None = "ch.unizh.ini.jaer.chip.retina.DVS128") -> bytes:
    """DVS128 addresses: bit 0 = 1 - p, bits 1-7 = 127 - x, bits 8-14 = y; big-endian (addr, t) pairs."""
    head = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n" \
           b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n" \
           b"# Timestamps tick is 1 us\r\n"
    if chip:
        head += f"# AEChip: {chip}\r\n".encode()
    head += b"# End of ASCII Header\r\n"
    addr = ((1 - ev["p"].astype(np.uint32)) | ((127 - ev["x"].astype(np.uint32)) << 1) | (ev["y"].astype(np.uint32) << 8))
    out = np.empty((len(ev), 2), ">u4")
    out[:, 0] = addr
    out[:, 1] = ev["t"].astype(np.uint32)
    return head + out.tobytes()


def aedat2_davis_bytes(ev: np.ndarray, chip="eu.seebetter.ini.chips.davis.Davis346red") -> bytes:
    head = b"#!AER-DAT2.0\r\n" + f"# AEChip: {chip}\r\n".encode()
    addr = (ev["y"].astype(np.uint32) << 22) | (ev["x"].astype(np.uint32) << 12) | (ev["p"].astype(np.uint32) << 11)
    out = np.empty((len(ev), 2), ">u4")
    out[:, 0] = addr
    out[:, 1] = ev["t"].astype(np.uint32)
    return head + out.tobytes()


# ---------------------------------------------------------------- AEDAT 3.1 (cAER)
def aedat31_bytes(ev: np.ndarray, packet_size: int = 64, source: str = "DVS128", special_packets: bool = True,
                  invalid_every: int = 0) -> bytes:
    head = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + f"#Source 1: {source}\r\n".encode()
            + b"#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n")
    out = bytearray(head)
    t = ev["t"].astype(np.int64)
    words = np.empty((len(ev), 2), "<u4")
    words[:, 0] = (ev["x"].astype(np.uint32) << 17) | (ev["y"].astype(np.uint32) << 2) \
        | (ev["p"].astype(np.uint32) << 1) | 1
    words[:, 1] = (t & 0x7FFFFFFF).astype(np.uint32)
    ovf = t >> 31
    i = 0
    while i < len(ev):
        j = min(i + packet_size, len(ev))
        j = i + int(np.searchsorted(ovf[i:j], ovf[i], side="right"))  # one overflow value per packet
        n = j - i
        out += struct.pack("<hhiiiiii", 1, 1, 8, 4, int(ovf[i]), n, n, n)
        out += words[i:j].tobytes()
        if special_packets:  # a special-event packet (type 0) between polarity packets: must be skipped
            out += struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + struct.pack("<Ii", 0x0C, 0)
        i = j
    if invalid_every:  # an invalid polarity event (bit 0 clear) that the reader must drop
        out += struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 1, 1, 0) + struct.pack("<Ii", 0x10, int(t[-1]) if len(t) else 0)
    return bytes(out)


# ---------------------------------------------------------------- AEDAT 4.0 (DV)
def _fb_ioheader(compression: int, table_pos: int, xml: bytes) -> bytes:
    buf = bytearray(40)
    struct.pack_into("<I", buf, 0, 16)                      # root table at 16
    struct.pack_into("<HHHHH", buf, 4, 10, 24, 4, 16, 8)    # vtable: 3 fields
    struct.pack_into("<i", buf, 16, 16 - 4)                 # table -> vtable
    struct.pack_into("<i", buf, 20, compression)            # field 0
    struct.pack_into("<I", buf, 24, 40 - 24)                # field 2: string at 40
    struct.pack_into("<q", buf, 32, table_pos)              # field 1
    buf += struct.pack("<I", len(xml)) + xml + b"\0"
    buf += b"\0" * (-len(buf) % 4)
    return bytes(buf)


def fb_event_packet(ev: np.ndarray) -> bytes:
    body = bytearray(32)
    struct.pack_into("<I", body, 0, 16)
    body[4:8] = b"EVTS"
    struct.pack_into("<HHH", body, 8, 6, 8, 4)
    struct.pack_into("<i", body, 16, 16 - 8)
    struct.pack_into("<I", body, 20, 28 - 20)
    struct.pack_into("<I", body, 28, len(ev))
    dv = np.zeros(len(ev), [("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("_pad", "V3")])
    dv["t"], dv["x"], dv["y"], dv["on"] = ev["t"], ev["x"], ev["y"], ev["p"]
    body += dv.tobytes()
    return struct.pack("<I", len(body)) + bytes(body)


def aedat4_xml(width: int, height: int, event_stream: int = 0) -> bytes:
    return f"""<dv version="2.0">
    <node name="outInfo" path="/mainloop/Recorder/outInfo/">
        <node name="{event_stream}" path="/mainloop/Recorder/outInfo/{event_stream}/">
            <attr key="compression" type="string">LZ4</attr>
            <attr key="originalOutputName" type="string">events</attr>
            <attr key="typeIdentifier" type="string">EVTS</attr>
            <node name="info" path="/mainloop/Recorder/outInfo/{event_stream}/info/">
                <attr key="sizeX" type="int">{width}</attr>
                <attr key="sizeY" type="int">{height}</attr>
                <attr key="source" type="string">DVXplorer_TEST</attr>
            </node>
        </node>
        <node name="2" path="/mainloop/Recorder/outInfo/2/">
            <attr key="compression" type="string">LZ4</attr>
            <attr key="originalOutputName" type="string">imu</attr>
            <attr key="typeIdentifier" type="string">IMUS</attr>
        </node>
    </node>
</dv>
""".encode()


def aedat4_file(packets, sensor=(320, 240), code: int = 1, data_table: bool = True, event_stream: int = 0,
                xml_patch=None) -> bytes:
    """Assemble an AEDAT 4.0 file from ``packets``: (stream id, already compressed payload) pairs.
    ``xml_patch``: (old, new) bytes replaced once in the info node."""
    body = b"".join(struct.pack("<ii", sid, len(p)) + p for sid, p in packets)
    magic = b"#!AER-DAT4.0\r\n"
    xml = aedat4_xml(*sensor, event_stream=event_stream)
    if xml_patch is not None:
        assert xml_patch[0] in xml
        xml = xml.replace(xml_patch[0], xml_patch[1], 1)
    head_len = len(_fb_ioheader(code, 0, xml))
    table_pos = len(magic) + 4 + head_len + len(body) if data_table else -1
    header = _fb_ioheader(code, table_pos, xml)
    out = magic + struct.pack("<i", len(header)) + header + body
    if data_table:
        out += b"\x04\x22\x4d\x18" + b"FTAB-not-parsed" * 3  # the reader must stop at the data table
    return out


def aedat4_bytes(ev: np.ndarray, sensor=(320, 240), compression: str = "lz4", packet_size: int = 256,
                 imu_packets: bool = True, data_table: bool = True, stream: int = 0, event_stream: int = 0,
                 xml_patch=None) -> bytes:
    """``stream``: the id the event packets carry; ``event_stream``: the id the info node names."""
    import lz4.frame

    code = {"none": 0, "lz4": 1}[compression]

    def pack(b):
        return lz4.frame.compress(b) if code == 1 else b

    packets = []
    for i in range(0, max(len(ev), 1), packet_size):
        packets.append((stream, pack(fb_event_packet(ev[i:i + packet_size]))))
        if imu_packets:
            packets.append((2, pack(struct.pack("<I", 12) + b"\x0c\x00\x00\x00IMUS" + b"\x00" * 4)))
    return aedat4_file(packets, sensor, code, data_table, event_stream, xml_patch)


# ---------------------------------------------------------------- Prophesee .dat
def prophesee_dat_bytes(ev: np.ndarray, size=None) -> bytes:
    head = b"% Data file containing Event2d events.\n% Version 2\n% Date 2017-10-31 11:29:21\n"
    if size:
        head += f"% Width {size[0]}\n% Height {size[1]}\n".encode()
    raw = np.empty((len(ev), 2), "<u4")
    raw[:, 0] = ev["t"].astype(np.uint32)
    raw[:, 1] = ev["x"].astype(np.uint32) | (ev["y"].astype(np.uint32) << 14) | (ev["p"].astype(np.uint32) << 28)
    return head + bytes([0, 8]) + raw.tobytes()


# ---------------------------------------------------------------- DVS Gesture labels, SHD
def gesture_labels_csv(trials) -> str:
    """``trials``: (class 1..11, start_us, end_us)."""
    return "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{s},{e}\n" for c, s, e in trials)


def write_shd_h5(path, samples, keys=True):
    """``samples``: list of (times_seconds, units, label)."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("spikes")
        ft = h5py.vlen_dtype(np.dtype("float32"))
        fu = h5py.vlen_dtype(np.dtype("uint16"))
        times = g.create_dataset("times", (len(samples),), dtype=ft)
        units = g.create_dataset("units", (len(samples),), dtype=fu)
        for i, (t, u, _) in enumerate(samples):
            times[i] = np.asarray(t, np.float32)
            units[i] = np.asarray(u, np.uint16)
        f.create_dataset("labels", data=np.array([s[2] for s in samples], np.uint16))
        if keys:
            e = f.create_group("extra")
            e.create_dataset("keys", data=np.array([f"k{i}".encode() for i in range(20)]))


def shared_data_dir():
    """The real sample data: ``$SPIKEFORGE_DATA`` (first existing entry), else ``<repo>/../shared/data``."""
    import os
    from pathlib import Path

    for p in os.environ.get("SPIKEFORGE_DATA", "").split(os.pathsep):
        if p.strip() and Path(p).is_dir():
            return Path(p)
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return default if default.is_dir() else None
