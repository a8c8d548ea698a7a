"""The numba runtime every CPU kernel of spikeforge uses: numba's thread pool, thread counts, the output buffer
pool, generated kernel modules and their on-disk cache, and the source of the LLVM intrinsics the generated kernels
include.

- :func:`start_numba` imports numba and starts its thread pool, keeping torch's thread count;
  :func:`sync_threads` sets numba's thread count for a call from torch's.
- :data:`POOL` (:class:`BufferPool`) hands out large, 64-byte aligned output buffers and takes them back when
  their last tensor dies; :func:`empty_cache` releases the free ones.
- :func:`load_generated` imports a kernel module generated as source from a file named by its content hash under
  :func:`cache_dir`, so numba's on-disk cache (``cache=True``) serves later processes; :func:`load_fixed_source`
  does the same for a fixed module; :func:`prune` deletes unused ones.
- :data:`STORE_NT_SOURCE` and :data:`PREFETCH_SOURCE`: numba intrinsics (a non-temporal store, a software
  prefetch into L2) as source text, for generated modules that import numba as ``nb``.

A generated module file is never trusted: before it is imported, its bytes are checked against the source this
process generated (whose hash is in the name); a file that differs is rewritten, and the module is always executed
from the generated source.  Modules not used for ``PRUNE_AGE_S`` (with their numba cache files) and leftover
temporary files are deleted once per folder and process.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch



import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import threading
import time
from pathlib import Path

PRUNE_AGE_S = 30 * 24 * 3600  # a generated module unused this long is deleted (last use = the file's access time)
TMP_AGE_S = 3600  # a temporary file of an interrupted write older than this is deleted
_MODULE_NAME = re.compile(r"^(?P<stem>.+)_(?P<digest>[0-9a-f]{16})\.py$")
_pruned: set = set()
_prune_lock = threading.Lock()


def cache_dir(sub: str) -> Path | None:
    """``$SPIKEFORGE_CACHE_DIR/<sub>`` (default ``~/.cache/spikeforge/<sub>``), or None if it cannot be written."""
    root = os.environ.get("SPIKEFORGE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "spikeforge")
    d = Path(root) / sub
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError:
        return None
    return d


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _numba_cache_files(path: Path) -> list[Path]:
    """numba's cache files of the functions of module file ``path`` (``__pycache__/<file stem>.<function>-...``)."""
    pycache = path.parent / "__pycache__"
    return [f for f in pycache.glob(f"{path.stem}.*") if f.suffix in (".nbi", ".nbc")] if pycache.is_dir() else []


