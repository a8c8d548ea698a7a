"""SCTFA (sctfa-attention.md): attention fixed to 1 reduces to the baseline SNN exactly; gating semantics."""

import pytest
import torch

from spikeforge.layers import SCTFA, SCTFAttention
from spikeforge.layers.attention import SCTFA_LIF_KWARGS
from spikeforge.models import create_model
from spikeforge.neurons import LIF


def _ones_hook(module, inputs, output):
    return torch.ones_like(output)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_sctfa_net_with_attention_fixed_to_one_equals_baseline(backend):
    """Card check 1: replace A with ones -> the network equals BL-SNN exactly.  The head's weights are scaled so
    that the output neurons fire (at init they stay silent and both nets would output zeros), and the same net
    with its real attention is checked to differ from the baseline: the equality below can fail."""
    kw = {**SCTFA_LIF_KWARGS, "backend": backend}
    torch.manual_seed(0)
    att = create_model("sctfa_net", num_classes=4, in_channels=2, T=5, input_size=32, width=4, hidden=16,
                       neuron_kwargs=kw, attention="sctfa")
    base = create_model("sctfa_net", num_classes=4, in_channels=2, T=5, input_size=32, width=4, hidden=16,
                        neuron_kwargs=kw, attention="none")
    with torch.no_grad():
        for m in att.head.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(5.0)
    missing, unexpected = base.load_state_dict(att.state_dict(), strict=False)
    assert not missing and all(".attention." in k for k in unexpected)
    x = (torch.rand(5, 3, 2, 32, 32) < 0.3).float()
    y_base = base(x)
    assert (y_base != 0).float().mean() > 0.3                  # the output population fires
    assert not torch.equal(att(x), y_base)                     # the real attention changes the output
    for m in att.modules():
        if isinstance(m, SCTFAttention):
            m.register_forward_hook(_ones_hook)
    y_att = att(x)
    assert torch.equal(y_att, y_base)
    # gradients agree too (the same graph up to the identity gates)
    y_att.sum().backward()
    y_base.sum().backward()
    p_att = dict(att.named_parameters())
    for name, p in base.named_parameters():
        assert p.grad is not None and torch.allclose(p_att[name].grad, p.grad, atol=1e-6), name
    assert base.features[0].layer.weight.grad.abs().sum() > 0


def test_sctfa_without_forcing_differs_from_baseline():
    torch.manual_seed(0)
    att = create_model("sctfa_net", num_classes=4, in_channels=2, T=5, input_size=32, width=4, hidden=16,
                       neuron_kwargs=SCTFA_LIF_KWARGS)
    base = create_model("sctfa_net", num_classes=4, in_channels=2, T=5, input_size=32, width=4, hidden=16,
                        neuron_kwargs=SCTFA_LIF_KWARGS, attention="none")
    base.load_state_dict(att.state_dict(), strict=False)
    x = (torch.rand(5, 3, 2, 32, 32) < 0.5).float() * 3
    feats_att = att.features[:3](x)
    feats_base = base.features[:3](x)
    assert not torch.equal(feats_att, feats_base)


def test_sctfa_step_matches_card_update_equation():
    """u_t = decay * A(s_{t-1}) * u_{t-1} * (1 - s_{t-1}) + I_t, s_t = H(u_t - V_th), written out by hand."""
    torch.manual_seed(1)
    C = 4
    layer = SCTFA(LIF(tau=2.0, decay_input=False, v_threshold=0.8, backend="reference"), C).double()
    x = torch.rand(6, 2, C, 3, 3, dtype=torch.float64) * 1.2
    s_out = layer(x)
    u = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        a = layer.attention(s) if t > 0 else torch.ones_like(u)
        u = 0.5 * a * u * (1 - s) + x[t]
        s = (u >= 0.8).to(u.dtype)
        assert torch.equal(s_out[t], s), t


@pytest.mark.parametrize("mode", ["spatial", "channel"])
def test_sctfa_ablation_variants_shapes(mode):
    a = SCTFAttention(8, mode=mode)(torch.rand(2, 8, 5, 5))
    assert a.shape == ((2, 1, 5, 5) if mode == "spatial" else (2, 8, 1, 1))
    assert ((a > 0) & (a < 1)).all()


def test_sctfa_errors():
    with pytest.raises(ValueError, match="available: sctfa, spatial, channel"):
        SCTFAttention(8, mode="temporal")
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]"):
        SCTFA(LIF(), 4)(torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match="needs a .step"):
        SCTFA(torch.nn.ReLU(), 4)
