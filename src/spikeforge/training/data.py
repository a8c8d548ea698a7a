"""Turn a :class:`~spikeforge.config.DataConfig` into in-memory tensors and per-step batches.

Static sets come from :func:`spikeforge.data.load_arrays`; event sets (``data.frames`` > 0) are read
through :func:`spikeforge.data.get_dataset` with a ``ToFrame`` transform and stacked into
``[N, T, P, H, W]``. A missing dataset raises the data layer's own error, unchanged.
Batch order and augmentation depend only on ``(seed, epoch, step)``, so a resumed run sees exactly the
batches an uninterrupted one would.

``data.loader`` picks the path: ``memory`` (the whole set as tensors, the fast default where it fits),
``stream`` (a :class:`~spikeforge.data.stream.StreamSplit` per split: a ``DataLoader`` with
``data.num_workers`` processes reading this process's shard of each global batch; event frames come from an
on-disk :class:`~spikeforge.data.cache.FrameStore`) or ``auto``: memory for the in-memory static sets and
for event sets whose frames take at most :data:`MEMORY_LIMIT_BYTES`, stream otherwise. Both paths draw the
same global batches (:func:`~spikeforge.training.distributed.batches`); :func:`train_batches` and
:func:`eval_batches` hide which one runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from ..config import DataConfig
from ..data.stream import ArraySource, FrameSource, ImageSource, StreamSplit, channel_stats
from . import distributed as D

#: ``data.loader=auto`` keeps an event set's frames in memory up to this many bytes (float32), else streams
MEMORY_LIMIT_BYTES = 2 * 2**30
#: image folders: samples (evenly spaced over the training split) the normalisation statistics come from
IMAGE_STATS_SAMPLES = 512


@dataclass
class Arrays:
    """Train and test tensors plus what the model needs to know about them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    in_channels: int
    input_size: int
    sequence: bool  # True when samples are already [T, C, H, W] frames
    mean: list
    std: list
    loader: str = "memory"  # "memory": tensors; "stream": x_* are StreamSplit objects


def _stack_dataset(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        xs.append(torch.as_tensor(x, dtype=torch.float32))
        ys.append(int(y))
    if not xs:
        raise ValueError("dataset is empty")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def load_data(cfg: DataConfig, data_dir: str | None = None, *, seed: int = 0, device=None) -> Arrays:
    """``cfg.name`` (train and test splits), normalised when ``cfg.normalize``: in memory, or streamed (see
    the module docstring); ``seed`` seeds the streaming path's per-sample augmentation, ``device`` decides
    pinned memory."""
    from ..data import get_info

    info = get_info(cfg.name)
    root = data_dir if data_dir is not None else cfg.data_dir
    if choose_loader(cfg, root) == "stream":
        return load_stream(cfg, root, seed=seed, device=device)
    if cfg.frames > 0:
        if info.kind != "event":
            raise ValueError(f"data.frames: {cfg.frames} asks for event frames but {cfg.name!r} is a "
                             f"{info.kind} dataset; set data.frames=0")
        from ..data import get_dataset
        from ..data.frames import ToFrame

        tf = ToFrame(info.sensor_size, n_time_bins=cfg.frames)
        xtr, ytr = _stack_dataset(get_dataset(cfg.name, "train", data_dir=root, transform=tf, **cfg.options))
        xte, yte = _stack_dataset(get_dataset(cfg.name, "test", data_dir=root, transform=tf, **cfg.options))
        # event counts -> [0, 1] per sample scale-free input: log1p compresses bursts
        xtr, xte = torch.log1p(xtr), torch.log1p(xte)
        in_channels, size, sequence = xtr.shape[2], xtr.shape[-1], True
    else:
        if info.kind != "static":
            raise ValueError(f"dataset {cfg.name!r} is an event dataset; set data.frames to the number of "
                             "frames (time bins) to train on")
        from ..data import load_arrays

        if cfg.options:
            raise ValueError(f"data.options: {sorted(cfg.options)} given, but in-memory static sets take none")
        xtr, ytr = load_arrays(cfg.name, "train", data_dir=root)
        xte, yte = load_arrays(cfg.name, "test", data_dir=root)
        in_channels, size, sequence = xtr.shape[1], xtr.shape[-1], False
    if cfg.train_subset:
        xtr, ytr = xtr[: cfg.train_subset], ytr[: cfg.train_subset]
    if cfg.test_subset:
        xte, yte = xte[: cfg.test_subset], yte[: cfg.test_subset]
    ch_dim = 2 if sequence else 1
    if cfg.normalize:
        dims = [d for d in range(xtr.dim()) if d != ch_dim]
        mean = xtr.double().mean(dims).float()
        std = xtr.double().std(dims).float().clamp_min(1e-6)
        shape = [1] * xtr.dim()
        shape[ch_dim] = -1
        xtr = (xtr - mean.view(shape)) / std.view(shape)
        xte = (xte - mean.view(shape)) / std.view(shape)
        mean_l, std_l = mean.tolist(), std.tolist()
    else:
        mean_l, std_l = [0.0] * in_channels, [1.0] * in_channels
    return Arrays(xtr.contiguous(), ytr, xte.contiguous(), yte, info.num_classes, int(in_channels), int(size),
                  sequence, mean_l, std_l)


def augment_batch(x: torch.Tensor, cfg: DataConfig, seed: int, epoch: int, step: int) -> torch.Tensor:
    """Random crop (zero padding) and flip of a static batch, drawn from a generator seeded by
    ``(seed, epoch, step)`` only."""
    if cfg.augment == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"data.augment: {cfg.augment!r} works on static images [B, C, H, W], got shape "
                         f"{tuple(x.shape)}; use data.augment=none for frame data")
    from ..data.image_transforms import RandomCropPad, RandomHorizontalFlip

    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) * 1_000_003 + int(step))
    x = RandomCropPad((x.shape[-2], x.shape[-1]), padding=cfg.crop_padding)(x, generator=g)
    if cfg.augment == "crop_flip":
        x = RandomHorizontalFlip(0.5)(x, generator=g)
    return x


