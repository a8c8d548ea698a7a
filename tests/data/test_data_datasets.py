"""Every registered dataset: metadata, loading from tiny files in the real layout, the error when files are
missing, and the real MNIST / Fashion-MNIST / N-MNIST files in shared/data."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from datafmt_writers import (aedat2_bytes, aedat4_bytes, aedat31_bytes, cifar_binary_bytes, cifar_meta_bytes,
                             cifar_pickle_bytes, gesture_labels_csv, idx_bytes, orchard_bin_bytes, random_events,
                             shared_data_dir, write_shd_h5)
from spikeforge.data import (EVENT_DTYPE, Compose, CorruptFileError, DatasetInfo, DatasetNotFoundError, Denoise,
                             RandomFlip, ToFrame, get_dataset, get_info, list_datasets, load_arrays,
                             resolve_data_dirs)

SHARED = shared_data_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="shared sample data not found ($SPIKEFORGE_DATA or ../shared/data)")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No $SPIKEFORGE_DATA and an empty user cache, so only the test's data_dir is found."""
    monkeypatch.setenv("SPIKEFORGE_DATA", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))


# ------------------------------------------------------------------ registry and metadata
@pytest.mark.parametrize("name", list_datasets())
def test_info_is_complete(name):
    info = get_info(name)
    assert isinstance(info, DatasetInfo) and info.name == name
    assert info.kind in ("static", "event") and info.num_classes >= 2 and info.splits and info.url
    if info.kind == "static":
        assert len(info.input_shape) == 3
    else:
        assert len(info.sensor_size) == 3
    assert not info.class_names or len(info.class_names) == info.num_classes
    if name != "digits":
        assert info.files and info.folders
        assert info.resources or info.manual_download


def test_expected_names_registered():
    assert {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "imagenet", "nmnist",
            "ncaltech101", "dvs_gesture", "cifar10_dvs", "shd"} <= set(list_datasets())


@pytest.mark.parametrize("name", [n for n in list_datasets() if n != "digits"])
def test_missing_files_error_names_everything(name, tmp_path):
    info = get_info(name)
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset(name, info.splits[0], data_dir=tmp_path / "empty")
    msg = str(e.value)
    assert repr(name) in msg and str(tmp_path / "empty") in msg and info.url in msg and "expected files:" in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset(name, info.splits[0])
    msg = str(e.value)
    assert repr(name) in msg and info.url in msg and str(tmp_path / "usercache" / "spikeforge") in msg
    if info.resources and not info.manual_download:  # the CLI command that fetches it
        assert f"`spikeforge datasets download {name}`" in msg
        assert "download=True" in msg


def test_manual_download_datasets_say_so(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="manual download|cannot fetch"):
        get_dataset("imagenet", "train", data_dir=tmp_path, download=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_dataset("nope", "train")
    with pytest.raises(ValueError, match="has no split 'validation'"):
        get_dataset("digits", "validation")
    with pytest.raises(ValueError, match="does not take option"):
        get_dataset("digits", "train", colour=True)
    with pytest.raises(ValueError, match="not an in-memory static set"):
        load_arrays("nmnist", "train")


def test_resolve_data_dirs_order(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFORGE_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert resolve_data_dirs() == [tmp_path / "a", tmp_path / "b", tmp_path / "usercache" / "spikeforge"]
    assert resolve_data_dirs(tmp_path / "c") == [tmp_path / "c"]  # an explicit folder is the only one


def test_explicit_data_dir_is_the_only_place_searched(monkeypatch, tmp_path):
    _mnist_files(tmp_path / "env" / "mnist")
    _mnist_files(tmp_path / "usercache" / "spikeforge" / "mnist")
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "env"))
    assert get_dataset("mnist", "test").root == tmp_path / "env" / "mnist"  # no folder given: env, then cache
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset("mnist", "test", data_dir=tmp_path / "mine")
    msg = str(e.value)
    assert msg.splitlines()[0].startswith(f"dataset 'mnist' (split 'test') not found in {tmp_path / 'mine'} ")
    assert str(tmp_path / "mine" / "mnist") in msg and str(tmp_path / "env") not in msg and "usercache" not in msg
    _mnist_files(tmp_path / "mine" / "mnist", n_test=3)
    ds = get_dataset("mnist", "test", data_dir=tmp_path / "mine")
    assert ds.root == tmp_path / "mine" / "mnist" and len(ds) == 3


