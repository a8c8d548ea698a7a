"""``spikeforge energy`` and ``spikeforge quantize`` on a one-epoch run: the files they write and their rows;
report.md carries the inference-energy line; bad input."""

import json

import pytest

from spikeforge.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs") / "r"
    tiny = ["data.train_subset=128", "data.test_subset=64", "data.batch_size=32", "model.T=2",
            "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false", "run.device=cpu"]
    assert main(["train", "--out", str(d)] + sum((["--set", a] for a in tiny), [])) == 0
    return d


def test_report_has_energy_line(run_dir):
    text = (run_dir / "report.md").read_text()
    assert "Inference energy:" in text and "SynOps" in text and "horowitz45-fp32-compute" in text


def test_energy_command(run_dir, capsys):
    assert main(["energy", str(run_dir), "--samples", "8"]) == 0
    out = json.loads((run_dir / "energy.json").read_text())
    assert out["profile"] == "horowitz45-fp32-compute" and out["samples"] == 8
    assert sum(r["share"] for r in out["layers"]) == pytest.approx(1.0)
    assert out["synops"] > 0 and out["macs"] > 0 and out["training"]["ratio"] > 0
    assert (run_dir / "plots" / "energy.png").stat().st_size > 0 and "| layer |" in capsys.readouterr().out
    assert main(["energy", str(run_dir), "--profile", "tpu"]) == 2
    assert "profile: unknown value 'tpu'" in capsys.readouterr().err


def test_quantize_command(run_dir, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(run_dir), "--bits", "4", "--out", str(out)]) == 0
    rows = json.loads((out / "quantize.json").read_text())["rows"]
    assert [r["mode"] for r in rows] == ["-", "PTQ"] and rows[1]["weight_bits"] < rows[0]["weight_bits"] / 6
    assert "| 4-bit uniform | PTQ |" in (out / "report.md").read_text()
    assert main(["quantize", str(run_dir), "--bits", "9", "--out", str(tmp_path / "bad")]) == 2
    assert "quant.bits: expected an integer in 1..8, got 9" in capsys.readouterr().err
