"""The loop: determinism, schedules, NaN stop, run-folder protection, CLI train/eval/report, bf16, data errors."""

import json
import math

import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.training import TrainingDivergedError, lr_at, train
from spikeforge.training.checkpoint import load_checkpoint
from spikeforge.training.runs import RunDir

TINY = ["data.train_subset=192", "data.test_subset=96", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "run.epochs=2", "run.progress=false", "run.plots=false",
        "run.device=cpu"]
TIMING = {"epoch_seconds", "train_seconds", "samples_per_s", "data_fraction", "peak_memory_mb", "lr"}


def tiny(*extra):
    return TrainConfig().override(TINY + list(extra))


def strip(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_same_seed_same_metrics_and_record_fields(tmp_path):
    r1 = train(tiny(), tmp_path / "a", verbose=False)
    r2 = train(tiny(), tmp_path / "b", verbose=False)
    m1, m2 = RunDir(r1["run_dir"]).read_metrics(), RunDir(r2["run_dir"]).read_metrics()
    assert strip(m1) == strip(m2)
    rec = m1[-1]
    for k in ("epoch", "train_loss", "train_acc", "test_acc", "epoch_seconds", "samples_per_s", "peak_memory_mb",
              "spikes_per_sample", "firing_rates", "acc_per_step"):
        assert k in rec, k
    assert len(rec["acc_per_step"]) == 2 and rec["acc_per_step"][-1] == rec["test_acc"]
    assert set(rec["firing_rates"]) == {"features.1", "features.4"}
    assert all(0.0 <= v <= 1.0 for v in rec["firing_rates"].values())
    run = RunDir(r1["run_dir"])
    assert (run.path / "config.yaml").is_file() and run.read_json("run.json")["code"]["spikeforge"]
    assert load_checkpoint(run.last)["meta"]["epoch"] == 2
    assert load_checkpoint(run.best)["meta"]["test_acc"] == max(r["test_acc"] for r in m1)
    # a different seed gives a different trajectory
    r3 = train(tiny("run.seed=1"), tmp_path / "c", verbose=False)
    assert strip(RunDir(r3["run_dir"]).read_metrics()) != strip(m1)


def test_learning_improves_over_chance(tmp_path):
    cfg = tiny("run.epochs=4", "data.train_subset=512", "data.test_subset=256", "model.T=4", "optim.lr=0.005",
               "model.kwargs.channels=[8, 16]")
    res = train(cfg, tmp_path / "r", verbose=False)
    assert res["final"]["test_acc"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("loss", ["ce", "tet", "mse"])
def test_every_optimizer_and_loss_trains(tmp_path, opt, loss):
    cfg = tiny(f"optim.name={opt}", f"loss.name={loss}", "run.epochs=1", "optim.grad_clip=1.0",
               "loss.label_smoothing=0.1", "schedule.name=step", "schedule.step_epochs=1")
    res = train(cfg, tmp_path / "r", verbose=False)
    assert math.isfinite(res["final"]["train_loss"])


def test_schedules():
    cfg = TrainConfig().override(["optim.lr=1.0", "run.epochs=10", "schedule.warmup_epochs=1"])
    assert lr_at(cfg, 0, 10) == pytest.approx(0.1) and lr_at(cfg, 9, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 10, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 55, 10) == pytest.approx(0.5)  # halfway through the cosine
    assert lr_at(cfg, 100, 10) == pytest.approx(0.0, abs=1e-12)
    step = cfg.override(["schedule.name=step", "schedule.step_epochs=3", "schedule.gamma=0.5",
                         "schedule.warmup_epochs=0"])
    assert [lr_at(step, e * 10, 10) for e in (0, 2, 3, 6)] == pytest.approx([1.0, 1.0, 0.5, 0.25])
    const = cfg.override(["schedule.name=constant", "schedule.warmup_epochs=0"])
    assert lr_at(const, 77, 10) == 1.0


class NaNAfter(torch.nn.Module):
    """A tiny model whose output turns NaN from call ``n`` on."""

    def __init__(self, n):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        self.calls = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # counter kept as data
        self.n = n

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.lin(x.flatten(1)).unsqueeze(0).repeat(2, 1, 1)
        return out * float("nan") if self.training and self.calls >= self.n else out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny("run.epochs=3", "run.checkpoint_every_steps=2")  # 6 steps per epoch
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step 3; the last good "
                                                    r"checkpoint is kept at .*last.safetensors"):
        train(cfg, tmp_path / "r", verbose=False, model=NaNAfter(6 + 4))
    ck = load_checkpoint(RunDir(tmp_path / "r").last)
    assert (ck["meta"]["epoch"], ck["meta"]["step_in_epoch"]) == (1, 2)  # epoch 2, after its 2nd step
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_cli_reports_divergence(tmp_path, capsys, monkeypatch):
    from spikeforge.training import trainer

    monkeypatch.setattr(trainer, "build_model", lambda cfg, arrays: NaNAfter(2))
    rc = main(["train", "--out", str(tmp_path / "r")] + sum((["--set", a] for a in TINY), []))
    assert rc == 3
    assert "training stopped: the loss became nan" in capsys.readouterr().err


def test_run_folder_never_overwritten(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r")] + sum((["--set", a] for a in TINY + ["run.epochs=1"]), [])
    assert main(args) == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert main(args) == 2
    assert "is not empty; pass --resume to continue it or --force to overwrite it" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    assert main(args + ["--force", "--seed", "3"]) == 0
    assert (tmp_path / "r" / "metrics.jsonl").read_text() != before


def test_cli_train_eval_report(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out)] + sum((["--set", a] for a in TINY), [])
                + ["--set", "run.plots=true"]) == 0
    text = capsys.readouterr().out
    assert "samples/s" in text and "done: test accuracy" in text and "spikes/sample" in text
    for png in ("curves.png", "latency.png", "firing_rates.png", "raster.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    best = load_checkpoint(RunDir(out).best)["meta"]["test_acc"]
    assert ev["test_acc"] == pytest.approx(best) and len(ev["acc_per_step"]) == 2
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "![curves.png](plots/curves.png)" in report and "![raster.png](plots/raster.png)" in report


def test_help_on_every_command(capsys):
    for cmd in ("train", "eval", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: spikeforge " + cmd in capsys.readouterr().out


def test_unknown_key_on_command_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lrr'" in err and "lr, weight_decay" in err


def test_missing_dataset_shows_data_layer_message(tmp_path, capsys, monkeypatch):
    from spikeforge.data import DatasetNotFoundError, load_arrays

    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotFoundError) as e:
        load_arrays("fashion_mnist", "train", data_dir=tmp_path / "none")
    rc = main(["train", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path / "none"),
               "--set", "data.name=fashion_mnist"])
    assert rc == 2
    assert str(e.value) in capsys.readouterr().err


def test_bf16_autocast_on_cpu(tmp_path):
    res = train(tiny("run.amp=bf16", "run.epochs=1"), tmp_path / "r", verbose=False)
    assert math.isfinite(res["final"]["train_loss"]) and 0.0 <= res["final"]["test_acc"] <= 1.0


def test_event_frames_pipeline(tmp_path):
    from spikeforge.data import get_dataset
    from spikeforge.data.paths import resolve_data_dirs

    try:
        get_dataset("nmnist", "test")
    except FileNotFoundError:
        pytest.skip("N-MNIST subset not found (set SPIKEFORGE_DATA to shared/data)")
    del resolve_data_dirs
    cfg = TrainConfig().override(["data.name=nmnist", "data.frames=4", "model.T=4", "data.batch_size=25",
                                  "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false",
                                  "run.plots=false", "data.train_subset=50", "data.test_subset=50"])
    res = train(cfg, tmp_path / "r", verbose=False)
    assert len(res["final"]["acc_per_step"]) == 4
    with pytest.raises(ValueError, match=r"model.T: 2 but the data has 4 frames"):
        train(cfg.override(["model.T=2"]), tmp_path / "r2", verbose=False)
