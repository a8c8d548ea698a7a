"""energy and the spike monitor: on every zoo model the spike count equals the spikes recorded at the neuron
classes (neurons run through ``.step()`` included) and the hook counters equal an independent autograd count;
profiles (Horowitz table, YAML validation), pricing; SATA's card checks 1-3 and the SNN/ANN ratio for its
VGG5/CIFAR-10 shape."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeforge.analysis import FiringRateMonitor
from spikeforge.analysis.monitor import spike_sources
from spikeforge.energy import (VGG5_CIFAR10, SATALayer, ann_training_energy, count_ops, energy_table, get_profile,
                               load_profile, sata_energy, total_energy)
from spikeforge.energy.counters import OpCounter, _is_events
from spikeforge.layers import TimeFold
from spikeforge.models import MODELS, create_model, list_models
from spikeforge.neurons import LIF


class ReferenceOps:
    """SynOps / MACs of every exact Linear/Conv2d by autograd: d(sum y)/dW summed = sum over outputs of the
    inputs in their receptive field (events), or outputs x fan-in (analog)."""

    def __init__(self, model):
        self.synops = self.macs = 0.0
        self.hs = [m.register_forward_hook(self.hook) for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]

    def hook(self, m, inputs, y):
        x = inputs[0].detach().double()
        w = m.weight.detach().double().requires_grad_()
        with torch.enable_grad():
            out = F.linear(x, w) if isinstance(m, nn.Linear) else \
                F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)
            g, = torch.autograd.grad(out.sum(), w)
        if _is_events(inputs[0]):
            self.synops += float(g.sum())
        else:
            self.macs += float(out.numel() * w[0].numel())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.hs:
            h.remove()


T = 2


def tiny_model(name):
    meta = MODELS.get(name).meta
    kw = dict(meta.get("tiny", {}))
    kw.setdefault("in_channels", meta.get("defaults", {}).get("in_channels", 3))
    torch.manual_seed(0)
    if meta.get("input") == "spike_times":                  # their own neuron; the plain-torch kernels
        if "backend" in MODELS.describe(name)["params"]:
            kw["backend"] = "reference"
        model = create_model(name, num_classes=5, T=T, **kw)
        return model.train(), torch.rand(2, *meta.get("tiny_input", (kw["in_channels"], 16, 16)))
    else:
        model = create_model(name, num_classes=5, T=T, neuron_kwargs={"backend": "reference", "v_threshold": 0.2},
                             **kw)
    shape = meta.get("tiny_input", (kw["in_channels"], 16, 16))
    return model.train(), torch.rand(2, *shape) * 2       # batch statistics: fresh BN layers pass signal


def _record_class_spikes(model, monkeypatch):
    seen = []
    sources = spike_sources()
    for cls in {type(m) for m in model.modules() if isinstance(m, tuple(t for t, _, _ in sources))}:
        attr, to_spikes = next((w, f) for t, w, f in sources if issubclass(cls, t))
        orig = cls.__dict__.get(attr)
        assert orig is not None, f"{cls.__name__} does not define {attr}"

        def rec(self, *args, _orig=orig, _to=to_spikes):
            out = _orig(self, *args)
            spikes = [out[0]] if _to is None else [s for _, s in _to(out)]
            seen.append(sum(float(s.detach().sum()) for s in spikes))
            return out

        monkeypatch.setattr(cls, attr, rec)
    return seen


def _cases():
    return [pytest.param(n, marks=pytest.mark.slow) if MODELS.get(n).meta.get("heavy") else n for n in list_models()]


@pytest.mark.parametrize("name", _cases())
def test_counters_and_spikes_on_every_zoo_model(name, monkeypatch):
    """One forward per zoo model, four observers: the spike monitor and the op counter (the code under test),
    spikes recorded at the neuron classes themselves (every spikeforge neuron computes in ``_seq``, whether
    run by ``forward`` or ``.step()``) and SynOps / MACs by autograd."""
    model, x = tiny_model(name)
    with torch.no_grad():                              # no zero-init gammas: signal reaches every layer
        for m in model.modules():
            if getattr(m, "running_mean", None) is not None and isinstance(getattr(m, "weight", None), nn.Parameter):
                m.weight.fill_(1.0)
    seq = model.to_sequence(x) if hasattr(model, "to_sequence") else x
    if seq.dim() > 1 and seq.shape[0] > 1 and seq.stride(0) == 0:
        x = seq.contiguous()          # every step its own memory: no TimeFold shortcut (tested on its own below)
    seen = _record_class_spikes(model, monkeypatch)
    with torch.no_grad(), OpCounter(model) as counter, FiringRateMonitor(model) as mon, ReferenceOps(model) as ref:
        model(x)
    B = x.shape[1] if x.dim() == 5 else x.shape[0]
    truth = sum(seen) / B
    assert truth > 0, "the tiny model should spike"
    assert mon.spikes_per_sample() == pytest.approx(truth, rel=1e-9)
    steps = {len(c) for c in mon.counts.values()}
    expect = {16} if name == "lmu" else {1} if MODELS.get(name).meta.get("input") == "spike_times" else {T}
    assert steps == expect                                   # the LMU reads 4x4 pixels, one step each
    for m in model.modules():
        assert not {"_seq", "spike_times"} & set(m.__dict__)   # the model is left as it was
        assert not m._forward_hooks and not m._forward_pre_hooks
    ops = counter.counts()
    syn = sum(lo.synops for n, lo in ops.layers.items() if not n.endswith(":extra"))
    mac = sum(lo.macs for n, lo in ops.layers.items() if not n.endswith(":extra"))
    assert syn == pytest.approx(ref.synops, rel=1e-9, abs=1e-6)
    assert mac == pytest.approx(ref.macs, rel=1e-9)
    updates = sum(mon.neurons[n] * len(c) * mon.samples[n] for n, c in mon.counts.items())
    assert ops.total("neuron_updates") == updates
    assert ops.total("spikes") == pytest.approx(truth * B)


def test_direct_coding_shortcut_counted_every_step():
    model, x = tiny_model("convnet")
    model.eval()
    x_seq = model.to_sequence(x)
    assert x_seq.stride(0) == 0                              # TimeFold runs the first conv once
    a, b = count_ops(model, x), count_ops(model, x_seq.contiguous())
    first = "features.0.layer.0"
    assert a.layers[first].macs == b.layers[first].macs == T * 16 * 16 * 4 * 9


def test_lmu_memory_update_counted():
    model, x = tiny_model("lmu")
    ops = count_ops(model, x)
    d, steps = model.order, 16
    assert ops.layers["SpikingLMU:extra"].macs == steps * (d * d + d)


def test_profiles_horowitz_and_pricing():
    p = get_profile("horowitz45-fp32")
    assert p.costs["ac"] == 0.9 and p.costs["mac"] == pytest.approx(4.6) and p.costs["mem_read"] == 5.0
    q = get_profile("horowitz45-int32-compute")
    assert q.costs["ac"] == 0.1 and q.costs["mac"] == pytest.approx(3.2) and q.costs["mem_read"] == 0.0
    net = nn.Sequential(TimeFold(nn.Linear(4, 3)), LIF(backend="reference"), TimeFold(nn.Linear(3, 2)))
    x = torch.tensor([[[0.5, 0.0, 0.0, 1.0]]]).expand(2, 1, 4).contiguous()
    ops = count_ops(net, x)
    rows = energy_table(ops, p)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    manual = sum(lo.synops * 0.9 + lo.macs * 4.6 + lo.neuron_updates * 5.5
                 + (lo.weight_reads + lo.state_reads + lo.state_writes) * 5.0 for lo in ops.layers.values())
    assert total_energy(ops, p) == pytest.approx(manual)
    assert ops.layers["0.layer"].macs == 2 * 4 * 3 and ops.layers["0.layer"].synops == 0   # analog input


@pytest.mark.parametrize("text,msg", [
    ("name: chip\nops: {ac: 0.1, mac: 1.0, neuron_update: 0.5, mem_read: 2.0}\n",
     r"ops.mem_write: missing; required ops: ac, mac, neuron_update, mem_read, mem_write"),
    ("name: chip\nops: {ac: -0.1, mac: 1.0, neuron_update: 0.5, mem_read: 2.0, mem_write: 2.0}\n",
     r"ops.ac: expected a finite cost >= 0 in pJ, got -0.1"),
    ("name: chip\nops: {ac: 0.1, mac: 1.0, neuron_update: 0.5, mem_read: 2.0, mem_write: 2.0, mul: 1}\n",
     r"ops.mul: unknown op; allowed: ac, mac"),
])
def test_yaml_profile_bad_input(tmp_path, text, msg):
    f = tmp_path / "chip.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_profile(f)


def test_yaml_profile_and_unknown_name(tmp_path):
    f = tmp_path / "chip.yaml"
    f.write_text("name: chip\nops: {ac: 0.1, mac: 1.0, neuron_update: 0.5, mem_read: 2.0, mem_write: 2.5}\n")
    assert get_profile(str(f)).costs["mem_write"] == 2.5 and get_profile(str(f)).name == "chip"
    with pytest.raises(ValueError, match=r"profile: unknown value 'tpu'; allowed: horowitz45-fp32"):
        get_profile("tpu")


# --- SATA training energy (card sata-training-energy.md) -------------------------------------------------------
CONV = (SATALayer("c", "conv", 16, 32, (3, 3), (8, 8), (8, 8)),)


def test_sata_check1_linear_in_T_and_in_spike_density():
    e = [sata_energy(CONV, T)["total"] for T in (1, 2, 3, 4)]
    assert e[1] - e[0] == pytest.approx(e[2] - e[1]) == pytest.approx(e[3] - e[2])
    assert e[1] - e[0] > 0
    f = [sata_energy(CONV, 4, s_s=s)["items"]["mac_fwd"] for s in (0.0, 0.5, 1.0)]
    assert f[0] == pytest.approx(2 * f[1]) and f[2] == 0.0
    tot = [sata_energy(CONV, 4, s_s=s)["total"] for s in (0.0, 0.25, 0.5, 0.75)]
    assert tot[0] - tot[1] == pytest.approx(tot[1] - tot[2]) == pytest.approx(tot[2] - tot[3])
    assert tot[0] > tot[1]


def test_sata_check2_T1_dense_real_is_ann():
    snn = sata_energy(VGG5_CIFAR10, T=1, s_s=0.0, s_du=0.0, fwd_bits=16, real_activations=True)
    assert snn["total"] == pytest.approx(ann_training_energy(VGG5_CIFAR10)["total"], rel=1e-12)
    # binary spikes at T = 1 dense: the AND + accumulate forward is cheaper than the ANN's multiply
    spk = sata_energy(VGG5_CIFAR10, T=1, s_s=0.0, s_du=0.0, fwd_bits=16)
    assert spk["items"]["mac_fwd"] < snn["items"]["mac_fwd"]


def test_sata_check3_backward_share_grows_with_T():
    share = [sata_energy(VGG5_CIFAR10, T)["bwd"] / sata_energy(VGG5_CIFAR10, T)["total"] for T in (1, 2, 4, 8, 16)]
    assert all(a < b for a, b in zip(share, share[1:]))


def test_sata_snn_ann_ratio_vgg5():
    ann = ann_training_energy(VGG5_CIFAR10)["total"]
    r4 = sata_energy(VGG5_CIFAR10, T=4, s_s=0.9, s_du=0.7)["total"] / ann
    r8 = sata_energy(VGG5_CIFAR10, T=8, s_s=0.9, s_du=0.7)["total"] / ann
    # the paper's 1.27x (SNN costs more than the ANN even with its sparsities): the simulator's formulas give
    # 1.09x at T = 4 and 1.26x at T = 8 with 16-bit operands (docs/energy.md)
    assert 1.0 < r4 < r8 and r8 == pytest.approx(1.27, abs=0.03)


def test_sata_bad_input():
    with pytest.raises(ValueError, match=r"s_du: expected a sparsity in \[0, 1\], got 1.5"):
        sata_energy(CONV, 4, s_du=1.5)
    with pytest.raises(ValueError, match=r"T: expected an integer >= 1, got 0"):
        sata_energy(CONV, 0)
