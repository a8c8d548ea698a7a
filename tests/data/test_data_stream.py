"""The streaming data path (data.loader=stream): the same global batches as the in-memory path, for any
number of processes and workers; image folders and event frame stores read per sample; resume mid-epoch;
one clear error per kind of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datafmt_writers import orchard_bin_bytes, random_events
from spikeforge.config import TrainConfig
from spikeforge.data.errors import CorruptFileError
from spikeforge.training import distributed as D
from spikeforge.training.data import load_data, train_batches

FAST = ["run.progress=false", "run.plots=false", "model.T=2", "model.kwargs.channels=[4, 8]",
        "model.kwargs.hidden=16", "run.device=cpu"]


def _cfg(*extra) -> TrainConfig:
    return TrainConfig().override([*FAST, *extra])


def _epoch(data, cfg, epoch, rank=0, world=1, first=0):
    order = D.batches(len(data.y_train), cfg.data.batch_size, cfg.run.seed, epoch, drop_last=cfg.data.drop_last)
    return [(x.clone(), y.clone(), n) for x, y, n in
            train_batches(data, cfg.data, cfg.run.seed, epoch, order, first, rank, world)]


def _jpeg(path, rng, size=(16, 16)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")


def _tiny_imagenet(root, classes=3, per_class=8, val=6, size=(16, 16), seed=0):
    """A Tiny-ImageNet layout: 200 wnids listed, ``classes`` of them with images."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(200)]
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids[:classes]:
        for k in range(per_class):
            _jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", rng, size)
    lines = []
    for k in range(val):
        _jpeg(base / "val" / "images" / f"val_{k}.JPEG", rng, size)
        lines.append(f"val_{k}.JPEG\t{wnids[k % classes]}\t0\t0\t4\t4")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def _nmnist(root, per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for d in range(10):
            folder = root / "nmnist" / split / str(d)
            folder.mkdir(parents=True)
            for k in range(per_class):
                (folder / f"{k:05d}.bin").write_bytes(orchard_bin_bytes(random_events(rng, 200 + 40 * d)))


# ------------------------------------------------------------------------------------------------ order
def test_stream_batches_are_the_memory_paths_and_a_function_of_seed_and_epoch():
    base = ["data.train_subset=100", "data.test_subset=40", "data.batch_size=16"]
    mem = _cfg(*base, "data.loader=memory")
    st = _cfg(*base, "data.loader=stream", "data.num_workers=0")
    dm, ds = load_data(mem.data), load_data(st.data)
    assert dm.loader == "memory" and ds.loader == "stream"
    assert torch.equal(dm.y_train, ds.y_train)
    torch.testing.assert_close(torch.tensor(ds.mean), torch.tensor(dm.mean), rtol=1e-5, atol=1e-6)
    a, b = _epoch(dm, mem, 3), _epoch(ds, st, 3)
    assert [y.tolist() for _, y, _ in a] == [y.tolist() for _, y, _ in b]
    for (xa, _, na), (xb, _, nb) in zip(a, b):
        torch.testing.assert_close(xb, xa, rtol=1e-5, atol=1e-5)
        assert na == nb
    again = _epoch(ds, st, 3)
    assert all(torch.equal(x, x2) for (x, _, _), (x2, _, _) in zip(b, again))
    other = _epoch(ds, st, 4)
    assert [y.tolist() for _, y, _ in other] != [y.tolist() for _, y, _ in b]
    # resuming at step 2 draws exactly the remaining batches
    tail = _epoch(ds, st, 3, first=2)
    assert all(torch.equal(x, x2) for (x, _, _), (x2, _, _) in zip(b[2:], tail)) and len(tail) == len(b) - 2


def test_same_global_batch_for_one_and_two_processes_and_for_workers():
    """Augmented (crop_flip, drawn per sample from (seed, epoch, index)): rank 0 and rank 1 of two processes
    hold the strided halves of the one-process batch; 2 workers read what the main process reads."""
    cfg = _cfg("data.train_subset=60", "data.test_subset=20", "data.batch_size=12", "data.augment=crop_flip",
               "data.loader=stream", "data.num_workers=0")
    data = load_data(cfg.data)
    one = _epoch(data, cfg, 2)
    r0, r1 = _epoch(data, cfg, 2, rank=0, world=2), _epoch(data, cfg, 2, rank=1, world=2)
    for (x, y, n), (x0, y0, n0), (x1, y1, n1) in zip(one, r0, r1):
        assert n == n0 == n1 == len(y)
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1) and torch.equal(y[0::2], y0)
    aug_off = _epoch(load_data(cfg.override(["data.augment=none"]).data), cfg, 2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(one, aug_off))  # the augmentation did something
    workers = load_data(cfg.override(["data.num_workers=2"]).data)
    got = _epoch(workers, cfg, 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, got))
    workers.x_train.close()


