"""A fast loader for datasets that fit in memory (MNIST-, CIFAR-size): whole-tensor batching with a seeded
shuffle and no per-sample Python. Use torch's DataLoader for datasets that do not fit.

Epoch ``e``'s order depends only on (seed, e) and batch ``b``'s augmentation only on (seed, e, b), so a run
resumed with ``set_epoch(e)`` and ``iter_from(b)`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

import torch

from .transforms import accepts_generator

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, epoch, batch) over the 63-bit seed space


def _seed(*parts: int) -> int:
    h = 0
    for p in parts:
        h = (h * _MIX + int(p) + 1) % (1 << 63)
    return h


class InMemoryLoader:
    """Iterate ``(xb, yb)`` batches of in-memory tensors.

    Args:
        x, y: tensors with the same first dimension (e.g. from :func:`~spikeforge.data.load_arrays`).
        batch_size: samples per batch.
        shuffle: a fresh seeded permutation each epoch.
        seed: the shuffle (and augmentation) seed.
        drop_last: drop the last incomplete batch.
        transform: applied to each whole batch ``xb``; called with ``generator=`` (a ``torch.Generator``
            seeded by (seed, epoch, batch)) when it accepts one, e.g. :func:`~spikeforge.data.cifar_augment`.
        device: move ``x`` and ``y`` there once, up front (batches are then gathered on that device).

    Example:
        >>> import torch
        >>> x, y = torch.arange(10.0)[:, None], torch.arange(10)
        >>> loader = InMemoryLoader(x, y, batch_size=4, seed=1)
        >>> len(loader), [yb.tolist() for _, yb in loader] == [yb.tolist() for _, yb in loader]
        (3, True)
        >>> loader.set_epoch(1); first = [yb.tolist() for _, yb in loader]
        >>> [yb.tolist() for _, yb in loader.iter_from(1)] == first[1:]
        True
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, transform=None, device=None):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("x and y must be torch tensors")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if device is not None:
            x, y = x.to(device), y.to(device)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.transform = transform
        self._pass_generator = transform is not None and accepts_generator(transform)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return self.x.shape[0]

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The sample order of ``epoch`` (default: the current one), on ``x``'s device."""
        e = self.epoch if epoch is None else int(epoch)
        if not self.shuffle:
            return torch.arange(self.num_samples, device=self.x.device)
        g = torch.Generator().manual_seed(_seed(self.seed, e))
        return torch.randperm(self.num_samples, generator=g).to(self.x.device)

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, batch_index: int):
        """Iterate the current epoch starting at batch ``batch_index`` (for resuming mid-epoch)."""
        if not 0 <= batch_index <= len(self):
            raise ValueError(f"batch_index must be in 0..{len(self)}, got {batch_index}")
        order = self.order()
        epoch = self.epoch
        for b in range(batch_index, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x.index_select(0, idx)
            yb = self.y.index_select(0, idx)
            if self.transform is not None:
                if self._pass_generator:
                    xb = self.transform(xb, generator=torch.Generator().manual_seed(_seed(self.seed, epoch, b)))
                else:
                    xb = self.transform(xb)
            yield xb, yb
