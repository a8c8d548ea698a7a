"""The dataset registry and its metadata: :class:`DatasetInfo`, :func:`get_dataset`, :func:`get_info`,
:func:`list_datasets`, :func:`load_arrays`. Each dataset registers itself at the bottom of its own file."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from .._registry import Registry

DATASETS = Registry("dataset")
KINDS = ("static", "event")


@dataclass(frozen=True)
class Resource:
    """One downloadable file: tried at each URL in turn, verified by checksum, extracted when an archive."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False

    def __post_init__(self):
        if not self.urls:
            raise ValueError(f"resource {self.filename!r} needs at least one URL")
        if not (self.md5 or self.sha256):
            raise ValueError(f"resource {self.filename!r} needs a checksum (md5 or sha256)")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where its files come from.

    ``input_shape`` is (C, H, W) for static sets; ``sensor_size`` is (W, H, polarities) for event sets.
    ``files`` are the expected files (relative to the dataset folder, ``*`` as wildcard), ``folders`` the
    folder names tried under each data root (``.`` is the root itself), ``url`` the official page.

    Example:
        >>> from spikeforge.data import get_info
        >>> info = get_info("nmnist")
        >>> info.kind, info.sensor_size, info.num_classes
        ('event', (34, 34, 2), 10)
    """

    name: str
    kind: str
    num_classes: int
    class_names: tuple[str, ...]
    splits: tuple[str, ...]
    files: tuple[str, ...]
    url: str
    folders: tuple[str, ...] = ()
    input_shape: tuple[int, int, int] | None = None
    sensor_size: tuple[int, int, int] | None = None
    num_samples: dict = field(default_factory=dict, hash=False)
    description: str = ""
    license: str = ""
    resources: tuple[Resource, ...] = ()
    manual_download: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "static" and (self.input_shape is None or len(self.input_shape) != 3):
            raise ValueError(f"static dataset {self.name!r} needs input_shape (C, H, W)")
        if self.kind == "event" and (self.sensor_size is None or len(self.sensor_size) != 3):
            raise ValueError(f"event dataset {self.name!r} needs sensor_size (W, H, polarities)")
        if self.num_classes < 1:
            raise ValueError(f"dataset {self.name!r}: num_classes must be >= 1")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if not self.splits:
            raise ValueError(f"dataset {self.name!r} needs at least one split")


def register_dataset(cls):
    """Register a dataset class under ``cls.info.name`` (call at the bottom of the dataset's file)."""
    info = cls.info
    DATASETS.register(info.name, help=info.description, info=info)(cls)
    return cls


def list_datasets() -> list[str]:
    """Names of every registered dataset.

    Example:
        >>> from spikeforge.data import list_datasets
        >>> {"digits", "mnist", "nmnist"} <= set(list_datasets())
        True
    """
    return DATASETS.list()


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset."""
    return DATASETS.get(name).meta["info"]


def _check_opts(name, factory, opts):
    params = inspect.signature(factory).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [p for p in params if p not in ("self", "split", "data_dir", "transform", "download")]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(allowed) or '(none)'}"
        )


def get_dataset(name: str, split: str, data_dir=None, transform=None, download: bool = False, **opts):
    """A torch ``Dataset`` for ``name``/``split``.

    Static sets yield ``(image float32 [C, H, W] in [0, 1], int label)``; event sets yield
    ``(events structured array, or the transform's output, int label)``. Files are looked for only in
    ``data_dir`` when given, else in ``$SPIKEFORGE_DATA``, then the user cache; ``download=True`` fetches
    missing files from the official source (checksummed). ``opts`` are dataset-specific (e.g. ``cache_dir`` for event sets).

    Example:
        >>> from spikeforge.data import get_dataset
        >>> ds = get_dataset("digits", "train")
        >>> x, y = ds[0]
        >>> tuple(x.shape), x.dtype, 0.0 <= float(x.min()) <= float(x.max()) <= 1.0, len(ds)
        ((1, 8, 8), torch.float32, True, 1437)
    """
    entry = DATASETS.get(name)
    info = entry.meta["info"]
    if split not in info.splits:
        raise ValueError(f"dataset {info.name!r} has no split {split!r}; splits: {', '.join(info.splits)}")
    _check_opts(info.name, entry.factory, opts)
    return entry.factory(split, data_dir=data_dir, transform=transform, download=download, **opts)


def load_arrays(name: str, split: str, data_dir=None):
    """A whole in-memory static set as tensors: ``x`` float32 [N, C, H, W] in [0, 1], ``y`` int64 [N].

    Available for ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``; feed the result to
    :class:`~spikeforge.data.InMemoryLoader`.

    Example:
        >>> from spikeforge.data import load_arrays
        >>> x, y = load_arrays("digits", "test")
        >>> tuple(x.shape), y.dtype, int(y.max())
        ((360, 1, 8, 8), torch.int64, 9)
    """
    entry = DATASETS.get(name)
    if not getattr(entry.factory, "in_memory", False):
        in_mem = [n for n in DATASETS.list() if getattr(DATASETS.get(n).factory, "in_memory", False)]
        raise ValueError(f"dataset {name!r} is not an in-memory static set; load_arrays supports: {', '.join(in_mem)}")
    return get_dataset(name, split, data_dir=data_dir).arrays()
