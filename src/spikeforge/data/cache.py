"""On-disk caches: :class:`FrameCache` (one npz per transformed sample) and :class:`FrameStore` (a whole
split's event frames in one memory-mappable array, for the streaming data path).

On-disk cache of transformed samples (npz), keyed by the transform's parameters, so a second epoch
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
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import CorruptFileError
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


# ------------------------------------------------------------------------------------------ frame store
STORE_VERSION = 1
STORE_DTYPE = np.uint16  # event counts per pixel, polarity and time bin


class FrameStore:
    """Every sample's frames of one split in one memory-mappable ``.npy`` file, computed once.

    ``frames.npy`` holds event counts ``uint16 [N, T, P, H, W]`` (``np.load(path, mmap_mode="r")`` opens
    it); ``stats.npy`` float64 ``[N, P, 2]`` the per-sample, per-channel sums of ``log1p(counts)`` and of its
    square (so normalisation statistics of any leading subset are exact); ``bad.json`` the samples whose
    source file could not be read (index -> message). The folder is keyed by the dataset, split, binning
    parameters and every source file's identity (path, size, modification time), so new files or other
    binning never return stale frames. :meth:`read` takes one sample with ``os.pread`` into a fresh buffer:
    the file's pages stay in the page cache, not in the reading process's resident memory, so memory does
    not grow with the dataset.

    Example:
        >>> import tempfile
        >>> store = FrameStore(tempfile.mkdtemp(), "toy", "train", {"T": 2}, ["a", "b"], (2, 1, 2, 2))
        >>> store.build(lambda i: np.full((2, 1, 2, 2), i + 1, np.float32), num_workers=0)
        >>> store.complete, store.read(1).tolist()[0][0]
        (True, [[2, 2], [2, 2]])
    """

    def __init__(self, cache_dir, dataset: str, split: str, params: dict, sample_ids: list[str],
                 frame_shape: tuple[int, ...]):
        self.n = len(sample_ids)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        ids = hashlib.sha1("\n".join(sample_ids).encode()).hexdigest()
        desc = {"version": STORE_VERSION, "dataset": dataset, "split": split, "params": params,
                "samples": self.n, "sample_ids_sha1": ids, "frame_shape": list(self.frame_shape),
                "dtype": np.dtype(STORE_DTYPE).name}
        self.desc = desc
        self.key = hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(cache_dir) / dataset / split / f"store-{self.key}"
        self.frames_path = self.folder / "frames.npy"
        self.sample_bytes = int(np.prod(self.frame_shape)) * np.dtype(STORE_DTYPE).itemsize
        self._fd = None
        self._pid = None
        self._offset = None

    @property
    def complete(self) -> bool:
        return self.frames_path.is_file() and (self.folder / "stats.npy").is_file()

    def stats(self) -> np.ndarray:
        return np.load(self.folder / "stats.npy", allow_pickle=False)

    def bad(self) -> dict[int, str]:
        path = self.folder / "bad.json"
        return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}

    def build(self, compute, num_workers: int = 0, progress=None) -> None:
        """Fill the store with ``compute(i)`` (counts ``[T, P, H, W]``) for every sample, unless already built.

        A ``DataError`` from ``compute`` marks the sample bad (recorded, not raised); other errors propagate.
        Concurrent builders (several processes, several machines on a shared disk) take a file lock: one
        builds, the others wait and reuse it. Written to a temporary name and renamed when complete.
        """
        import fcntl

        if self.complete:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder.parent / f"store-{self.key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.complete:
                return
            need = self.n * self.sample_bytes
            free = shutil.disk_usage(self.folder).free
            if need > free:
                raise ValueError(f"{self.folder}: the frame store needs {need / 2**30:.2f} GiB but only "
                                 f"{free / 2**30:.2f} GiB is free; set data.options.cache_dir to a larger disk")
            tmp = self.folder / f".frames.npy.{os.getpid()}.tmp"
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE, shape=(self.n, *self.frame_shape))
            del arr
            try:
                stats, bad = self._fill(tmp, compute, num_workers, progress)
                _atomic_write(self.folder / "bad.json", lambda f: f.write(json.dumps(bad, indent=1).encode()))
                _atomic_write(self.folder / "transform.json",
                              lambda f: f.write(json.dumps(self.desc, indent=1, sort_keys=True).encode()))
                _atomic_write(self.folder / "stats.npy", lambda f: np.save(f, stats))
                os.replace(tmp, self.frames_path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

    def _fill(self, tmp: Path, compute, num_workers: int, progress):
        from torch.utils.data import DataLoader

        filler = _StoreFiller(tmp, compute, self.frame_shape)
        loader = DataLoader(filler, batch_size=8, num_workers=num_workers, collate_fn=list,
                            worker_init_fn=_one_thread, generator=torch.Generator())
        P = self.frame_shape[1] if len(self.frame_shape) == 4 else 1
        stats = np.zeros((self.n, P, 2), np.float64)
        bad = {}
        done = 0
        for items in loader:
            for i, st, msg in items:
                if msg is not None:
                    bad[str(i)] = msg
                else:
                    stats[i] = st
            done += len(items)
            if progress is not None:
                progress(done, self.n)
        if filler._fd is not None:  # num_workers=0: written from this process
            os.close(filler._fd)
        return stats, bad

    def read(self, i: int) -> np.ndarray:
        """Sample ``i``'s counts ``uint16 [T, P, H, W]`` (one ``pread``; safe after ``fork``)."""
        if self._fd is None or self._pid != os.getpid():
            self._offset = npy_data_offset(self.frames_path)
            self._fd, self._pid = os.open(self.frames_path, os.O_RDONLY), os.getpid()
        buf = os.pread(self._fd, self.sample_bytes, self._offset + int(i) * self.sample_bytes)
        if len(buf) != self.sample_bytes:
            raise CorruptFileError(self.frames_path, f"sample {i} is cut short ({len(buf)} of {self.sample_bytes} "
                                                     "bytes); delete the folder to rebuild it")
        return np.frombuffer(buf, STORE_DTYPE).reshape(self.frame_shape)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_fd"] = d["_pid"] = None
        return d


