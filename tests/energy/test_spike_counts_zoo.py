"""The spike counter sees every neuron of every zoo model, including neurons run through ``.step()`` (SCTFA,
the LMU): its total equals the spikes recorded at the neuron classes' own ``_seq`` (the one place every
spikeforge neuron computes).  Generated over the model registry."""

import pytest
import torch

from spikeforge.analysis import FiringRateMonitor
from spikeforge.analysis.monitor import spike_sources
from spikeforge.models import MODELS, create_model, list_models
from spikeforge.neurons.base import BaseNeuron

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


def _cases():
    return [pytest.param(n, marks=pytest.mark.slow) if MODELS.get(n).meta.get("heavy") else n for n in list_models()]


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


@pytest.mark.parametrize("name", _cases())
def test_monitor_counts_every_spike(name, monkeypatch):
    model, x = tiny_model(name)
    seen = _record_class_spikes(model, monkeypatch)
    with torch.no_grad(), FiringRateMonitor(model) as mon:
        model(x)
    truth = sum(seen) / x.shape[0]
    assert truth > 0, "the tiny model should spike"
    assert mon.spikes_per_sample() == pytest.approx(truth, rel=1e-9)
    steps = {len(c) for c in mon.counts.values()}
    expect = {16} if name == "lmu" else {1} if MODELS.get(name).meta.get("input") == "spike_times" else {T}
    assert steps == expect                                   # the LMU reads 4x4 pixels, one step each
    for n, m in model.named_modules():
        assert not {"_seq", "spike_times"} & set(m.__dict__)   # the model is left as it was
        assert not m._forward_hooks
