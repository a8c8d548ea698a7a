"""NIR: spikeforge -> NIR -> spikeforge gives identical spikes; the exported graph run by snnTorch and Norse gives the
same spikes; parameters follow the documented Euler mapping; bad graphs and layers raise errors naming them."""

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

from spikeforge.deploy.export.nir import from_nir, load_nir, save_nir, to_nir  # noqa: E402
from spikeforge.layers import BNTT, TimeFold  # noqa: E402
from spikeforge.models import create_model  # noqa: E402
from spikeforge.models.base import make_neuron  # noqa: E402
from spikeforge.models._common import NeuronFactory, NormFactory, conv3x3  # noqa: E402
from spikeforge.models.sew_resnet import SEWBasicBlock  # noqa: E402
from spikeforge.neurons import IF, LIF, PLIF, BaseNeuron  # noqa: E402

T, B = 6, 2


class SEWNet(nn.Module):
    """A conv stem and one SEW ADD block (identity shortcut: the sum of two spike trains), then a readout."""

    def __init__(self, cnf="ADD"):
        super().__init__()
        sn, bn = NeuronFactory("lif", {"v_threshold": 0.5}), NormFactory("bn", T)
        self.stem = nn.Sequential(conv3x3(1, 4), bn(4), sn())
        self.block = SEWBasicBlock(4, 4, 1, cnf, sn, bn)
        self.head = TimeFold(nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x_seq):
        return self.head(self.block(self.stem(x_seq)))


def _model(name):
    torch.manual_seed(0)
    if name == "mlp":
        m = create_model("mlp", num_classes=3, in_channels=1, T=T, input_size=6, hidden=(16,),
                         neuron_kwargs={"v_threshold": 0.5})
    elif name == "convnet":
        m = create_model("convnet", num_classes=3, in_channels=1, T=T, input_size=8, channels=(4, 8),
                         neuron_kwargs={"v_threshold": 0.5})
    else:
        m = SEWNet()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):  # non-trivial statistics to fold
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(0.0, 0.3)
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.mul_(4.0)  # every layer spikes at a rate of a few percent or more
    return m.eval()


def _seq(name):
    g = torch.Generator().manual_seed(1)
    size = {"mlp": 6, "convnet": 8, "sew": 6}[name]
    return torch.rand(T, B, 1, size, size, generator=g)


def _spikes(model, x_seq):
    """Readout and the spikes of every spikeforge neuron, in call order."""
    rec = []
    hooks = [m.register_forward_hook(lambda m, a, o: rec.append(o.detach().clone()))
             for m in model.modules() if isinstance(m, BaseNeuron)]
    with torch.no_grad():
        y = model(x_seq)
    for h in hooks:
        h.remove()
    return y, rec


def _per_step(net, x_seq, anchor, neuron_types):
    """Run an anchor's imported graph step by step, one sample at a time (NIR shapes have no batch)."""
    outs, spikes = [], {}

    def hook(m, a, o):
        spikes.setdefault(id(m), []).append((o[0] if isinstance(o, tuple) else o).detach().clone())

    mods = [m for m in net.modules() if isinstance(m, neuron_types)]
    hooks = [m.register_forward_hook(hook) for m in mods]
    for b in range(x_seq.shape[1]):
        if anchor == "snntorch":
            import snntorch.utils

            snntorch.utils.reset(net)
        state, ys = None, []
        for t in range(x_seq.shape[0]):
            if anchor == "snntorch":
                o = net(x_seq[t, b])
                ys.append(o[0] if isinstance(o, tuple) else o)
            else:
                o, state = net(x_seq[t, b], state)
                ys.append(o)
        outs.append(torch.stack(ys).detach())
    for h in hooks:
        h.remove()
    T_ = x_seq.shape[0]
    # [B*T] steps per module -> [T, B, ...]
    per = [torch.stack(spikes[id(m)]).reshape(x_seq.shape[1], T_, *spikes[id(m)][0].shape).transpose(0, 1)
           for m in mods if id(m) in spikes]
    return torch.stack(outs, 1), per


@pytest.mark.parametrize("name", ["mlp", "convnet", "sew"])
def test_round_trip_identical_spikes(name, tmp_path):
    m, x = _model(name), _seq(name)
    path = tmp_path / "m.nir"
    save_nir(to_nir(m, x), path)
    back = from_nir(load_nir(path))
    y0, s0 = _spikes(m, x)
    y1, s1 = _spikes(back, x)
    assert all(s.sum() > 0 for s in s0)
    assert torch.equal(y0, y1)
    # max pools come back as a pool and a one-step neuron: every original layer's spikes are among the import's
    for a in s0:
        assert any(a.shape == b.shape and torch.equal(a, b) for b in s1)


