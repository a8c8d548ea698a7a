"""``digits``: the 1797 8x8 handwritten digits of the UCI "Optical Recognition of Handwritten Digits" test
set (Alpaydin and Kaynak 1998, CC BY 4.0; the same array scikit-learn's ``load_digits`` returns), shipped
inside spikeforge as ``digits8x8.npz`` (uint8, 45 KB; attribution in ``digits8x8.LICENSE.txt``), so a
training job runs with no data files and no extra dependency. Pixels 0..16 are divided by 16; the split is a
fixed seeded permutation: 80% train (1437), 20% test (360)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArrayDataset
from .errors import CorruptFileError
from .registry import DatasetInfo, register_dataset

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
DATA_FILE = Path(__file__).with_name("digits8x8.npz")
N_SAMPLES = 1797


def load_digits_arrays(path=DATA_FILE) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 samples: images uint8 [1797, 8, 8] in 0..16 and labels uint8 [1797], in the UCI file's order."""
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
    if images.shape != (N_SAMPLES, 8, 8) or labels.shape != (N_SAMPLES,) or images.dtype != np.uint8 \
            or labels.dtype != np.uint8 or int(images.max()) > 16 or int(labels.max()) > 9:
        raise CorruptFileError(path, f"expected uint8 images [{N_SAMPLES}, 8, 8] in 0..16 and labels [{N_SAMPLES}] in "
                               f"0..9, got {images.dtype} {list(images.shape)} and {labels.dtype} {list(labels.shape)}")
    return images, labels


class Digits(ArrayDataset):
    """8x8 digits shipped with spikeforge; yields ([1, 8, 8] float in [0, 1], label)."""

    info = DatasetInfo(
        name="digits", kind="static", num_classes=10, class_names=tuple(str(d) for d in range(10)),
        splits=("train", "test"), files=(), url="https://doi.org/10.24432/C50P49",
        folders=(), input_shape=(1, 8, 8), num_samples={"train": 1437, "test": 360},
        description="UCI 8x8 optical digits (test set), shipped inside spikeforge: the offline default",
        license="CC BY 4.0",
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
        raw_images, raw_labels = load_digits_arrays()
        images = raw_images.astype(np.float32)[:, None]  # [1797, 1, 8, 8], values 0..16
        labels = raw_labels.astype(np.int64)
        perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
        n_train = int(TRAIN_FRACTION * len(labels))
        idx = np.sort(perm[:n_train]) if split == "train" else np.sort(perm[n_train:])
        self.images, self.labels = images[idx], labels[idx]


register_dataset(Digits)