# ------------------------------------------------------------------ static sets
def test_digits_offline_default():
    tr, te = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert len(tr) == 1437 and len(te) == 360
    x, y = tr[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    xa, ya = load_arrays("digits", "train")
    assert xa.shape == (1437, 1, 8, 8) and float(xa.max()) == 1.0 and float(xa.min()) == 0.0
    xb, yb = load_arrays("digits", "train")
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # deterministic split


# sha256 of load_arrays("digits", split) (x float32 bytes, y int64 bytes) as produced from scikit-learn's copy
# before the array was shipped inside spikeforge: the default `spikeforge train` data must never change
DIGITS_SHA256 = {
    "train": ("e8393da23bbff1484e9b731832b58553b9fce00162b6dfce81ca69b298f1172d",
              "840655eed13987c08675901a7788f91fbdf0737d4f6c24dacec233128594b703"),
    "test": ("a2aa76f3d07688865d969a31b0c5fcdc0c483f7d142f9389f7a4490601aade46",
             "d2d13878ac53c721746733868ce4f4076e8b543eba13fc55e18dd5001b4f0eec"),
}


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits_same_arrays_and_split_without_scikit_learn(split, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)  # any import of scikit-learn now fails
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    x, y = load_arrays("digits", split)
    got = (hashlib.sha256(x.numpy().tobytes()).hexdigest(), hashlib.sha256(y.numpy().tobytes()).hexdigest())
    assert got == DIGITS_SHA256[split]


def test_digits_ships_with_its_licence():
    from spikeforge.data import digits

    assert digits.DATA_FILE.stat().st_size < 200_000
    note = digits.DATA_FILE.with_name("digits8x8.LICENSE.txt").read_text()
    assert "CC BY 4.0" in note and "10.24432/C50P49" in note and "Alpaydin" in note
    images, labels = digits.load_digits_arrays()
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _mnist_files(folder, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = rng.integers(0, 10, n).astype(np.uint8)
        sfx = ".gz" if gz else ""
        (folder / f"{prefix}-images-idx3-ubyte{sfx}").write_bytes(idx_bytes(img, gz))
        (folder / f"{prefix}-labels-idx1-ubyte{sfx}").write_bytes(idx_bytes(lab, gz))
        data[prefix] = (img, lab)
    return data


@pytest.mark.parametrize("layout,gz", [("mnist", True), (".", False), ("MNIST/raw", False)])
def test_mnist_layouts(tmp_path, layout, gz):
    folder = tmp_path if layout == "." else tmp_path / layout
    data = _mnist_files(folder, gz=gz)
    ds = get_dataset("mnist", "train", data_dir=tmp_path)
    assert len(ds) == 12
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and torch.allclose(x[0] * 255, torch.from_numpy(data["train"][0][3]).float())
    assert y == int(data["train"][1][3])
    xa, ya = load_arrays("mnist", "test", data_dir=tmp_path)
    assert xa.shape == (5, 1, 28, 28) and ya.dtype == torch.int64 and 0 <= float(xa.min()) <= float(xa.max()) <= 1


def test_fashion_mnist_folder_and_transform(tmp_path):
    _mnist_files(tmp_path / "fashion-mnist", seed=1)
    ds = get_dataset("fashion_mnist", "test", data_dir=tmp_path, transform=lambda x: x * 2)
    assert len(ds) == 5 and float(ds[0][0].max()) <= 2.0
    assert get_dataset("fashion_mnist", "test", data_dir=tmp_path).classes[0] == "T-shirt/top"


def test_mnist_corrupt_file_is_named(tmp_path):
    _mnist_files(tmp_path / "mnist")
    p = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    p.write_bytes(idx_bytes(np.full(12, 11, np.uint8), gz=True))
    with pytest.raises(CorruptFileError, match="label 11"):
        get_dataset("mnist", "train", data_dir=tmp_path)
    p.write_bytes(idx_bytes(np.zeros(11, np.uint8), gz=True))
    with pytest.raises(CorruptFileError, match="11 labels for 12 images"):
        get_dataset("mnist", "train", data_dir=tmp_path)


def _cifar10(tmp_path, binary=False, n=4):
    rng = np.random.default_rng(3)
    imgs = {}
    if binary:
        d = tmp_path / "cifar10" / "cifar-10-batches-bin"
        d.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            img = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            lab = rng.integers(0, 10, n)
            (d / f"{name}.bin").write_bytes(cifar_binary_bytes(img, lab))
            imgs[name] = (img, lab)
    else:
        d = tmp_path / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            img = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            lab = rng.integers(0, 10, n)
            (d / name).write_bytes(cifar_pickle_bytes(img, lab))
            imgs[name] = (img, lab)
        (d / "batches.meta").write_bytes(cifar_meta_bytes(["airplane"] * 10))
    return imgs


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10(tmp_path, binary):
    imgs = _cifar10(tmp_path, binary)
    ds = get_dataset("cifar10", "train", data_dir=tmp_path)
    assert len(ds) == 20
    x, y = ds[5]  # batch 2, image 1
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x.numpy() * 255, imgs["data_batch_2"][0][1], atol=1e-3)
    assert y == int(imgs["data_batch_2"][1][1])
    xa, ya = load_arrays("cifar10", "test", data_dir=tmp_path)
    assert xa.shape == (4, 3, 32, 32)


def test_cifar10_format_option(tmp_path):
    _cifar10(tmp_path, binary=False)
    _cifar10(tmp_path, binary=True)
    assert get_dataset("cifar10", "test", data_dir=tmp_path).root.name == "cifar-10-batches-py"
    assert get_dataset("cifar10", "test", data_dir=tmp_path, format="binary").root.name == "cifar-10-batches-bin"
    with pytest.raises(ValueError, match="format must be one of"):
        get_dataset("cifar10", "test", data_dir=tmp_path, format="jpeg")


@pytest.mark.parametrize("binary", [False, True])
def test_cifar100_fine_and_coarse(tmp_path, binary):
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    fine, coarse = rng.integers(0, 100, 6), rng.integers(0, 20, 6)
    if binary:
        d = tmp_path / "cifar100" / "cifar-100-binary"
        d.mkdir(parents=True)
        for name in ("train.bin", "test.bin"):
            (d / name).write_bytes(cifar_binary_bytes(img, np.stack([coarse, fine], 1)))
    else:
        d = tmp_path / "cifar-100-python"
        d.mkdir(parents=True)
        for name in ("train", "test"):
            (d / name).write_bytes(cifar_pickle_bytes(img, (fine, coarse), label_key=(b"fine_labels", b"coarse_labels")))
    ds = get_dataset("cifar100", "train", data_dir=tmp_path)
    assert [ds[i][1] for i in range(6)] == fine.tolist() and len(ds.classes) == 100
    ds = get_dataset("cifar100", "test", data_dir=tmp_path, labels="coarse")
    assert [ds[i][1] for i in range(6)] == coarse.tolist() and len(ds.classes) == 20


def _jpeg(path, rng, size=(64, 64)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")


def test_tiny_imagenet(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    for w in wnids[:2]:
        for k in range(2):
            _jpeg(root / "train" / w / "images" / f"{w}_{k}.JPEG", rng)
    _jpeg(root / "val" / "images" / "val_0.JPEG", rng)
    _jpeg(root / "val" / "images" / "val_1.JPEG", rng)
    (root / "val" / "val_annotations.txt").write_text(f"val_0.JPEG\t{wnids[7]}\t0\t0\t10\t10\nval_1.JPEG\t{wnids[1]}\t1\t1\t5\t5\n")
    tr = get_dataset("tiny_imagenet", "train", data_dir=tmp_path)
    assert len(tr) == 4 and tr.targets == [0, 0, 1, 1]
    x, _ = tr[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    va = get_dataset("tiny_imagenet", "val", data_dir=tmp_path)
    assert va.targets == [7, 1] and va[0][0].shape == (3, 64, 64)
    (root / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(CorruptFileError, match="val_1.JPEG: cannot decode image"):
        va[1]


def test_imagenet_folder(tmp_path):
    rng = np.random.default_rng(6)
    for split in ("train", "val"):
        for w in ("n01440764", "n01443537"):
            _jpeg(tmp_path / "imagenet" / split / w / "a.JPEG", rng, size=(300, 260))
    ds = get_dataset("imagenet", "val", data_dir=tmp_path)
    assert len(ds) == 2 and ds.targets == [0, 1] and ds.classes == ("n01440764", "n01443537")
    assert ds[1][0].shape == (3, 224, 224)
    raw = get_dataset("imagenet", "train", data_dir=tmp_path, resize=None, crop=None)
    assert raw[0][0].shape == (3, 260, 300)


# ------------------------------------------------------------------ event sets
def _nmnist(root, per_class=2, seed=7):
    rng = np.random.default_rng(seed)
    truth = {}
    for split in ("Train", "Test"):
        for d in range(10):
            for k in range(per_class):
                ev = random_events(rng, 50 + k, (34, 34, 2))
                p = root / split / str(d) / f"{k:05d}.bin"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(orchard_bin_bytes(ev))
                truth[p] = ev
    return truth


def test_nmnist_layout_and_labels(tmp_path):
    truth = _nmnist(tmp_path / "nmnist")
    ds = get_dataset("nmnist", "train", data_dir=tmp_path)
    assert len(ds) == 20 and ds.targets == [d for d in range(10) for _ in range(2)]
    ev, label = ds[5]
    assert ev.dtype == EVENT_DTYPE and label == 2
    np.testing.assert_array_equal(ev["t"], truth[ds.samples[5][0]]["t"])
    fr, _ = get_dataset("nmnist", "test", data_dir=tmp_path, transform=ToFrame((34, 34, 2), n_time_bins=5))[0]
    assert fr.shape == (5, 2, 34, 34) and fr.dtype == torch.float32 and float(fr.sum()) == 50
    first = get_dataset("nmnist", "train", data_dir=tmp_path, first_saccade_only=True)[0][0]
    assert first["t"].max() < 100_000


@pytest.mark.parametrize("workers", [0, 1])
def test_raw_event_set_in_a_dataloader_with_collate_events(tmp_path, workers):
    from torch.utils.data import DataLoader

    from spikeforge.data import collate_events

    truth = _nmnist(tmp_path / "nmnist")
    ds = get_dataset("nmnist", "train", data_dir=tmp_path)
    loader = DataLoader(ds, batch_size=6, shuffle=False, collate_fn=collate_events, num_workers=workers)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [6, 6, 6, 2]
    events = [e for b in batches for e in b[0]]
    labels = torch.cat([b[1] for b in batches])
    assert labels.dtype == torch.int64 and labels.tolist() == ds.targets
    for ev, (path, _, _) in zip(events, ds.samples):
        assert ev.dtype == EVENT_DTYPE
        np.testing.assert_array_equal(ev["t"], truth[path]["t"])
        np.testing.assert_array_equal(ev["x"], truth[path]["x"])


def test_collate_events_refuses_frames_in_one_line():
    from spikeforge.data import collate_events

    with pytest.raises(ValueError, match=r"^collate_events: sample 1 holds a Tensor .*drop collate_fn$"):
        collate_events([(np.zeros(3, EVENT_DTYPE), 1), (torch.zeros(2, 2), 0)])


def test_event_frame_cache(tmp_path, monkeypatch):
    _nmnist(tmp_path / "nmnist", per_class=1)
    tf = Compose([Denoise((34, 34, 2), 50_000), ToFrame((34, 34, 2), n_time_bins=4), RandomFlip((34, 34, 2), p_x=0.5)])
    ds = get_dataset("nmnist", "train", data_dir=tmp_path, transform=tf, cache_dir=tmp_path / "cache")
    first = [ds[i][0] for i in range(len(ds))]
    files = sorted((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 10 and (files[0].parent / "transform.json").exists()
    # second epoch: nothing is decoded again, yet the random flip still runs on top of the cached frames
    monkeypatch.setattr(type(ds), "read", lambda self, i: (_ for _ in ()).throw(AssertionError("decoded again")))
    torch.manual_seed(0)
    second = [ds[i][0] for i in range(len(ds))]
    for a, b in zip(first, second):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    # other parameters -> another cache folder
    monkeypatch.undo()
    tf2 = Compose([ToFrame((34, 34, 2), n_time_bins=3)])
    ds2 = get_dataset("nmnist", "train", data_dir=tmp_path, transform=tf2, cache_dir=tmp_path / "cache")
    assert ds2[0][0].shape == (3, 2, 34, 34) and ds2.cache.folder != ds.cache.folder
    # a damaged cache entry is recomputed, not trusted
    ds2.cache.path(ds2.sample_id(0)).write_bytes(b"garbage")
    assert torch.equal(ds2[0][0], tf2(ds2.read(0)))


def test_ncaltech101_split(tmp_path):
    rng = np.random.default_rng(8)
    for cls in ("accordion", "BACKGROUND_Google"):
        for k in range(10):
            p = tmp_path / "ncaltech101" / "Caltech101" / cls / f"image_{k + 1:04d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(orchard_bin_bytes(random_events(rng, 30, (240, 180, 2))))
    tr, te = get_dataset("ncaltech101", "train", data_dir=tmp_path), get_dataset("ncaltech101", "test", data_dir=tmp_path)
    assert len(tr) == 18 and len(te) == 2
    assert set(tr.targets) == {0, 4}  # BACKGROUND_Google = 0, accordion = 4
    assert len(get_dataset("ncaltech101", "all", data_dir=tmp_path)) == 20


def test_dvs_gesture_trials(tmp_path):
    rng = np.random.default_rng(9)
    root = tmp_path / "DvsGesture"
    root.mkdir()
    truth = {}
    for user, light in ((1, "fluorescent"), (2, "led"), (24, "natural")):
        ev = random_events(rng, 3000, (128, 128, 2), t_max=3_000_000, t0=1000)
        name = f"user{user:02d}_{light}"
        (root / f"{name}.aedat").write_bytes(aedat31_bytes(ev, packet_size=500))
        trials = [(3, 100_000, 900_000), (11, 1_000_000, 2_000_000)]
        (root / f"{name}_labels.csv").write_text(gesture_labels_csv(trials))
        truth[name] = (ev, trials)
    tr = get_dataset("dvs_gesture", "train", data_dir=tmp_path)
    te = get_dataset("dvs_gesture", "test", data_dir=tmp_path)
    assert len(tr) == 4 and len(te) == 2 and tr.targets == [2, 10, 2, 10]
    ev, label = tr[1]
    full, _ = truth["user01_fluorescent"]
    want = full[(full["t"] >= 1_000_000) & (full["t"] < 2_000_000)]
    np.testing.assert_array_equal(ev["t"], want["t"])
    np.testing.assert_array_equal(ev["x"], want["x"])
    (root / "trials_to_test.txt").write_text("user02_led.aedat\n")
    assert len(get_dataset("dvs_gesture", "test", data_dir=tmp_path)) == 2
    (root / "user02_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,5,9\n")
    with pytest.raises(CorruptFileError, match="class 12 outside 1..11"):
        get_dataset("dvs_gesture", "test", data_dir=tmp_path)


def test_cifar10_dvs_aedat2_and_aedat4(tmp_path):
    rng = np.random.default_rng(10)
    root = tmp_path / "cifar10-dvs"
    truth = {}
    for cls in ("airplane", "truck"):
        for i in (0, 3, 950):
            ev = random_events(rng, 200, (128, 128, 2), t_max=1_300_000)
            p = root / cls / f"cifar10_{cls}_{i}.aedat"
            p.parent.mkdir(parents=True, exist_ok=True)
            if cls == "truck" and i == 3:
                p = p.with_suffix(".aedat4")
                p.write_bytes(aedat4_bytes(ev, (128, 128)))
            else:
                p.write_bytes(aedat2_bytes(ev))
            truth[p.name] = ev
    tr = get_dataset("cifar10_dvs", "train", data_dir=tmp_path)
    te = get_dataset("cifar10_dvs", "test", data_dir=tmp_path)
    assert len(tr) == 4 and len(te) == 2 and tr.targets == [0, 0, 9, 9]
    for ds in (tr, te):
        for i in range(len(ds)):
            ev, _ = ds[i]
            np.testing.assert_array_equal(ev["x"], truth[ds.samples[i][0].name]["x"])


def test_shd(tmp_path):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(11)
    samples = []
    for label in (0, 5, 19):
        t = np.sort(rng.uniform(0, 1.0, 100)).astype(np.float32)
        samples.append((t, rng.integers(0, 700, 100), label))
    (tmp_path / "shd").mkdir()
    write_shd_h5(tmp_path / "shd" / "shd_train.h5", samples)
    ds = get_dataset("shd", "train", data_dir=tmp_path)
    assert len(ds) == 3 and ds.targets == [0, 5, 19] and ds.classes[0] == "k0"
    ev, _ = ds[1]
    np.testing.assert_array_equal(ev["x"], samples[1][1])
    np.testing.assert_array_equal(ev["t"], np.rint(samples[1][0].astype(np.float64) * 1e6).astype(np.int64))
    fr, _ = get_dataset("shd", "train", data_dir=tmp_path, transform=ToFrame((700, 1, 1), n_time_bins=10))[0]
    assert fr.shape == (10, 1, 1, 700) and float(fr.sum()) == 100
    bad = [(np.array([0.5, 0.1], np.float32), np.array([1, 2]), 0)]
    write_shd_h5(tmp_path / "shd" / "shd_test.h5", bad)
    with pytest.raises(CorruptFileError, match="timestamps go backwards"):
        get_dataset("shd", "test", data_dir=tmp_path)[0]
    (tmp_path / "shd" / "shd_test.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CorruptFileError, match="shd_test.h5"):
        get_dataset("shd", "test", data_dir=tmp_path)


# ------------------------------------------------------------------ real files in shared/data
@needs_shared
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_mnist_files_match_official_checksums(name):
    info = get_info(name)
    ds = get_dataset(name, "train", data_dir=SHARED)
    for res in info.resources:
        assert hashlib.md5((ds.root / res.filename).read_bytes()).hexdigest() == res.md5
    x, y = load_arrays(name, "test", data_dir=SHARED)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert sorted(y.unique().tolist()) == list(range(10))
    assert len(ds) == 60000 and ds[0][0].shape == (1, 28, 28)
    if name == "mnist":
        assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_shared
def test_real_nmnist_subset_via_dataset():
    import csv

    rows = {r["file"]: int(r["label"]) for r in csv.DictReader(open(SHARED / "events" / "nmnist-subset" / "index.csv"))}
    for split, folder in (("train", "Train"), ("test", "Test")):
        ds = get_dataset("nmnist", split, data_dir=SHARED)
        assert len(ds) == 100
        for path, label, _ in ds.samples:
            assert rows[f"{folder}/{path.parent.name}/{path.name}"] == label
        frames, label = get_dataset("nmnist", split, data_dir=SHARED, transform=ToFrame((34, 34, 2), n_time_bins=3))[0]
        assert frames.shape == (3, 2, 34, 34) and float(frames.sum()) > 1000
