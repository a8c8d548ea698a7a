"""Temporal-coded NIF: the closed-form spike time equals an event-by-event ODE simulation (silent cases
included); finite-difference gradients away from set switches; dense and conv layers."""

import math

import numpy as np
import pytest
import torch

from spikeforge.functional import encode_time, nif_conv2d, nif_spike_time
from spikeforge.functional.nif import SENTINEL, nif_loss
from spikeforge.neurons import NIFConv2d, NIFLinear


def simulate_nif(t_in, w, w_bias, theta=1.0):
    """Event-by-event exact integration of dV/dt = I, dI/dt = -I (+ w_i at t_i). First crossing time or inf."""
    events = sorted([(0.0, w_bias)] + list(zip(t_in, w)))
    V, I, t = 0.0, 0.0, 0.0
    for k, (t_k, w_k) in enumerate(events):
        # advance from t to t_k: V += I (1 - e^{-(t_k - t)}), I *= e^{-(t_k - t)}
        dt = t_k - t
        V, I, t = V + I * (1.0 - math.exp(-dt)), I * math.exp(-dt), t_k
        I += w_k
        t_next = events[k + 1][0] if k + 1 < len(events) else math.inf
        # within [t, t_next): V(s) = V + I (1 - e^{-s}); crossing where e^{-s} = 1 - (theta - V) / I
        if I > 0 and V + I > theta:
            s = -math.log(1.0 - (theta - V) / I)
            if t + s <= t_next:
                return t + s
    return math.inf


def test_nif_closed_form_equals_event_by_event_simulation_including_silent():
    rng = np.random.default_rng(0)
    n_silent = n_fire = 0
    for trial in range(300):
        N = int(rng.integers(1, 9))
        t_in = rng.uniform(0, 3, N)
        w = rng.uniform(-0.5, 1.2, N) if trial % 3 else rng.uniform(0, 0.3, N)
        wb = float(rng.uniform(-0.2, 0.5))
        z = nif_spike_time(torch.tensor(np.exp(t_in))[None], torch.tensor(w)[None], torch.tensor([wb]))
        t_sim = simulate_nif(list(t_in), list(w), wb)
        if math.isinf(t_sim):
            assert z.item() == SENTINEL
            n_silent += 1
        else:
            assert abs(math.log(z.item()) - t_sim) < 1e-4
            n_fire += 1
    assert n_silent > 20 and n_fire > 100


def test_nif_closed_form_matches_fine_time_step_voltage():
    # brute force for a few neurons: V(t) from its definition on a dt = 1e-4 grid
    rng = np.random.default_rng(1)
    for _ in range(5):
        t_in, w = rng.uniform(0, 2, 6), rng.uniform(0, 0.8, 6)
        z = nif_spike_time(torch.tensor(np.exp(t_in))[None], torch.tensor(w)[None]).item()
        grid = np.arange(0, 12, 1e-4)
        V = ((grid[:, None] > t_in[None]) * w * (1 - np.exp(-(grid[:, None] - t_in[None])))).sum(1)
        above = np.nonzero(V >= 1.0)[0]
        if len(above) == 0:
            assert z == SENTINEL
        else:
            assert abs(math.log(z) - grid[above[0]]) <= 2e-4


def test_nif_finite_difference_gradients_away_from_set_switches():
    g = torch.Generator().manual_seed(0)
    z = torch.exp(torch.rand(6, 8, generator=g, dtype=torch.float64) * 2).requires_grad_()
    w = (torch.rand(5, 8, generator=g, dtype=torch.float64) * 0.6).requires_grad_()
    wb = (torch.rand(5, generator=g, dtype=torch.float64) * 0.2).requires_grad_()
    out = nif_spike_time(z, w, wb)
    firing = out < SENTINEL
    assert firing.float().mean() > 0.5
    # the analytic gradients of the card, inside the selected set
    (gz, gw, gb) = torch.autograd.grad((out * firing).sum(), (z, w, wb))
    eps = 1e-7
    for param, grad in ((z, gz), (w, gw), (wb, gb)):
        flat = param.detach().reshape(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 12)):
            d = torch.zeros_like(flat)
            d[i] = eps
            args = {"z": z.detach(), "w": w.detach(), "wb": wb.detach()}
            key = "z" if param is z else ("w" if param is w else "wb")
            args_p, args_m = dict(args), dict(args)
            args_p[key] = args[key] + d.reshape(param.shape)
            args_m[key] = args[key] - d.reshape(param.shape)
            op = nif_spike_time(args_p["z"], args_p["w"], args_p["wb"])
            om = nif_spike_time(args_m["z"], args_m["w"], args_m["wb"])
            same_set = torch.equal(op < SENTINEL, om < SENTINEL) and ((op - om).abs() < 1e-3).all()
            if not same_set:
                continue  # a set switch: no derivative there
            fd = (((op - om) * firing).sum() / (2 * eps)).item()
            assert grad.reshape(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_nif_conv_equals_dense_on_im2col_patches():
    g = torch.Generator().manual_seed(2)
    z = torch.exp(torch.rand(2, 3, 7, 7, generator=g, dtype=torch.float64) * 2)
    w = torch.rand(4, 3, 3, 3, generator=g, dtype=torch.float64) * 0.3
    wb = torch.rand(4, generator=g, dtype=torch.float64) * 0.1
    out = nif_conv2d(z, w, wb, stride=2, padding=1)
    assert out.shape == (2, 4, 4, 4)
    zp = torch.nn.functional.pad(z, (1, 1, 1, 1), value=SENTINEL)
    for b, m, i, j in [(0, 0, 0, 0), (1, 3, 2, 1), (0, 2, 3, 3), (1, 1, 1, 2)]:
        patch = zp[b, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(1, -1)
        ref = nif_spike_time(patch, w[m].reshape(1, -1), wb[m:m + 1])
        assert out[b, m, i, j].item() == ref.item()
    wg = w.clone().requires_grad_()
    out_g = nif_conv2d(z, wg, wb, stride=2, padding=1)
    (gw,) = torch.autograd.grad(out_g[out_g < SENTINEL].sum(), wg)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_nif_layers_train():
    torch.manual_seed(0)
    conv, fc = NIFConv2d(1, 4, 3, stride=2), NIFLinear(4 * 3 * 3, 3)
    x = torch.rand(8, 1, 7, 7)
    y = torch.randint(0, 3, (8,))
    opt = torch.optim.Adam([*conv.parameters(), *fc.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        z_out = fc(conv(encode_time(x)).flatten(1))
        loss = nif_loss(z_out, y, [conv.weight, fc.weight])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_nif_negative_time_raises():
    with pytest.raises(ValueError, match="z_in"):
        nif_spike_time(torch.tensor([[0.5, 2.0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="x"):
        encode_time(torch.tensor([-0.1, 0.2]))
    with pytest.raises(ValueError, match="theta"):
        NIFLinear(3, 2, theta=0.0)
