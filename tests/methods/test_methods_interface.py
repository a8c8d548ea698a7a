"""The Method interface: registry, config section, bptt as a method, and what every registered method owes
the loop (generated over the registry, so a new method is checked without editing a list)."""

import dataclasses

import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.methods import METHODS, StepContext, create_method
from spikeforge.methods.base import Method
from spikeforge.training import train
from spikeforge.training.losses import compute_loss

TINY = ["data.train_subset=96", "data.test_subset=64", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false", "run.plots=false",
        "run.device=cpu"]


def test_config_section_validates_name_and_kwargs():
    assert TrainConfig().method.name == "bptt"
    with pytest.raises(ValueError, match="'method.name': got 'nope'; allowed: one of .*bptt"):
        TrainConfig().override(["method.name=nope"])
    with pytest.raises(ValueError, match=r"method.kwargs.windw: unknown option of method 'bptt'"):
        TrainConfig().override(["method.kwargs.windw=3"])
    cfg = TrainConfig().override(["method.name=bptt"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["method"]  # a config.yaml written before the method section existed still loads
    assert TrainConfig.from_dict(old).method.name == "bptt"


def test_cli_lists_methods(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.list():
        assert name in out


def test_bptt_step_is_plain_forward_loss_backward():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(2), torch.nn.Linear(16, 3))
    x, y = torch.randn(4, 5, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    fn = lambda out, t: compute_loss("ce", out, t)  # noqa: E731
    res = create_method("bptt").train_step(net, x, y, StepContext(epoch=1, step=0, global_step=0, loss_fn=fn,
                                                                   loss_scale=0.5, T=4))
    got = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (fn(net(x), y) * 0.5).backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(got, net.parameters()))
    assert res.logits.shape == (4, 5, 3) and not res.loss.requires_grad


@pytest.mark.parametrize("name", METHODS.list())
def test_every_method_declares_its_config_and_card(name):
    cls = METHODS.get(name).factory
    assert issubclass(cls, Method) and cls.name == name
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert METHODS.get(name).help


@pytest.mark.parametrize("name", METHODS.list())
def test_every_method_trains_the_default_model_one_epoch(tmp_path, name):
    """Each method runs through the real loop with its defaults and writes the common record fields."""
    cls = METHODS.get(name).factory
    sets = TINY + [f"method.name={name}"] + list(getattr(cls, "smoke_overrides", ()))
    res = train(TrainConfig().override(sets), tmp_path / "r", verbose=False)
    rec = res["final"]
    for k in ("test_acc", "T", "train_seconds", "peak_memory_mb", "spikes_per_sample", "samples_per_s"):
        assert k in rec, k
    assert rec["method"] == name and 0.0 <= rec["test_acc"] <= 1.0
