"""The Method interface: registry, config section, bptt as a method, and what every registered method owes
the loop (generated over the registry, so a new method is checked without editing a list)."""

import dataclasses
import json
import os
from pathlib import Path

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
    lines = capsys.readouterr().out.splitlines()
    for name in METHODS.list():
        (line,) = [ln for ln in lines if ln.split()[:1] == [name]]  # one line per method: name, help, card
        cls = METHODS.get(name).factory
        assert METHODS.get(name).help in line
        assert (f"[card: {cls.card}]" in line) if cls.card else ("[card:" not in line), line


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
def test_an_unknown_option_is_one_error_listing_the_methods_options(name):
    """``method.kwargs.<unknown>``: one ValueError naming the key and the method, listing every valid option."""
    valid = [f.name for f in dataclasses.fields(METHODS.get(name).factory.Config)]
    want = (f"method.kwargs.nope: unknown option of method {name!r}; valid: {', '.join(valid) or '(none)'}")
    with pytest.raises(ValueError) as e:
        TrainConfig().override([f"method.name={name}", "method.kwargs.nope=1"])
    assert str(e.value) == want
    with pytest.raises(ValueError) as e:  # the same error whichever order the keys are set in
        TrainConfig().override(["method.kwargs.nope=1", f"method.name={name}"])
    assert str(e.value) == want


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


# ------------------------------------------------------------------------------- bptt: the pre-interface results
# Recorded with the training loop as it was before the Method interface (commit e255947^), one torch thread, and
# reproduced bit for bit by e255947 and later: the default config on digits, and a Fashion-MNIST smoke run.
DIGITS_1_EPOCH = {"test_acc": 0.8194444444444444, "train_acc": 0.7188587334725122, "train_loss": 1.73713391451016,
                  "test_loss": 1.9624430497487386}
DIGITS_DEFAULT_TEST_ACC = [0.9, 0.975, 0.9861111111111112] + [0.9916666666666667] * 5
DIGITS_DEFAULT_TRAIN_LOSS = [1.6061867553489275, 0.656072526278393, 0.28904254426538073, 0.1760404539568688,
                             0.132753474250301, 0.11408217028353723, 0.10264088501201045, 0.10047758400191345]
FASHION_SMOKE = {"test_acc": 0.122, "train_loss": 1.6427717628479004}


def _one_thread_run(tmp_path, cfg, **kw):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums depend on the thread count; the recorded values used one thread
    try:
        train(cfg, tmp_path / "r", verbose=False, **kw)
    finally:
        torch.set_num_threads(threads)
    return [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]


def _same(got, want):
    """Accuracies exactly (they are counts); losses to 1e-6 relative (the last bits may move with the CPU's
    vector width; a change in what the loop computes moves them by far more)."""
    for k, v in want.items():
        assert got[k] == v if "acc" in k else got[k] == pytest.approx(v, rel=1e-6), (k, got[k], v)


def test_bptt_is_the_pre_interface_loop_on_the_default_config(tmp_path):
    """`spikeforge train` with the default config (digits, conv SNN, T=4), one epoch: the metrics recorded
    before ``bptt`` became a method."""
    (rec,) = _one_thread_run(tmp_path, TrainConfig().override(
        ["run.epochs=1", "run.progress=false", "run.plots=false", "run.device=cpu"]))
    assert rec["method"] == "bptt"
    _same(rec, DIGITS_1_EPOCH)


def _fashion_dir():
    d = Path(os.environ.get("SPIKEFORGE_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
    return d if (d / "fashion-mnist").is_dir() else None


@pytest.mark.slow
@pytest.mark.skipif(_fashion_dir() is None, reason="Fashion-MNIST not found under $SPIKEFORGE_DATA")
def test_bptt_is_the_pre_interface_loop_on_digits_and_a_fashion_mnist_smoke_run(tmp_path):
    """The whole default run (8 epochs on digits) and configs/fashion_mnist.yaml on 2,000/500 images for one
    epoch reproduce the pre-interface metrics (36-180 s measured on 2 shared cores)."""
    common = ["run.progress=false", "run.plots=false", "run.device=cpu"]
    recs = _one_thread_run(tmp_path / "digits", TrainConfig().override(common))
    assert [r["test_acc"] for r in recs] == DIGITS_DEFAULT_TEST_ACC
    assert [r["train_loss"] for r in recs] == pytest.approx(DIGITS_DEFAULT_TRAIN_LOSS, rel=1e-6)
    cfg = TrainConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "fashion_mnist.yaml").override(
        common + ["data.train_subset=2000", "data.test_subset=500", "run.epochs=1"])
    (rec,) = _one_thread_run(tmp_path / "fashion", cfg, data_dir=_fashion_dir())
    _same(rec, FASHION_SMOKE)
