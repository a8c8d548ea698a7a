"""albsnn method: binarised layers compute with +-alpha weights (alpha = mean |W| per output channel), the storage
accounting of card check 1, the accuracy-loss estimator ranking layers by the accuracy they cost (card check 2,
Spearman > 0), the adaptive selection, and bad input."""

import pytest
import torch
import torch.nn.functional as F

from spikeforge.config import TrainConfig
from spikeforge.deploy.quant import raw_weight
from spikeforge.methods import StepContext, create_method
from spikeforge.methods.albsnn import is_binary, set_binary, weight_layers
from spikeforge.models import create_model
from spikeforge.training.losses import compute_loss


def loss_fn(out, y):
    return compute_loss("ce", out, y)


def tiny(channels=(4, 8, 8), **kw):
    torch.manual_seed(0)
    method = create_method("albsnn", kw)
    net = create_model("albsnn_net", num_classes=4, T=1, input_size=8, channels=channels,
                       neuron_kwargs={"backend": "reference"})
    return method, method.prepare(net)


def blobs(n, g, noise=0.3):
    """Four classes of 8x8 images: a bright quadrant per class plus noise."""
    y = torch.randint(0, 4, (n,), generator=g)
    x = noise * torch.randn(n, 1, 8, 8, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == c, :, r:r + 4, s:s + 4] += 1.0
    return x, y


def test_binarised_layers_compute_with_plus_minus_alpha():
    method, net = tiny(estimator="weight", tau_e=0.0, min_saving=0.5)
    keys = set(net.state_dict())
    chosen = method.select(net, *blobs(8, torch.Generator().manual_seed(0)))
    assert chosen and set(net.state_dict()) == keys  # checkpoints keep their keys whatever is chosen
    for name, m in weight_layers(net).items():
        w = raw_weight(m)
        if name not in chosen:
            assert not is_binary(m) and torch.equal(m.weight, w)
            continue
        alpha = w.detach().abs().flatten(1).mean(1)
        wb = m.weight.detach()
        # one magnitude per output channel, alpha = mean |W_c|
        torch.testing.assert_close(wb.abs().flatten(1), alpha[:, None].expand(-1, w[0].numel()))
        assert torch.equal(torch.sign(wb), torch.where(w >= 0, 1.0, -1.0))
        x = torch.randn(2, m.in_channels, 4, 4)
        torch.testing.assert_close(m(x), F.conv2d(x, alpha[:, None, None, None] * torch.sign(wb), padding=1))
        m(x).sum().backward()  # straight-through: the latent float weights get the gradient
        assert w.grad is not None and w.grad.abs().sum() > 0


def test_storage_accounting_and_saving_of_the_default_network():
    method, net = tiny(estimator="weight", tau_e=0.0, min_saving=0.0)
    layers = weight_layers(net)
    for n in method.candidates[:1]:
        set_binary(layers[n], True)
    expect = 0
    for n, m in layers.items():
        w = raw_weight(m)
        expect += (w.numel() + 32 * w.shape[0]) if is_binary(m) else 32 * w.numel()
    full = 32 * sum(raw_weight(m).numel() for m in layers.values())
    st = method.storage(net)
    assert st["bits"] == expect and st["full_precision_bits"] == full
    assert st["saving"] == pytest.approx(1 - expect / full)
    # the shipped network and defaults: first and last float, enough binarised to save > 20% (the paper's claim)
    method = create_method("albsnn", {"estimator": "weight"})
    net = method.prepare(create_model("albsnn_net", T=1))
    assert method.candidates == list(weight_layers(net))[1:-1]
    method.select(net, torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert method.storage(net)["saving"] > 0.2


def _spearman(a, b):
    ra = torch.tensor(a).argsort().argsort().double()
    rb = torch.tensor(b).argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def test_estimator_ranks_layers_by_the_accuracy_they_cost():
    """Card check 2: on a trained full-precision SNN, the estimate orders the layers like the test-accuracy drop of
    binarising each alone (Spearman correlation > 0)."""
    g = torch.Generator().manual_seed(3)
    method, net = tiny(channels=(6, 8, 8, 8), layers=[])
    method = create_method("albsnn", {"layers": list(weight_layers(net))})  # every layer is a candidate
    net = method.prepare(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(40):
        x, y = blobs(64, g, noise=0.9)
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    x_est, y_est = blobs(256, g, noise=0.9)
    est = method.estimate(net, x_est, y_est, loss_fn)
    x_te, y_te = blobs(1000, g, noise=0.9)
    net.eval()
    with torch.no_grad():
        base = (net(x_te).mean(0).argmax(-1) == y_te).float().mean().item()
        drops = []
        for n, m in weight_layers(net).items():
            set_binary(m, True)
            drops.append(base - (net(x_te).mean(0).argmax(-1) == y_te).float().mean().item())
            set_binary(m, False)
    assert base > 0.6
    assert _spearman([est[n] for n in weight_layers(net)], drops) > 0


def test_selection_by_threshold_and_budget_once_per_epoch_after_warmup():
    method, net = tiny(estimator="weight", tau_e=0.0, min_saving=0.0)
    assert method.select(net, *blobs(4, torch.Generator().manual_seed(0))) == []
    method, net = tiny(estimator="weight", tau_e=10.0)
    assert method.select(net, *blobs(4, torch.Generator().manual_seed(0))) == method.candidates
    method, net = tiny(warmup_epochs=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    for epoch in (1, 2):
        for step in range(3):
            opt.zero_grad()
            method.train_step(net, *blobs(16, g), StepContext(epoch=epoch, step=step, global_step=step,
                                                              loss_fn=loss_fn, T=1))
            opt.step()
        if epoch == 1:
            assert method.history == [] and not any(is_binary(m) for m in weight_layers(net).values())
    assert [h["epoch"] for h in method.history] == [2]
    assert method.storage(net)["saving"] >= 0.2 and method.epoch_metrics()["albsnn_binary"]


def test_bad_input_one_error_naming_key_value_allowed():
    method, net = tiny()
    with pytest.raises(ValueError, match=r"method.kwargs.layers: 'features.9' is not a Conv/Linear layer of ALBNet; "
                                         r"allowed: features.0.layer.0, features.3.layer.0, features.6.layer.0, "
                                         r"head.fc"):
        create_method("albsnn", {"layers": ["features.9"]}).check(net, None)
    with pytest.raises(ValueError, match=r"method.kwargs.estimator: got 'oracle'; allowed: loss, weight"):
        TrainConfig().override(["method.name=albsnn", "method.kwargs.estimator=oracle"])
    with pytest.raises(ValueError, match=r"method.kwargs.tau_e: got -0.1; allowed: a finite number >= 0"):
        create_method("albsnn", {"tau_e": -0.1})
    with pytest.raises(ValueError, match=r"method.kwargs.min_saving: got 1.0; allowed: a number in \[0, 1\)"):
        create_method("albsnn", {"min_saving": 1.0})
    with pytest.raises(ValueError, match=r"method.kwargs.warmup_epochs: got -1; allowed: an integer >= 0"):
        create_method("albsnn", {"warmup_epochs": -1})
