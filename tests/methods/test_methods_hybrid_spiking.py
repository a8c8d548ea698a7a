"""``hybrid_spiking`` (hybrid-spiking-lmu.md): omega follows the log-linear anneal and reaches every sigma-delta
layer; the activation bits fall as omega is annealed (card check 3) through the real loop; bad input."""

import json

import pytest
import torch

from spikeforge.config import TrainConfig
from spikeforge.methods import StepContext, create_method
from spikeforge.methods.hybrid_spiking import sigma_delta_layers
from spikeforge.models import create_model
from spikeforge.training.losses import compute_loss

LMU = ["model.name=lmu", "model.kwargs={}", "model.neuron=sigma_delta", "model.neuron_kwargs.backend=reference",
       "model.kwargs.order=4",
       "model.kwargs.hidden=16", "model.kwargs.pool=2", "model.kwargs.permute=true", "model.T=1",
       "data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "run.progress=false",
       "run.plots=false", "run.device=cpu", "optim.lr=0.01"]


def test_schedule_is_log_linear_then_flat_and_counts_the_loops_steps():
    cfg = TrainConfig().override(LMU + ["run.epochs=4", "method.name=hybrid_spiking",
                                        "method.kwargs.omega_start=64", "method.kwargs.omega_end=1",
                                        "method.kwargs.anneal_fraction=0.75"])
    m = create_method("hybrid_spiking", dict(cfg.method.kwargs))
    net = create_model("lmu", num_classes=10, in_channels=1, neuron="sigma_delta", input_size=8, order=4,
                       hidden=8, pool=2, neuron_kwargs={"backend": "reference"})
    m.check(net, cfg)
    assert m.total_steps == 8                                  # 64 samples / batch 32 x 4 epochs
    omegas = [m.omega_at(s) for s in range(8)]
    assert omegas[0] == pytest.approx(64.0) and omegas[5:] == [pytest.approx(1.0)] * 3
    steps = torch.tensor(omegas[:6]).log().diff()
    assert torch.allclose(steps, steps[0].expand(5))          # linear in log omega
    ctx = StepContext(epoch=1, step=0, global_step=3, loss_fn=lambda o, y: compute_loss("ce", o, y))
    res = m.train_step(net, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]), ctx)
    assert all(layer.omega == pytest.approx(omegas[3]) for layer in sigma_delta_layers(net).values())
    assert res.aux["omega"] == pytest.approx(omegas[3]) and res.aux["bits"] > 0


def test_bits_fall_as_omega_is_annealed(tmp_path):
    """Card check 3 through the loop: the mean activation bits per epoch fall with omega, and the report is
    written."""
    from spikeforge.training import train

    cfg = TrainConfig().override(LMU + ["run.epochs=3", "method.name=hybrid_spiking", "data.train_subset=32",
                                        "data.test_subset=16",
                                        "method.kwargs.omega_start=256", "method.kwargs.omega_end=1",
                                        "method.kwargs.anneal_fraction=1.0"])
    torch.manual_seed(0)
    train(cfg, tmp_path / "r", verbose=False)
    info = json.loads((tmp_path / "r" / "hybrid_bits.json").read_text())
    rows = info["epochs"]
    bits = [r["mean_bits"] for r in rows]
    omega = [r["omega_last"] for r in rows]
    assert len(rows) == 3 and omega[0] > omega[1] > omega[2] == pytest.approx(1.0)
    assert bits[0] > bits[1] > bits[2] and bits[2] <= 1.5, bits
    assert (tmp_path / "r" / "hybrid_bits.png").is_file()


@pytest.mark.parametrize("key,value,allowed", [
    ("omega_start", 0, "a finite number > 0"), ("omega_start", -3.0, "a finite number > 0"),
    ("omega_end", 0.0, "a finite number > 0"), ("omega_end", float("inf"), "a finite number > 0"),
    ("omega_end", 5000.0, "a number <= omega_start"), ("anneal_fraction", 0.0, r"a number in \(0, 1\]"),
    ("anneal_fraction", 1.5, r"a number in \(0, 1\]"),
])
def test_bad_omega_names_key_value_and_range(key, value, allowed):
    with pytest.raises(ValueError, match=rf"method.kwargs.{key}: {value!r}; allowed: {allowed}"):
        create_method("hybrid_spiking", {key: value})


def test_model_without_sigma_delta_is_refused():
    net = create_model("lmu", num_classes=10, in_channels=1, input_size=4, order=4, hidden=8)
    with pytest.raises(ValueError, match="no sigma-delta neuron to anneal; set model.neuron=sigma_delta"):
        create_method("hybrid_spiking").check(net, TrainConfig())
