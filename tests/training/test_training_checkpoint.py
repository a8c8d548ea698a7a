"""Checkpoints: exact round trip (model, optimiser, RNG), atomic replacement, no pickle on load."""

import json
import pickle
import random

import numpy as np
import pytest
import torch

from spikeforge.training import checkpoint as C


def _trained():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3)).pow(2).sum().backward()
        opt.step()
    return net, opt


def test_round_trip_model_optimizer_meta(tmp_path):
    net, opt = _trained()
    C.save_checkpoint(tmp_path / "last", net.state_dict(), opt.state_dict(), {"epoch": 3, "note": "x"})
    ck = C.load_checkpoint(tmp_path / "last")
    for k, v in net.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    net2, opt2 = _trained()
    opt2.load_state_dict(ck["optimizer"])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(torch.as_tensor(s1["state"][i][k]), torch.as_tensor(s2["state"][i][k]))
    assert ck["meta"]["epoch"] == 3 and ck["meta"]["note"] == "x"
    side = json.loads((tmp_path / "last.json").read_text())
    assert side["epoch"] == 3 and "optimizer" in side and "rng" in side


def test_rng_state_restored(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    net, opt = _trained()
    C.save_checkpoint(tmp_path / "c", net.state_dict(), None, {})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    ck = C.load_checkpoint(tmp_path / "c")
    C.restore_rng_state(ck["meta"]["rng"], ck["tensors"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    net, opt = _trained()
    C.save_checkpoint(tmp_path / "last", net.state_dict(), opt.state_dict(), {"epoch": 1})
    before = (tmp_path / "last.safetensors").read_bytes()

    def crash(*a, **k):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(C.os, "replace", crash)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    with pytest.raises(OSError, match="simulated crash"):
        C.save_checkpoint(tmp_path / "last", net.state_dict(), opt.state_dict(), {"epoch": 2})
    assert (tmp_path / "last.safetensors").read_bytes() == before
    assert C.load_checkpoint(tmp_path / "last")["meta"]["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp file cleaned up


def test_load_never_unpickles(tmp_path, monkeypatch):
    net, opt = _trained()
    C.save_checkpoint(tmp_path / "last", net.state_dict(), opt.state_dict(), {"epoch": 1})

    def boom(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    assert C.load_checkpoint(tmp_path / "last")["meta"]["epoch"] == 1


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.load_checkpoint(tmp_path / "nope")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="not a spikeforge checkpoint"):
        C.load_checkpoint(tmp_path / "foreign")
