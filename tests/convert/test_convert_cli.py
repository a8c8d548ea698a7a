"""``spikeforge convert RUN_DIR``: a trained ANN run (bundled digits, seconds) becomes an SNN run folder with the
accuracy-vs-T curve, the diagnostics table and the converted weights; bad --T is named."""

import json

import pytest
import torch

from spikeforge.cli import main


@pytest.fixture(scope="module")
def ann_run(tmp_path_factory):
    """A run folder as ``spikeforge train`` writes it (config + best checkpoint) for an MLP ANN twin trained on
    the bundled digits; trained here with plain SGD (the trainer's first run imports torch._dynamo: seconds)."""
    from convert_helpers import train_ann

    from spikeforge.config import TrainConfig
    from spikeforge.training.checkpoint import save_checkpoint
    from spikeforge.training.data import load_data
    from spikeforge.training.runs import RunDir
    from spikeforge.models.build import build_model

    cfg = TrainConfig().override(["data.name=digits", "model.name=mlp", "model.neuron=relu", "model.T=1",
                                  "model.kwargs.hidden=[32]", "data.train_subset=600", "data.test_subset=100"])
    arrays = load_data(cfg.data)
    torch.manual_seed(0)
    ann = train_ann(build_model(cfg, arrays), arrays.x_train, arrays.y_train, epochs=3)
    run = RunDir.create(tmp_path_factory.mktemp("ann") / "run")
    cfg.to_yaml(run.config_path)
    save_checkpoint(run.best, ann.state_dict(), None, {"epoch": 3})
    return run.path


def test_convert_cli_writes_an_snn_run_folder(ann_run, tmp_path, capsys):
    out = tmp_path / "snn"
    rc = main(["convert", str(ann_run), "--recipe", "percentile", "--T", "2,1,64", "--set", "backend=reference",
               "--set", "v_init=0.5", "--calib-samples", "200", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SNN accuracy: T=1:" in text and "features.1" in text and "spikes/sample" in text
    res = json.loads((out / "results.json").read_text())
    assert set(res["acc"]) == {"1", "2", "64"} and res["spikes_per_sample"]["64"] > res["spikes_per_sample"]["1"]
    assert abs(res["acc"]["64"] - res["ann_acc"]) <= 0.05
    assert res["diagnostics"][0]["layer"] == "features.1"
    assert (out / "accuracy_vs_T.png").stat().st_size > 1000
    assert (out / "checkpoints" / "snn.safetensors").is_file()
    assert json.loads((out / "conversion.json").read_text())["options"]["v_init"] == 0.5


def test_convert_cli_names_a_bad_T(ann_run, capsys):
    assert main(["convert", str(ann_run), "--T", "4,0"]) == 2
    assert "--T: 0; allowed: integers >= 1" in capsys.readouterr().err
