"""The streaming data path: sets that do not fit in memory, read per sample by a torch ``DataLoader``.

A :class:`StreamSplit` is one split read sample by sample from a *source*: :class:`ImageSource` (JPEG/PNG
files decoded with Pillow; random-resized crop and flip drawn in the worker), :class:`FrameSource` (event
frames read from a :class:`~spikeforge.data.cache.FrameStore` on disk) or :class:`ArraySource` (an
in-memory set, streamed). The batches to read are given as lists of sample indices, so the order stays the
caller's: the trainer passes this process's shard of each global batch of
:func:`spikeforge.training.distributed.batches`, a function of ``(seed, epoch)`` only. Each sample's
augmentation draws from a generator seeded by ``(seed, epoch, sample index)``: the same batch comes out
whichever worker reads it, however many processes share the batch, and after a resume mid-epoch.

Unreadable files (:class:`~spikeforge.data.errors.CorruptFileError`) are caught in the worker and reported
back: by default the batch raises one ``ValueError`` starting with the file's path (``bad_files="fail"``);
``bad_files="skip"`` drops the sample from its batch and counts it in :attr:`StreamSplit.skipped`.

Example:
    >>> import torch
    >>> from spikeforge.data.stream import ArraySource, StreamSplit
    >>> src = ArraySource(torch.arange(12.0).view(6, 1, 1, 2), torch.arange(6))
    >>> split = StreamSplit(src, num_workers=0)
    >>> [yb.tolist() for _, yb in split.batches([[4, 0], [5]])]
    [[4, 0], [5]]
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import CorruptFileError, DataError
from .loader import _seed

AUGMENTS = ("none", "crop", "crop_flip", "rrc", "rrc_flip")
RRC_SCALE = (0.08, 1.0)  # the usual ImageNet random-resized-crop area range ...
RRC_RATIO = (3 / 4, 4 / 3)  # ... and aspect-ratio range


class MixedSizeError(ValueError):
    """Samples of one split decode to different shapes and nothing resizes them (never skipped)."""


# ------------------------------------------------------------------------------------------------ sources
class ArraySource:
    """Samples of in-memory tensors ``x [N, ...]``, ``y [N]`` (for tests and small sets)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.labels = x, torch.as_tensor(y, dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def sample_shape(self):
        return tuple(self.x.shape[1:])

    def load(self, i: int, generator=None) -> torch.Tensor:
        return self.x[i].float()

    def describe(self, i: int) -> str:
        return f"sample {i}"


class ImageSource:
    """Image files decoded with Pillow to float32 RGB ``[3, H, W]`` in [0, 1].

    Without a generator (evaluation, or training without ``rrc``): the dataset's own decoding (shorter side
    resized to ``resize``, centre crop ``crop``, each when given). With one and ``augment`` ``rrc``/``rrc_flip``:
    a random-resized crop (area ``RRC_SCALE`` of the image, aspect ``RRC_RATIO``) of the original image,
    resized to ``out_size`` (H, W), and a horizontal flip with probability 0.5 for ``rrc_flip``.
    ``expect`` (C, H, W), when given, is the shape every evaluated image must have: another one raises
    :class:`MixedSizeError` naming its path.
    """

    def __init__(self, paths, labels, resize=None, crop=None, augment="none", out_size=None, expect=None):
        self.paths = np.array([os.fsencode(str(p)) for p in paths])  # one array: no per-item refcounts in workers
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.resize, self.crop, self.augment = resize, crop, augment
        self.out_size, self.expect = out_size, expect

    def __len__(self):
        return len(self.labels)

    def describe(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def sample_shape(self):
        return self.expect

    def load(self, i: int, generator=None) -> torch.Tensor:
        from .imagefolder import load_image

        path = self.describe(i)
        if generator is not None and self.augment.startswith("rrc"):
            return random_resized_crop(path, self.out_size, generator, flip=self.augment == "rrc_flip")
        x = load_image(path, self.resize, self.crop)
        if self.expect is not None and tuple(x.shape) != tuple(self.expect):
            raise MixedSizeError(f"{path}: image decodes to {'x'.join(map(str, x.shape))} but the split's first "
                                 f"image to {'x'.join(map(str, self.expect))}; images of mixed sizes need a resize "
                                 "(data.options.resize and data.options.crop, where the dataset takes them)")
        return x


def random_resized_crop(path: str, out_size, generator: torch.Generator, flip: bool = False) -> torch.Tensor:
    """A random-resized crop of the image at ``path`` to ``out_size`` (H, W), drawn from ``generator``."""
    from PIL import Image

    def uniform(lo, hi):
        return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            W, H = img.size
            box = None
            for _ in range(10):
                area = W * H * uniform(*RRC_SCALE)
                ratio = math.exp(uniform(math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])))
                w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
                if 0 < w <= W and 0 < h <= H:
                    x0 = int(torch.randint(0, W - w + 1, (), generator=generator))
                    y0 = int(torch.randint(0, H - h + 1, (), generator=generator))
                    box = (x0, y0, x0 + w, y0 + h)
                    break
            if box is None:  # no fit in 10 tries: the centred largest square
                s = min(W, H)
                box = ((W - s) // 2, (H - s) // 2, (W - s) // 2 + s, (H - s) // 2 + s)
            img = img.resize((int(out_size[1]), int(out_size[0])), Image.BILINEAR, box=box)
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError...)
        raise CorruptFileError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        x = x.flip(-1)
    return x


