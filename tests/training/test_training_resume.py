"""Nothing lost: a real `spikeforge train` subprocess killed with SIGKILL mid-epoch, then `--resume`, ends with
the same metrics as a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = ["--set", "data.train_subset=320", "--set", "data.test_subset=96", "--set", "data.batch_size=32",
        "--set", "model.T=2", "--set", "optim.lr=0.01", "--set", "model.kwargs.channels=[4, 8]", "--set", "run.epochs=3",
        "--set", "run.checkpoint_every_steps=3", "--set", "run.plots=false", "--set", "run.device=cpu",
        "--set", "data.augment=crop", "--set", "model.kwargs.hidden=16", "--no-progress"]
TIMING = {"epoch_seconds", "train_seconds", "samples_per_s", "data_fraction", "peak_memory_mb"}


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = "1"  # same thread count in every run: identical float results
    return env


def _cmd(*extra):
    return [sys.executable, "-m", "spikeforge", "train", *extra]


def _metrics(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def _mid_epoch_checkpoint(run):
    side = run / "checkpoints" / "last.json"
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta["step_in_epoch"] > 0 and meta["epoch"] >= 1  # inside epoch 2 or later


def _close(a, b):
    """Counts (accuracies) equal; losses and rates equal to float rounding (CPU kernels may differ in the
    last bit between processes, e.g. with buffer alignment)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a))
    return a == b


@pytest.mark.parametrize("method", [[], ["--set", "method.name=ottt", "--set", "model.kwargs.norm=ws"]],
                         ids=["bptt", "ottt"])
def test_kill9_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, method):
    """``bptt`` (the default), and ``ottt``: a method with one backward pass per time step."""
    args = ARGS + method
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    subprocess.run(_cmd("--out", str(ref), *args), check=True, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd("--out", str(victim), *args), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not _mid_epoch_checkpoint(victim):
        assert proc.poll() is None, "the run ended before a mid-epoch checkpoint was seen"
        assert time.time() < deadline, "no mid-epoch checkpoint appeared"
        time.sleep(0.01)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads((victim / "checkpoints" / "last.json").read_text())
    assert len(_metrics(victim)) < 3  # it really was interrupted

    res = subprocess.run(_cmd("--resume", str(victim), "--no-progress"), env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming {victim}" in res.stdout
    assert killed_at["epoch"] >= 1
    got, want = _metrics(victim), _metrics(ref)
    assert [r["epoch"] for r in got] == [1, 2, 3]
    assert [r["test_acc"] for r in got] == [r["test_acc"] for r in want]
    assert [r["train_acc"] for r in got] == [r["train_acc"] for r in want]
    assert _close(got, want)

    from spikeforge.training.checkpoint import load_checkpoint

    a, b = load_checkpoint(ref / "checkpoints" / "last"), load_checkpoint(victim / "checkpoints" / "last")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("epochs_done", [0, 1])
def test_resume_drops_metrics_the_checkpoint_does_not_know(tmp_path, epochs_done):
    """A crash between appending an epoch's record and writing `last` must not duplicate that epoch."""
    from spikeforge.training.runs import RunDir

    run = RunDir.create(tmp_path / "r")
    for e in (1, 2):
        run.append_metrics({"epoch": e})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 3, "torn')  # a write cut short by the crash
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert [r["epoch"] for r in run.truncate_metrics(epochs_done)] == list(range(1, epochs_done + 1))
