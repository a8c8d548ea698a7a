"""Process-level settings that make CPU training faster: the C allocator's treatment of large blocks, and how the
OpenMP thread pools wait.

**Large blocks.** 
Large tensors (above glibc's mmap threshold, at most 32 MiB) are mapped fresh from the OS on every allocation and
unmapped on every free, so each new activation or gradient buffer of a training step pays one page fault per
4 KiB page when it is first written.  On virtual machines a page fault costs several microseconds: a 50 MB
buffer costs 50-80 ms to fault in, as long as the convolution that fills it (measured on the 2-core CI
machine: the Fashion-MNIST conv-SNN step went from ~330 ms to ~210 ms with :func:`keep_freed_memory`).
Raising the mmap threshold and the trim threshold makes glibc serve those blocks from its heap and keep freed
memory for reuse, as a caching allocator does.  The cost: the process keeps its peak memory until it exits.

``spikeforge train`` / ``eval`` and the benchmark scripts call :func:`keep_freed_memory` (set
``SPIKEFORGE_KEEP_FREED_MEMORY=0`` to turn it off); a library user may call it at start-up.

**Waiting threads.** torch runs its CPU ops on an OpenMP (libgomp) thread pool and the fused kernels run on numba's,
a second libgomp in the same process.  By default an idle libgomp thread spins for ~5 ms before it sleeps: on an
idle machine that makes back-to-back parallel ops start at once, but when anything else wants the cores (another
process, a DataLoader worker, the other pool) the spinning threads take them from the threads doing the work
(measured: a conv-SNN training step 1.4-1.6x slower with one busy process on 2 cores).  ``OMP_WAIT_POLICY``
chooses once for the whole run, and only before the library loads (torch's libgomp reads it when torch is imported).
:func:`omp_wait` chooses at any time, in both pools: libgomp spins only ~100 iterations instead of its full count
while it manages more threads than the process may use cores, so parking a few sleeping threads in each pool turns
its spinning off, and letting them go turns it back on.  ``"auto"`` (started by the first fused kernel, unless
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set) watches, twice a second, how much CPU time other processes take
on this process's cores and lets the pools spin only while the cores are otherwise idle.

Example:
    >>> from spikeforge.runtime import keep_freed_memory, omp_wait_state
    >>> keep_freed_memory() in (True, False)   # False where the C library is not glibc
    True
    >>> sorted(omp_wait_state())
    ['others', 'policy', 'reason', 'runtimes', 'waiting']
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
import time

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


# --- OpenMP waiting ------------------------------------------------------------------------------------------------
POLICIES = ("auto", "spin", "sleep")
SAMPLE_S = 0.5  # the auto policy's sampling interval
ENTER_SLEEP_CORES = 0.25  # sleep when other processes take more than this many cores beyond the free ones
LEAVE_SLEEP_CORES = 0.1  # spin again when they take less than this, in two samples running
_state = {"policy": None, "waiting": "spin", "reason": "not started", "others": None, "runtimes": []}
_lock = threading.Lock()
_monitor: threading.Thread | None = None
_parked: dict = {}  # libgomp path -> threading.Event that releases its parked threads


def _libgomps() -> list[str]:
    """Paths of the libgomp copies loaded in this process (torch's, numba's): from /proc/self/maps."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libgomp"))


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _park(path: str) -> None:
    """Park ``cores + 1`` sleeping threads in the libgomp at ``path``: while it manages more threads than there are
    cores, its idle threads spin ~100 iterations (``gomp_throttled_spin_count_var``) instead of ~300,000."""
    if path in _parked:
        return
    lib = ctypes.CDLL(path)  # already loaded: the same copy
    lib.GOMP_parallel.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)
    lib.GOMP_parallel.restype = None
    noop = ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p).value  # free(NULL): each thread does nothing
    release, ready = threading.Event(), threading.Event()

    def hold():
        lib.GOMP_parallel(noop, None, len(_cores()) + 1, 0)  # the team's threads stay docked in this thread's pool
        ready.set()
        release.wait()  # when this thread ends, libgomp frees its pool and the count drops again

    threading.Thread(target=hold, name=f"spikeforge-omp-park:{os.path.basename(path)}", daemon=True).start()
    ready.wait()
    _parked[path] = release


def _unpark(path: str) -> None:
    release = _parked.pop(path, None)
    if release is not None:
        release.set()


def _apply(waiting: str) -> None:
    """Make every loaded libgomp ``waiting`` ("spin": libgomp's default, or "sleep")."""
    paths = _libgomps()
    for p in paths:
        (_park if waiting == "sleep" else _unpark)(p)
    for p in list(_parked):
        if p not in paths:
            _unpark(p)
    _state.update(waiting=waiting, runtimes=paths)


