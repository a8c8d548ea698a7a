"""Shared pieces of the conversion tests: a tiny trained Fashion-MNIST ANN (zoo MLP twin), built once."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def fashion_dir():
    d = os.environ.get("SPIKEFORGE_DATA") or str(ROOT.parent / "shared" / "data")
    return d if (Path(d) / "fashion-mnist").is_dir() else None


@pytest.fixture(scope="session")
def fashion():
    """``(x_fit[2000], y_fit, x_eval[300], y_eval)``: disjoint slices of the real Fashion-MNIST test file (a tenth
    of the training file's reading time), normalised with the training set's mean and std."""
    d = fashion_dir()
    if d is None:
        pytest.skip("Fashion-MNIST not found under $SPIKEFORGE_DATA")
    import gzip

    import numpy as np

    root = Path(d) / "fashion-mnist"
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    x = (torch.from_numpy(x.astype(np.float32)) / 255.0 - 0.2860) / 0.3530
    y = torch.from_numpy(y.astype(np.int64))
    return x[:2000], y[:2000], x[5000:5300], y[5000:5300]


def train_ann(model, x, y, epochs=2, lr=0.05, bs=100, seed=0):
    """SGD with momentum 0.9, written out (torch.optim's first use imports torch._dynamo: seconds)."""
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny shapes gain nothing from a second thread; on a loaded machine it costs 100x
    params = [p for p in model.parameters() if p.requires_grad]
    mom = [torch.zeros_like(p) for p in params]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], bs):
            idx = order[i:i + bs]
            out = model(x[idx])
            out = out.mean(0) if out.dim() == 3 else out
            loss = F.cross_entropy(out, y[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, m, gr in zip(params, mom, grads):
                    m.mul_(0.9).add_(gr)
                    p.sub_(lr * m)
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def fashion_mlp(fashion):
    """A zoo MLP ANN twin (``neuron=relu``, 784-64-10) trained for 2 epochs on 2000 Fashion-MNIST images."""
    from spikeforge.models import create_model

    torch.manual_seed(0)
    x, y, _, _ = fashion
    ann = create_model("mlp", num_classes=10, in_channels=1, neuron="relu", T=1, input_size=28, hidden=(64,))
    return train_ann(ann, x, y)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes gain nothing from a second thread, and on a loaded machine its spin-waits cost 100x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
