"""Process-level settings that make CPU training faster: the C allocator's treatment of large blocks.

Large tensors (above glibc's mmap threshold, at most 32 MiB) are mapped fresh from the OS on every allocation and
unmapped on every free, so each new activation or gradient buffer of a training step pays one page fault per
4 KiB page when it is first written.  On virtual machines a page fault costs several microseconds: a 50 MB
buffer costs 50-80 ms to fault in, as long as the convolution that fills it (measured on the 2-core CI
machine: the Fashion-MNIST conv-SNN step went from ~330 ms to ~210 ms with :func:`keep_freed_memory`).
Raising the mmap threshold and the trim threshold makes glibc serve those blocks from its heap and keep freed
memory for reuse, as a caching allocator does.  The cost: the process keeps its peak memory until it exits.

``spikeforge train`` / ``eval`` and the benchmark scripts call :func:`keep_freed_memory` (set
``SPIKEFORGE_KEEP_FREED_MEMORY=0`` to turn it off); a library user may call it at start-up.

Example:
    >>> from spikeforge.runtime import keep_freed_memory
    >>> keep_freed_memory() in (True, False)   # False where the C library is not glibc
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
_TRIM_THRESHOLD = (1 << 31) - 1  # never give the top of the heap back
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc to serve large blocks from its heap and keep freed memory (see the module docstring).

    Returns True when the settings were applied (or already were), False where they do not apply (not Linux,
    not glibc, or ``SPIKEFORGE_KEEP_FREED_MEMORY=0``).  Safe to call more than once.
    """
    global _done
    if _done:
        return True
    if os.environ.get("SPIKEFORGE_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _done = ok
    return ok
