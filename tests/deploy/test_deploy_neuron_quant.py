"""deploy.neuron_quant: the stored membrane is an integer times the step, threshold on the grid, leak a power
of two; with a wide register the spikes equal the float neuron's; .step() agrees; undo; bad input."""

import pytest
import torch
from torch import nn

from spikeforge.deploy.neuron_quant import dequantize_neurons_, quantize_neurons_
from spikeforge.neurons import IF, LIF, PLIF
from spikeforge.neurons.glif import GLIF


@pytest.mark.parametrize("make", [lambda: LIF(tau=2.0, backend="reference"), lambda: IF(backend="reference"),
                                  lambda: PLIF(init_tau=3.0, backend="reference")])
def test_integer_state_on_grid_and_step_agrees(make):
    torch.manual_seed(0)
    neuron = make()
    net = nn.Sequential(neuron)
    quantize_neurons_(net, bits=5)
    delta = 2.0 / 16
    x = torch.rand(6, 3, 7) * 1.5
    s, st, v = neuron(x, return_state=True, return_v=True)
    for t in (st.v, v):
        assert torch.equal(t / delta, torch.round(t / delta)) and (t / delta).abs().max() <= 16
    assert neuron.v_threshold == pytest.approx(round(1.0 / delta) * delta)
    state, outs = None, []
    for t in range(6):
        o, state = neuron.step(x[t], state)
        outs.append(o)
    assert torch.equal(torch.stack(outs), s)
    dequantize_neurons_(net)
    assert "_seq" not in neuron.__dict__ and neuron.v_threshold == 1.0


def test_wide_register_matches_float_on_grid_inputs():
    x = torch.randint(0, 9, (8, 4, 16)).float() / 8              # inputs on a coarse grid
    ref = LIF(tau=2.0, backend="reference")(x)
    q = LIF(tau=2.0, backend="reference")
    quantize_neurons_(nn.Sequential(q), bits=24)
    assert torch.equal(q(x), ref)
    lif3 = LIF(tau=3.0, backend="reference")
    quantize_neurons_(nn.Sequential(lif3), bits=8)
    assert lif3.tau == 4.0                                       # leak 1/3 -> shift by 2


def test_neuron_quant_bad_input():
    with pytest.raises(ValueError, match=r"bits: expected an integer in 2..32 .*got 1"):
        quantize_neurons_(nn.Sequential(LIF()), bits=1)
    with pytest.raises(ValueError, match=r"layer '0' \(GLIF\) cannot be handled; allowed neuron types: IF, LIF"):
        quantize_neurons_(nn.Sequential(GLIF()), bits=8)
    with pytest.raises(ValueError, match="no neuron modules"):
        quantize_neurons_(nn.Linear(2, 2))
