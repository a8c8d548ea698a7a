"""DDP on CPU (gloo): `torchrun --nproc_per_node=2 -m spikeforge train` ends with the same weights as one process
with the same global batch (model without BatchNorm, whose per-process statistics would differ by design)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from spikeforge.config import TrainConfig
from spikeforge.training import train
from spikeforge.training.checkpoint import load_checkpoint
from spikeforge.training.distributed import batches, shard

SETS = ["model.name=mlp", "model.kwargs.hidden=[32]", "model.T=2", "data.train_subset=200",
        "data.test_subset=64", "data.batch_size=32", "run.epochs=2", "run.plots=false", "run.progress=false",
        "run.device=cpu", "optim.lr=0.01", "data.augment=crop", "optim.grad_clip=1.0"]


def test_global_batch_shards_cover_it_exactly():
    for world in (1, 2, 3):
        for b in batches(103, 16, seed=5, epoch=2):
            parts = [shard(b, r, world) for r in range(world)]
            assert sorted(torch.cat(parts).tolist()) == sorted(b.tolist())
    assert [len(b) for b in batches(103, 16, 0, 0)][-1] == 7
    assert [len(b) for b in batches(103, 16, 0, 0)][-1] == 7 and len(batches(97, 16, 0, 0, drop_last=True)) == 6


def test_two_process_gloo_matches_one_process(tmp_path):
    torchrun = shutil.which("torchrun") or None
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone", "--nproc_per_node=2", "-m", "spikeforge", "train", "--out", str(tmp_path / "ddp")]
    for s in SETS:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    single = train(TrainConfig().override(SETS), tmp_path / "one", verbose=False)
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last")
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last")
    assert b["meta"]["world_size"] == 2 and a["meta"]["world_size"] == 1
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    # rank 0 alone wrote the metrics: one record per epoch, and they agree with the single process
    recs = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2] and recs[-1]["world_size"] == 2
    assert recs[-1]["test_acc"] == pytest.approx(single["final"]["test_acc"], abs=1 / 64 + 1e-9)
    assert recs[-1]["train_loss"] == pytest.approx(single["final"]["train_loss"], rel=1e-4)
