"""Every zoo neuron is registered, listed by `spikeforge neurons` with its parameters, runs as a model's neuron."""

import pytest
import torch

from spikeforge.cli import main
from spikeforge.models import create_model
from spikeforge.neurons import NEURONS

ZOO = ["glif", "alif", "stl", "sigma_delta", "lifb", "multilevel", "hoyer"]


def test_zoo_neurons_registered_and_listed(capsys):
    assert set(ZOO) <= set(NEURONS.list())
    assert main(["neurons"]) == 0
    out = capsys.readouterr().out
    for name in ZOO:
        assert name in out
    for param in ("tau_adapt=20.0", "omega=1.0", "burst_threshold=2.0", "gates=(0.6, 0.8, 0.6)", "cap=4",
                  "momentum=0.1", "theta0=2.0"):
        assert param in out


@pytest.mark.parametrize("name", ZOO)
def test_zoo_neuron_runs_in_a_model(name):
    net = create_model("mlp", num_classes=3, in_channels=1, T=2, input_size=4, hidden=(8,), neuron=name)
    out = net(torch.rand(2, 1, 4, 4))
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    # explicit state API: forward with state returns it; step works (GLIF with T=None)
    neuron = NEURONS.create(name)
    x = torch.rand(3, 2, 5)
    s, st = neuron(x, return_state=True)
    assert s.shape == x.shape
