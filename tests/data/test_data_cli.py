"""``spikeforge datasets``: names, sizes, expected files and where they are looked for."""

from __future__ import annotations

import re

import numpy as np

from datafmt_writers import idx_bytes, orchard_bin_bytes, random_events
from spikeforge.cli import main
from spikeforge.data import list_datasets


def test_datasets_command_lists_everything(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    p = tmp_path / "d" / "nmnist" / "Train" / "3" / "00001.bin"
    p.parent.mkdir(parents=True)
    p.write_bytes(orchard_bin_bytes(random_events(np.random.default_rng(0), 10)))
    assert main(["datasets"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.index(str(tmp_path / "env")) < first.index(str(tmp_path / "cache"))
    assert main(["datasets", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "data folders searched, in order: " + str(tmp_path / "d")  # only the one given
    for name in list_datasets():
        assert name in out
    nm = next(line for line in out.splitlines() if line.startswith("nmnist"))
    assert "train: " + str(tmp_path / "d" / "nmnist") in nm and "34x34x2" in nm and "train=60000 test=10000" in nm
    assert re.search(r" train=60000 test=10000 +train=1 test=0 ", nm)  # the full set's size, then what is on disk
    assert "embedded" in next(line for line in out.splitlines() if line.startswith("digits"))


def test_datasets_command_counts_what_is_on_disk(capsys, tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("Train", 3), ("Test", 2)):
        for k in range(n):
            p = tmp_path / "nmnist" / split / str(k) / f"{k:05d}.bin"
            p.parent.mkdir(parents=True)
            p.write_bytes(orchard_bin_bytes(random_events(rng, 10)))
    for prefix, n in (("train", 7), ("t10k", 4)):
        (tmp_path / "mnist" / f"{prefix}-images-idx3-ubyte.gz").parent.mkdir(exist_ok=True)
        (tmp_path / "mnist" / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_bytes(np.zeros((n, 28, 28), np.uint8), gz=True))
        (tmp_path / "mnist" / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_bytes(np.zeros(n, np.uint8), gz=True))
    (tmp_path / "fashion-mnist").mkdir()
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / "fashion-mnist" / f).write_bytes(b"\x08\x03garbage")
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines[2:] if line and line.split()[0] in list_datasets()}
    assert re.search(r" train=60000 test=10000 +train=3 test=2 ", row["nmnist"])  # full set, then on disk
    assert re.search(r" train=60000 test=10000 +train=7 test=4 ", row["mnist"])
    assert re.search(r" train=60000 test=10000 +train=unreadable test=0 ", row["fashion_mnist"])
    bad = [line for line in lines if line.startswith("unreadable: fashion_mnist train: ")]
    assert len(bad) == 1 and "wrong magic number" in bad[0] and str(tmp_path / "fashion-mnist") in bad[0]


def test_datasets_details(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFORGE_DATA", "")
    assert main(["datasets", "--details", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train-images-idx3-ubyte.gz (or train-images-idx3-ubyte)" in out
    assert "folders searched: " + str(tmp_path / "mnist") in out
    assert "https://www.garrickorchard.com/datasets/n-mnist" in out
