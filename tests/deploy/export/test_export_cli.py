"""``spikeforge export RUN_DIR --format nir|onnx``: the written file runs the trained model (same outputs)."""

import numpy as np
import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.training.checkpoint import save_checkpoint
from spikeforge.training.data import load_data
from spikeforge.training.runs import RunDir
from spikeforge.models.build import build_model

TINY = ["data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false", "run.plots=false", "run.device=cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as training leaves it (config + best checkpoint), without the training."""
    cfg = TrainConfig().override(TINY)
    run = RunDir.create(tmp_path_factory.mktemp("export") / "r")
    run.config_path.write_text(cfg.to_yaml())
    torch.manual_seed(0)
    model = build_model(cfg, load_data(cfg.data))
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run.best, model.state_dict(), None, {"epoch": 1})
    return run.path


def test_export_nir_runs_the_trained_model(run_dir, tmp_path, capsys):
    pytest.importorskip("nir")
    from spikeforge.deploy.export.cli import load_run_model
    from spikeforge.deploy.export.nir import from_nir

    out = tmp_path / "model.nir"
    assert main(["export", str(run_dir), "--format", "nir", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    model, sample = load_run_model(run_dir)
    x_seq = model.to_sequence(sample).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(from_nir(out)(x_seq), model(sample), rtol=0, atol=1e-5)


@pytest.mark.slow  # the ONNX path itself is tested in test_export_onnx.py; this is the CLI plumbing for it
def test_export_onnx_runs_the_trained_model(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from spikeforge.deploy.export.cli import load_run_model

    out = tmp_path / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "-o", str(out)]) == 0
    model, sample = load_run_model(run_dir)
    x_seq = sample.unsqueeze(0).expand(model.T, *sample.shape).contiguous().numpy()
    with torch.no_grad():
        y0 = model(sample).numpy()
    np.testing.assert_allclose(ort.InferenceSession(str(out)).run(None, {"x": x_seq})[0], y0, rtol=0, atol=1e-5)


def test_export_names_missing_run(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "nir", "-o", str(tmp_path / "m.nir")]) == 2
    assert "is not a run folder (no config.yaml in it)" in capsys.readouterr().err
