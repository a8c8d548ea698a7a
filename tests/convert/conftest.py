"""Shared pieces of the conversion tests: a tiny trained Fashion-MNIST ANN (zoo MLP twin), built once."""

import os
from pathlib import Path

import pytest
import torch
from convert_helpers import train_ann

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
