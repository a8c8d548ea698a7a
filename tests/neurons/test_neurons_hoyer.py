"""Hoyer spike layer: the extremum lies in [0, max]; one-hot input gives the max; train/eval thresholds agree."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.functional import hoyer_extremum, hoyer_regularizer, hoyer_spike
from spikeforge.neurons import HoyerSpike


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-2.0, 3.0, allow_nan=False), min_size=1, max_size=40))
def test_hoyer_extremum_lies_between_zero_and_max(values):
    z = torch.tensor(values, dtype=torch.float64)
    e = hoyer_extremum(z).item()
    zc = z.clamp(0, 1)
    assert 0.0 <= e <= zc.max().item() + 1e-12
    h = hoyer_regularizer(z).item()
    if (zc * zc).sum() > 0:  # (not underflowed)
        assert 1.0 - 1e-9 <= h <= len(values) + 1e-9


def test_hoyer_one_hot_gives_the_max():
    for v in (0.3, 0.9, 1.0):
        z = torch.zeros(50)
        z[17] = v
        assert hoyer_extremum(z).item() == torch.tensor(v).item()
        assert hoyer_regularizer(z).item() == 1.0
    # channel-wise: one value per channel
    z = torch.zeros(4, 3, 5)
    z[:, 1, 2] = 0.5
    e = hoyer_extremum(z, "cw", channel_dim=1)
    assert e.tolist() == [0.0, 0.5, 0.0]


def test_hoyer_threshold_at_most_v_th_and_gradient_reaches_v_th():
    layer = HoyerSpike(num_channels=3, v_th=2.0)
    x = torch.randn(1, 8, 3, 4, 4) * 2
    s = layer(x)
    z = x / 2.0
    e = hoyer_extremum(z, "cw", channel_dim=2)
    assert torch.equal(s, (z >= e.reshape(3, 1, 1)).float())
    assert (e <= 1).all()
    (s.sum() + 1e-3 * layer.regularizer(x)).backward()
    assert layer.v_th.grad is not None and layer.v_th.grad != 0


def test_hoyer_train_and_eval_thresholds_consistent():
    torch.manual_seed(0)
    layer = HoyerSpike(num_channels=4)
    batches = [torch.randn(1, 32, 4, 6, 6) + 0.5 for _ in range(60)]
    values = []
    for x in batches:
        _, e = hoyer_spike(x, layer.v_th, mode="cw")
        values.append(e)
        layer(x)
    values = torch.stack(values)
    # the batch values are stable, and the running estimate tracks them
    assert (values.std(0) / values.mean(0)).max() < 0.05
    torch.testing.assert_close(layer.running_extremum, values[-20:].mean(0), rtol=0.02, atol=0.0)
    # eval with the running value agrees with train-mode batch statistics on almost every spike
    layer.eval()
    x = torch.randn(1, 32, 4, 6, 6) + 0.5
    s_eval = layer(x)
    s_train, _ = hoyer_spike(x, layer.v_th, mode="cw")
    assert (s_eval == s_train).float().mean() > 0.98
    # and exactly when the batch is the one the running value converged to
    layer.train()
    for _ in range(300):
        layer(x)
    layer.eval()
    assert torch.equal(layer(x), s_train)
