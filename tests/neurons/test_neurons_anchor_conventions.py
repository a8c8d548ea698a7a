"""The configurations docs/neurons.md gives to match snnTorch's Leaky and Norse's LIF (skipped without them)."""

import pytest
import torch

from spikeforge.functional import glif, lif


@pytest.mark.parametrize("mechanism,gamma", [("subtract", 0.0), ("zero", 1.0)])
def test_snntorch_leaky_equals_glif_gates_1_0_gamma(mechanism, gamma):
    sn = pytest.importorskip("snntorch")
    x = torch.rand(30, 4, 50, generator=torch.Generator().manual_seed(0)) * 0.8
    m = sn.Leaky(beta=0.7, threshold=0.9, reset_mechanism=mechanism)
    mem, out = m.init_leaky(), []
    for x_t in x:
        spk, mem = m(x_t, mem)
        out.append(spk)
    s, _ = glif(x, tau=0.7, v_threshold=0.9, v_reset=0.9, leak=0.0, alpha=1.0, beta=0.0, gamma=gamma)
    assert torch.equal(torch.stack(out), s) and s.sum() > 0


def test_norse_lif_with_one_step_synapse_equals_lif():
    nt = pytest.importorskip("norse.torch")
    x = torch.rand(30, 4, 50, generator=torch.Generator().manual_seed(1)) * 10
    cell = nt.LIFCell(p=nt.LIFParameters(tau_syn_inv=torch.tensor(1000.0), tau_mem_inv=torch.tensor(100.0)), dt=1e-3)
    state, out = None, []
    for x_t in x:
        z, state = cell(x_t, state)
        out.append(z)
    s, _ = lif(x, tau=10.0, v_reset=0.0, decay_input=True)
    assert torch.equal(torch.stack(out), s) and s.sum() > 0
