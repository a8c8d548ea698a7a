"""LIFB: a LIFB layer and its decoupled pair of binary LIF layers give identical downstream currents at every t;
decouple_lifb performs the decoupling on a trained model."""

import pytest
import torch
from torch import nn

from spikeforge.functional import lifb, lifb_pair
from spikeforge.layers import TimeFold
from spikeforge.neurons import LIFB, LIFBPair, decouple_lifb


def test_lifb_modes_rest_regular_burst():
    x = torch.tensor([0.5, 1.2, 2.6, 0.0]).reshape(4, 1, 1)
    o, st = lifb(x, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=2.5, backend="reference")
    assert o.flatten().tolist() == [0.0, 1.0, 2.5, 0.0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lifb_and_decoupled_pair_identical_downstream_currents_at_every_t(dtype):
    g = torch.Generator().manual_seed(0)
    T, Bn, Cin, Cout = 16, 4, 10, 6
    # dyadic weights and beta: every product and sum below is exact, so "identical" means bit-identical
    W = (torch.randint(-16, 17, (Cout, Cin), generator=g) / 8.0).to(dtype)
    beta = (1.0 + torch.randint(1, 9, (Cin,), generator=g) / 4.0).to(dtype)
    x = (torch.rand(T, Bn, Cin, generator=g) * 3.0).to(dtype)
    for backend in ("reference", "cpu"):
        o, _ = lifb(x, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=beta, backend=backend)
        s_r, s_b, st = lifb_pair(x, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=beta)
        assert set(s_r.unique().tolist()) <= {0.0, 1.0} and set(s_b.unique().tolist()) <= {0.0, 1.0}
        assert (s_b <= s_r).all() and s_b.sum() > 0 and (s_r - s_b).sum() > 0  # all three modes occur
        assert torch.equal(st.u_regular, st.u_burst)  # one membrane trajectory
        current_lifb = o @ W.T
        current_pair = s_r @ W.T + s_b @ ((beta - 1.0).reshape(-1, 1) * W.T)
        assert torch.equal(current_lifb, current_pair)
    # random (non-dyadic) weights: equal up to float rounding of the two matmuls
    W = torch.randn(Cout, Cin, generator=g).to(dtype)
    beta = (1.0 + 2 * torch.rand(Cin, generator=g)).to(dtype)
    o, _ = lifb(x, beta=beta)
    s_r, s_b, _ = lifb_pair(x, beta=beta)
    assert torch.equal(o, s_r + (beta - 1.0) * s_b)
    torch.testing.assert_close(o @ W.T, s_r @ W.T + s_b @ ((beta - 1.0).reshape(-1, 1) * W.T))


def test_decouple_lifb_on_a_trained_model():
    torch.manual_seed(0)
    net = nn.Sequential(
        TimeFold(nn.Conv2d(2, 6, 3, padding=1)), LIFB(num_channels=6), TimeFold(nn.MaxPool2d(2)),
        TimeFold(nn.Conv2d(6, 8, 3, padding=1)), LIFB(num_channels=8, burst_threshold=1.5), TimeFold(nn.Flatten()),
        TimeFold(nn.Linear(8 * 4 * 4, 5)),
    )
    x = torch.rand(3, 16, 2, 8, 8) * 3
    y = torch.randint(0, 5, (16,))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    beta0 = [m.beta.detach().clone() for m in net if isinstance(m, LIFB)]
    for _ in range(8):
        loss = nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    betas = [m.beta.detach() for m in net if isinstance(m, LIFB)]
    assert any(not torch.equal(a, b) for a, b in zip(beta0, betas))  # the burst density was learned
    net.eval()
    binary = decouple_lifb(net, x)
    assert not any(isinstance(m, LIFB) for m in binary.modules())
    pairs = [m for m in binary.modules() if isinstance(m, LIFBPair)]
    assert len(pairs) == 2
    # every neuron output in the decoupled model is binary, and downstream currents match at every t
    acts = []
    hooks = [p.register_forward_hook(lambda m, i, o: acts.append(o)) for p in pairs]
    with torch.no_grad():
        out_bin, out_ref = binary(x), net(x)
    for h in hooks:
        h.remove()
    assert all(set(a.unique().tolist()) <= {0.0, 1.0} for a in acts)
    torch.testing.assert_close(out_bin, out_ref, rtol=1e-5, atol=1e-5)
    assert binary[3].layer.in_channels == 12 and binary[6].layer.in_features == 2 * 8 * 16


def test_decouple_lifb_rejects_what_it_cannot_absorb():
    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), LIFB(), TimeFold(nn.BatchNorm1d(4)), TimeFold(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        decouple_lifb(net, torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="end of the model"):
        decouple_lifb(nn.Sequential(TimeFold(nn.Linear(4, 4)), LIFB()), torch.rand(2, 3, 4))


def test_lifb_burst_threshold_below_regular_raises():
    with pytest.raises(ValueError, match="burst_threshold"):
        lifb(torch.rand(2, 1, 3), v_threshold=1.0, burst_threshold=0.8)
    with pytest.raises(ValueError, match="burst_threshold"):
        LIFB(v_threshold=1.0, burst_threshold=1.0)
    with pytest.raises(ValueError, match="beta"):
        lifb(torch.rand(2, 1, 3), beta=0.5)
    with pytest.raises(ValueError, match="tau"):
        LIFB(tau=1.5)
