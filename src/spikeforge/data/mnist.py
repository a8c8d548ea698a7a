"""MNIST and Fashion-MNIST from the official idx files (``.gz`` or not).

Looked for in ``<root>/mnist/``, ``<root>`` itself and torchvision's ``<root>/MNIST/raw/``
(Fashion-MNIST: ``<root>/fashion-mnist/``, ``<root>/fashion_mnist/``, ``<root>/FashionMNIST/raw/``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArrayDataset
from .errors import CorruptFileError
from .idx import read_idx, read_idx_shape
from .registry import DatasetInfo, Resource, register_dataset

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _patterns(split=None):
    splits = [split] if split else list(FILES)
    return [f"{f}.gz|{f}" for s in splits for f in FILES[s]]


def _resources(base_urls, md5s):
    return tuple(
        Resource(name + ".gz", tuple(u + name + ".gz" for u in base_urls), md5=md5s[name])
        for split in FILES for name in FILES[split]
    )


def _file(folder: Path, name: str) -> Path:
    gz = folder / (name + ".gz")
    return gz if gz.exists() else folder / name


class MNIST(ArrayDataset):
    """MNIST: 28x28 grey digits, 60000 train / 10000 test; yields ([1, 28, 28] float in [0, 1], label)."""

    info = DatasetInfo(
        name="mnist", kind="static", num_classes=10, class_names=tuple(str(d) for d in range(10)),
        splits=("train", "test"), files=tuple(_patterns()), url="http://yann.lecun.com/exdb/mnist/",
        folders=("mnist", ".", "MNIST/raw"), input_shape=(1, 28, 28), num_samples={"train": 60000, "test": 10000},
        description="MNIST handwritten digits (LeCun et al.), idx files",
        license="CC BY-SA 3.0",
        resources=_resources(
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
            {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"}),
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False):
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        img_path, lbl_path = (_file(self.root, f) for f in FILES[split])
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise CorruptFileError(img_path, f"expected uint8 images [N, 28, 28], got {images.dtype} {list(images.shape)}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise CorruptFileError(lbl_path, f"expected uint8 labels [N], got {labels.dtype} {list(labels.shape)}")
        if len(labels) != len(images):
            raise CorruptFileError(lbl_path, f"{len(labels)} labels for {len(images)} images in {img_path.name}")
        if len(labels) and int(labels.max()) >= self.info.num_classes:
            raise CorruptFileError(lbl_path, f"label {int(labels.max())} outside 0..{self.info.num_classes - 1}")
        self.images = images[:, None]
        self.labels = labels.astype(np.int64)

    @classmethod
    def expected_files(cls, split: str) -> list[str]:
        return _patterns(split)

    @classmethod
    def count_samples(cls, split: str, data_dir=None) -> int:
        """From the label file's header alone."""
        return read_idx_shape(_file(cls.locate(split, data_dir), FILES[split][1]))[0]


class FashionMNIST(MNIST):
    """Fashion-MNIST: 28x28 grey clothing images, 60000 train / 10000 test, same format as MNIST."""

    info = DatasetInfo(
        name="fashion_mnist", kind="static", num_classes=10,
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
        splits=("train", "test"), files=tuple(_patterns()), url="https://github.com/zalandoresearch/fashion-mnist",
        folders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"), input_shape=(1, 28, 28),
        num_samples={"train": 60000, "test": 10000},
        description="Fashion-MNIST (Xiao et al. 2017, Zalando), idx files", license="MIT",
        resources=_resources(
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"}),
    )


register_dataset(MNIST)
register_dataset(FashionMNIST)