class FrameSource:
    """Event frames ``log1p(counts)`` float32 ``[T, P, H, W]`` read from a built
    :class:`~spikeforge.data.cache.FrameStore`; ``paths`` name the source recordings in errors."""

    def __init__(self, store, labels, paths):
        self.store = store
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.paths = np.array([os.fsencode(str(p)) for p in paths])
        self.bad = store.bad()

    def __len__(self):
        return len(self.labels)

    def describe(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def sample_shape(self):
        return self.store.frame_shape

    def load(self, i: int, generator=None) -> torch.Tensor:
        msg = self.bad.get(int(i))
        if msg is not None:
            raise DataError(msg)  # recorded when the store was built; starts with the file's path
        return torch.from_numpy(self.store.read(i).astype(np.float32)).log1p_()


# ------------------------------------------------------------------------------------------------ dataset
class _Failed:
    __slots__ = ("message", "skippable")

    def __init__(self, message: str, skippable: bool):
        self.message, self.skippable = message, skippable


class StreamDataset(Dataset):
    """``source`` samples, augmented and normalised in the worker. A key is ``i`` (no augmentation) or
    ``(i, epoch)`` (augmentation seeded by ``(seed, epoch, i)``)."""

    def __init__(self, source, seed: int = 0, augment: str = "none", crop_padding: int = 0, mean=None, std=None,
                 channel_dim: int = 0):
        if augment not in AUGMENTS:
            raise ValueError(f"data.augment: {augment!r}; allowed: {', '.join(AUGMENTS)}")
        self.source, self.seed, self.augment, self.crop_padding = source, int(seed), augment, int(crop_padding)
        self.channel_dim = channel_dim
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)

    def __len__(self):
        return len(self.source)

    def _normalise(self, x):
        if self.mean is None:
            return x
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, None)
        i = int(i)
        g = None
        if epoch is not None and self.augment != "none":
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, i))
        try:
            x = self.source.load(i, g)
        except MixedSizeError as e:
            return _Failed(str(e), skippable=False), int(self.source.labels[i])
        except DataError as e:
            return _Failed(str(e), skippable=True), int(self.source.labels[i])
        if g is not None and self.augment in ("crop", "crop_flip"):
            from .image_transforms import RandomCropPad, RandomHorizontalFlip

            x = RandomCropPad((x.shape[-2], x.shape[-1]), padding=self.crop_padding)(x, generator=g)
            if self.augment == "crop_flip":
                x = RandomHorizontalFlip(0.5)(x, generator=g)
        return self._normalise(x), int(self.source.labels[i])


def collate_stream(items):
    """``(x [B, ...], y [B], failures)``: the readable samples stacked, the unreadable ones listed."""
    good = [(x, y) for x, y in items if not isinstance(x, _Failed)]
    failed = [(x.message, x.skippable) for x, _ in items if isinstance(x, _Failed)]
    if not good:
        return None, torch.zeros(0, dtype=torch.long), failed
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), failed


