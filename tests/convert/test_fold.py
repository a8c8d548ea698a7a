"""BatchNorm folding is exact (folded logits equal the unfolded ones to 1e-5) on every zoo ANN twin, a plain
Sequential and an fx-traced module; a BatchNorm that cannot be folded is named."""

import pytest
import torch
from torch import nn

from spikeforge.convert import fold_batchnorm
from spikeforge.convert.fold import FOLDABLE_BN
from spikeforge.models import MODELS, create_model, list_models


def _randomise_bn_(model):
    with torch.no_grad():
        for b in model.modules():
            if isinstance(b, FOLDABLE_BN):
                b.running_mean.uniform_(-0.5, 0.5)
                b.running_var.uniform_(0.3, 3.0)
                if b.weight is not None:
                    b.weight.uniform_(0.5, 1.5)
                if b.bias is not None:
                    b.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _param(name):
    heavy = MODELS.get(name).meta.get("heavy") or name.startswith("ms_resnet")
    return pytest.param(name, marks=pytest.mark.slow) if heavy else name


# spike-time models (BATS, NIF) have no ANN twin: their neuron is the model
@pytest.mark.parametrize("name", [_param(n) for n in list_models()
                                  if n != "sresnet" and MODELS.get(n).meta.get("input") != "spike_times"])
def test_fold_is_exact_on_every_zoo_ann_twin(name):
    torch.manual_seed(0)
    meta = MODELS.get(name).meta
    kw = dict(meta.get("tiny", {}))
    kw.setdefault("in_channels", meta.get("defaults", {}).get("in_channels", 3))
    ann = create_model(name, num_classes=5, neuron="relu", T=1, **kw)
    ann = _randomise_bn_(ann)
    x = torch.rand(3, *meta.get("tiny_input", (kw["in_channels"], 16, 16)))
    folded = fold_batchnorm(ann)
    assert not any(isinstance(m, FOLDABLE_BN) for m in folded.modules())
    assert any(isinstance(m, FOLDABLE_BN) for m in ann.modules()) or name in ("lmu", "mlp")  # original untouched
    torch.testing.assert_close(folded(x), ann(x), rtol=0, atol=1e-5)


def test_fold_is_exact_on_sequential_and_traced_module():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(4), nn.Conv2d(1, 4, 3, bias=False)  # registered in reverse
            self.fc, self.bn2 = nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5)

        def forward(self, x):
            return self.bn2(self.fc(torch.relu(self.bn1(self.conv1(x))).flatten(1)))

    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5),
                        nn.BatchNorm1d(5))
    for net in (_randomise_bn_(Net()), _randomise_bn_(seq)):
        x = torch.rand(4, 1, 8, 8)
        folded = fold_batchnorm(net)
        assert not any(isinstance(m, FOLDABLE_BN) for m in folded.modules())
        torch.testing.assert_close(folded(x), net(x), rtol=0, atol=1e-5)


def test_fold_names_a_batchnorm_it_cannot_fold():
    class AddThenBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.norm = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.norm(self.a(x) + self.b(x))

    with pytest.raises(ValueError, match=r"BatchNorm norm cannot be folded: its input is call_function"):
        fold_batchnorm(AddThenBN())
    with pytest.raises(ValueError, match=r"BNTT at stem\.1 keeps per-time-step statistics"):
        fold_batchnorm(create_model("sresnet", neuron="relu", T=1, **MODELS.get("sresnet").meta["tiny"]))
