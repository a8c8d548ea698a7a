"""On-disk cache of transformed samples (npz), keyed by the transform's parameters, so a second epoch
does not decode again. Only the leading deterministic transforms are cached; random augmentation after
them runs fresh every time.

Layout: ``<cache_dir>/<dataset>/<split>/<key>/`` holding ``transform.json`` (what the key stands for) and
one ``<sample hash>.npz`` per sample. The key hashes the dataset, split, cache version and the transforms'
``params()``; the sample hash covers the source file's path, size and modification time, so editing a
source file or changing a parameter never returns stale frames. Writes are atomic (temp file + rename);
an unreadable cache file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .transforms import Compose, transform_params

CACHE_VERSION = 1


def _as_compose(transform) -> Compose:
    if transform is None:
        return Compose([])
    return transform if isinstance(transform, Compose) else Compose([transform])


class FrameCache:
    """Cache of ``prefix(read(sample))`` where ``prefix`` is the deterministic head of ``transform``.

    ``rest`` is the remaining (random) part, to apply after :meth:`get`.
    """

    def __init__(self, cache_dir, dataset: str, split: str, transform=None):
        self.prefix, self.rest = _as_compose(transform).split_cacheable()
        desc = {"version": CACHE_VERSION, "dataset": dataset, "split": split,
                "transform": [transform_params(t) for t in self.prefix.transforms]}
        text = json.dumps(desc, sort_keys=True)
        self.key = hashlib.sha1(text.encode()).hexdigest()[:16]
        self.folder = Path(cache_dir) / dataset / split / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "transform.json"
        if not meta.exists():
            _atomic_write(meta, lambda f: f.write(json.dumps(desc, indent=1, sort_keys=True).encode()))

    def path(self, sample_id: str) -> Path:
        return self.folder / (hashlib.sha1(sample_id.encode()).hexdigest()[:24] + ".npz")

    def get(self, sample_id: str, read):
        """The cached prefix output for ``sample_id``, computing ``prefix(read())`` on a miss."""
        path = self.path(sample_id)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    data, kind = z["data"], str(z["kind"])
                return torch.from_numpy(data) if kind == "torch" else data
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # unreadable cache entry (e.g. disk full earlier): recompute and overwrite it below
        out = self.prefix(read())
        if isinstance(out, torch.Tensor):
            arr, kind = out.detach().cpu().numpy(), "torch"
        elif isinstance(out, np.ndarray):
            arr, kind = out, "numpy"
        else:
            raise TypeError(f"cannot cache a {type(out).__name__}: the cached transforms must return an array or tensor")
        _atomic_write(path, lambda f: np.savez_compressed(f, data=arr, kind=np.array(kind)))
        return out


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_id(path: Path, extra: str = "") -> str:
    """Identity of a source file for cache keys: path, size, modification time (+ ``extra``)."""
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{extra}"