# ------------------------------------------------------------------------------------------------ images
def test_tiny_imagenet_trains_from_a_folder_through_the_cli(tmp_path, capsys):
    from spikeforge.cli import main

    _tiny_imagenet(tmp_path / "data")
    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--no-progress",
               "--set", "data.name=tiny_imagenet", "--set", "data.batch_size=8", "--set", "data.augment=rrc_flip",
               "--set", "data.num_workers=0", "--set", "run.epochs=1", *sum((["--set", s] for s in FAST), [])])
    assert rc == 0
    log = capsys.readouterr().out
    assert "data.loader=auto -> stream" in log
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["loader"] == "stream" and rec["skipped_samples"] == 0


def test_random_resized_crop_is_seeded_per_sample_and_sized(tmp_path):
    _tiny_imagenet(tmp_path, classes=2, per_class=4, size=(24, 20))
    cfg = _cfg("data.name=tiny_imagenet", f"data.data_dir={tmp_path}", "data.batch_size=4", "data.augment=rrc_flip",
               "data.num_workers=0", "data.normalize=false")
    data = load_data(cfg.data)
    a, b, c = _epoch(data, cfg, 1), _epoch(data, cfg, 1), _epoch(data, cfg, 2)
    assert a[0][0].shape == (4, 3, 20, 24)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    test_x = next(data.x_test.batches([[0, 1]]))[0]
    from spikeforge.data.imagefolder import load_image

    torch.testing.assert_close(test_x[1], load_image(data.x_test.source.describe(1)))  # eval: no augmentation


# ------------------------------------------------------------------------------------------------ events
def test_event_frames_come_from_a_store_built_once_and_match_the_memory_path(tmp_path):
    _nmnist(tmp_path)
    base = ["data.name=nmnist", "data.frames=3", "model.T=3", f"data.data_dir={tmp_path}", "data.batch_size=8",
            f"data.options={{cache_dir: {tmp_path / 'cache'}}}"]
    mem = _cfg(*base, "data.loader=memory")
    st = _cfg(*base, "data.loader=stream", "data.num_workers=0")
    dm, ds = load_data(mem.data), load_data(st.data)
    assert ds.x_train.shape == (30, 3, 2, 34, 34) and ds.sequence
    torch.testing.assert_close(torch.tensor(ds.std), torch.tensor(dm.std), rtol=1e-5, atol=1e-6)
    for (xa, ya, _), (xb, yb, _) in zip(_epoch(dm, mem, 1), _epoch(ds, st, 1)):
        assert torch.equal(ya, yb)
        torch.testing.assert_close(xb, xa, rtol=1e-5, atol=1e-5)
    store = ds.x_train.source.store
    stamp = store.frames_path.stat().st_mtime_ns
    load_data(st.data)  # built once: reused
    assert store.frames_path.stat().st_mtime_ns == stamp
    other = load_data(st.override(["data.frames=4", "model.T=4"]).data).x_train.source.store
    assert other.folder != store.folder and other.frame_shape[0] == 4  # keyed by the binning
    from spikeforge.training.data import choose_loader

    assert choose_loader(st.override(["data.loader=auto"]).data) == "memory"  # 30 small recordings fit


# ------------------------------------------------------------------------------------------------ resume
def test_resume_mid_epoch_on_the_streaming_path_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """In process: the run is stopped right after its first mid-epoch checkpoint of epoch 2, then resumed."""
    from spikeforge.training import trainer
    from spikeforge.training.trainer import train

    cfg = _cfg("data.train_subset=96", "data.test_subset=32", "data.batch_size=16", "data.augment=crop_flip",
               "data.loader=stream", "data.num_workers=0", "run.epochs=2", "run.checkpoint_every_steps=2")
    ref = train(cfg, run_dir=tmp_path / "ref", verbose=False)
    real_save = trainer.save_checkpoint

    def save_then_die(path, model, opt, meta, **kw):
        real_save(path, model, opt, meta, **kw)
        if opt is not None and meta["epoch"] == 1 and meta["step_in_epoch"] == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path / "victim", verbose=False)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    got = train(cfg, run_dir=tmp_path / "victim", resume=True, verbose=False)
    for k in ("train_acc", "test_acc", "acc_per_step", "loader", "global_step"):
        assert got["final"][k] == ref["final"][k], k
    for k in ("train_loss", "test_loss"):
        assert got["final"][k] == pytest.approx(ref["final"][k], rel=1e-6), k