def to_model_input(x: torch.Tensor, sequence: bool) -> torch.Tensor:
    """Frames ``[B, T, C, H, W]`` become time-major ``[T, B, C, H, W]``; static batches pass unchanged."""
    return x.transpose(0, 1).contiguous() if sequence else x


# ------------------------------------------------------------------------------------------- streaming
def _check_kind(cfg: DataConfig, info) -> None:
    if cfg.frames > 0 and info.kind != "event":
        raise ValueError(f"data.frames: {cfg.frames} asks for event frames but {cfg.name!r} is a "
                         f"{info.kind} dataset; set data.frames=0")
    if cfg.frames == 0 and info.kind != "static":
        raise ValueError(f"dataset {cfg.name!r} is an event dataset; set data.frames to the number of "
                         "frames (time bins) to train on")


def _event_options(cfg: DataConfig) -> dict:
    return {k: v for k, v in cfg.options.items() if k != "cache_dir"}


def choose_loader(cfg: DataConfig, root=None) -> str:
    """``memory`` or ``stream`` for ``cfg`` (``data.loader``; ``auto`` decides as the module docstring says)."""
    from ..data import DATASETS, get_dataset, get_info

    info = get_info(cfg.name)
    root = cfg.data_dir if root is None else root
    _check_kind(cfg, info)
    in_memory = bool(getattr(DATASETS.get(cfg.name).factory, "in_memory", False))
    if cfg.loader == "memory" and info.kind == "static" and not in_memory:
        in_mem = [n for n in DATASETS.list() if getattr(DATASETS.get(n).factory, "in_memory", False)]
        raise ValueError(f"data.loader: 'memory' but {cfg.name!r} is not an in-memory static set (those are: "
                         f"{', '.join(in_mem)}); use data.loader=stream or auto")
    if cfg.augment in ("rrc", "rrc_flip") and cfg.loader == "memory":
        raise ValueError(f"data.augment: {cfg.augment!r} (random-resized crop) runs on the streaming path of "
                         "image folders; set data.loader=stream (or auto) or data.augment=crop/crop_flip")
    if cfg.loader != "auto":
        return cfg.loader
    if info.kind == "static":
        return "memory" if in_memory and cfg.augment not in ("rrc", "rrc_flip") else "stream"
    W, H, P = info.sensor_size
    n = len(get_dataset(cfg.name, "train", data_dir=root, **_event_options(cfg)))
    if cfg.train_subset:
        n = min(n, cfg.train_subset)
    return "memory" if n * cfg.frames * P * H * W * 4 <= MEMORY_LIMIT_BYTES else "stream"


