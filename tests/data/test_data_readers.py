"""Event and static readers: round trips through files written in the real format, the real samples in
shared/data, and clear errors on bad input."""

from __future__ import annotations

import csv
import gzip
import hashlib
import pickle
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from datafmt_writers import (aedat2_bytes, aedat2_davis_bytes, aedat4_bytes, aedat4_file, aedat31_bytes,
                             cifar_binary_bytes, cifar_meta_bytes, cifar_pickle_bytes, fb_event_packet, idx_bytes,
                             orchard_bin_bytes, prophesee_dat_bytes, random_events, shared_data_dir)
from spikeforge.data import CorruptFileError, UnknownFormatError, detect_format, read_events
from spikeforge.data.cifar_format import decode_cifar_binary, decode_cifar_meta, decode_cifar_pickle
from spikeforge.data.events import EVENT_DTYPE
from spikeforge.data.idx import decode_idx, read_idx

SHARED = shared_data_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared sample data not found ($SPIKEFORGE_DATA or ../shared/data)")


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _same(a, b):
    assert a.dtype == EVENT_DTYPE
    for f in "xytp":
        np.testing.assert_array_equal(a[f], b[f], err_msg=f)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("n", [0, 1, 1000])
def test_orchard_bin_round_trip(tmp_path, n):
    ev = random_events(np.random.default_rng(n), n, (34, 34, 2))
    events, size = read_events(_write(tmp_path, "a.bin", orchard_bin_bytes(ev)))
    assert size == (34, 34, 2)
    _same(events, ev)


def test_orchard_bin_overflow_marker_and_ncaltech_sensor(tmp_path):
    ev = random_events(np.random.default_rng(1), 200, (240, 180, 2), t_max=8000)
    raw = bytearray(orchard_bin_bytes(ev))
    marker = bytes([0, 240, 0, 0, 0])  # y == 240: timestamp overflow, later events + 2**13 us
    data = bytes(raw[:100 * 5]) + marker + bytes(raw[100 * 5:])
    events, size = read_events(_write(tmp_path, "b.bin", data))
    assert size == (240, 180, 2) and len(events) == 200
    np.testing.assert_array_equal(events["t"][:100], ev["t"][:100])
    np.testing.assert_array_equal(events["t"][100:], ev["t"][100:] + 8192)


def test_aedat2_dvs128_round_trip(tmp_path):
    ev = random_events(np.random.default_rng(2), 500, (128, 128, 2))
    events, size = read_events(_write(tmp_path, "c.aedat", aedat2_bytes(ev)))
    assert size == (128, 128, 2)
    _same(events, ev)


def test_aedat2_without_chip_line_is_dvs128(tmp_path):
    ev = random_events(np.random.default_rng(3), 50, (128, 128, 2))
    events, size = read_events(_write(tmp_path, "c.aedat", aedat2_bytes(ev, chip=None)))
    assert size == (128, 128, 2)
    _same(events, ev)


def test_aedat2_dvs128_drops_special_events(tmp_path):
    ev = random_events(np.random.default_rng(4), 10, (128, 128, 2))
    data = bytearray(aedat2_bytes(ev))
    data += struct.pack(">Ii", 0x8000, int(ev["t"][-1]))  # bit 15: external event
    events, _ = read_events(_write(tmp_path, "d.aedat", bytes(data)))
    _same(events, ev)


def test_aedat2_davis_round_trip(tmp_path):
    ev = random_events(np.random.default_rng(5), 300, (346, 260, 2))
    data = bytearray(aedat2_davis_bytes(ev))
    data += struct.pack(">Ii", 0x80000000 | 5, int(ev["t"][-1]))  # an APS sample: dropped
    events, size = read_events(_write(tmp_path, "e.aedat", bytes(data)))
    assert size == (346, 260, 2)
    _same(events, ev)


@pytest.mark.parametrize("packet_size", [1, 7, 4096])
def test_aedat31_round_trip(tmp_path, packet_size):
    ev = random_events(np.random.default_rng(6), 777, (128, 128, 2))
    data = aedat31_bytes(ev, packet_size=packet_size, invalid_every=1)
    events, size = read_events(_write(tmp_path, "f.aedat", data))
    assert size == (128, 128, 2)
    _same(events, ev)


