"""TinyImageNet and ImageNet from their usual folder layouts, decoded with Pillow.

* TinyImageNet (``tiny-imagenet-200/``): ``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
  ``val/val_annotations.txt`` (file, wnid, box) + ``val/images/*.JPEG``. 64x64 RGB, 200 classes.
* ImageNet (``imagenet/``): ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the ImageFolder layout after
  the usual ``valprep.sh``). Images are resized (shorter side ``resize``) and centre-cropped to ``crop``
  (256/224 by default; ``None`` keeps the original size).

Class index = position of the wnid in sorted order (as torchvision's ImageFolder). Corrupt images raise
:class:`~spikeforge.data.errors.CorruptFileError`.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import FileDataset
from .errors import CorruptFileError
from .registry import DatasetInfo, Resource, register_dataset

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def load_image(path, resize: int | None = None, crop: int | None = None) -> torch.Tensor:
    """An image file as float32 RGB ``[3, H, W]`` in [0, 1] (optionally resized and centre-cropped)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if resize is not None:
                w, h = img.size
                s = resize / min(w, h)
                img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            if crop is not None:
                w, h = img.size
                if w < crop or h < crop:
                    raise CorruptFileError(path, f"image {w}x{h} is smaller than the {crop}x{crop} crop")
                left, top = (w - crop) // 2, (h - crop) // 2
                img = img.crop((left, top, left + crop, top + crop))
            arr = np.asarray(img, dtype=np.uint8)
    except CorruptFileError:
        raise
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBombError...)
        raise CorruptFileError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class _ImageFileDataset(FileDataset):
    resize: int | None = None
    crop: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        x = load_image(path, self.resize, self.crop)
        if self.transform is not None:
            x = self.transform(x)
        return x, label

    @property
    def targets(self) -> list[int]:
        return [s[1] for s in self.samples]


class TinyImageNet(_ImageFileDataset):
    """TinyImageNet-200: 64x64 RGB, 100000 train / 10000 val; yields ([3, 64, 64] float in [0, 1], label)."""

    info = DatasetInfo(
        name="tiny_imagenet", kind="static", num_classes=200, class_names=(), splits=("train", "val"),
        files=("wnids.txt", "train/*/images/*.JPEG", "val/val_annotations.txt", "val/images/*.JPEG"),
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        folders=("tiny-imagenet-200", "tiny_imagenet/tiny-imagenet-200", "tiny_imagenet"), input_shape=(3, 64, 64),
        num_samples={"train": 100000, "val": 10000},
        description="TinyImageNet-200 (Stanford CS231n), JPEG folders; class names are the wnids in wnids.txt",
        resources=(Resource("tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                            md5="90528d7ca1a48142e341f4ef8d21d0de", extract=True),),
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False):
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        wnids_path = self.root / "wnids.txt"
        wnids = sorted({w.strip() for w in wnids_path.read_text(errors="replace").split() if w.strip()})
        if len(wnids) != self.info.num_classes:
            raise CorruptFileError(wnids_path, f"lists {len(wnids)} classes, TinyImageNet has {self.info.num_classes}")
        self.classes = tuple(wnids)
        index = {w: k for k, w in enumerate(wnids)}
        samples = []
        if split == "train":
            for w in wnids:
                samples += [(p, index[w]) for p in sorted((self.root / "train" / w / "images").glob("*"))
                            if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            ann = self.root / "val" / "val_annotations.txt"
            for n, line in enumerate(ann.read_text(errors="replace").splitlines(), 1):
                parts = line.split("\t")
                if not line.strip():
                    continue
                if len(parts) < 2 or parts[1] not in index or "/" in parts[0] or "\\" in parts[0]:
                    raise CorruptFileError(ann, f"line {n}: expected '<file>\\t<wnid>...' with a known wnid, got {line[:80]!r}")
                samples.append((self.root / "val" / "images" / parts[0], index[parts[1]]))
        self.samples = samples

    @classmethod
    def expected_files(cls, split):
        return ["wnids.txt", "train/*/images/*.JPEG"] if split == "train" else \
            ["wnids.txt", "val/val_annotations.txt", "val/images/*.JPEG"]


class ImageNet(_ImageFileDataset):
    """ImageNet-1k (ILSVRC2012) in the ImageFolder layout; yields ([3, crop, crop] float in [0, 1], label)."""

    info = DatasetInfo(
        name="imagenet", kind="static", num_classes=1000, class_names=(), splits=("train", "val"),
        files=("train/n*/*.JPEG", "val/n*/*.JPEG"), url="https://image-net.org/download.php",
        folders=("imagenet", "ILSVRC2012", "."), input_shape=(3, 224, 224),
        num_samples={"train": 1281167, "val": 50000},
        description="ImageNet-1k ILSVRC2012, train/ and val/ class folders; class names are the wnids",
        manual_download="ImageNet's licence requires a manual download from image-net.org",
    )

    def __init__(self, split: str, data_dir=None, transform=None, download: bool = False, resize: int | None = 256,
                 crop: int | None = 224):
        if resize is not None and resize < 1 or crop is not None and crop < 1:
            raise ValueError("resize and crop must be positive or None")
        self.resize, self.crop = resize, crop
        super().__init__(split, data_dir=data_dir, transform=transform, download=download)
        for d in {self.root / "train", self.root / split}:
            if d.is_dir() and not any(p.is_dir() for p in d.iterdir()):
                raise CorruptFileError(d, "holds no class sub-folders; the ImageNet layout is "
                                          f"{d.name}/<class wnid>/<image>.JPEG (one folder per class)")
        classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir()) \
            if (self.root / "train").is_dir() else sorted(p.name for p in (self.root / split).iterdir() if p.is_dir())
        self.classes = tuple(classes)
        index = {w: k for k, w in enumerate(classes)}
        samples = []
        for w in sorted(p.name for p in (self.root / split).iterdir() if p.is_dir()):
            if w not in index:
                raise CorruptFileError(self.root / split / w, "class folder not present in train/")
            samples += [(p, index[w]) for p in sorted((self.root / split / w).iterdir())
                        if p.suffix.lower() in IMAGE_SUFFIXES]
        self.samples = samples

    @classmethod
    def expected_files(cls, split):
        return [f"{split}/n*/*.JPEG"]

    @classmethod
    def has_split(cls, folder, split) -> bool:
        """Class folders with images, or images straight under ``<split>/`` (refused with a clear error)."""
        d = folder / split
        return super().has_split(folder, split) or (
            d.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir()))


register_dataset(TinyImageNet)
register_dataset(ImageNet)