@pytest.mark.parametrize("name", ["mlp", "convnet", "sew"])
def test_snntorch_import_same_spikes(name):
    pytest.importorskip("snntorch")
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    m, x = _model(name), _seq(name)
    y0, s0 = _spikes(m, x)
    # snnTorch's importer assumes dt = 1e-4 and reads AvgPool2d (not SumPool2d)
    net = import_from_nir(to_nir(m, x, dt=1e-4, maxpool_as="avg"))
    y1, s1 = _per_step(net, x, "snntorch", (snn.Leaky,))
    s1 = [s for s in s1 if any(s.shape == t.shape for t in s0)]
    assert all(s.sum() > 0 for s in s0)
    for a in s0:  # every spikeforge layer's spikes are some snnTorch layer's spikes
        assert any(a.shape == b.shape and torch.equal(a, b) for b in s1)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "convnet", "sew"])
def test_norse_import_same_spikes(name):
    nt = pytest.importorskip("norse.torch")
    from norse.torch.module.lif_box import LIFBoxCell

    m, x = _model(name), _seq(name)
    y0, s0 = _spikes(m, x)
    net = nt.from_nir(to_nir(m, x, dt=1.0), dt=1.0)
    y1, s1 = _per_step(net, x, "norse", (LIFBoxCell,))
    assert all(s.sum() > 0 for s in s0)
    for a in s0:
        assert any(a.shape == b.shape and torch.equal(a, b) for b in s1)
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-5)


def test_parameter_mapping_and_inverse():
    """tau = dt * tau, R = 1 (decay_input) or tau (not), v_leak = v_reset; IF R = 1/dt; PLIF per channel."""
    torch.manual_seed(0)
    plif = PLIF(init_tau=3.0, num_channels=2, v_reset=0.25)
    with torch.no_grad():
        plif.w.copy_(torch.tensor([0.3, -0.7]))
    net = nn.Sequential(TimeFold(nn.Conv1d(1, 2, 3, padding=1)), plif, TimeFold(nn.Flatten()),
                        TimeFold(nn.Linear(10, 4)), LIF(tau=4.0, decay_input=False, v_threshold=0.8, v_reset=-0.1),
                        TimeFold(nn.Linear(4, 3)), IF(v_threshold=0.7, v_reset=0.0))
    x = torch.rand(8, 3, 1, 5) * 3
    g = to_nir(net, x, dt=0.5)
    lif, plif_node, if_node = g.nodes["4"], g.nodes["1"], g.nodes["6"]
    np.testing.assert_allclose(lif.tau, 0.5 * 4.0)
    np.testing.assert_allclose(lif.r, 4.0)
    np.testing.assert_allclose(lif.v_leak, -0.1)
    np.testing.assert_allclose(lif.v_reset, -0.1)
    np.testing.assert_allclose(if_node.r, 1 / 0.5)
    k = torch.sigmoid(torch.tensor([0.3, -0.7], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(plif_node.tau[:, 0], 0.5 / k)
    assert plif_node.tau.shape == (2, 5)
    # spikeforge's LIF holds one tau per layer: a per-channel PLIF does not come back, and says so
    with pytest.raises(ValueError, match=r"^1: tau differs between neurons"):
        from_nir(g)


def test_uniform_plif_and_lif_round_trip_values():
    torch.manual_seed(0)
    net = nn.Sequential(TimeFold(nn.Linear(5, 8)), PLIF(init_tau=2.0, v_reset=0.0),
                        TimeFold(nn.Linear(8, 4)), LIF(tau=3.0, decay_input=False, v_reset=0.1),
                        TimeFold(nn.Linear(4, 4)), IF(v_threshold=0.5, v_reset=0.0))
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()  # positive weights: every layer spikes
    x = torch.rand(10, 4, 5) * 2
    back = from_nir(to_nir(net, x, dt=1.0))
    assert isinstance(back.layers["3"], LIF) and back.layers["3"].decay_input is False
    y0, s0 = _spikes(net, x)
    y1, s1 = _spikes(back, x)
    assert torch.equal(y0, y1) and y0.sum() > 0 and all(s.sum() > 0 for s in s0)
    for a, b in zip(s0, s1):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------- bad input
def test_unsupported_neuron_named():
    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), make_neuron("glif"))
    with pytest.raises(ValueError, match=r"^1 \(GLIF\): NIR cannot express this neuron"):
        to_nir(net, torch.rand(3, 2, 4))