def _test_split(info) -> str:
    return "test" if "test" in info.splits else "val"


def _evenly_spaced(n: int, k: int) -> list[int]:
    return list(range(n)) if n <= k else sorted({int(round(j * (n - 1) / (k - 1))) for j in range(k)})


def _event_sources(cfg: DataConfig, root, info):
    """Frame stores of the train and test splits (built once, on disk), as :class:`FrameSource` objects."""
    from ..data import get_dataset
    from ..data.cache import FrameStore
    from ..data.frames import ToFrame
    from ..data.paths import user_cache_dir

    cache_dir = cfg.options.get("cache_dir") or str(user_cache_dir() / "frames")
    W, H, P = info.sensor_size
    tf = ToFrame(info.sensor_size, n_time_bins=cfg.frames)
    sources = []
    for split in ("train", _test_split(info)):
        ds = get_dataset(cfg.name, split, data_dir=root, **_event_options(cfg))
        ids = [ds.sample_id(i) for i in range(len(ds))]
        params = {"frames": tf.params(), "options": {k: repr(v) for k, v in sorted(_event_options(cfg).items())}}
        store = FrameStore(cache_dir, cfg.name, split, params, ids, (cfg.frames, P, H, W))
        if not store.complete:
            print(f"spikeforge: computing {cfg.name}/{split} frames once into {store.folder} "
                  f"({len(ds) * store.sample_bytes / 2**20:,.0f} MiB)", file=sys.stderr)
            store.build(_FrameCompute(ds, tf), num_workers=cfg.num_workers)
        src = FrameSource(store, ds.targets, [s[0] for s in ds.samples])
        if src.bad and cfg.bad_files == "fail":
            i = min(src.bad)
            raise ValueError(f"{src.bad[i]} (data.bad_files=fail; data.bad_files=skip skips and counts unreadable "
                             "files)")
        sources.append(src)
    return sources


class _FrameCompute:
    """Sample ``i`` of an event dataset as frame counts (picklable: runs in the store builder's workers)."""

    def __init__(self, ds, tf):
        self.ds, self.tf = ds, tf

    def __call__(self, i: int):
        return self.tf(self.ds.read(i)).numpy()


def _image_sources(cfg: DataConfig, root, info):
    from ..data import get_dataset
    from ..data.imagefolder import load_image

    train = get_dataset(cfg.name, "train", data_dir=root, **cfg.options)
    test = get_dataset(cfg.name, _test_split(info), data_dir=root, **cfg.options)
    resize, crop = getattr(train, "resize", None), getattr(train, "crop", None)
    first = train.samples[0][0]
    expect = tuple(load_image(first, resize, crop).shape)
    out_size = expect[1:]
    return [ImageSource([p for p, _ in ds.samples], [y for _, y in ds.samples], resize, crop, cfg.augment,
                        out_size, expect) for ds in (train, test)]


