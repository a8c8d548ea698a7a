"""TensorBoard sink (the event file holds metrics.jsonl's scalars), --init-from (weights carried into a new run;
a mismatch lists the keys), --resume --epochs (extends a finished run), progress without a terminal (no \\r)."""

import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.training import train
from spikeforge.training.checkpoint import load_checkpoint
from spikeforge.training.runs import RunDir

TINY = ["data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false", "run.plots=false",
        "run.device=cpu", "run.checkpoint_every_steps=0"]


def _args(extra=()):
    return sum((["--set", a] for a in TINY + list(extra)), [])


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A finished one-epoch run with the TensorBoard sink on."""
    out = tmp_path_factory.mktemp("tb") / "r"
    train(TrainConfig().override(TINY + ["run.tensorboard=true"]), out, verbose=False)
    return out


def _scalars(run_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_file_holds_the_metrics(done_run):
    pytest.importorskip("tensorboard")
    rec = RunDir(done_run).read_metrics()[-1]
    sc = _scalars(done_run)
    for key in ("train_loss", "train_acc", "test_acc", "test_loss", "spikes_per_sample", "samples_per_s"):
        assert sc[f"epoch/{key}"] == [(1, pytest.approx(rec[key], rel=1e-6))], key
    for layer, r in rec["firing_rates"].items():
        assert sc[f"firing_rate/{layer}"] == [(1, pytest.approx(r, rel=1e-6))]
    assert [s for s, _ in sc["step/loss"]] == [1, 2]  # one point per optimiser step (64 samples / 32)
    assert sc["step/loss"][-1][1] == pytest.approx(rec["train_loss"], rel=1e-6)  # the epoch's running mean


def test_init_from_run_starts_new_run_from_its_weights(done_run, tmp_path):
    best = load_checkpoint(RunDir(done_run).best)["model"]
    seen = {}
    from spikeforge.training import trainer

    real = trainer.build_optimizer

    def spy(cfg, model):  # the weights the new run starts from, before its first step
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        return real(cfg, model)

    trainer.build_optimizer = spy
    try:
        assert main(["train", "--out", str(tmp_path / "ft"), "--init-from", str(done_run)]
                    + _args(["optim.lr=0.0005"])) == 0
    finally:
        trainer.build_optimizer = real
    assert seen.keys() == best.keys()
    assert all(torch.equal(seen[k], best[k]) for k in best)


def test_init_from_other_architecture_lists_keys(done_run, tmp_path, capsys):
    ck = str(RunDir(done_run).best) + ".safetensors"
    assert main(["train", "--out", str(tmp_path / "x"), "--init-from", ck]
                + _args(["model.kwargs.channels=[4, 6]"])) == 2
    err = capsys.readouterr().err
    assert "weights do not fit the new run's model" in err and "shape mismatch: features.3.layer.0.weight" in err
    assert f"--init-from {ck}" in err and not (tmp_path / "x").exists()
    assert main(["train", "--out", str(tmp_path / "y"), "--init-from", str(tmp_path / "w.pt")] + _args()) == 2
    assert "is neither a run folder nor a .safetensors file" in capsys.readouterr().err


def test_resume_epochs_extends_a_finished_run(done_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(done_run, run)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1, 2]
    assert RunDir(run).load_config().run.epochs == 2 and load_checkpoint(RunDir(run).last)["meta"]["epoch"] == 2
    assert "resuming" in out and "epoch 2/2" in out
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    assert "--epochs: 1 is fewer than the 2 epochs" in capsys.readouterr().err


def test_progress_without_terminal_one_line_per_epoch(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "p")] + _args(["run.progress=true", "run.epochs=2"])) == 0
    cap = capsys.readouterr()
    assert "\r" not in cap.err and "\r" not in cap.out
    assert [ln.split()[1] for ln in cap.out.splitlines() if ln.startswith("epoch ")] == ["1/2", "2/2"]
