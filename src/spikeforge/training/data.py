"""Turn a :class:`~spikeforge.config.DataConfig` into in-memory tensors and per-step batches.

Static sets come from :func:`spikeforge.data.load_arrays`; event sets (``data.frames`` > 0) are read
through :func:`spikeforge.data.get_dataset` with a ``ToFrame`` transform and stacked into
``[N, T, P, H, W]``. A missing dataset raises the data layer's own error, unchanged.
Batch order and augmentation depend only on ``(seed, epoch, step)``, so a resumed run sees exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import DataConfig


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


def _stack_dataset(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        xs.append(torch.as_tensor(x, dtype=torch.float32))
        ys.append(int(y))
    if not xs:
        raise ValueError("dataset is empty")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def load_data(cfg: DataConfig, data_dir: str | None = None) -> Arrays:
    """Load ``cfg.name`` (train and test splits) into memory, normalised when ``cfg.normalize``."""
    from ..data import get_info

    info = get_info(cfg.name)
    root = data_dir if data_dir is not None else cfg.data_dir
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