def load_stream(cfg: DataConfig, root=None, *, seed: int = 0, device=None) -> Arrays:
    """The streaming path: train and test :class:`~spikeforge.data.stream.StreamSplit` objects in an
    :class:`Arrays` with ``loader="stream"`` (labels as tensors, samples read per batch)."""
    from ..data import DATASETS, get_dataset, get_info

    info = get_info(cfg.name)
    _check_kind(cfg, info)
    sequence = cfg.frames > 0
    if sequence:
        if cfg.augment != "none":
            raise ValueError(f"data.augment: {cfg.augment!r} works on static images [B, C, H, W]; use "
                             "data.augment=none for frame data")
        src_train, src_test = _event_sources(cfg, root, info)
    elif getattr(DATASETS.get(cfg.name).factory, "in_memory", False):
        if cfg.options:
            raise ValueError(f"data.options: {sorted(cfg.options)} given, but in-memory static sets take none")
        if cfg.augment in ("rrc", "rrc_flip"):
            raise ValueError(f"data.augment: {cfg.augment!r} (random-resized crop) needs an image-folder dataset "
                             f"(tiny_imagenet, imagenet); {cfg.name!r} is an in-memory set: use crop or crop_flip")
        src_train, src_test = (ArraySource(*get_dataset(cfg.name, s, data_dir=root).arrays())
                               for s in ("train", _test_split(info)))
    else:
        src_train, src_test = _image_sources(cfg, root, info)
    n_tr = min(len(src_train), cfg.train_subset) if cfg.train_subset else len(src_train)
    n_te = min(len(src_test), cfg.test_subset) if cfg.test_subset else len(src_test)
    for src, n in ((src_train, n_tr), (src_test, n_te)):
        src.labels = src.labels[:n]
    ch_dim = 1 if sequence else 0  # channel axis of one sample
    sample_shape = src_train.sample_shape()
    in_channels = sample_shape[ch_dim]
    if cfg.normalize:
        if sequence:
            st = src_train.store.stats()[:n_tr]
            good = [i for i in range(n_tr) if i not in src_train.bad]
            s = st[good].sum(0)  # [P, 2]
            count = len(good) * cfg.frames * sample_shape[-2] * sample_shape[-1]
            m = s[:, 0] / count
            var = (s[:, 1] - count * m * m) / max(count - 1, 1)
            mean = torch.tensor(m, dtype=torch.float64).float().tolist()
            std = torch.tensor(var, dtype=torch.float64).clamp_min(0).sqrt().float().clamp_min(1e-6).tolist()
        else:
            probe = StreamSplit(src_train, num_workers=0)
            k = n_tr if isinstance(src_train, ArraySource) else IMAGE_STATS_SAMPLES
            mean, std = channel_stats(probe, _evenly_spaced(n_tr, k), ch_dim)
    else:
        mean, std = [0.0] * in_channels, [1.0] * in_channels
    pin = device is not None and torch.device(device).type == "cuda"
    common = dict(num_workers=cfg.num_workers, pin_memory=pin, bad_files=cfg.bad_files, seed=seed,
                  crop_padding=cfg.crop_padding, channel_dim=ch_dim,
                  mean=mean if cfg.normalize else None, std=std if cfg.normalize else None)
    x_train = StreamSplit(src_train, augment=cfg.augment, **common)
    x_test = StreamSplit(src_test, augment="none", **common)
    return Arrays(x_train, src_train.labels, x_test, src_test.labels, info.num_classes, int(in_channels),
                  int(sample_shape[-1]), sequence, list(mean), list(std), loader="stream")


def train_batches(data: Arrays, cfg: DataConfig, seed: int, epoch: int, order: list, first: int, rank: int = 0,
                  world_size: int = 1):
    """``(x, y, global_n)`` for steps ``first..len(order)-1`` of ``epoch``: this process's shard of each
    global batch ``order[step]`` (augmented), and the global batch's size."""
    if data.loader == "memory":
        for step in range(first, len(order)):
            gidx = order[step]
            xb = augment_batch(data.x_train[gidx], cfg, seed, epoch, step)
            yield D.shard(xb, rank, world_size), D.shard(data.y_train[gidx], rank, world_size), len(gidx)
        return
    shards = [D.shard(order[step], rank, world_size) for step in range(first, len(order))]
    for step, (xb, yb) in zip(range(first, len(order)), data.x_train.batches(shards, epoch=epoch)):
        # skipped unreadable samples leave the global batch (exact for one process; under DDP only this
        # process's skips are known here)
        yield xb, yb, len(order[step]) - (len(shards[step - first]) - len(yb))


def eval_batches(x, y: torch.Tensor, idx: torch.Tensor, batch_size: int):
    """``(x, y)`` batches of the samples ``idx`` (tensors, or a streamed split read by its workers)."""
    if isinstance(x, torch.Tensor):
        for b in idx.split(batch_size):
            yield x[b], y[b]
        return
    yield from x.batches(list(idx.split(batch_size)))


def data_metrics(data: Arrays) -> dict:
    """Per-epoch record fields: which loader ran, and (streaming) the unreadable samples skipped since the
    last call."""
    out = {"loader": data.loader}
    if data.loader == "stream":
        out["skipped_samples"] = data.x_train.skipped + data.x_test.skipped
        data.x_train.skipped = data.x_test.skipped = 0
    return out


def describe_data(data: Arrays, cfg: DataConfig) -> str:
    """One log line: the dataset, its size and the loader used."""
    how = "in memory" if data.loader == "memory" else f"streamed, {cfg.num_workers} worker process(es)"
    return (f"data: {cfg.name}, {len(data.y_train)} train / {len(data.y_test)} test samples, {how} "
            f"(data.loader={cfg.loader} -> {data.loader})")
