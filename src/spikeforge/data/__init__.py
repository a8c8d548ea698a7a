"""spikeforge.data: the datasets of the seed papers behind one interface.

* :func:`get_dataset` (``name, split``) -> torch Dataset; :func:`get_info` -> :class:`DatasetInfo`;
  :func:`list_datasets`; :func:`load_arrays` + :class:`InMemoryLoader` for sets that fit in RAM.
* :func:`read_events` reads any supported event file (AEDAT 2.0/3.1/4.0, Orchard ``.bin``, Prophesee ``.dat``);
  :func:`collate_events` batches raw event samples in a torch ``DataLoader``.
* Event transforms (:class:`ToFrame`, :class:`Downsample`, :class:`Denoise`, random crop/flip/roll/jitter),
  image augmentation for CIFAR (:func:`cifar_augment`), an on-disk frame cache (``cache_dir=``).

Files are looked for only in ``data_dir`` (``--data-dir``) when one is given, else in ``$SPIKEFORGE_DATA``,
then ``~/.cache/spikeforge``. Nothing is downloaded unless asked (``download=True`` or
``spikeforge datasets download NAME``).
"""

from __future__ import annotations

from . import cifar, cifar10_dvs, digits, dvs_gesture, imagefolder, mnist, ncaltech101, nmnist, shd  # noqa: F401  (register)
from .base import ArrayDataset, EventDataset, FileDataset
from .cache import FrameCache
from .collate import collate_events
from .errors import CorruptFileError, DataError, DatasetNotFoundError, DownloadError, UnknownFormatError
from .events import EVENT_DTYPE, Recording, detect_format, make_events, read_events
from .frames import ToFrame, events_to_frames
from .image_transforms import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, Cutout, Normalize,
                               RandomCropPad, RandomHorizontalFlip, cifar_augment)
from .loader import InMemoryLoader
from .paths import resolve_data_dirs, user_cache_dir
from .registry import DATASETS, DatasetInfo, Resource, get_dataset, get_info, list_datasets, load_arrays
from .transforms import Compose, Denoise, Downsample, RandomCrop, RandomFlip, RandomRoll, TimeJitter

__all__ = [
    "get_dataset", "get_info", "list_datasets", "load_arrays", "resolve_data_dirs", "user_cache_dir",
    "DatasetInfo", "Resource", "DATASETS", "FileDataset", "ArrayDataset", "EventDataset",
    "InMemoryLoader", "FrameCache", "collate_events",
    "read_events", "detect_format", "make_events", "EVENT_DTYPE", "Recording",
    "ToFrame", "events_to_frames", "Compose", "Downsample", "Denoise", "RandomCrop", "RandomFlip", "RandomRoll",
    "TimeJitter", "RandomCropPad", "RandomHorizontalFlip", "Cutout", "Normalize", "cifar_augment",
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
    "DataError", "CorruptFileError", "UnknownFormatError", "DatasetNotFoundError", "DownloadError",
]