def test_aedat31_timestamp_overflow(tmp_path):
    ev = random_events(np.random.default_rng(7), 100, (128, 128, 2), t_max=1000, t0=(1 << 31) - 500)
    events, _ = read_events(_write(tmp_path, "g.aedat", aedat31_bytes(ev, packet_size=30)))
    _same(events, ev)
    assert events["t"].max() > 1 << 31


@pytest.mark.parametrize("compression", ["lz4", "none"])
@pytest.mark.parametrize("n", [0, 1, 1000])
def test_aedat4_round_trip(tmp_path, compression, n):
    ev = random_events(np.random.default_rng(8), n, (320, 240, 2), t0=1_605_537_493_718_345)
    events, size = read_events(_write(tmp_path, "h.aedat4", aedat4_bytes(ev, (320, 240), compression, 100)))
    assert size == (320, 240, 2)
    _same(events, ev)


def test_prophesee_dat_round_trip(tmp_path):
    ev = random_events(np.random.default_rng(9), 400, (304, 240, 2))
    events, size = read_events(_write(tmp_path, "i.dat", prophesee_dat_bytes(ev)))
    assert size == (304, 240, 2)
    _same(events, ev)
    events, size = read_events(_write(tmp_path, "j.dat", prophesee_dat_bytes(ev[ev["x"] < 64], size=(64, 240))))
    assert size == (64, 240, 2)


def test_sensor_size_argument_overrides_and_checks(tmp_path):
    ev = random_events(np.random.default_rng(10), 100, (34, 34, 2))
    p = _write(tmp_path, "k.bin", orchard_bin_bytes(ev))
    events, size = read_events(p, sensor_size=(40, 40, 2))
    assert size == (40, 40, 2)
    with pytest.raises(CorruptFileError, match="outside the 10x10 sensor"):
        read_events(p, sensor_size=(10, 10, 2))


def test_idx_round_trip_plain_and_gz(tmp_path):
    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    for gz in (False, True):
        p = _write(tmp_path, "x.gz" if gz else "x", idx_bytes(img, gz))
        np.testing.assert_array_equal(read_idx(p), img)
    f = rng.standard_normal((3, 4)).astype(">f4")
    np.testing.assert_array_equal(decode_idx(idx_bytes(f)), f)


def test_cifar_pickle_py2_format():
    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    lab = rng.integers(0, 10, 5)
    x, y = decode_cifar_pickle(cifar_pickle_bytes(img, lab))
    np.testing.assert_array_equal(x, img)
    np.testing.assert_array_equal(y["labels"], lab)
    assert decode_cifar_meta(cifar_meta_bytes(["cat", "dog"])) == ["cat", "dog"]


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_pickle_written_by_python3_numpy(protocol):
    rng = np.random.default_rng(13)
    img = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    raw = pickle.dumps({"data": img, "fine_labels": [1, 2, 3, 99], "coarse_labels": [0, 1, 2, 19]}, protocol=protocol)
    x, y = decode_cifar_pickle(raw, label_keys=("fine_labels", "coarse_labels"))
    np.testing.assert_array_equal(x.reshape(4, -1), img)
    assert y["fine_labels"].tolist() == [1, 2, 3, 99]


def test_cifar_pickle_refuses_any_other_global():
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x85R."
    with pytest.raises(CorruptFileError, match="refused global os.system"):
        decode_cifar_pickle(evil, "evil")
    evil2 = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": __import__("collections").OrderedDict()})
    with pytest.raises(CorruptFileError, match="refused global collections.OrderedDict"):
        decode_cifar_pickle(evil2, "evil2")


def test_cifar_binary():
    rng = np.random.default_rng(14)
    img = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    x, y = decode_cifar_binary(cifar_binary_bytes(img, np.arange(6)))
    np.testing.assert_array_equal(x, img)
    assert y[:, 0].tolist() == list(range(6))
    with pytest.raises(CorruptFileError, match="label 200"):
        decode_cifar_binary(cifar_binary_bytes(img, np.full(6, 200)), "f")


