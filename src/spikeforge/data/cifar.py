"""CIFAR-10 and CIFAR-100 from the python-pickle batches or the binary version.

Folders tried under each root: ``cifar-10-batches-py``, ``cifar10/cifar-10-batches-py``, then the binary
``cifar-10-batches-bin`` (CIFAR-100: ``cifar-100-python``, ``cifar-100-binary``, also under ``cifar100/``).
``format="python"|"binary"`` insists on one version; ``"auto"`` takes the first found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArrayDataset
from .cifar_format import decode_cifar_binary, decode_cifar_pickle
from .registry import DatasetInfo, Resource, register_dataset

FORMATS = ("auto", "python", "binary")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)


def _read(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class CIFAR10(ArrayDataset):
    """CIFAR-10: 32x32 colour images, 50000 train / 10000 test; yields ([3, 32, 32] float in [0, 1], label)."""

    PY_DIR, BIN_DIR, PARENT = "cifar-10-batches-py", "cifar-10-batches-bin", "cifar10"
    PY_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
    BIN_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}

    info = DatasetInfo(
        name="cifar10", kind="static", num_classes=10, class_names=CIFAR10_CLASSES, splits=("train", "test"),
        files=("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_2", "cifar-10-batches-py/data_batch_3",
               "cifar-10-batches-py/data_batch_4", "cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/test_batch"),
        url="https://www.cs.toronto.edu/~kriz/cifar.html", folders=(PARENT, "."), input_shape=(3, 32, 32),
        num_samples={"train": 50000, "test": 10000}, description="CIFAR-10 (Krizhevsky 2009), python or binary batches",
        resources=(Resource("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                            md5="c58f30108f718f92721af3b95e74349a", extract=True),),
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, format: str = "auto"):  # noqa: A002
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        self.format = format
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        xs, ys = [], []
        binary = self.root.name == self.BIN_DIR
        for name in (self.BIN_FILES if binary else self.PY_FILES)[split]:
            x, y = self._load(self.root / name, binary)
            xs.append(x)
            ys.append(y)
        self.images = np.concatenate(xs)
        self.labels = np.concatenate(ys).astype(np.int64)

    def _load(self, path: Path, binary: bool):
        if binary:
            x, y = decode_cifar_binary(_read(path), str(path), label_bytes=1, num_classes=(10,))
            return x, y[:, 0]
        x, y = decode_cifar_pickle(_read(path), str(path), label_keys=("labels",))
        self._check_labels(path, y["labels"], 10)
        return x, y["labels"]

    @staticmethod
    def _check_labels(path, y, k):
        if len(y) and (y.min() < 0 or y.max() >= k):
            from .errors import CorruptFileError

            raise CorruptFileError(path, f"label {int(y.max() if y.max() >= k else y.min())} outside 0..{k - 1}")

    @classmethod
    def candidate_folders(cls, root: Path) -> list[Path]:
        return [root / cls.PY_DIR, root / cls.PARENT / cls.PY_DIR, root / cls.BIN_DIR, root / cls.PARENT / cls.BIN_DIR]

    @classmethod
    def expected_files(cls, split: str) -> list[str]:
        return [f"{cls.PY_DIR}/{p}|{cls.BIN_DIR}/{b}" for p, b in zip(cls.PY_FILES[split], cls.BIN_FILES[split])]

    @classmethod
    def has_split(cls, folder: Path, split: str) -> bool:
        files = cls.BIN_FILES if folder.name == cls.BIN_DIR else cls.PY_FILES
        return all((folder / f).is_file() for f in files[split])

    def accept_folder(self, folder: Path) -> bool:
        is_bin = folder.name == self.BIN_DIR
        return self.format == "auto" or (self.format == "binary") == is_bin

    @classmethod
    def download_target(cls, root: Path) -> Path:
        return root / cls.PARENT


class CIFAR100(CIFAR10):
    """CIFAR-100: 32x32 colour images, 100 fine classes (``labels="coarse"``: the 20 superclasses)."""

    PY_DIR, BIN_DIR, PARENT = "cifar-100-python", "cifar-100-binary", "cifar100"
    PY_FILES = {"train": ("train",), "test": ("test",)}
    BIN_FILES = {"train": ("train.bin",), "test": ("test.bin",)}
    LABELS = ("fine", "coarse")

    info = DatasetInfo(
        name="cifar100", kind="static", num_classes=100, class_names=CIFAR100_FINE, splits=("train", "test"),
        files=("cifar-100-python/train", "cifar-100-python/test"), url="https://www.cs.toronto.edu/~kriz/cifar.html",
        folders=("cifar100", "."), input_shape=(3, 32, 32), num_samples={"train": 50000, "test": 10000},
        description="CIFAR-100 (Krizhevsky 2009), python or binary batches; fine (100) or coarse (20) labels",
        resources=(Resource("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                            md5="eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, format: str = "auto",  # noqa: A002
                 labels: str = "fine"):
        if labels not in self.LABELS:
            raise ValueError(f"labels must be one of {self.LABELS}, got {labels!r}")
        self.label_type = labels
        super().__init__(split, data_dir=data_dir, transform=transform, download=download, format=format)

    def _load(self, path: Path, binary: bool):
        fine = self.label_type == "fine"
        if binary:
            x, y = decode_cifar_binary(_read(path), str(path), label_bytes=2, num_classes=(20, 100))
            return x, y[:, 1 if fine else 0]
        x, y = decode_cifar_pickle(_read(path), str(path), label_keys=("fine_labels", "coarse_labels"))
        key, k = ("fine_labels", 100) if fine else ("coarse_labels", 20)
        self._check_labels(path, y[key], k)
        return x, y[key]

    @property
    def classes(self) -> tuple[str, ...]:
        return CIFAR100_FINE if self.label_type == "fine" else CIFAR100_COARSE


register_dataset(CIFAR10)
register_dataset(CIFAR100)
