"""Generated kernel modules: written once under the cache dir with a content hash, imported by name.

Both numba backends (``cpu.py`` for the LIF family, ``fused.py`` for the zoo cells) generate their kernels as
Python source.  Writing the source to a file lets numba's on-disk cache (``cache=True``) serve later processes;
the hash in the file name makes a stale module impossible.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path


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


def load_generated(directory: Path, stem: str, text: str, prefix: str):
    """The module with source ``text``, stored as ``directory/<stem>_<hash>.py`` (written atomically if new) and
    imported as ``<prefix>_<file stem>`` (once per process)."""
    digest = hashlib.sha1(text.encode()).hexdigest()[:16]
    path = directory / f"{stem}_{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    name = f"{prefix}_{path.stem}"
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # numba's cache re-imports the module by name
        spec.loader.exec_module(mod)
    return mod


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
