"""Generated kernel modules: written once under the cache dir with a content hash, imported by name.

Both numba backends (``cpu.py`` for the LIF family, ``fused.py`` for the zoo cells) and the pooling kernels generate
their kernels as Python source.  Writing the source to a file lets numba's on-disk cache (``cache=True``) serve later
processes; the hash in the file name makes a stale module impossible.

The file is never trusted: before a module is imported, the file's bytes are checked against the source this process
generated (whose hash is in the name); a file that differs (edited, truncated) is rewritten, and the module is
always executed from the generated source, never from what was read from disk.  Modules not used for
``PRUNE_AGE_S`` (and their numba cache files) and leftover temporary files are deleted once per folder and process.
"""

from __future__ import annotations

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