def test_bntt_named():
    net = nn.Sequential(TimeFold(nn.Conv2d(1, 2, 3)), BNTT(2, T=3), LIF())
    with pytest.raises(ValueError, match=r"BNTT"):
        to_nir(net.eval(), torch.rand(3, 2, 1, 5, 5))


def test_soft_reset_named():
    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), IF(v_reset=None))
    with pytest.raises(ValueError, match=r"^1 \(IF\): v_reset=None \(soft reset"):
        to_nir(net, torch.rand(3, 2, 4))


def test_sew_and_named():
    with pytest.raises(ValueError, match=r"multiplies two signals"):
        to_nir(_model("sew").__class__("AND").eval(), _seq("sew"))


def test_maxpool_on_analog_input_named():
    net = nn.Sequential(TimeFold(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)))
    with pytest.raises(ValueError, match=r"^0\.1 \(MaxPool2d\): NIR has no max pooling"):
        to_nir(net, torch.rand(3, 2, 1, 6, 6))


def test_bad_arguments_named():
    net = nn.Sequential(TimeFold(nn.Linear(4, 4)), LIF())
    with pytest.raises(ValueError, match=r"^dt: expected a finite number > 0"):
        to_nir(net, torch.rand(3, 2, 4), dt=0)
    with pytest.raises(ValueError, match=r"^maxpool_as: unknown value 'max'; allowed: sum, avg"):
        to_nir(net, torch.rand(3, 2, 4), maxpool_as="max")


def test_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "broken.nir"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match=r"broken\.nir: not a readable NIR file"):
        load_nir(bad)
    with pytest.raises(ValueError, match=r"broken\.nir: not a readable NIR file"):
        from_nir(str(bad))


def _graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_unknown_node_named():
    g = _graph({"input": nir.Input(input_type={"input": np.array([3])}), "d": nir.Delay(delay=np.ones(3)),
                "output": nir.Output(output_type={"output": np.array([3])})}, [("input", "d"), ("d", "output")])
    with pytest.raises(ValueError, match=r"^d: unknown node type Delay; supported: Input, Output, Affine"):
        from_nir(g)


def test_inconsistent_shapes_named():
    w = np.ones((4, 5), dtype=np.float32)
    g = _graph({"input": nir.Input(input_type={"input": np.array([3])}),
                "fc": nir.Affine(weight=w, bias=np.zeros(4, dtype=np.float32)),
                "output": nir.Output(output_type={"output": np.array([4])})}, [("input", "fc"), ("fc", "output")])
    with pytest.raises(ValueError, match=r"^fc: declared input shape \(5,\) but input gives \(3,\)"):
        from_nir(g)


def test_recurrent_graph_named():
    w = np.eye(3, dtype=np.float32)
    one = np.ones(3)
    g = _graph({"input": nir.Input(input_type={"input": np.array([3])}), "rec": nir.Linear(weight=w),
                "lif": nir.LIF(tau=one * 2, r=one, v_leak=one * 0, v_threshold=one, v_reset=one * 0),
                "output": nir.Output(output_type={"output": np.array([3])})},
               [("input", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")])
    with pytest.raises(ValueError, match=r"form a cycle \(recurrent connection\)"):
        from_nir(g)


def test_cuba_lif_with_synaptic_memory_named():
    one = np.ones(3)
    g = _graph({"input": nir.Input(input_type={"input": np.array([3])}),
                "cuba": nir.CubaLIF(tau_syn=one * 5, tau_mem=one * 2, r=one, v_leak=one * 0, v_threshold=one),
                "output": nir.Output(output_type={"output": np.array([3])})}, [("input", "cuba"), ("cuba", "output")])
    with pytest.raises(ValueError, match=r"^cuba: CubaLIF with tau_syn != dt"):
        from_nir(g)
    g.nodes["cuba"] = nir.CubaLIF(tau_syn=one, tau_mem=one * 2, r=one, v_leak=one * 0, v_threshold=one)
    assert isinstance(from_nir(g).layers["cuba"], LIF)