def _cpu_ticks(cores: list[int]) -> tuple[int, int]:
    """(busy ticks of ``cores``, from /proc/stat, steal included; this process's user + system ticks)."""
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *vals = line.split()
            if int(name[3:]) in cores:
                v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
                busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return busy, int(fields[11]) + int(fields[12])  # utime, stime


def decide(waiting: str, others: float, free: float, calm_before: bool) -> str:
    """The auto policy's next state: sleep while other processes take more than ``free`` (cores the pools do not
    use) plus ``ENTER_SLEEP_CORES``; spin again once they take less than ``free + LEAVE_SLEEP_CORES`` in two
    samples running (``calm_before``: the previous sample was below it too)."""
    if others > free + ENTER_SLEEP_CORES:
        return "sleep"
    if waiting == "sleep" and not (others < free + LEAVE_SLEEP_CORES and calm_before):
        return "sleep"
    return "spin"


def _watch() -> None:
    import torch

    cores = _cores()
    hz = os.sysconf("SC_CLK_TCK")
    busy0, own0 = _cpu_ticks(cores)
    t0 = time.monotonic()
    calm = False
    while True:
        time.sleep(SAMPLE_S)
        with _lock:
            if _state["policy"] != "auto":
                return
            busy1, own1 = _cpu_ticks(cores)
            t1 = time.monotonic()
            others = max(0.0, (busy1 - busy0) - (own1 - own0)) / hz / max(t1 - t0, 1e-3)
            busy0, own0, t0 = busy1, own1, t1
            free = max(0, len(cores) - torch.get_num_threads())
            waiting = decide(_state["waiting"], others, free, calm)
            calm = others < free + LEAVE_SLEEP_CORES
            _state.update(others=round(others, 2), reason=f"other processes took {others:.2f} of {len(cores)} "
                          f"cores, {free} left free by {torch.get_num_threads()} threads")
            if waiting != _state["waiting"] or (waiting == "sleep" and set(_libgomps()) != set(_parked)):
                _apply(waiting)


def _unsupported() -> str | None:
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if not _libgomps():
        return "no libgomp loaded (torch and numba use another thread runtime)"
    try:
        _cpu_ticks(_cores())
    except (OSError, ValueError, IndexError):
        return "/proc/stat unreadable"
    return None


def omp_wait(policy: str = "auto") -> dict:
    """Choose how idle threads of the OpenMP pools (torch's and the fused kernels') wait; returns
    :func:`omp_wait_state`.

    ``"spin"``: libgomp's default (spin ~5 ms, then sleep).  ``"sleep"``: spin ~100 iterations, then sleep, like
    ``OMP_WAIT_POLICY=PASSIVE``.  ``"auto"``: spin while no other process wants this process's cores, sleep while
    one does (checked every ``SAMPLE_S`` seconds).  Applies to every libgomp loaded in the process, whatever the
    import order; the fused kernels' first call selects ``"auto"`` unless ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` is set or this was called.  Raises ValueError for an unknown policy and RuntimeError where
    it cannot apply (not Linux, or no libgomp: torch built with another OpenMP runtime).
    """
    global _monitor
    if policy not in POLICIES:
        raise ValueError(f"omp_wait: policy={policy!r}; expected one of {POLICIES}")
    why = _unsupported()
    if why is not None:
        raise RuntimeError(f"omp_wait({policy!r}) cannot apply: {why}")
    with _lock:
        _state.update(policy=policy, reason="set by omp_wait()", others=None)
        _apply("spin" if policy == "auto" else policy)
        if policy == "auto" and (_monitor is None or not _monitor.is_alive()):
            _monitor = threading.Thread(target=_watch, name="spikeforge-omp-wait", daemon=True)
            _monitor.start()
    return omp_wait_state()


def omp_wait_default() -> dict:
    """Select ``"auto"`` unless the environment or an earlier :func:`omp_wait` call already chose (called by the
    fused kernels when they start numba's pool); where it cannot apply, record why and change nothing."""
    with _lock:
        if _state["policy"] is not None:
            return omp_wait_state()
        env = [k for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if os.environ.get(k)]
        why = f"{' and '.join(env)} set in the environment" if env else _unsupported()
        if why is not None:
            _state.update(policy="environment" if env else "unsupported", waiting=None, reason=why,
                          runtimes=_libgomps())
            return omp_wait_state()
    return omp_wait("auto")


def omp_wait_state() -> dict:
    """What :func:`omp_wait` chose: ``policy`` (None before any choice, ``"auto"``/``"spin"``/``"sleep"``,
    ``"environment"`` when OMP_WAIT_POLICY or GOMP_SPINCOUNT decides, ``"unsupported"``), ``waiting`` (the
    pools' state now: ``"spin"`` or ``"sleep"``; None where spikeforge does not manage them), ``others`` (cores other processes took in the last sample),
    ``reason`` and ``runtimes`` (the libgomp copies it acts on)."""
    return dict(_state)