class _ListBatchSampler:
    """Yields the batches (lists of keys) set in ``batches`` before each ``iter(loader)``."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _worker_init(_worker_id):
    torch.set_num_threads(1)  # the workers decode; the main process's threads run the model


class StreamSplit:
    """One split, streamed: :meth:`batches` reads given lists of sample indices through a ``DataLoader``.

    Args:
        source: an :class:`ImageSource`, :class:`FrameSource` or :class:`ArraySource`.
        num_workers: worker processes (0: read in this process). Workers persist across epochs and each keeps
            ``prefetch_factor`` batches ready.
        pin_memory: page-locked batches (worth it on CUDA only).
        bad_files: ``fail`` (one ``ValueError`` naming the file) or ``skip`` (drop and count in ``skipped``).
        seed, augment, crop_padding, mean, std, channel_dim: see :class:`StreamDataset`.
    """

    def __init__(self, source, num_workers: int = 0, pin_memory: bool = False, bad_files: str = "fail",
                 seed: int = 0, augment: str = "none", crop_padding: int = 0, mean=None, std=None,
                 channel_dim: int = 0, prefetch_factor: int = 2):
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers: got {num_workers!r}; allowed: an integer >= 0")
        if bad_files not in ("fail", "skip"):
            raise ValueError(f"data.bad_files: got {bad_files!r}; allowed: 'fail', 'skip'")
        self.source = source
        self.dataset = StreamDataset(source, seed, augment, crop_padding, mean, std, channel_dim)
        self.num_workers, self.pin_memory, self.bad_files = num_workers, bool(pin_memory), bad_files
        self.prefetch_factor = prefetch_factor
        self.skipped = 0
        self._sampler = _ListBatchSampler()
        self._loader = None

    @property
    def labels(self) -> torch.Tensor:
        return self.source.labels

    def __len__(self):
        return len(self.source)

    @property
    def shape(self) -> tuple:
        return (len(self), *self.source.sample_shape())

    def _get_loader(self):
        if self._loader is None:
            kw = {}
            if self.num_workers > 0:
                kw = {"persistent_workers": True, "prefetch_factor": self.prefetch_factor,
                      "worker_init_fn": _worker_init}
            # own generator: creating the iterator draws a base seed, never from torch's global RNG (a resumed
            # run's model RNG must not depend on when the loader was started)
            self._loader = DataLoader(self.dataset, batch_sampler=self._sampler, num_workers=self.num_workers,
                                      collate_fn=collate_stream, pin_memory=self.pin_memory,
                                      generator=torch.Generator().manual_seed(0), **kw)
        return self._loader

    def batches(self, index_lists, epoch: int | None = None):
        """Iterate ``(x, y)`` for each list of sample indices, in order; ``epoch`` (not None) turns on the
        augmentation, seeded by ``(seed, epoch, index)``."""
        keys = [[(int(i), int(epoch)) if epoch is not None else int(i) for i in (idx.tolist() if
                 isinstance(idx, torch.Tensor) else idx)] for idx in index_lists]
        if not keys:
            return
        self._sampler.batches = keys
        for x, y, failed in self._get_loader():
            yield self._check(x, y, failed)

    def _check(self, x, y, failed):
        for message, skippable in failed:
            if not skippable:
                raise ValueError(message)
            if self.bad_files == "fail":
                raise ValueError(f"{message} (data.bad_files=fail; data.bad_files=skip skips and counts "
                                 "unreadable files)")
        self.skipped += len(failed)
        if x is None:
            raise ValueError(f"every sample of a batch was unreadable (first: {failed[0][0]})")
        return x, y

    def __getitem__(self, idx):
        """Samples read in this process, without augmentation: an int gives one ``[...]``, a slice or index
        tensor a stacked ``[B, ...]``."""
        if isinstance(idx, (int, np.integer)):
            return self[[int(idx)]][0]
        if isinstance(idx, slice):
            idx = range(*idx.indices(len(self)))
        keys = idx.tolist() if isinstance(idx, torch.Tensor) else list(idx)
        x, y, failed = collate_stream([self.dataset[int(i)] for i in keys])
        return self._check(x, y, failed)[0]

    def close(self):
        """Stop the worker processes (they also stop when this object is garbage collected)."""
        self._loader = None


def channel_stats(split: StreamSplit, indices, channel_dim: int) -> tuple[list, list]:
    """Per-channel mean and (unbiased) std of the un-normalised samples at ``indices``, read in batches."""
    s1 = s2 = None
    n = 0
    raw = StreamSplit(split.source, num_workers=split.num_workers, bad_files="skip")
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    for x, _ in raw.batches(idx.split(64)):
        x = x.double().transpose(0, channel_dim + 1).reshape(x.shape[channel_dim + 1], -1)
        s1 = x.sum(1) if s1 is None else s1 + x.sum(1)
        s2 = (x * x).sum(1) if s2 is None else s2 + (x * x).sum(1)
        n += x.shape[1]
    raw.close()
    if s1 is None:
        raise ValueError("no readable sample to compute the normalisation statistics from")
    mean = s1 / n
    var = (s2 - n * mean * mean) / max(n - 1, 1)
    return mean.float().tolist(), var.clamp_min(0).sqrt().float().clamp_min(1e-6).tolist()