def npy_data_offset(path) -> int:
    """Byte offset of the data in a ``.npy`` file (after its header)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read(f)
        return f.tell()


def _one_thread(_worker_id):
    torch.set_num_threads(1)


class _StoreFiller(torch.utils.data.Dataset):
    """Computes sample ``i``'s frames and writes them into the store's row ``i`` (in whichever process)."""

    def __init__(self, path: Path, compute, frame_shape):
        self.path, self.compute, self.frame_shape = path, compute, frame_shape
        self._fd, self._pid, self._offset = None, None, None

    def __len__(self):
        return len(np.load(self.path, mmap_mode="r"))

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __getitem__(self, i: int):
        from .errors import DataError

        if self._fd is None or self._pid != os.getpid():
            # pwrite, not a writable memory map: written map pages would stay in this process's resident set
            self._offset = npy_data_offset(self.path)
            self._fd, self._pid = os.open(self.path, os.O_WRONLY), os.getpid()
        try:
            counts = np.asarray(self.compute(i))
        except DataError as e:
            return i, None, str(e)
        if counts.shape != self.frame_shape:
            raise ValueError(f"sample {i}: frames of shape {counts.shape}, the store holds {self.frame_shape}")
        if counts.size and float(counts.max()) > np.iinfo(STORE_DTYPE).max:
            raise ValueError(f"sample {i}: {int(counts.max())} events in one pixel and time bin does not fit the "
                             f"frame store's {np.dtype(STORE_DTYPE).name}; use more frames (data.frames)")
        row = np.ascontiguousarray(counts, dtype=STORE_DTYPE).tobytes()
        if os.pwrite(self._fd, row, self._offset + int(i) * len(row)) != len(row):
            raise OSError(f"{self.path}: short write of sample {i} (disk full?)")
        lf = np.log1p(counts.astype(np.float64))
        axes = tuple(a for a in range(lf.ndim) if a != 1) if lf.ndim == 4 else tuple(range(lf.ndim))
        st = np.stack([lf.sum(axes), (lf * lf).sum(axes)], -1).reshape(-1, 2)
        return i, st, None
