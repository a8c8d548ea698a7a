"""``digits``: scikit-learn's 1797 8x8 handwritten digits, shipped inside the scikit-learn wheel, so a
training job runs with no data files at all. Pixels 0..16 are divided by 16; the split is a fixed seeded
permutation: 80% train (1437), 20% test (360)."""

from __future__ import annotations

import numpy as np

from .base import ArrayDataset
from .registry import DatasetInfo, register_dataset

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


class Digits(ArrayDataset):
    """8x8 digits from scikit-learn; yields ([1, 8, 8] float in [0, 1], label)."""

    info = DatasetInfo(
        name="digits", kind="static", num_classes=10, class_names=tuple(str(d) for d in range(10)),
        splits=("train", "test"), files=(), url="bundled with scikit-learn (sklearn.datasets.load_digits)",
        folders=(), input_shape=(1, 8, 8), num_samples={"train": 1437, "test": 360},
        description="scikit-learn 8x8 digits (UCI), embedded offline default", license="CC BY 4.0",
    )
    scale = 16.0

    @classmethod
    def locate(cls, split, data_dir=None, download=False, accept=None):
        return None  # embedded: no files to find

    @classmethod
    def find(cls, split, data_dir=None, accept=None):
        return None, []

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False):
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        from sklearn.datasets import load_digits

        d = load_digits()
        images = np.asarray(d.images, dtype=np.float32)[:, None]  # [1797, 1, 8, 8], values 0..16
        labels = np.asarray(d.target, dtype=np.int64)
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
        n_train = int(TRAIN_FRACTION * len(labels))
        idx = np.sort(perm[:n_train]) if split == "train" else np.sort(perm[n_train:])
        self.images, self.labels = images[idx], labels[idx]


register_dataset(Digits)
