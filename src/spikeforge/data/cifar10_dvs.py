"""CIFAR10-DVS (Li et al. 2017): 10000 CIFAR-10 images (1000 per class) recorded with a DVS128 from a
moving monitor, ``<class>/cifar10_<class>_<i>.aedat`` (AEDAT 2.0, as originally published on figshare) or
``.aedat4`` (the later conversion). No official split: ``train``/``test`` take indices below/above
``train_fraction`` x 1000 of each class (SpikingJelly's split), ``all`` everything.
"""

from __future__ import annotations

import re

import numpy as np

from .base import FractionSplitEventDataset, _exists
from .events import read_events
from .registry import DatasetInfo, Resource, register_dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FIGSHARE = {
    "airplane": ("7712788", "0afd5c4bf9ae06af762a77b180354fdd"),
    "automobile": ("7712791", "8438dfeba3bc970c94962d995b1b9bdd"),
    "bird": ("7712794", "a9c207c91c55b9dc2002dc21c684d785"),
    "cat": ("7712812", "52c63c677c2b15fa5146a8daf4d56687"),
    "deer": ("7712815", "b6bf21f6c04d21ba4e23fc3e36c8a4a3"),
    "dog": ("7712818", "f379ebdf6703d16e0a690782e62639c3"),
    "frog": ("7712842", "cad6ed91214b1c7388a5f6ee56d08803"),
    "horse": ("7712851", "e7cbbf77bec584ffbf913f00e682782a"),
    "ship": ("7712836", "41c7bd7d6b251be82557c6cce9a7d5c9"),
    "truck": ("7712839", "89f3922fd147d9aeff89e76a2b0b70a7"),
}
PER_CLASS = 1000


class CIFAR10DVS(FractionSplitEventDataset):
    """CIFAR10-DVS: 128x128 sensor, 10 classes, 1000 recordings per class."""

    info = DatasetInfo(
        name="cifar10_dvs", kind="event", num_classes=10, class_names=CLASSES, splits=("train", "test", "all"),
        files=("<class>/cifar10_<class>_<index>.aedat|<class>/cifar10_<class>_<index>.aedat4",),
        url="https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
        folders=("cifar10-dvs", "CIFAR10DVS", "cifar10_dvs"), sensor_size=(128, 128, 2),
        num_samples={"all": 10000, "train": 9000, "test": 1000},
        description="CIFAR10-DVS (Li et al. 2017), AEDAT 2.0 (or AEDAT 4) per recording", license="CC BY 4.0",
        resources=tuple(Resource(f"{c}.zip", (f"https://ndownloader.figshare.com/files/{fid}",), md5=md5, extract=True)
                        for c, (fid, md5) in FIGSHARE.items()),
    )

    @classmethod
    def has_split(cls, folder, split) -> bool:
        """Any class folder with recordings (a partial copy loads the classes present)."""
        return any(_exists(folder, f"{c}/cifar10_{c}_*.aedat|{c}/cifar10_{c}_*.aedat4") for c in CLASSES)

    def index(self):
        cut = int(round(self.train_fraction * PER_CLASS))
        samples = []
        for k, c in enumerate(CLASSES):
            pat = re.compile(rf"^cifar10_{c}_(\d+)\.aedat4?$")
            found = []
            for p in (self.root / c).iterdir() if (self.root / c).is_dir() else ():
                m = pat.match(p.name)
                if m:
                    found.append((int(m.group(1)), p))
            found.sort()
            for i, p in found:
                if self.split == "all" or (i < cut) == (self.split == "train"):
                    samples.append((p, k, None))
        return samples

    def read(self, i: int) -> np.ndarray:
        return read_events(self.samples[i][0], sensor_size=self.info.sensor_size, sort=self.sort).events


register_dataset(CIFAR10DVS)