# ------------------------------------------------------------------ real samples in shared/data
@needs_shared
def test_real_nmnist_recordings():
    base = SHARED / "events" / "nmnist-subset"
    rows = list(csv.DictReader(open(base / "index.csv")))
    assert len(rows) == 200
    sha_col = "sha256"
    for row in rows:
        path = base / row["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row[sha_col]
        events, size = read_events(path)
        assert size == (34, 34, 2)
        assert len(events) > 1000
        assert events["x"].max() < 34 and events["y"].max() < 34
        assert np.all(np.diff(events["t"]) >= 0)
        assert 250_000 < events["t"][-1] < 350_000  # 3 saccades ~ 300 ms
        assert set(np.unique(events["p"])) == {0, 1}


@needs_shared
def test_real_aedat4_sample():
    events, size = read_events(SHARED / "events" / "tonic-test-samples" / "sample.aedat4")
    assert len(events) == 111954
    assert size == (320, 240, 2)
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["t"][0] == 1605537493718345


@needs_shared
def test_real_nmnist_sample_and_aedat2_header_and_ncars():
    s = SHARED / "events" / "tonic-test-samples"
    events, size = read_events(s / "sample_nmnist.bin")
    assert len(events) == 4325 and size == (34, 34, 2)
    events, size = read_events(s / "sample_aedat_header.aedat")  # header only, DAVIS346 chip
    assert len(events) == 0 and size == (346, 260, 2)
    events, size = read_events(s / "sample_ncars.dat")
    assert len(events) == (16165 - (s / "sample_ncars.dat").read_bytes().index(b"\x00\x08") - 2) // 8
    assert size == (304, 240, 2)
    with pytest.raises(UnknownFormatError, match="unknown event-file format"):
        read_events(s / "sample_stmnist.mat")


@needs_shared
@pytest.mark.parametrize("folder", ["mnist", "fashion-mnist"])
def test_real_idx_files(folder):
    base = SHARED / folder
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        img, lab = read_idx(base / f"{prefix}-images-idx3-ubyte.gz"), read_idx(base / f"{prefix}-labels-idx1-ubyte.gz")
        assert img.shape == (n, 28, 28) and img.dtype == np.uint8
        assert lab.shape == (n,) and lab.min() == 0 and lab.max() == 9


# ------------------------------------------------------------------ bad input: clear errors naming the file
def _err(tmp_path, name, data, match):
    p = _write(tmp_path, name, data)
    with pytest.raises(CorruptFileError, match=match) as e:
        read_events(p)
    assert str(p) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_bad_orchard(tmp_path):
    ev = random_events(np.random.default_rng(20), 20)
    good = orchard_bin_bytes(ev)
    _err(tmp_path, "trunc.bin", good[:-2], "not a whole number of 5-byte events")
    bad = bytearray(good)
    bad[5 * 3 + 1] = 250  # y = 250 beyond every Orchard sensor (y = 240 is the overflow marker)
    _err(tmp_path, "xbig.bin", bytes(bad), "exceed the largest known")
    back = ev.copy()
    back["t"][10] = back["t"][9] - 1
    _err(tmp_path, "back.bin", orchard_bin_bytes(back), "timestamps go backwards at event 10")


def test_backwards_timestamps_can_be_sorted_explicitly(tmp_path):
    ev = random_events(np.random.default_rng(21), 20)
    ev["t"][[3, 4]] = ev["t"][[4, 3]] + np.array([0, 1])
    p = _write(tmp_path, "s.bin", orchard_bin_bytes(ev))
    events, _ = read_events(p, sort=True)
    assert np.all(np.diff(events["t"]) >= 0) and len(events) == 20


def test_bad_aedat2(tmp_path):
    ev = random_events(np.random.default_rng(22), 20, (128, 128, 2))
    good = aedat2_bytes(ev)
    _err(tmp_path, "odd.aedat", good[:-3], "not a whole number of 8-byte events")
    _err(tmp_path, "chip.aedat", good.replace(b"retina.DVS128", b"retina.Weird9"), "unknown AEChip")
    nochip = bytearray(aedat2_bytes(ev, chip=None))
    nochip += struct.pack(">Ii", 1 << 20, 10**6)
    _err(tmp_path, "nochip.aedat", bytes(nochip), "do not fit DVS128")
    _err(tmp_path, "noeol.aedat", b"#!AER-DAT2.0 no newline", "header line never ends")


def test_bad_aedat31(tmp_path):
    ev = random_events(np.random.default_rng(23), 50, (128, 128, 2))
    good = aedat31_bytes(ev, packet_size=10)
    _err(tmp_path, "noend.aedat", good.replace(b"#!END-HEADER", b"#!END-HEADEX"), "does not end with")
    _err(tmp_path, "trunc.aedat", good[:-5], "truncated")
    hdr_end = good.index(b"#!END-HEADER\r\n") + 14
    bad = bytearray(good)
    struct.pack_into("<i", bad, hdr_end + 4, 12)  # eventSize 12 for polarity events
    _err(tmp_path, "size.aedat", bytes(bad), "polarity events must be 8 bytes")
    bad = bytearray(good)
    struct.pack_into("<i", bad, hdr_end + 24, 10**6)  # eventNumber > capacity
    _err(tmp_path, "num.aedat", bytes(bad), "bad packet header")
    big = random_events(np.random.default_rng(24), 5, (200, 200, 2))
    _err(tmp_path, "outside.aedat", aedat31_bytes(big[big["x"] >= 128][:1] if (big["x"] >= 128).any() else big, 4),
         "outside the 128x128 sensor")
    _err(tmp_path, "src.aedat", aedat31_bytes(ev, source="Mystery"), "no known '#Source' camera")


def test_bad_aedat4(tmp_path):
    ev = random_events(np.random.default_rng(25), 300, (320, 240, 2))
    good = aedat4_bytes(ev, packet_size=100)
    _err(tmp_path, "magic.aedat4", b"#!AER-DAT4.1\r\n" + good[14:], "unsupported AEDAT version")
    _err(tmp_path, "trunc.aedat4", good[:200], "truncated|does not fit|outside|not valid XML")
    bad = bytearray(good)
    struct.pack_into("<i", bad, 14, 10**9)
    _err(tmp_path, "hlen.aedat4", bytes(bad), "IOHeader length")
    hlen = struct.unpack_from("<i", good, 14)[0]
    first = 14 + 4 + hlen
    bad = bytearray(good)
    bad[first + 8 + 20] ^= 0xFF  # inside the first LZ4 packet
    _err(tmp_path, "lz4.aedat4", bytes(bad), "packet at byte")
    nodata = aedat4_bytes(ev, data_table=False)
    _err(tmp_path, "cut.aedat4", nodata[:-7], "truncated")


def test_aedat4_event_stream_without_packets_is_an_error(tmp_path):
    ev = random_events(np.random.default_rng(27), 50, (64, 48, 2))
    # the info node names stream 0 as the event stream, but the event packets carry id 1 (and IMU 2)
    _err(tmp_path, "ids.aedat4", aedat4_bytes(ev, (64, 48), stream=1),
         r"no packet belongs to event stream 0 named by the info node \(event streams: 0\); "
         r"packets carry stream id\(s\) 1, 2$")
    _err(tmp_path, "empty.aedat4", aedat4_file([], (64, 48), event_stream=3),
         r"no packet belongs to event stream 3 .*the file holds no packets$")
    events, _ = read_events(_write(tmp_path, "ok.aedat4", aedat4_bytes(ev, (64, 48), stream=3, event_stream=3)))
    _same(events, ev)


def test_bad_prophesee(tmp_path):
    ev = random_events(np.random.default_rng(26), 30, (304, 240, 2))
    good = prophesee_dat_bytes(ev)
    _err(tmp_path, "p.dat", good[:-3], "not a whole number of 8-byte events")
    i = good.index(b"\x00\x08")
    _err(tmp_path, "q.dat", good[:i] + b"\x0c\x08" + good[i + 2:], "not Event2d")


def test_unknown_format(tmp_path):
    p = _write(tmp_path, "x.xyz", b"hello world")
    with pytest.raises(UnknownFormatError, match="unknown event-file format"):
        read_events(p)
    with pytest.raises(UnknownFormatError, match="HDF5"):
        detect_format(_write(tmp_path, "y.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 20))
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.bin")


def test_bad_idx():
    img = np.zeros((2, 28, 28), np.uint8)
    good = idx_bytes(img)
    with pytest.raises(CorruptFileError, match="wrong magic number 0x00000a03"):
        decode_idx(b"\x00\x00\x0a\x03" + good[4:], "f")
    with pytest.raises(CorruptFileError, match="wrong magic number 0x08030000"):
        decode_idx(b"\x08\x03\x00\x00" + good[4:], "f")
    with pytest.raises(CorruptFileError, match="truncated"):
        decode_idx(good[:-1], "f")
    with pytest.raises(CorruptFileError, match="trailing bytes"):
        decode_idx(good + b"\0", "f")
    with pytest.raises(CorruptFileError, match="truncated header"):
        decode_idx(good[:9], "f")
    gz = gzip.compress(good)
    with pytest.raises(CorruptFileError, match="gzip"):
        decode_idx(gz[:-10], "f")
    with pytest.raises(CorruptFileError, match="gzip"):
        decode_idx(gz[:12] + bytes([gz[12] ^ 0x55]) + gz[13:], "f")


BOMB_MB = 64  # inflated size of the bombs below; a bounded reader never gets near it


def _peak_bytes(fn):
    """Peak Python-allocated bytes (zlib and lz4 allocate their output through Python) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_idx_gzip_bomb_is_refused_without_inflating_it():
    # a valid 16-byte array, then 64 MB of zeros in the same gzip stream (a 65 KB file, honest trailer)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = c.compress(idx_bytes(np.arange(16, dtype=np.uint8))) + b"".join(c.compress(zeros) for _ in range(BOMB_MB))
    bomb += c.flush()
    assert len(bomb) < BOMB_MB << 11

    def read():
        with pytest.raises(CorruptFileError, match=r"^bomb\.gz: gzip stream inflates to more than the 24 bytes"):
            decode_idx(bomb, "bomb.gz")

    assert _peak_bytes(read) < 4 << 20


def test_idx_gzip_header_larger_than_the_file_can_hold():
    raw = gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28) + bytes(100))
    with pytest.raises(CorruptFileError, match=r"more than a \d+-byte gzip file can hold"):
        decode_idx(raw, "f")


def test_aedat4_lz4_bomb_without_content_size_is_refused_without_inflating_it(tmp_path):
    import lz4.frame

    ev = random_events(np.random.default_rng(5), 3, (64, 48, 2))
    bomb = lz4.frame.compress(fb_event_packet(ev) + bytes(BOMB_MB << 20), store_size=False)
    assert lz4.frame.get_frame_info(bomb)["content_size"] == 0 and len(bomb) < BOMB_MB << 13
    p = _write(tmp_path, "bomb.aedat4", aedat4_file([(0, bomb)], (64, 48)))

    def read():
        with pytest.raises(CorruptFileError, match="lz4 packet inflates past the 84 bytes its size prefix declares"):
            read_events(p)

    assert _peak_bytes(read) < 4 << 20
    short = lz4.frame.compress(fb_event_packet(ev)[:-5], store_size=False)
    _err(tmp_path, "short.aedat4", aedat4_file([(0, short)], (64, 48)), "its size prefix says")


def test_bad_cifar_pickle():
    img = np.zeros((2, 3, 32, 32), np.uint8)
    good = cifar_pickle_bytes(img, [1, 2])
    with pytest.raises(CorruptFileError, match="not a valid CIFAR pickle"):
        decode_cifar_pickle(good[:-40], "f")
    with pytest.raises(CorruptFileError, match="no 'labels' key"):
        decode_cifar_pickle(cifar_pickle_bytes(img, [1, 2], label_key=b"fine_labels"), "f")
    with pytest.raises(CorruptFileError, match="2 entries for 1 images|entries"):
        decode_cifar_pickle(cifar_pickle_bytes(img[:1], [1, 2]), "f")
    with pytest.raises(CorruptFileError, match="top-level object is a list"):
        decode_cifar_pickle(pickle.dumps([1, 2]), "f")
