"""Where dataset files are looked for: ``--data-dir``, then ``$SPIKEFORGE_DATA``, then the user cache."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPIKEFORGE_DATA"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/spikeforge`` when set, else ``~/.cache/spikeforge``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "spikeforge"


def resolve_data_dirs(data_dir=None) -> list[Path]:
    """Data roots in search order: ``data_dir``, then each entry of ``$SPIKEFORGE_DATA``
    (``os.pathsep``-separated), then :func:`user_cache_dir`. Duplicates are dropped; folders need not exist.

    Example:
        >>> dirs = resolve_data_dirs("/tmp/my-data")
        >>> str(dirs[0]), dirs[-1] == user_cache_dir()
        ('/tmp/my-data', True)
    """
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR, "")
    dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    dirs.append(user_cache_dir())
    out: list[Path] = []
    seen = set()
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def writable_data_dir(data_dir=None) -> Path:
    """The first root that exists and is writable, or can be created (downloads go there)."""
    for d in resolve_data_dirs(data_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise PermissionError(f"none of the data folders is writable: {[str(d) for d in resolve_data_dirs(data_dir)]}")
