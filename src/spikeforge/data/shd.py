"""SHD, the Spiking Heidelberg Digits (Cramer et al. 2020): spoken digits 0-9 in English and German
(20 classes) through a cochlea model into 700 channels. HDF5 files ``shd_train.h5`` / ``shd_test.h5`` with
``spikes/times`` (variable-length float seconds), ``spikes/units`` (variable-length channel ids) and
``labels``. Needs the optional ``h5py`` (``pip install spikeforge[hdf5]``).

Class names: the file's own ``extra/keys`` when present (``ds.classes``); ``info.class_names`` lists the
English digits then the German ones.

Events: ``x`` = channel, ``y`` = 0, ``p`` = 0, ``t`` = round(time x 1e6) us; sensor (700, 1, 1).
"""

from __future__ import annotations

import os

import numpy as np

from .base import EventDataset
from .errors import CorruptFileError
from .events._common import make_events, validate_events
from .registry import DatasetInfo, Resource, register_dataset

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
           "null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun")
CHANNELS = 700
# what h5py raises on damaged files (HDF5 errors surface as OSError, RuntimeError, KeyError, ValueError...)
H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("SHD is stored as HDF5: install h5py (pip install 'spikeforge[hdf5]')") from None
    return h5py


class SHD(EventDataset):
    """SHD: 700 channels, 20 classes, 8156 train / 2264 test utterances of ~1 s."""

    info = DatasetInfo(
        name="shd", kind="event", num_classes=20, class_names=CLASSES, splits=("train", "test"),
        files=("shd_train.h5", "shd_test.h5"), url="https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/",
        folders=("shd", "SHD", "."), sensor_size=(CHANNELS, 1, 1), num_samples={"train": 8156, "test": 2264},
        description="Spiking Heidelberg Digits (Cramer et al. 2020), HDF5 (needs h5py)", license="CC BY 4.0",
        resources=(
            Resource("shd_train.h5.zip", ("https://zenkelab.org/datasets/shd_train.h5.zip",),
                     md5="f3252aeb598ac776c1b526422d90eecb", extract=True),
            Resource("shd_test.h5.zip", ("https://zenkelab.org/datasets/shd_test.h5.zip",),
                     md5="1503a5064faa34311c398fb0a1ed0a6f", extract=True),
        ),
    )

    @classmethod
    def expected_files(cls, split):
        return [f"shd_{split}.h5"]

    @property
    def path(self):
        return self.root / f"shd_{self.split}.h5"

    def _file(self):
        """The open HDF5 file of this process (h5py handles do not survive fork/pickle)."""
        if getattr(self, "_h5", None) is None or self._h5_pid != os.getpid():
            h5py = _h5py()
            try:
                self._h5 = h5py.File(self.path, "r")
            except H5_ERRORS as e:
                raise CorruptFileError(self.path, f"not a readable HDF5 file ({e})") from None
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def index(self):
        try:
            return self._index()
        except CorruptFileError:
            raise
        except H5_ERRORS as e:
            raise CorruptFileError(self.path, f"damaged HDF5 file ({type(e).__name__}: {e})") from None

    def _index(self):
        f = self._file()
        try:
            labels = np.asarray(f["labels"][()])
            n_times, n_units = len(f["spikes"]["times"]), len(f["spikes"]["units"])
        except H5_ERRORS as e:
            raise CorruptFileError(self.path, f"missing or unreadable labels / spikes/times / spikes/units ({e})") from None
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise CorruptFileError(self.path, f"labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
        if not n_times == n_units == len(labels):
            raise CorruptFileError(self.path, f"{len(labels)} labels, {n_times} spike-time and {n_units} unit arrays")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise CorruptFileError(self.path, f"label outside 0..{len(CLASSES) - 1}")
        self._classes = CLASSES
        if "extra" in f and "keys" in f["extra"]:  # the file names its own classes: trust it over our table
            try:
                keys = [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in f["extra"]["keys"][()]]
            except H5_ERRORS as e:
                raise CorruptFileError(self.path, f"unreadable extra/keys ({e})") from None
            if len(keys) == len(CLASSES):
                self._classes = tuple(keys)
        return [(self.path, int(c), k) for k, c in enumerate(labels)]

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def read(self, i: int) -> np.ndarray:
        f = self._file()
        where = f"{self.path}[sample {i}]"
        try:
            times = np.asarray(f["spikes"]["times"][i], dtype=np.float64)
            units = np.asarray(f["spikes"]["units"][i])
        except H5_ERRORS as e:
            raise CorruptFileError(where, f"unreadable spikes ({e})") from None
        if times.ndim != 1 or units.shape != times.shape:
            raise CorruptFileError(where, f"{times.size} spike times for {units.size} units")
        if not np.isfinite(times).all() or (times < 0).any() or (times > 1e6).any():
            raise CorruptFileError(where, "spike times must be finite, non-negative seconds")
        if units.size and (units.min() < 0 or units.max() >= CHANNELS):
            raise CorruptFileError(where, f"unit {int(units.max())} outside 0..{CHANNELS - 1}")
        ev = make_events(units, np.zeros_like(units), np.rint(times * 1e6).astype(np.int64), 0)
        return validate_events(ev, self.info.sensor_size, where, sort=self.sort)


register_dataset(SHD)