@pytest.mark.slow
def test_kill9_mid_epoch_streaming_with_workers_then_resume(tmp_path):
    """A real `spikeforge train` subprocess on the streaming path (2 workers), killed with SIGKILL mid-epoch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--no-progress", *sum((["--set", s] for s in FAST), []), "--set", "data.loader=stream",
            "--set", "data.num_workers=2", "--set", "data.train_subset=320", "--set", "data.test_subset=96",
            "--set", "data.batch_size=32", "--set", "data.augment=crop", "--set", "run.epochs=3",
            "--set", "run.checkpoint_every_steps=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "spikeforge", "train"]
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    subprocess.run(cmd + ["--out", str(ref), *args], check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(cmd + ["--out", str(victim), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while True:
        try:
            meta = json.loads((victim / "checkpoints" / "last.json").read_text())
            if meta["step_in_epoch"] > 0 and meta["epoch"] >= 1:
                break
        except (OSError, json.JSONDecodeError, KeyError):
            pass
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    res = subprocess.run(cmd + ["--resume", str(victim), "--no-progress"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    timing = {"epoch_seconds", "train_seconds", "samples_per_s", "data_fraction", "peak_memory_mb"}

    def metrics(run):
        return [{k: v for k, v in json.loads(line).items() if k not in timing}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    got, want = metrics(victim), metrics(ref)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert [r["test_acc"] for r in got] == [r["test_acc"] for r in want]
    assert [r["train_loss"] for r in got] == pytest.approx([r["train_loss"] for r in want], rel=1e-6)


# ------------------------------------------------------------------------------------------------ bad input
def test_imagenet_folder_without_class_subfolders_names_the_folder(tmp_path):
    from spikeforge.data import get_dataset

    _jpeg(tmp_path / "imagenet" / "train" / "a.JPEG", np.random.default_rng(0))
    with pytest.raises(CorruptFileError, match=r"imagenet/train: holds no class sub-folders"):
        get_dataset("imagenet", "train", data_dir=tmp_path)


def test_truncated_image_fails_with_its_path_or_is_skipped_and_counted(tmp_path):
    from spikeforge.training.trainer import train

    base = _tiny_imagenet(tmp_path / "data", classes=2, per_class=4)
    bad = base / "train" / "n00000001" / "images" / "n00000001_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    cfg = _cfg("data.name=tiny_imagenet", f"data.data_dir={tmp_path / 'data'}", "data.batch_size=4",
               "data.num_workers=0", "run.epochs=1", "data.normalize=false")
    with pytest.raises(ValueError, match=rf"{bad}: cannot decode image.*data.bad_files=skip"):
        train(cfg, run_dir=tmp_path / "fail", verbose=False)
    res = train(cfg.override(["data.bad_files=skip"]), run_dir=tmp_path / "skip", verbose=False)
    assert res["final"]["skipped_samples"] == 1


def test_mixed_image_sizes_without_a_resize_name_the_image(tmp_path):
    base = _tiny_imagenet(tmp_path, classes=2, per_class=3)
    odd = base / "train" / "n00000001" / "images" / "n00000001_1.JPEG"
    _jpeg(odd, np.random.default_rng(1), size=(20, 18))
    cfg = _cfg("data.name=tiny_imagenet", f"data.data_dir={tmp_path}", "data.batch_size=6", "data.num_workers=0",
               "data.normalize=false", "data.bad_files=skip")  # never skipped: a size mismatch is not a bad file
    data = load_data(cfg.data)
    with pytest.raises(ValueError, match=rf"{odd}: image decodes to 3x18x20 but .*3x16x16.*resize"):
        _epoch(data, cfg, 1)


def test_bad_loader_settings_name_the_key():
    from spikeforge.data.stream import ArraySource, StreamSplit

    with pytest.raises(ValueError, match=r"'data.num_workers': got -1; allowed: an integer >= 0"):
        _cfg("data.num_workers=-1")
    with pytest.raises(ValueError, match=r"data.num_workers: got -2"):
        StreamSplit(ArraySource(torch.zeros(2, 1), torch.zeros(2)), num_workers=-2)
    with pytest.raises(ValueError, match=r"'data.loader': got 'disk'"):
        _cfg("data.loader=disk")
    with pytest.raises(ValueError, match=r"data.loader: 'memory' but 'tiny_imagenet' is not an in-memory static set"):
        load_data(_cfg("data.name=tiny_imagenet", "data.loader=memory").data)
    with pytest.raises(ValueError, match=r"data.augment: 'rrc' .* needs an image-folder dataset"):
        load_data(_cfg("data.augment=rrc", "data.loader=stream").data)
