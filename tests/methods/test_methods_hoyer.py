"""hoyer method: per-channel Hoyer thresholds, the regulariser in the loss (card check 1: its bounds), the running
threshold stable with eval agreeing with train-mode batch thresholds (card check 2), the fixed-threshold ablation,
and bad input."""

import pytest
import torch

from spikeforge.config import TrainConfig
from spikeforge.functional import hoyer_extremum, hoyer_regularizer
from spikeforge.methods import StepContext, create_method
from spikeforge.methods.hoyer import FixedClipSpike, hoyer_sites
from spikeforge.models import create_model
from spikeforge.training.losses import compute_loss


def loss_fn(out, y):
    return compute_loss("ce", out, y)


def ctx(step=0):
    return StepContext(epoch=1, step=step, global_step=step, loss_fn=loss_fn, T=1)


def tiny(**kw):
    torch.manual_seed(0)
    method = create_method("hoyer", kw)
    net = method.prepare(create_model("convnet", num_classes=3, neuron="hoyer", T=1, input_size=8, channels=(4, 6)))
    return method, net


def blobs(n, g):
    """Three classes of 8x8 images: a bright quadrant per class plus noise."""
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    for c, (r, s) in enumerate([(0, 0), (0, 4), (4, 2)]):
        x[y == c, :, r:r + 4, s:s + 4] += 1.0
    return x, y


def test_sites_get_one_threshold_per_channel_and_regulariser_bounds():
    method, net = tiny()
    assert [tuple(m.running_extremum.shape) for _, m in hoyer_sites(net)] == [(4,), (6,)]
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen.append((mod, a[0]))) for _, m in hoyer_sites(net)]
    net(torch.randn(5, 1, 8, 8))
    for h in hooks:
        h.remove()
    for mod, x in seen:  # card check 1 on the activations the method regularises
        z = x / mod.v_th.abs()
        e = hoyer_extremum(z, "cw", channel_dim=2)
        zc = z.clamp(0, 1)
        assert ((e >= 0) & (e <= zc.transpose(0, 2).reshape(z.shape[2], -1).amax(1) + 1e-7)).all()
        h = hoyer_regularizer(z).item()
        assert 1.0 <= h <= z.numel()
    _, layer = tiny(granularity="layer")
    assert all(m.running_extremum.dim() == 0 for _, m in hoyer_sites(layer))


def test_loss_is_task_loss_plus_lambda_times_hoyer_terms():
    lam = 1e-3
    method, net = tiny(lambda_h=lam)
    g = torch.Generator().manual_seed(1)
    x, y = blobs(16, g)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    res = method.train_step(net, x, y, ctx())
    got = {n: p.grad.clone() for n, p in net.named_parameters()}
    # by hand: the same forward (same batch thresholds), CE + lam * sum of H over the sites
    net.load_state_dict(state)
    net.zero_grad()
    terms = []
    hooks = [m.register_forward_pre_hook(lambda mod, a: terms.append(mod.regularizer(a[0])))
             for _, m in hoyer_sites(net)]
    out = net(x)
    for h in hooks:
        h.remove()
    total = loss_fn(out, y) + lam * sum(terms)
    total.backward()
    assert res.loss.item() == pytest.approx(total.item(), rel=1e-6)
    assert res.aux["hoyer_reg"] == pytest.approx(sum(t.item() for t in terms), rel=1e-6)
    for n, p in net.named_parameters():
        torch.testing.assert_close(got[n], p.grad, msg=n)
    # the regulariser reaches every clipping threshold
    assert all(m.v_th.grad is not None and m.v_th.grad != 0 for _, m in hoyer_sites(net))


def test_running_threshold_stable_and_eval_matches_train_thresholds():
    """Card check 2: after training, batch-to-batch Hoyer thresholds are stable, the running value tracks them, and
    evaluation with the running value gives the predictions of train-mode batch thresholds."""
    method, net = tiny(lambda_h=1e-4)
    g = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(60):
        x, y = blobs(64, g)
        opt.zero_grad()
        method.train_step(net, x, y, ctx(step))
        opt.step()
    assert all(float(m.v_th.detach()) != 1.0 for _, m in hoyer_sites(net))  # the clipping thresholds were trained
    xs = [blobs(64, g) for _ in range(8)]
    net.eval()
    per_batch = []
    for x, _ in xs:
        vals = []
        hooks = [m.register_forward_pre_hook(
            lambda mod, a: vals.append(hoyer_extremum(a[0] / mod.v_th.abs(), "cw", channel_dim=2)))
            for _, m in hoyer_sites(net)]
        net(x)
        for h in hooks:
            h.remove()
        per_batch.append(vals)
    for i, (_, m) in enumerate(hoyer_sites(net)):
        v = torch.stack([b[i] for b in per_batch])
        assert (v.std(0) / v.mean(0).clamp_min(1e-6)).max() < 0.1  # stable from batch to batch
        torch.testing.assert_close(m.running_extremum, v.mean(0), rtol=0.1, atol=0.02)
    x = torch.cat([a for a, _ in xs])
    y = torch.cat([b for _, b in xs])
    pred_eval = net(x).mean(0).argmax(-1)
    for _, m in hoyer_sites(net):  # batch thresholds (train mode) with BatchNorm still on running statistics
        m.train()
    pred_train = net(x).mean(0).argmax(-1)
    assert (pred_eval == pred_train).float().mean() > 0.97
    assert (pred_eval == y).float().mean() > 0.9


def test_fixed_threshold_ablation_fires_at_v_th():
    method, net = tiny(threshold="fixed", lambda_h=0.0)
    sites = hoyer_sites(net)
    assert all(type(m) is FixedClipSpike for _, m in sites)
    m = sites[0][1]
    with torch.no_grad():
        m.v_th.fill_(0.7)
    x = torch.randn(1, 3, 4, 8, 8)
    for mode in (True, False):
        m.train(mode)
        assert torch.equal(m(x), (x / 0.7 >= 1.0).float())
    assert not method.train_step(net, *blobs(8, torch.Generator().manual_seed(0)), ctx()).aux["hoyer_reg"]


def test_bad_input_one_error_naming_key_value_allowed():
    with pytest.raises(ValueError, match=r"method.kwargs.lambda_h: got -1e-08; allowed: a finite number >= 0"):
        TrainConfig().override(["method.name=hoyer", "method.kwargs.lambda_h=-1e-8"])
    assert create_method("hoyer", {"lambda_h": "1e-8"}).config.lambda_h == 1e-8  # YAML 1.1 reads 1e-8 as a string
    with pytest.raises(ValueError, match=r"method.kwargs.threshold: got 'lif'; allowed: hoyer, fixed"):
        create_method("hoyer", {"threshold": "lif"})
    with pytest.raises(ValueError, match=r"method.kwargs.granularity: got 'pixel'; allowed: channel, layer"):
        create_method("hoyer", {"granularity": "pixel"})
    net = create_model("convnet", neuron="lif", T=1, input_size=8, channels=(4,))
    with pytest.raises(ValueError, match=r"hoyer: the neuron at features.1 is LIF, not HoyerSpike; allowed: "
                                         r"model.neuron=hoyer"):
        create_method("hoyer").check(net, None)
