"""Fuzz every reader with random and mutated files: each either returns well-formed data or raises a
CorruptFileError (a ValueError) naming the file; never another exception, a crash, a hang or bad data."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafmt_writers import (aedat2_bytes, aedat2_davis_bytes, aedat4_bytes, aedat31_bytes, cifar_binary_bytes,
                             cifar_meta_bytes, cifar_pickle_bytes, gesture_labels_csv, idx_bytes, orchard_bin_bytes,
                             prophesee_dat_bytes, random_events)
from spikeforge.data import CorruptFileError, read_events
from spikeforge.data.cifar_format import decode_cifar_binary, decode_cifar_meta, decode_cifar_pickle
from spikeforge.data.events import (EVENT_DTYPE, decode_aedat2, decode_aedat4, decode_aedat31, decode_orchard_bin,
                                    decode_prophesee_dat)
from spikeforge.data.idx import decode_idx

NAME = "fuzzed-sample.file"  # every error must name it
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
_rng = np.random.default_rng(0)
EV34 = random_events(_rng, 40, (34, 34, 2))
EV128 = random_events(_rng, 40, (128, 128, 2))
SEEDS = {
    "orchard": (orchard_bin_bytes(EV34), lambda b: decode_orchard_bin(b, NAME)),
    "aedat2": (aedat2_bytes(EV128), lambda b: decode_aedat2(b, NAME)),
    "aedat2_davis": (aedat2_davis_bytes(random_events(_rng, 20, (346, 260, 2))), lambda b: decode_aedat2(b, NAME)),
    "aedat31": (aedat31_bytes(EV128, packet_size=9), lambda b: decode_aedat31(b, NAME)),
    "aedat4": (aedat4_bytes(random_events(_rng, 40, (64, 48, 2)), (64, 48), packet_size=15), lambda b: decode_aedat4(b, NAME)),
    "aedat4_raw": (aedat4_bytes(random_events(_rng, 20, (64, 48, 2)), (64, 48), "none", 8), lambda b: decode_aedat4(b, NAME)),
    "prophesee": (prophesee_dat_bytes(random_events(_rng, 30, (304, 240, 2))), lambda b: decode_prophesee_dat(b, NAME)),
    "prophesee_size": (prophesee_dat_bytes(random_events(_rng, 30, (100, 60, 2)), (100, 60)),
                       lambda b: decode_prophesee_dat(b, NAME)),
}


def _check_events(rec):
    ev, size = rec
    assert ev.dtype == EVENT_DTYPE
    w, h, c = size
    if len(ev):
        assert ev["x"].min() >= 0 and ev["x"].max() < w and ev["y"].min() >= 0 and ev["y"].max() < h
        assert ev["p"].max() < max(c, 2) and np.all(np.diff(ev["t"]) >= 0)


@st.composite
def mutated(draw, seed: bytes):
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "int32", "int32_header"]))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 9))]
        else:
            if op == "int32_header":
                i = draw(st.integers(0, min(len(data) - 1, 400)))
            v = draw(st.sampled_from([0, 1, -1, 7, 2**31 - 1, -(2**31), 1 << 20, 4096]))
            data[i:i + 4] = struct.pack("<i", v)
    return bytes(data)


def _expect_clean(decode, data, check=_check_events):
    try:
        out = decode(data)
    except ValueError as e:  # every one a CorruptFileError whose one line starts with the file's name
        assert isinstance(e, CorruptFileError) and str(e).startswith(NAME + ": ") and "\n" not in str(e), repr(e)
        return
    check(out)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_fuzz_event_readers_mutated(fmt):
    seed, decode = SEEDS[fmt]

    @FUZZ
    @given(mutated(seed))
    def run(data):
        _expect_clean(decode, data)

    run()


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_fuzz_event_readers_random(fmt):
    seed, decode = SEEDS[fmt]
    head = seed[: {"orchard": 0}.get(fmt, 14)]

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=600))
    def run(tail):
        _expect_clean(decode, head + tail)

    run()


def test_fuzz_read_events_through_files(tmp_path):
    names = {"orchard": "a.bin", "aedat2": "a.aedat", "aedat31": "a.aedat", "aedat4": "a.aedat4", "prophesee": "a.dat",
             "prophesee_size": "a.dat"}

    @FUZZ
    @given(st.sampled_from(sorted(names)), st.data())
    def run(fmt, data):
        p = tmp_path / names[fmt]
        blob = data.draw(mutated(SEEDS[fmt][0]))
        p.write_bytes(blob)
        try:
            rec = read_events(p)
        except ValueError as e:
            assert isinstance(e, CorruptFileError) and e.path == str(p) and str(e).startswith(str(p)), repr(e)
            return
        _check_events(rec)

    run()


# header fields that set the sensor size, each replaced by arbitrary text: an error names the file and the field
HEADER_FIELDS = {
    "aedat4 sizeX": (lambda v: aedat4_bytes(EV_HDR, (64, 48), "none", 8, xml_patch=(b">64<", b">" + v + b"<")),
                     decode_aedat4, "sizeX"),
    "aedat4 sizeY": (lambda v: aedat4_bytes(EV_HDR, (64, 48), "none", 8, xml_patch=(b">48<", b">" + v + b"<")),
                     decode_aedat4, "sizeY"),
    "prophesee width": (lambda v: prophesee_dat_bytes(EV_HDR, (64, 48)).replace(b"% Width 64", b"% Width " + v),
                        decode_prophesee_dat, "Width"),
    "prophesee height": (lambda v: prophesee_dat_bytes(EV_HDR, (64, 48)).replace(b"% Height 48", b"% Height " + v),
                         decode_prophesee_dat, "Height"),
}
EV_HDR = random_events(_rng, 20, (30, 20, 2))
OUT_OF_RANGE = [b"0", b"-1", b"32768", b"40000", b"99999999999999999999999", b"1e3", b"abc", "\u00b2".encode(),
                "\u0663".encode()]


@pytest.mark.parametrize("case", sorted(HEADER_FIELDS))
@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=repr)
def test_header_field_out_of_range_names_file_and_field(case, value):
    build, decode, field = HEADER_FIELDS[case]
    with pytest.raises(CorruptFileError) as e:
        decode(build(value), NAME)
    msg = str(e.value)
    assert msg.startswith(NAME + ": ") and field in msg and "allowed" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", sorted(HEADER_FIELDS))
def test_fuzz_header_fields(case):
    build, decode, _ = HEADER_FIELDS[case]

    @FUZZ
    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&\n\r"), max_size=12))
    def run(value):
        _expect_clean(lambda b: decode(b, NAME), build(value.encode()))

    run()


def _check_array(a):
    assert isinstance(a, np.ndarray)


def test_fuzz_idx():
    img = np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5)
    for seed in (idx_bytes(img), idx_bytes(img, gz=True)):
        @FUZZ
        @given(mutated(seed))
        def run(data):
            _expect_clean(lambda b: decode_idx(b, NAME), data, _check_array)

        run()


def test_fuzz_cifar_pickle_and_binary():
    img = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3, 32, 32)
    seeds = [
        (cifar_pickle_bytes(img, [1, 2]), lambda b: decode_cifar_pickle(b, NAME)),
        (cifar_meta_bytes(["a", "b"]), lambda b: decode_cifar_meta(b, NAME)),
        (cifar_binary_bytes(img, [3, 4]), lambda b: decode_cifar_binary(b, NAME)),
    ]
    def fuzz(seed, decode):
        @FUZZ
        @given(mutated(seed))
        def run(data):
            _expect_clean(decode, data, lambda out: None)

        run()

    for seed, decode in seeds:
        fuzz(seed, decode)

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=300))
    def run_random(tail):
        _expect_clean(lambda b: decode_cifar_pickle(b, NAME), b"\x80\x02" + tail, lambda out: None)

    run_random()


def test_fuzz_gesture_labels(tmp_path):
    from spikeforge.data.dvs_gesture import read_gesture_labels

    seed = gesture_labels_csv([(1, 10, 20), (11, 30, 40)]).encode()
    p = tmp_path / "x_labels.csv"

    @FUZZ
    @given(mutated(seed))
    def run(data):
        p.write_bytes(data)
        try:
            trials = read_gesture_labels(p)
        except CorruptFileError:
            return
        assert all(0 <= c < 11 and 0 <= s < e for c, s, e in trials)

    run()


def test_fuzz_images(tmp_path):
    import io

    from PIL import Image

    from spikeforge.data.imagefolder import load_image

    buf = io.BytesIO()
    Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint32).astype(np.uint8).reshape(16, 16, 3)).save(buf, "PNG")
    p = tmp_path / "x.png"

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(mutated(buf.getvalue()))
    def run(data):
        p.write_bytes(data)
        try:
            x = load_image(p)
        except CorruptFileError:
            return
        assert x.ndim == 3 and x.shape[0] == 3

    run()


def test_fuzz_shd(tmp_path):
    pytest.importorskip("h5py")
    from datafmt_writers import write_shd_h5

    from spikeforge.data import get_dataset

    root = tmp_path / "shd"
    root.mkdir()
    write_shd_h5(root / "shd_train.h5", [(np.array([0.1, 0.2], np.float32), np.array([3, 4]), 1)])
    seed = (root / "shd_train.h5").read_bytes()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(mutated(seed))
    def run(data):
        (root / "shd_train.h5").write_bytes(data)
        try:
            ds = get_dataset("shd", "train", data_dir=tmp_path)
            for i in range(len(ds)):
                ev, label = ds[i]
                _check_events((ev, (700, 1, 1)))
        except CorruptFileError:
            return

    run()
