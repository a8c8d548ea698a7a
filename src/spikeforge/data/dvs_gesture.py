"""DVS128 Gesture (Amir et al. 2017): 29 subjects x 3 lighting conditions, AEDAT 3.1 recordings
``userNN_<lighting>.aedat``, each segmented into trials by ``userNN_<lighting>_labels.csv``
(``class,startTime_usec,endTime_usec``; classes 1..11). One sample = one trial: the events with
``start <= t < end``. The split follows ``trials_to_train.txt`` / ``trials_to_test.txt`` when present, else the
official subjects (users 1-23 train, 24-29 test).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import EventDataset
from .errors import CorruptFileError
from .events.aedat3 import read_aedat31
from .registry import DatasetInfo, register_dataset

CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
           "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll",
           "air_drums", "air_guitar", "other_gestures")
FILE_RE = re.compile(r"^user(\d+)_[A-Za-z0-9_]+\.aedat$")
LAST_TRAIN_USER = 23


def read_gesture_labels(path) -> list[tuple[int, int, int]]:
    """(label 0..10, start_us, end_us) for each trial listed in a ``*_labels.csv``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise CorruptFileError(path, "labels file is not ASCII text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].replace(" ", "").lower() != "class,starttime_usec,endtime_usec":
        raise CorruptFileError(path, "expected the header 'class,startTime_usec,endTime_usec'")
    trials = []
    for n, line in enumerate(lines[1:], 2):
        parts = line.split(",")
        try:
            c, start, end = (int(v) for v in parts)
        except ValueError:
            raise CorruptFileError(path, f"line {n}: expected three integers, got {line[:80]!r}") from None
        if not 1 <= c <= len(CLASSES):
            raise CorruptFileError(path, f"line {n}: class {c} outside 1..{len(CLASSES)}")
        if not 0 <= start < end:
            raise CorruptFileError(path, f"line {n}: trial [{start}, {end}) is empty or negative")
        trials.append((c - 1, start, end))
    return trials


class DVSGesture(EventDataset):
    """DVS128 Gesture: 128x128 sensor, 11 classes, 1176 train / 288 test trials of ~6 s."""

    info = DatasetInfo(
        name="dvs_gesture", kind="event", num_classes=11, class_names=CLASSES, splits=("train", "test"),
        files=("user*_*.aedat", "user*_*_labels.csv", "trials_to_train.txt", "trials_to_test.txt"),
        url="https://research.ibm.com/interactive/dvsgesture/",
        folders=("DvsGesture", "dvs_gesture/DvsGesture", "dvs_gesture"), sensor_size=(128, 128, 2),
        num_samples={"train": 1176, "test": 288},
        description="DVS128 Gesture (Amir et al. 2017), AEDAT 3.1 + trial labels csv", license="CC BY 4.0",
        manual_download="IBM's Box folder needs a browser: download DvsGesture.tar.gz "
                        "(md5 8a5c71fb11e24e5ca5b11866ca6c00a1) from "
                        "https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794 and extract it",
    )

    @classmethod
    def expected_files(cls, split):
        return ["user*_*.aedat", "user*_*_labels.csv"]

    def _split_files(self) -> list[Path]:
        listing = self.root / f"trials_to_{self.split}.txt"
        if listing.is_file():
            names = [ln.strip() for ln in listing.read_text(errors="replace").splitlines() if ln.strip()]
            for name in names:
                if not FILE_RE.match(name):
                    raise CorruptFileError(listing, f"unexpected entry {name[:80]!r}")
            return [self.root / n for n in names]
        files = []
        for p in sorted(self.root.glob("user*_*.aedat")):
            m = FILE_RE.match(p.name)
            if m and (int(m.group(1)) <= LAST_TRAIN_USER) == (self.split == "train"):
                files.append(p)
        return files

    def index(self):
        samples = []
        for path in self._split_files():
            labels = path.with_name(path.stem + "_labels.csv")
            if not path.is_file() or not labels.is_file():
                raise CorruptFileError(path, f"recording or its labels file {labels.name} is missing")
            samples += [(path, c, (start, end)) for c, start, end in read_gesture_labels(labels)]
        self._last = (None, None)
        return samples

    def read(self, i: int) -> np.ndarray:
        path, _, (start, end) = self.samples[i]
        if self._last[0] != path:  # trials of one recording are consecutive: keep the last decoded file
            self._last = (path, read_aedat31(path, sensor_size=self.info.sensor_size, sort=self.sort).events)
        ev = self._last[1]
        lo, hi = np.searchsorted(ev["t"], [start, end], side="left")
        return ev[lo:hi].copy()


register_dataset(DVSGesture)
