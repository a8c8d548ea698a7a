"""Static-image augmentation for CIFAR-style training, without torchvision: random crop with padding,
horizontal flip, cutout, normalisation.

Each works on one image ``[C, H, W]`` or a whole batch ``[B, C, H, W]`` (independent randomness per image,
no per-sample Python), on any device, drawing from ``generator`` when given (the
:class:`~spikeforge.data.InMemoryLoader` passes one seeded by (seed, epoch, batch) so resumed runs see the
same augmentation), else from torch's global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _batched(x: torch.Tensor):
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"expected an image [C, H, W] or a batch [B, C, H, W], got shape {tuple(x.shape)}")


def _rand_int(high: int, n: int, generator, device) -> torch.Tensor:
    """n integers uniform in [0, high] (drawn on the CPU generator, moved to ``device``)."""
    return torch.randint(0, high + 1, (n,), generator=generator).to(device)


class RandomCropPad:
    """Zero-pad by ``padding`` on each side, then take a random ``size`` crop (the CIFAR standard: 32, 4).

    Example:
        >>> x = torch.rand(8, 3, 32, 32)
        >>> RandomCropPad(32, padding=4)(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """

    random = True

    def __init__(self, size=32, padding=4, fill=0.0):
        self.h, self.w = (size, size) if isinstance(size, int) else size
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding, self.fill = int(padding), float(fill)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        xb, single = _batched(x)
        B, C, H, W = xb.shape
        p = self.padding
        if H + 2 * p < self.h or W + 2 * p < self.w:
            raise ValueError(f"crop {(self.h, self.w)} larger than the padded image {(H + 2 * p, W + 2 * p)}")
        padded = F.pad(xb, (p, p, p, p), value=self.fill) if p else xb
        oy = _rand_int(H + 2 * p - self.h, B, generator, x.device)
        ox = _rand_int(W + 2 * p - self.w, B, generator, x.device)
        Wp = W + 2 * p
        # one gather over the flattened padded image: index of output pixel (i, j) = (oy + i) * Wp + ox + j
        rows = (oy[:, None, None] + torch.arange(self.h, device=x.device)[None, :, None]) * Wp
        idx = (rows + ox[:, None, None] + torch.arange(self.w, device=x.device)[None, None, :]).reshape(B, 1, -1)
        out = padded.reshape(B, C, -1).gather(2, idx.expand(B, C, idx.shape[-1])).reshape(B, C, self.h, self.w)
        return out[0] if single else out

    def params(self):
        return {"name": "RandomCropPad", "size": [self.h, self.w], "padding": self.padding, "fill": self.fill}


class RandomHorizontalFlip:
    """Flip each image left-right with probability ``p``."""

    random = True

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        xb, single = _batched(x)
        flip = (torch.rand(xb.shape[0], generator=generator) < self.p).to(x.device)
        out = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        return out[0] if single else out

    def params(self):
        return {"name": "RandomHorizontalFlip", "p": self.p}


class Cutout:
    """Zero one random ``size`` x ``size`` square per image (DeVries & Taylor 2017); the square's centre
    is uniform over the image, so it may be clipped at the border."""

    random = True

    def __init__(self, size=16, fill=0.0):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size, self.fill = int(size), float(fill)

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        xb, single = _batched(x)
        B, _, H, W = xb.shape
        cy = _rand_int(H - 1, B, generator, x.device)
        cx = _rand_int(W - 1, B, generator, x.device)
        half = self.size // 2
        ys = torch.arange(H, device=x.device)[None, :]
        xs = torch.arange(W, device=x.device)[None, :]
        in_y = (ys >= (cy - half)[:, None]) & (ys < (cy - half + self.size)[:, None])  # [B, H]
        in_x = (xs >= (cx - half)[:, None]) & (xs < (cx - half + self.size)[:, None])  # [B, W]
        mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # [B, 1, H, W]
        out = xb.masked_fill(mask, self.fill)
        return out[0] if single else out

    def params(self):
        return {"name": "Cutout", "size": self.size, "fill": self.fill}


class Normalize:
    """``(x - mean) / std`` per channel.

    Example:
        >>> Normalize([0.5], [0.5])(torch.ones(1, 2, 2)).tolist()
        [[[1.0, 1.0], [1.0, 1.0]]]
    """

    random = False

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        if (self.std <= 0).any():
            raise ValueError("std must be positive")

    def __call__(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def params(self):
        return {"name": "Normalize", "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def cifar_augment(cutout: int | None = None):
    """The standard CIFAR training augmentation: crop 32 with padding 4, horizontal flip (+ cutout)."""
    from .transforms import Compose

    ts = [RandomCropPad(32, 4), RandomHorizontalFlip(0.5)]
    if cutout:
        ts.append(Cutout(cutout))
    return Compose(ts)