def _write(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and drop numba's cache files of any earlier file of that name."""
    for f in _numba_cache_files(path):
        f.unlink(missing_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def prune(directory: Path, now: float | None = None) -> list[Path]:
    """Delete the generated modules in ``directory`` unused for ``PRUNE_AGE_S`` (with their numba cache files),
    files whose content does not match the hash in their name, and temporary files older than ``TMP_AGE_S``.
    Returns the deleted module and temporary files.  Errors (a file another process just deleted) are ignored."""
    now = time.time() if now is None else now
    gone = []
    for f in directory.iterdir():
        try:
            if f.suffix == ".tmp":
                if now - f.stat().st_mtime > TMP_AGE_S:
                    f.unlink()
                    gone.append(f)
                continue
            m = _MODULE_NAME.match(f.name)
            if m is None:
                continue
            if now - f.stat().st_atime > PRUNE_AGE_S or _digest(f.read_bytes()) != m["digest"]:
                for c in _numba_cache_files(f):
                    c.unlink(missing_ok=True)
                f.unlink()
                gone.append(f)
        except OSError:
            continue
    return gone


def load_generated(directory: Path, stem: str, text: str, prefix: str):
    """The module with source ``text``, stored as ``directory/<stem>_<hash>.py`` and imported as
    ``<prefix>_<file stem>`` (once per process).

    The file is written (atomically) when it is missing or its bytes are not ``text`` -- a file whose content no
    longer matches the hash in its name is never imported -- and the module is executed from ``text`` itself.
    The file's access time records the use (its modification time, which numba's cache checks, is kept)."""
    data = text.encode()
    path = directory / f"{stem}_{_digest(data)}.py"
    name = f"{prefix}_{path.stem}"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    with _prune_lock:
        if directory not in _pruned:
            _pruned.add(directory)
            prune(directory)
    try:
        on_disk = path.read_bytes()
    except OSError:
        on_disk = None
    if on_disk != data:
        _write(path, data)
    with contextlib.suppress(OSError):  # a read-only cache folder: the use is not recorded, nothing else changes
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba's cache re-imports the module by name
    try:
        exec(compile(data, str(path), "exec"), mod.__dict__)  # noqa: S102  (the generated source, not the file)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_fixed_source(sub: str, stem: str, source: str, prefix: str):
    """Import a fixed numba kernel module (``source`` with its ``CACHE`` placeholder filled in) from the on-disk
    kernel cache ``sub``, or from a fresh temporary folder without numba's disk cache when caching is off."""
    d = cache_dir(sub)
    text = source.replace("CACHE", repr(d is not None), 1)
    if d is None:
        import tempfile

        d = Path(tempfile.mkdtemp(prefix=f"spikeforge-{sub}-"))
    return load_generated(d, stem, text, prefix)


# Source of a numba intrinsic both generated kernel modules include (they import numba as ``nb``): a store with
# the ``nontemporal`` hint.  Kept as text because the kernels are generated as text (see load_generated).
STORE_NT_SOURCE = '''\
@nb.extending.intrinsic
def store_nt(typingctx, arr, idx, val):
    # arr[idx] = val as a non-temporal (streaming) store, which skips reading the line into the cache first.  It
    # claims 64-byte alignment: only for rows that start 64-byte aligned (each caller checks), so that the
    # vectorised loop's stores (at multiples of the vector width from the row start) are aligned.
    from llvmlite import ir
    from numba.core import cgutils

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1]], wraparound=False)
        st = builder.store(args[2], ptr, align=64)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return nb.types.void(arr, idx, arr.dtype), codegen
'''


PREFETCH_SOURCE = '''\
@nb.extending.intrinsic
def prefetch(typingctx, arr, idx):
    # a software prefetch of the line holding arr[idx] into L2 (llvm.prefetch: read, locality 2, data)
    from llvmlite import ir
    from numba.core import cgutils

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(2), i32(1)])
        return context.get_dummy_value()

    return nb.types.void(arr, idx), codegen
'''


# --- numba's thread pool ------------------------------------------------------------------------------------
_POOL_STARTED = False


def start_numba():
    """numba, with its thread pool started.  Starting numba's OpenMP pool (which loading or running any parallel
    kernel does) resets the OpenMP thread count that ``torch.get_num_threads()`` reads; it is started here, before
    any kernel, and torch's count is given back, so a user's ``torch.set_num_threads`` survives.  Then the pools'
    waiting policy is chosen (:func:`spikeforge.runtime.omp_wait_default`)."""
    global _POOL_STARTED
    import numba

    if not _POOL_STARTED:
        t = torch.get_num_threads()
        numba.get_num_threads()  # starts the pool
        if torch.get_num_threads() != t:
            torch.set_num_threads(t)
        _POOL_STARTED = True
        from ..runtime import omp_wait_default

        omp_wait_default()  # the two pools spin only while no other process wants the cores (see runtime.py)
    return numba


def is_available() -> bool:
    """Whether numba can be imported (the ``cpu`` backend needs it)."""
    try:
        start_numba()
    except ImportError:
        return False
    return True


_FN_ARG = None


def function_arg(cf):
    """A compiled ``numba.cfunc`` as an argument of a jitted function (typed ``numba.types.FunctionType`` of its
    signature, called through its address): a driver compiled once can run many row loops.  The numba type is
    computed once and carried as ``_numba_type_``, which numba's dispatcher reads without a Python ``typeof``
    (~10 us per argument and call otherwise)."""
    global _FN_ARG
    if _FN_ARG is None:
        nb = start_numba()
        from numba.core.typing.typeof import typeof_impl

        class FunctionArg(nb.types.WrapperAddressProtocol):
            def __init__(self, cf):
                self.cf = cf
                self.numba_type = nb.types.FunctionType(cf._sig)
                self._numba_type_ = self.numba_type

            def __wrapper_address__(self):
                return self.cf.address

            def signature(self):
                return self.cf._sig

        @typeof_impl.register(FunctionArg)
        def _typeof_function_arg(val, c):
            return val.numba_type

        _FN_ARG = FunctionArg
    return _FN_ARG(cf)


PARALLEL_MIN_ELEMENTS = 1 << 16  # below this a second thread costs more (wake-up, barrier) than it saves
_GET_THREADS = None


def sync_threads(numel: int) -> None:
    """Run numba's loops on as many threads as torch uses (``torch.set_num_threads`` is honoured), but on one
    thread for inputs of fewer than ``PARALLEL_MIN_ELEMENTS`` elements per thread."""
    nb = start_numba()
    n = max(1, min(torch.get_num_threads(), nb.config.NUMBA_NUM_THREADS, numel // PARALLEL_MIN_ELEMENTS))
    if _numba_threads()() != n:
        nb.set_num_threads(n)


def _numba_threads():
    """numba's (thread-local) thread count getter.  ``numba.get_num_threads`` takes two locks on every call; its C
    getter underneath, where this numba has it, is used instead."""
    global _GET_THREADS
    if _GET_THREADS is None:
        nb = start_numba()
        nb.get_num_threads()  # the pool is started: the C getter is bound
        from numba.np.ufunc import parallel

        get = getattr(parallel, "_get_num_threads", None)
        _GET_THREADS = get if callable(get) and get() == nb.get_num_threads() else nb.get_num_threads
    return _GET_THREADS


# --- output buffers -----------------------------------------------------------------------------------------
def new_tensor(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape)``; the sizes are passed unpacked, which torch parses several times faster than a
    ``torch.Size``."""
    return torch.empty(*shape, dtype=dtype) if len(shape) else torch.empty((), dtype=dtype)


class BufferPool:
    """Reuse of large output buffers (spikes, v_seq, dL/dx), like a caching allocator.

    glibc returns allocations above 32 MB to the OS on free, so every fresh 33 MB tensor costs ~8k page faults.
    Buffers of at least ``min_bytes`` are handed out as tensors viewing a numpy array, 64-byte aligned (as the
    non-temporal stores need); when the last tensor sharing that storage dies, the array goes back to the pool (a
    buffer is never reused while anything still refers to it).  At most ``max_free_bytes`` of free buffers are
    kept; :meth:`clear` releases them.
    """

    def __init__(self, min_bytes: int = 1 << 18, max_free_bytes: int = 1 << 30):
        self.min_bytes, self.max_free_bytes = min_bytes, max_free_bytes
        self.free: dict = {}
        self.free_bytes = 0
        self.lock = threading.Lock()

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        n = math.prod(shape)
        if n * dtype.itemsize < self.min_bytes:
            return new_tensor(shape, dtype)
        npdt = np.dtype(str(dtype).removeprefix("torch."))
        key = (n, npdt)
        with self.lock:
            bufs = self.free.get(key)
            base = bufs.pop() if bufs else None
            if base is not None:
                self.free_bytes -= base.nbytes
        if base is None:
            base = np.empty(n + 64 // npdt.itemsize, dtype=npdt)
        off = (-base.ctypes.data % 64) // npdt.itemsize  # 64-byte aligned
        view = base[off:off + n]  # the tensor's storage holds this view; when it dies, base is free again
        weakref.finalize(view, self._release, key, base)
        return torch.from_numpy(view).view(tuple(shape))

    def _release(self, key, base) -> None:
        with self.lock:
            if self.free_bytes + base.nbytes <= self.max_free_bytes:
                self.free.setdefault(key, []).append(base)
                self.free_bytes += base.nbytes

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.free_bytes = 0


POOL = BufferPool()


def empty_cache() -> None:
    """Release the free output buffers the CPU kernels keep for reuse."""
    POOL.clear()
