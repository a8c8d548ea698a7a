"""GLIF parameter groups (glif-gated-lif.md): the trainer's optimiser takes ``GLIF.param_groups`` (gate logits
at lr/10, no weight decay on any GLIF parameter), the schedule keeps that ratio, and after training every
sigmoid-parameterised value is still in (0, 1) (card check 2)."""

import torch

from spikeforge.config import TrainConfig
from spikeforge.neurons import GLIF
from spikeforge.training import train
from spikeforge.training.trainer import build_optimizer

SETS = ["data.train_subset=64", "data.test_subset=32", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "model.neuron=glif", "run.epochs=1", "run.progress=false",
        "run.plots=false", "run.device=cpu", "optim.name=sgd", "optim.lr=0.5", "optim.weight_decay=0.01",
        "schedule.name=constant"]


def _groups_by_param(opt):
    return {id(p): g for g in opt.param_groups for p in g["params"]}


def test_optimiser_gets_glif_groups():
    from spikeforge.models import create_model

    cfg = TrainConfig().override(SETS)
    net = create_model("convnet", num_classes=10, in_channels=1, neuron="glif", T=2, input_size=8,
                       channels=(4, 8))
    opt = build_optimizer(cfg, net)
    by_id = _groups_by_param(opt)
    glifs = [m for m in net.modules() if isinstance(m, GLIF)]
    assert glifs
    for m in glifs:
        for name in ("alpha", "beta", "gamma"):
            g = by_id[id(getattr(m, f"w_{name}"))]
            assert g["lr"] == 0.05 and g["weight_decay"] == 0.0 and g["lr_scale"] == 0.1
        for name in ("tau", "v_threshold", "leak", "v_reset", "conductance"):
            g = by_id[id(getattr(m, f"w_{name}"))]
            assert g["lr"] == 0.5 and g["weight_decay"] == 0.0
    conv = next(p for n, p in net.named_parameters() if "weight" in n and p.dim() == 4)
    assert by_id[id(conv)]["weight_decay"] == 0.01 and by_id[id(conv)]["lr"] == 0.5
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_training_keeps_gate_lr_ratio_and_values_in_unit_interval(tmp_path, monkeypatch):
    """The schedule rescales each group (gates stay at lr/10); card check 2 after training with a learning rate
    large enough that the logits move far."""
    from spikeforge.training import trainer

    built = []
    monkeypatch.setattr(trainer, "build_optimizer", lambda c, m: built.append(build_optimizer(c, m)) or built[-1])
    cfg = TrainConfig().override(SETS + ["optim.lr=5.0", "run.epochs=2", "schedule.name=cosine"])
    from spikeforge.models import create_model

    net = create_model("convnet", num_classes=10, in_channels=1, neuron="glif", T=2, input_size=8,
                       channels=(4, 8))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    train(cfg, tmp_path / "r", verbose=False, model=net)
    (opt,) = built
    glif = next(m for m in net.modules() if isinstance(m, GLIF))
    by_id = _groups_by_param(opt)
    base = by_id[id(next(p for p in net.parameters() if p.dim() == 4))]["lr"]
    assert 0 < base < 5.0                                       # the cosine schedule moved it
    assert by_id[id(glif.w_alpha)]["lr"] == base * 0.1
    gates = [n for n in before if n.endswith(("w_alpha", "w_beta", "w_gamma"))]
    assert gates and any(not torch.equal(before[n], dict(net.named_parameters())[n]) for n in gates)
    for n, p in net.named_parameters():
        if n.rsplit(".", 1)[-1].startswith("w_"):
            s = torch.sigmoid(p.detach())          # float32, as the model uses it: saturates at 1.0
            assert bool(((s > 0) & (s < 1)).all()), n
