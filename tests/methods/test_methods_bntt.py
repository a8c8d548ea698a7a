"""``bntt`` early exit (bntt-batchnorm-through-time.md): the exit time comes from the learned gamma[t]; the
deployed network is the full one cut at t_exit, exactly; the gamma plot lands in the run folder; bad input."""

import json

import pytest
import torch

from spikeforge.config import TrainConfig
from spikeforge.methods import create_method
from spikeforge.methods.bntt_exit import bntt_layers, exit_time, gamma_profile
from spikeforge.models import create_model


def _net(T=6):
    torch.manual_seed(0)
    return create_model("sresnet", num_classes=5, in_channels=1, T=T, n=1, width=4)


def _set_gammas(net, profiles):
    """Layer i gets the per-step profile ``profiles[i % len(profiles)]`` (times a random sign per channel)."""
    with torch.no_grad():
        for i, m in enumerate(bntt_layers(net).values()):
            prof = torch.tensor(profiles[i % len(profiles)])
            sign = torch.where(torch.rand(m.weight.shape[1]) < 0.5, -1.0, 1.0)
            m.weight.copy_(prof.unsqueeze(1) * sign)


@pytest.mark.parametrize("profiles,threshold,t_exit", [
    ([[1.0, 0.8, 0.6, 0.2, 0.05, 0.02]], 0.1, 4),
    ([[1.0, 0.8, 0.6, 0.2, 0.05, 0.02]], 0.5, 3),
    ([[1.0, 0.05, 0.5, 0.02, 0.01, 0.01]], 0.1, 3),        # a late step above the threshold keeps the run going
    ([[0.2, 0.2, 0.2, 0.2, 0.2, 0.2]], 1.0, 6),              # flat: no exit
    ([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.1, 0.0, 0.0]], 0.2, 3),  # averaged over layers
])
def test_exit_time_is_derived_from_the_learned_gammas(profiles, threshold, t_exit):
    net = _net()
    _set_gammas(net, profiles)
    g, per_layer = gamma_profile(net)
    assert len(per_layer) == len(bntt_layers(net)) and g.shape == (6,)
    m = create_method("bntt", {"threshold": threshold})
    deployed = m.finalize(net)
    assert m.t_exit == t_exit == exit_time(g, threshold) and deployed.T == t_exit
    assert all(b.T == t_exit and b.weight.shape[0] == t_exit for b in bntt_layers(deployed).values())


def test_deployed_network_is_the_full_one_cut_at_the_exit():
    net = _net()
    _set_gammas(net, [[1.0, 0.9, 0.7, 0.3, 0.05, 0.01]])
    with torch.no_grad():                                    # per-step statistics differ from step to step
        for m in bntt_layers(net).values():
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    net.eval()
    deployed = create_method("bntt", {"threshold": 0.2}).finalize(net)
    assert deployed.T == 4 and net.T == 6
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        full, cut = net(x), deployed(x)
    assert cut.shape[0] == 4 and torch.allclose(cut, full[:4], atol=1e-6)


def test_training_writes_the_gamma_plot_and_records_the_exit(tmp_path):
    from spikeforge.training import train

    cfg = TrainConfig().override([
        "data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "model.T=3", "model.name=sresnet",
        "model.kwargs.n=1", "model.kwargs.width=4", "run.epochs=1", "run.progress=false", "run.plots=false",
        "run.device=cpu", "method.name=bntt", "method.kwargs.threshold=1.0"])
    res = train(cfg, tmp_path / "r", verbose=False)
    png = tmp_path / "r" / "bntt_gamma.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    info = json.loads((tmp_path / "r" / "bntt_exit.json").read_text())
    assert info["T"] == 3 and info["steps_saved"] == 3 - info["t_exit"]
    assert len(res["finalized"]["acc_per_step"]) == info["t_exit"]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "finalized" in summary


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5, "0.5", True])
def test_bad_threshold_names_key_value_and_range(value):
    with pytest.raises(ValueError, match=r"method.kwargs.threshold: .*allowed: a number in \(0, 1\]") as e:
        create_method("bntt", {"threshold": value})
    assert repr(value) in str(e.value)


def test_model_without_bntt_is_refused():
    net = create_model("convnet", num_classes=5, in_channels=1, T=2, input_size=8, channels=(4,))
    with pytest.raises(ValueError, match="has no BNTT layer; use a model with norm=bntt"):
        create_method("bntt").check(net, TrainConfig())
