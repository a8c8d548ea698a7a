"""stl method: thresholds shaped per neuron (or per channel) at every site, the finite-difference gradient of the
loss on one neuron's threshold through the whole model (card check 1, float64), the stl/sl/tl ablation's frozen
parameters, thresholds spreading away from the init after training (card check 3), and bad input."""

import json

import pytest
import torch

import spikeforge.kernels.cell as cell_module
from spikeforge.config import TrainConfig
from spikeforge.methods import StepContext, create_method
from spikeforge.methods.stl import stl_sites
from spikeforge.models import create_model
from spikeforge.surrogate import PrimitiveFn, get_surrogate
from spikeforge.training.losses import compute_loss


def loss_fn(out, y):
    return compute_loss("ce", out, y)


def tiny(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    method = create_method("stl", kw)
    net = create_model("convnet", num_classes=3, neuron="stl", T=3, input_size=8, channels=(3, 4), hidden=5,
                       neuron_kwargs={"backend": "reference", "surrogate": "sigmoid", "theta0": 0.5})
    return method, method.prepare(net.to(dtype))


def blobs(n, g):
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 2)]):
        x[y == c, :, r:r + 4, s:s + 4] += 1.0
    return x, y


def test_thresholds_have_each_sites_shape():
    _, net = tiny()
    assert [tuple(m.theta.shape) for _, m in stl_sites(net)] == [(3, 8, 8), (4, 4, 4), (5,)]
    assert all((m.theta - 0.5).abs().max() < 1e-3 and m.theta.std() > 0 for _, m in stl_sites(net))
    _, net = tiny(granularity="channel")
    assert [tuple(m.theta.shape) for _, m in stl_sites(net)] == [(3, 1, 1), (4, 1, 1), (5,)]
    assert net(torch.rand(2, 1, 8, 8)).shape == (3, 2, 3)


@pytest.mark.parametrize("granularity", ["neuron", "channel"])
def test_finite_difference_gradient_of_one_neurons_threshold(monkeypatch, granularity):
    # the card's check: spikes replaced by the smooth sigmoid (forward = primitive, backward = its derivative)
    monkeypatch.setattr(cell_module, "SpikeFn", PrimitiveFn)  # the reference's spikes: the smooth primitive
    _, net = tiny(torch.float64, granularity=granularity)
    x, y = blobs(6, torch.Generator().manual_seed(1))
    x = x.double()

    def loss():  # float64 throughout (the training loss casts to float32)
        return torch.nn.functional.cross_entropy(net(x).mean(0), y)

    net.zero_grad()
    loss().backward()
    eps = 1e-6
    for path, m in stl_sites(net):
        j = (0,) * m.theta.dim() if granularity == "channel" else tuple(d // 2 for d in m.theta.shape)
        with torch.no_grad():
            m.theta[j] += eps
            up = loss().item()
            m.theta[j] -= 2 * eps
            down = loss().item()
            m.theta[j] += eps
        fd = (up - down) / (2 * eps)
        assert m.theta.grad[j].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), path
        assert m.theta.grad.abs().max() > 0


def test_ablation_modes_freeze_the_right_parameters_and_training_spreads_thresholds(tmp_path):
    g = torch.Generator().manual_seed(2)
    batches = [blobs(16, g) for _ in range(12)]
    res = {}
    for learn in ("stl", "sl", "tl"):
        method, net = tiny(learn=learn)
        thetas = {id(m.theta) for _, m in stl_sites(net)}
        trainable = [p for p in net.parameters() if p.requires_grad]
        assert {id(p) in thetas for p in trainable} == {"stl": {True, False}, "sl": {False}, "tl": {True}}[learn]
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        opt = torch.optim.Adam(trainable, lr=0.02)
        for step, (x, y) in enumerate(batches):
            opt.zero_grad()
            method.train_step(net, x, y, StepContext(epoch=1, step=step, global_step=step, loss_fn=loss_fn, T=3))
            opt.step()
        moved = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
        theta_names = {n for n, p in net.named_parameters() if id(p) in thetas}
        assert moved == {"stl": set(before), "sl": set(before) - theta_names, "tl": theta_names}[learn]
        res[learn] = [float(m.theta.detach().std()) for _, m in stl_sites(net)]
    # card check 3: trained thresholds spread far beyond the init's heterogeneity (std 1e-4), frozen ones do not
    assert min(res["stl"]) > 20 * max(res["sl"]) and min(res["tl"]) > 20 * max(res["sl"])
    method.write_artifacts(tmp_path, net)
    stats = json.loads((tmp_path / "stl_theta.json").read_text())
    assert set(stats) == {p for p, _ in stl_sites(net)} and (tmp_path / "stl_theta.png").stat().st_size > 0


def test_bad_input_one_error_naming_key_value_allowed():
    with pytest.raises(ValueError, match=r"method.kwargs.learn: got 'xl'; allowed: stl, sl, tl"):
        TrainConfig().override(["method.name=stl", "method.kwargs.learn=xl"])
    with pytest.raises(ValueError, match=r"method.kwargs.granularity: got 'layer'; allowed: neuron, channel"):
        create_method("stl", {"granularity": "layer"})
    with pytest.raises(ValueError, match=r"method.kwargs.heterogeneity: got -1.0; allowed: a finite number >= 0"):
        create_method("stl", {"heterogeneity": -1.0})
    net = create_model("convnet", neuron="lif", T=1, input_size=8, channels=(4,))
    with pytest.raises(ValueError, match=r"stl: the neuron at features.1 is LIF, not STL; allowed: model.neuron=stl"):
        create_method("stl").check(net, None)
