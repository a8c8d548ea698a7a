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
