"""N-Caltech101 (Orchard et al. 2015): Caltech101 images recorded with an ATIS, Orchard ``.bin`` files in
``Caltech101/<class>/image_NNNN.bin`` (101 classes incl. ``BACKGROUND_Google``; 8709 recordings).

There is no official split: ``train``/``test`` take the first ``train_fraction`` (default 0.9) of each
class's files in sorted order (as SpikingJelly's per-class split), ``all`` takes every file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import FractionSplitEventDataset
from .events.orchard import read_orchard_bin
from .registry import DatasetInfo, Resource, register_dataset

CLASSES = (
    "BACKGROUND_Google", "Faces_easy", "Leopards", "Motorbikes", "accordion", "airplanes", "anchor", "ant", "barrel",
    "bass", "beaver", "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon",
    "car_side", "ceiling_fan", "cellphone", "chair", "chandelier", "cougar_body", "cougar_face", "crab", "crayfish",
    "crocodile", "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin", "dragonfly", "electric_guitar",
    "elephant", "emu", "euphonium", "ewer", "ferry", "flamingo", "flamingo_head", "garfield", "gerenuk",
    "gramophone", "grand_piano", "hawksbill", "headphone", "hedgehog", "helicopter", "ibis", "inline_skate",
    "joshua_tree", "kangaroo", "ketch", "lamp", "laptop", "llama", "lobster", "lotus", "mandolin", "mayfly",
    "menorah", "metronome", "minaret", "nautilus", "octopus", "okapi", "pagoda", "panda", "pigeon", "pizza",
    "platypus", "pyramid", "revolver", "rhino", "rooster", "saxophone", "schooner", "scissors", "scorpion",
    "sea_horse", "snoopy", "soccer_ball", "stapler", "starfish", "stegosaurus", "stop_sign", "strawberry",
    "sunflower", "tick", "trilobite", "umbrella", "watch", "water_lilly", "wheelchair", "wild_cat",
    "windsor_chair", "wrench", "yin_yang",
)


class NCaltech101(FractionSplitEventDataset):
    """N-Caltech101: 240x180 sensor, 101 classes, 8709 recordings of ~300 ms."""

    info = DatasetInfo(
        name="ncaltech101", kind="event", num_classes=101, class_names=CLASSES, splits=("train", "test", "all"),
        files=("Caltech101/<class>/*.bin",), url="https://www.garrickorchard.com/datasets/n-caltech101",
        folders=("ncaltech101/Caltech101", "N-Caltech101/Caltech101", "Caltech101"), sensor_size=(240, 180, 2),
        num_samples={"all": 8709}, description="N-Caltech101 (Orchard et al. 2015), Orchard .bin event files",
        license="CC BY 4.0",
        resources=(Resource("Caltech101.zip", ("https://data.mendeley.com/public-files/datasets/cy6cvx3ryv/files/"
                                               "36b5c52a-b49d-4853-addb-a836a8883e49/file_downloaded",),
                            md5="66201824eabb0239c7ab992480b50ba3", extract=True),),
    )

    @classmethod
    def expected_files(cls, split):
        return ["*/*.bin"]

    @classmethod
    def download_target(cls, root: Path) -> Path:
        return root / "ncaltech101"

    def index(self):
        samples = []
        for k, name in enumerate(CLASSES):
            files = sorted((self.root / name).glob("*.bin"))
            n_train = int(round(self.train_fraction * len(files)))
            chosen = {"train": files[:n_train], "test": files[n_train:], "all": files}[self.split]
            samples += [(p, k, None) for p in chosen]
        return samples

    def read(self, i: int) -> np.ndarray:
        return read_orchard_bin(self.samples[i][0], sensor_size=self.info.sensor_size, sort=self.sort).events


register_dataset(NCaltech101)
