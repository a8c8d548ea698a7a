"""``spikeforge datasets``: names, sizes, expected files and where they are looked for."""

from __future__ import annotations

import numpy as np

from datafmt_writers import orchard_bin_bytes, random_events
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
    assert "train: " + str(tmp_path / "d" / "nmnist") in nm and "34x34x2" in nm and "train=60000" in nm
    assert "embedded" in next(line for line in out.splitlines() if line.startswith("digits"))


def test_datasets_details(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEFORGE_DATA", "")
    assert main(["datasets", "--details", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train-images-idx3-ubyte.gz (or train-images-idx3-ubyte)" in out
    assert "folders searched: " + str(tmp_path / "mnist") in out
    assert "https://www.garrickorchard.com/datasets/n-mnist" in out
