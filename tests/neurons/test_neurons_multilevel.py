"""Multi-level spikes: with cap 1 they are the binary spikes (IF/LIF, soft reset); counts respect the cap."""

import pytest
import torch

from spikeforge.functional import if_, lif, multilevel
from spikeforge.neurons import MultiLevel


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("tau", [None, 2.0])
def test_multilevel_with_cap_1_equals_binary_spikes(backend, tau):
    x = (torch.rand(20, 3, 17, dtype=torch.float64) * 2.0).requires_grad_()
    n, st = multilevel(x, cap=1, tau=tau, v_threshold=0.7, backend=backend)
    if tau is None:
        s, st_b = if_(x, v_threshold=0.7, v_reset=None, backend="reference")
    else:
        s, st_b = lif(x, tau=tau, v_threshold=0.7, v_reset=None, decay_input=False, backend="reference")
    assert torch.equal(n, s) and torch.equal(st.v, st_b.v)
    (gn,) = torch.autograd.grad((n * torch.arange(n.numel()).reshape(n.shape)).sum(), x)
    (gs,) = torch.autograd.grad((s * torch.arange(s.numel()).reshape(s.shape)).sum(), x)
    torch.testing.assert_close(gn, gs)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_multilevel_counts_are_integers_up_to_the_cap(backend):
    x = torch.rand(10, 4, 30) * 6
    n, st = multilevel(x, cap=4, backend=backend)  # cap 4: the default, whose kernel other tests compile too
    assert torch.equal(n, n.round()) and n.min() >= 0 and n.max() == 4
    assert (st.v >= 0).all()
    # conservation (IF, soft reset): input = emitted + what is left
    torch.testing.assert_close(x.sum(0), n.sum(0) + st.v)


def test_multilevel_bad_cap_raises():
    for cap in (0, 1.5, True):
        with pytest.raises(ValueError, match="cap"):
            multilevel(torch.rand(2, 1, 3), cap=cap)
        with pytest.raises(ValueError, match="cap"):
            MultiLevel(cap=cap)
