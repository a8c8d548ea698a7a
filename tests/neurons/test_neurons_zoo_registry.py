"""Every registered neuron (generated from NEURONS, no hand-kept list): listed by `spikeforge neurons` with each of
its parameters and defaults, runs as a model's neuron (forward and backward), and every spiking neuron (a
BaseNeuron; the ANN-twin activations are stateless) runs over a sequence with the explicit state API."""

import pytest
import torch

from spikeforge.cli import main
from spikeforge.models import create_model
from spikeforge.neurons import NEURONS, BaseNeuron


def test_every_neuron_listed_with_its_parameters(capsys):
    assert main(["neurons"]) == 0
    out = capsys.readouterr().out
    for name in NEURONS.list():
        assert f"\n{name} " in f"\n{out}", f"neuron {name!r} not listed"
        for param, default in NEURONS.describe(name)["params"].items():
            assert f"{param}={default!r}" in out, f"neuron {name!r}: parameter {param}={default!r} not listed"


@pytest.mark.parametrize("name", NEURONS.list())
def test_neuron_runs_in_a_model(name):
    net = create_model("mlp", num_classes=3, in_channels=1, T=2, input_size=4, hidden=(8,), neuron=name)
    out = net(torch.rand(2, 1, 4, 4))
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    neuron = NEURONS.create(name)
    if not isinstance(neuron, BaseNeuron):  # an ANN-twin activation: no state
        return
    # explicit state API: forward with state returns it
    x = torch.rand(3, 2, 5)
    s, st = neuron(x, return_state=True)
    assert s.shape == x.shape
