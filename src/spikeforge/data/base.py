"""Dataset base classes: locating files (and the error when they are missing), static in-memory sets,
event sets with an optional on-disk frame cache."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from .download import fetch_resources
from .errors import DatasetNotFoundError, DownloadError
from .paths import resolve_data_dirs, writable_data_dir
from .registry import DatasetInfo


def missing_message(info: DatasetInfo, split: str, expected, searched, extra: str = "", data_dir=None) -> str:
    """The :class:`DatasetNotFoundError` text: what is missing, where it was looked for, how to get it."""
    if data_dir is not None:
        lines = [f"dataset {info.name!r} (split {split!r}) not found in {data_dir} (the data folder given; "
                 "$SPIKEFORGE_DATA and the cache are not searched when a folder is given)."]
    else:
        lines = [f"dataset {info.name!r} (split {split!r}) not found."]
    lines.append("expected files: " + ", ".join(pretty_pattern(p) for p in expected))
    lines.append("folders searched (in order):")
    lines.extend(f"  {p}" for p in searched)
    if info.resources and not info.manual_download:
        cmd = f"spikeforge datasets download {info.name}" + (f" --data-dir {data_dir}" if data_dir is not None else "")
        lines.append(f"download: {info.url}; `{cmd}` fetches and verifies it (from "
                     + ", ".join(u for r in info.resources for u in r.urls[:1])
                     + "), as does download=True in get_dataset")
    else:
        lines.append(f"download: {info.url}" + (f" ({info.manual_download})" if info.manual_download else ""))
    if data_dir is not None:
        lines.append("put the files in one of the folders above, or pass another data_dir/--data-dir.")
    else:
        lines.append("put the files in one of the folders above, pass data_dir=/--data-dir, or set $SPIKEFORGE_DATA.")
    if extra:
        lines.append(extra)
    return "\n".join(lines)


class FileDataset(Dataset):
    """A dataset whose files are found under one of the data roots (see :func:`resolve_data_dirs`)."""

    info: ClassVar[DatasetInfo]
    in_memory: ClassVar[bool] = False

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False):
        if split not in self.info.splits:
            raise ValueError(f"dataset {self.info.name!r} has no split {split!r}; splits: {', '.join(self.info.splits)}")
        self.split = split
        self.transform = transform
        self.root = self.locate(split, data_dir, download, accept=self.accept_folder)

    def accept_folder(self, folder: Path) -> bool:
        """Instance-level filter on found folders (e.g. CIFAR's ``format=`` option); default: any."""
        return True

    # --- hooks a dataset overrides ---
    @classmethod
    def candidate_folders(cls, root: Path) -> list[Path]:
        return [root if f == "." else root / f for f in cls.info.folders]

    @classmethod
    def expected_files(cls, split: str) -> list[str]:
        return list(cls.info.files)

    @classmethod
    def has_split(cls, folder: Path, split: str) -> bool:
        """Whether ``folder`` holds the files of ``split`` (default: every expected file, wildcards allowed)."""
        return all(_exists(folder, pattern) for pattern in cls.expected_files(split))

    # --- locating ---
    @classmethod
    def find(cls, split: str, data_dir=None, accept=None) -> tuple[Path | None, list[Path]]:
        """(the folder holding ``split``, or None; every folder searched)."""
        searched = []
        for root in resolve_data_dirs(data_dir):
            for folder in cls.candidate_folders(root):
                searched.append(folder)
                if folder.is_dir() and cls.has_split(folder, split) and (accept is None or accept(folder)):
                    return folder, searched
        return None, searched

    @classmethod
    def locate(cls, split: str, data_dir=None, download: bool = False, accept=None) -> Path:
        folder, searched = cls.find(split, data_dir, accept)
        if folder is not None:
            return folder
        expected = cls.expected_files(split)
        if not download:
            raise DatasetNotFoundError(missing_message(cls.info, split, expected, searched, data_dir=data_dir))
        target = cls.fetch_files(data_dir, progress=True, split=split, searched=searched)
        folder, _ = cls.find(split, data_dir, accept)
        if folder is not None:
            return folder
        raise DatasetNotFoundError(missing_message(
            cls.info, split, expected, searched + [target], f"downloaded into {target}, but the files are still missing",
            data_dir=data_dir))

    @classmethod
    def fetch_files(cls, data_dir=None, progress: bool = True, split=None, searched=None) -> Path:
        """Fetch (checksummed, resuming a partial download) and extract the dataset's files into the first
        writable data root (``data_dir`` when given); returns the folder they went into."""
        split = split or cls.info.splits[0]
        expected = cls.expected_files(split)
        if searched is None:
            _, searched = cls.find(split, data_dir)
        if not cls.info.resources or cls.info.manual_download:
            raise DatasetNotFoundError(missing_message(
                cls.info, split, expected, searched,
                f"spikeforge cannot fetch {cls.info.name!r}: {cls.info.manual_download or 'no download source'}",
                data_dir=data_dir))
        target = cls.download_target(writable_data_dir(data_dir))
        try:
            fetch_resources(cls.info.resources, target, progress=progress)
        except DownloadError as e:
            raise DatasetNotFoundError(missing_message(cls.info, split, expected, searched, f"download failed: {e}",
                                                       data_dir=data_dir)) from e
        return target

    @classmethod
    def count_samples(cls, split: str, data_dir=None) -> int:
        """How many samples of ``split`` are on disk: what ``len(get_dataset(name, split, data_dir))`` says.
        The default builds the dataset; a dataset overrides it where a header says it more cheaply."""
        return len(cls(split, data_dir=data_dir))

    @classmethod
    def download_target(cls, root: Path) -> Path:
        first = cls.info.folders[0] if cls.info.folders else "."
        return root if first == "." else root / first


def _exists(folder: Path, pattern: str) -> bool:
    """``pattern`` relative to ``folder``; glob wildcards; ``a|b`` alternatives (e.g. ``x.gz|x``)."""
    for alt in pattern.split("|"):
        if any(ch in alt for ch in "*?["):
            if next(iter(folder.glob(alt)), None) is not None:
                return True
        elif (folder / alt).exists():
            return True
    return False


def pretty_pattern(pattern: str) -> str:
    """``'a.gz|a'`` -> ``'a.gz (or a)'``."""
    first, *rest = pattern.split("|")
    return first + (" (or " + ", ".join(rest) + ")" if rest else "")


class ArrayDataset(FileDataset):
    """A static set held in memory as uint8 (or float) images [N, C, H, W] and int64 labels [N]."""

    in_memory: ClassVar[bool] = True
    images: np.ndarray
    labels: np.ndarray
    scale: float = 255.0  # images / scale is in [0, 1]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.images[i])).float().div_(self.scale)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    def arrays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 [N, C, H, W] in [0, 1], y int64 [N])."""
        x = torch.empty(self.images.shape, dtype=torch.float32)
        x.copy_(torch.from_numpy(self.images if self.images.flags.writeable else self.images.copy()))
        return x.div_(self.scale), torch.from_numpy(np.array(self.labels, dtype=np.int64))

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.class_names


class EventDataset(FileDataset):
    """An event set: ``samples`` is a list of (source file, label, extra) built by ``index()``; ``read(i)``
    decodes sample ``i`` into an events array checked against ``info.sensor_size``.

    ``cache_dir`` caches the deterministic head of ``transform`` (e.g. Denoise + ToFrame) on disk as npz;
    ``sort=True`` sorts recordings whose timestamps go backwards instead of raising.
    """

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, cache_dir=None,
                 sort: bool = False):
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        self.sort = bool(sort)
        self.samples = self.index()
        self.cache = None
        if cache_dir is not None:
            from .cache import FrameCache

            self.cache = FrameCache(cache_dir, self.info.name, split, transform)

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        return self.info.sensor_size

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.class_names

    @property
    def targets(self) -> list[int]:
        return [s[1] for s in self.samples]

    def index(self) -> list[tuple[Path, int, object]]:
        """List the recordings: (path, label, extra). Each event dataset defines it."""
        raise TypeError(f"{type(self).__name__} must define index()")

    def read(self, i: int) -> np.ndarray:
        """Decode recording ``i`` to events. Each event dataset defines it."""
        raise TypeError(f"{type(self).__name__} must define read()")

    def sample_id(self, i: int) -> str:
        from .cache import file_id

        path, _, extra = self.samples[i]
        return file_id(path, "" if extra is None else str(extra))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        label = self.samples[i][1]
        if self.cache is not None:
            out = self.cache.get(self.sample_id(i), lambda: self.read(i))
            if self.cache.rest.transforms:
                out = self.cache.rest(out)
            return out, label
        out = self.read(i)
        if self.transform is not None:
            out = self.transform(out)
        return out, label


class FractionSplitEventDataset(EventDataset):
    """An event set with no official split: ``train``/``test`` take the first ``train_fraction`` of each class
    (in a fixed order, as SpikingJelly does), ``all`` takes everything."""

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, cache_dir=None,
                 sort: bool = False, train_fraction: float = 0.9):
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.train_fraction = float(train_fraction)
        super().__init__(split, data_dir=data_dir, transform=transform, download=download, cache_dir=cache_dir,
                         sort=sort)
