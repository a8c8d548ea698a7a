"""InMemoryLoader (seeded shuffle, exact resume) and the batched CIFAR augmentations."""

from __future__ import annotations

import pytest
import torch

from spikeforge.data import (Cutout, InMemoryLoader, Normalize, RandomCropPad, RandomHorizontalFlip, cifar_augment,
                             load_arrays)


def _data(n=103):
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 2, 2).contiguous(), torch.arange(n)


def test_len_and_drop_last():
    x, y = _data()
    assert len(InMemoryLoader(x, y, 10)) == 11
    assert len(InMemoryLoader(x, y, 10, drop_last=True)) == 10
    batches = list(InMemoryLoader(x, y, 10, drop_last=True))
    assert len(batches) == 10 and all(len(b[1]) == 10 for b in batches)


def test_each_epoch_is_a_permutation_depending_only_on_seed_and_epoch():
    x, y = _data()
    a = InMemoryLoader(x, y, 16, seed=3)
    b = InMemoryLoader(x, y, 16, seed=3)
    orders = []
    for e in range(3):
        a.set_epoch(e)
        b.set_epoch(e)
        ya = torch.cat([yb for _, yb in a])
        assert sorted(ya.tolist()) == list(range(103))
        assert torch.equal(ya, torch.cat([yb for _, yb in b]))
        orders.append(ya)
    assert not torch.equal(orders[0], orders[1])
    c = InMemoryLoader(x, y, 16, seed=4)
    assert not torch.equal(torch.cat([yb for _, yb in c]), orders[0])


def test_batches_pair_x_with_y_and_no_shuffle_is_sequential():
    x, y = _data()
    for xb, yb in InMemoryLoader(x, y, 8, seed=1):
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)
    assert torch.cat([yb for _, yb in InMemoryLoader(x, y, 8, shuffle=False)]).tolist() == list(range(103))


def test_iter_from_resumes_exactly_with_augmentation():
    x, y = torch.rand(50, 3, 8, 8), torch.arange(50)
    aug = cifar_augment(cutout=4)
    aug.transforms[0] = RandomCropPad(8, padding=2)
    full = InMemoryLoader(x, y, 8, seed=7, transform=aug)
    full.set_epoch(2)
    ref = list(full)
    resumed = InMemoryLoader(x, y, 8, seed=7, transform=aug)
    resumed.set_epoch(2)
    tail = list(resumed.iter_from(4))
    assert len(tail) == len(ref) - 4
    for (xa, ya), (xb, yb) in zip(ref[4:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="batch_index"):
        list(resumed.iter_from(99))


def test_loader_errors_and_device():
    x, y = _data(10)
    with pytest.raises(ValueError, match="samples"):
        InMemoryLoader(x, y[:5], 2)
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(x, y, 0)
    xb, yb = next(iter(InMemoryLoader(x, y, 4, device="cpu", transform=lambda t: t + 1)))
    assert xb.device.type == "cpu" and float(xb.min()) >= 1


def test_loader_on_digits():
    x, y = load_arrays("digits", "train")
    loader = InMemoryLoader(x, y, 128, seed=0)
    n = sum(len(yb) for _, yb in loader)
    assert n == 1437 and len(loader) == 12


def test_random_crop_pad_matches_per_image_reference():
    x = torch.rand(6, 3, 10, 12)
    g = torch.Generator().manual_seed(5)
    out = RandomCropPad((10, 12), padding=3)(x, generator=g)
    g = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 7, (6,), generator=g)
    ox = torch.randint(0, 7, (6,), generator=g)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(6):
        assert torch.equal(out[i], padded[i, :, oy[i]:oy[i] + 10, ox[i]:ox[i] + 12])
    assert torch.equal(RandomCropPad((10, 12), padding=0)(x), x)
    assert RandomCropPad(10, padding=2)(x[0, :, :, :10]).shape == (3, 10, 10)


def test_flip_cutout_normalize():
    x = torch.rand(64, 3, 8, 8)
    out = RandomHorizontalFlip(0.5)(x, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    ones = torch.ones(32, 1, 16, 16)
    cut = Cutout(4)(ones, generator=torch.Generator().manual_seed(1))
    zeros = (cut == 0).sum(dim=(1, 2, 3))
    assert ((zeros > 0) & (zeros <= 16)).all() and (zeros == 16).any()
    assert Cutout(4)(ones[0]).shape == (1, 16, 16)
    n = Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(torch.full((3, 2, 2), 0.75))
    assert torch.allclose(n, torch.ones(3, 2, 2))
