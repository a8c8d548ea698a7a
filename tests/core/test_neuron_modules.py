"""Neuron modules hold parameters only; forward/step protocol; registry; no CUDA on import."""

import subprocess
import sys

import pytest
import torch

from spikeforge.functional import lif
from spikeforge.neurons import IF, LIF, NEURONS, PLIF, create_neuron


def test_module_equals_function():
    x = torch.randn(7, 3, 5)
    assert torch.equal(LIF(tau=3.0, backend="reference")(x), lif(x, tau=3.0, backend="reference")[0])


def test_no_hidden_state_between_calls():
    n = LIF()
    x = torch.rand(5, 2, 8) * 3
    before = {k: v.clone() for k, v in n.state_dict().items()}
    a, b = n(x), n(x)
    assert torch.equal(a, b)
    assert {k: v for k, v in n.state_dict().items()}.keys() == before.keys()
    assert not [k for k in vars(n) if k in ("v", "state", "mem")]


def test_forward_state_in_out_and_step():
    n = LIF(backend="reference")
    x = torch.randn(6, 2, 3)
    s, st = n(x, return_state=True)
    s_a, st_a = n(x[:3], return_state=True)
    s_b, st_b = n(x[3:], st_a)  # passing state returns state
    assert torch.equal(torch.cat([s_a, s_b]), s)
    s_t, st_t = n.step(x[0])
    assert torch.equal(s_t, s[0])
    s_v, v = n(x, return_v=True)
    assert v.shape == x.shape


def test_plif_learns_tau_and_per_channel():
    n = PLIF(init_tau=3.0)
    torch.testing.assert_close(n.tau_value, torch.tensor(3.0))
    x = torch.rand(4, 2, 6) * 3
    n(x).sum().backward()
    assert n.w.grad is not None
    nc = PLIF(num_channels=3)
    y = nc(torch.rand(4, 2, 3, 5, 5))
    assert y.shape == (4, 2, 3, 5, 5)
    with pytest.raises(ValueError, match="num_channels=3"):
        nc(torch.rand(4, 2, 4, 5))


def test_if_module():
    assert IF()(torch.full((3, 1), 0.5)).flatten().tolist() == [0.0, 1.0, 0.0]


def test_registry_lists_and_creates():
    assert {"if", "lif", "plif"} <= set(NEURONS.list())
    n = create_neuron("lif", tau=4.0)
    assert isinstance(n, LIF) and n.tau == 4.0
    with pytest.raises(ValueError, match="unknown neuron 'nope'; available: .*lif"):
        create_neuron("nope")
    d = NEURONS.describe("lif")
    assert d["params"]["tau"] == 2.0 and d["params"]["v_threshold"] == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=0.9), "tau"), (dict(v_threshold=0), "v_threshold"), (dict(surrogate="x"), "surrogate"),
    (dict(backend="fast"), "backend"), (dict(detach_reset=1), "detach_reset"),
])
def test_module_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)


def test_step_requires_batch_axis():
    with pytest.raises(ValueError, match="x_t"):
        LIF().step(torch.tensor(1.0))


def test_resolved_backend_records_auto_choice():
    n = LIF()
    assert n.resolved_backend(torch.zeros(1, 1)) in ("cpu", "reference")
    assert n.resolved_backend(torch.zeros(1, 1, dtype=torch.bfloat16)) == "reference"


def test_import_does_not_initialise_cuda():
    code = ("import torch, spikeforge, spikeforge.neurons, spikeforge.functional, spikeforge.models;"
            "import spikeforge.kernels.dispatch;"
            "assert not torch.cuda.is_initialized(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_cli_neurons_and_version():
    from spikeforge.cli import main

    assert main(["neurons"]) == 0
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
