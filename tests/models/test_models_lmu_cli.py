"""Spiking LMU (hybrid-spiking-lmu.md): the Legendre memory is a delay line; sigma-delta hidden layer; the
non-spiking limit; input layouts.  Plus the ``spikeforge models`` command."""

import math

import pytest
import torch

from spikeforge.cli import main
from spikeforge.models import create_model
from spikeforge.models.lmu import legendre_delay_system
from spikeforge.neurons import NEURONS


def test_legendre_memory_is_zoh_discretisation_and_a_delay_line():
    d, theta = 12, 20.0
    Abar, Bbar = legendre_delay_system(d, theta)
    i = torch.arange(d, dtype=torch.float64)
    q = (2 * i + 1)[:, None]
    A = q * torch.where(i[:, None] < i[None, :], -torch.ones(d, d, dtype=torch.float64),
                        (-1.0) ** (i[:, None] - i[None, :] + 1))
    B = (2 * i + 1) * (-1.0) ** i
    assert torch.allclose(Abar, torch.linalg.matrix_exp(A / theta), atol=1e-12)
    # ZOH: Bbar = A^-1 (Abar - I) B
    assert torch.allclose(Bbar, torch.linalg.solve(A, (Abar - torch.eye(d, dtype=torch.float64)) @ B), atol=1e-10)
    # the memory holds the last theta steps: sum_i (-1)^i m_i ~ u(t), sum_i m_i ~ u(t - theta)
    m, us, ms = torch.zeros(d, dtype=torch.float64), [], []
    for t in range(400):
        u = math.sin(2 * math.pi * t / 60)
        m = Abar @ m + Bbar * u
        us.append(u)
        ms.append(m)
    ms, us = torch.stack(ms), torch.tensor(us, dtype=torch.float64)
    sign = (-1.0) ** i
    assert (ms[100:] @ sign - us[100:]).abs().max() < 0.01
    assert (ms[100:].sum(1) - us[80:-20]).abs().max() < 0.1


@pytest.mark.skipif("sigma_delta" not in NEURONS, reason="sigma_delta neuron not registered")
def test_hybrid_lmu_approaches_the_non_spiking_lmu_as_omega_grows():
    """Card check 2: omega -> inf reproduces the non-spiking (ReLU) network; the gap shrinks with omega."""
    torch.manual_seed(0)
    kw = dict(num_classes=4, in_channels=1, input_size=5, order=6, hidden=12, output="all")
    ref = create_model("lmu", neuron="sigma_delta", neuron_kwargs={"omega": 1e9, "backend": "reference"}, **kw)
    x = torch.rand(3, 1, 5, 5, dtype=torch.float32)
    ref = ref.double()
    y_ref = ref(x.double())
    gaps = []
    for omega in (4.0, 64.0, 1024.0):
        net = create_model("lmu", neuron="sigma_delta", neuron_kwargs={"omega": omega, "backend": "reference"}, **kw)
        net.load_state_dict(ref.state_dict())
        gaps.append(float((net.double()(x.double()) - y_ref).detach().abs().max()))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.05


def test_lmu_layouts_permutation_and_errors():
    torch.manual_seed(0)
    net = create_model("lmu", num_classes=3, in_channels=1, T=16, input_size=4, order=4, hidden=8,
                       neuron_kwargs={"backend": "reference"})
    img = torch.rand(2, 1, 4, 4)
    y_img = net(img)
    assert y_img.shape == (1, 2, 3)
    y_seq = net(img.flatten(2).permute(2, 0, 1))          # the same pixels as a [T, B, F] sequence
    assert torch.equal(y_img, y_seq)
    perm = create_model("lmu", num_classes=3, in_channels=1, T=16, input_size=4, order=4, hidden=8, permute=True,
                        seed=3, neuron_kwargs={"backend": "reference"})
    perm.load_state_dict(net.state_dict())
    seq = img.flatten(2).permute(2, 0, 1)
    assert torch.equal(perm(img), net(seq[perm.perm]))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\[T, B, F\]"):
        net(torch.rand(2, 16))
    with pytest.raises(ValueError, match="expected 1 input channels"):
        net(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="4x4 images"):
        net(torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"batch-major.*x\.transpose\(0, 1\)"):
        net(seq.transpose(0, 1))                          # a batch-major [B, T, F] sequence


def test_models_cli_lists_names_and_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sew_resnet18" in out and "ms_resnet18" in out and "convnet" in out
    assert main(["models", "sew_resnet18", "--details"]) == 0
    out = capsys.readouterr().out
    assert "11,689,512" in out and "11.69M" in out and "cnf='ADD'" in out
    assert main(["models", "resnet9000"]) == 2
    assert "available:" in capsys.readouterr().err
