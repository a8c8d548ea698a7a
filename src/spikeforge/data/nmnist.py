"""N-MNIST (Orchard et al. 2015): MNIST digits recorded with an ATIS on a pan-tilt unit, 3 saccades of
~100 ms each, Orchard ``.bin`` files in ``{Train,Test}/<digit>/*.bin``.

Looked for in ``<root>/nmnist/``, ``<root>/events/nmnist-subset/`` (the 200-recording sample shipped with
this project), ``<root>/NMNIST/`` and ``<root>/N-MNIST/``. ``first_saccade_only=True`` keeps events before
100 ms (tonic's option of the same name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import EventDataset
from .events.orchard import read_orchard_bin
from .registry import DatasetInfo, Resource, register_dataset

MENDELEY = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
SPLIT_DIRS = {"train": "Train", "test": "Test"}
FIRST_SACCADE_US = 100_000


class NMNIST(EventDataset):
    """N-MNIST: 34x34 sensor, 10 classes, 60000 train / 10000 test recordings of ~300 ms."""

    info = DatasetInfo(
        name="nmnist", kind="event", num_classes=10, class_names=tuple(str(d) for d in range(10)),
        splits=("train", "test"), files=("Train/<digit>/*.bin", "Test/<digit>/*.bin"),
        url="https://www.garrickorchard.com/datasets/n-mnist",
        folders=("nmnist", "events/nmnist-subset", "NMNIST", "N-MNIST"), sensor_size=(34, 34, 2),
        num_samples={"train": 60000, "test": 10000},
        description="N-MNIST (Orchard et al. 2015), Orchard .bin event files", license="CC BY-SA 4.0",
        resources=(
            Resource("Train.zip", (MENDELEY + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",),
                     md5="20959b8e626244a1b502305a9e6e2031", extract=True),
            Resource("Test.zip", (MENDELEY + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",),
                     md5="69ca8762b2fe404d9b9bad1103e97832", extract=True),
        ),
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, cache_dir=None,
                 sort: bool = False, first_saccade_only: bool = False):
        self.first_saccade_only = bool(first_saccade_only)
        super().__init__(split, data_dir=data_dir, transform=transform, download=download, cache_dir=cache_dir,
                         sort=sort)

    @classmethod
    def expected_files(cls, split):
        return [f"{SPLIT_DIRS[split]}/[0-9]/*.bin"]

    def index(self):
        base = self.root / SPLIT_DIRS[self.split]
        return [(p, d, None) for d in range(10) for p in sorted((base / str(d)).glob("*.bin"))]

    def read(self, i: int) -> np.ndarray:
        path: Path = self.samples[i][0]
        ev = read_orchard_bin(path, sensor_size=self.info.sensor_size, sort=self.sort).events
        if self.first_saccade_only:
            ev = ev[ev["t"] < FIRST_SACCADE_US]
        return ev

    def sample_id(self, i: int) -> str:
        return super().sample_id(i) + f"|first_saccade={self.first_saccade_only}"


register_dataset(NMNIST)
