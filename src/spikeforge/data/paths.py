"""Where dataset files are looked for: only ``--data-dir`` when one is given, else ``$SPIKEFORGE_DATA``, then
the user cache."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SPIKEFORGE_DATA"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/spikeforge`` when set, else ``~/.cache/spikeforge``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "spikeforge"


def resolve_data_dirs(data_dir=None) -> list[Path]:
    """Data roots in search order. An explicit ``data_dir`` is the only root: nothing else is searched, so
    the data used is the data asked for. Without one: each entry of ``$SPIKEFORGE_DATA``
    (``os.pathsep``-separated), then :func:`user_cache_dir`. Duplicates are dropped; folders need not exist.

    Example:
        >>> [str(d) for d in resolve_data_dirs("/tmp/my-data")]
        ['/tmp/my-data']
        >>> resolve_data_dirs()[-1] == user_cache_dir()
        True
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(ENV_VAR, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
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
    """The first root that exists and is writable, or can be created (downloads go there): ``data_dir``
    itself when given."""
    for d in resolve_data_dirs(data_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise PermissionError(f"none of the data folders is writable: {[str(d) for d in resolve_data_dirs(data_dir)]}")
