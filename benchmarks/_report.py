"""Shared helpers for benchmark scripts: timing and writing one section of docs/benchmarks.md.

Each benchmark owns one section, delimited by ``<!-- begin:NAME -->`` / ``<!-- end:NAME -->`` markers,
so scripts can be re-run independently without clobbering each other.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery table below was written by the script named in its section; re-run it to refresh.\n"


def machine_line() -> str:
    import torch

    return (
        f"machine: {platform.machine()} {platform.processor() or ''} · {os.cpu_count()} logical cores · "
        f"torch {torch.__version__} (threads {torch.get_num_threads()}) · python {platform.python_version()}"
    )


def median_time(fn, repeat: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_section(name: str, doc: Path = DOC) -> str | None:
    """The current body of section ``name`` of docs/benchmarks.md, or None."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    text = doc.read_text() if doc.exists() else ""
    if begin not in text or end not in text:
        return None
    return text.split(begin, 1)[1].split(end, 1)[0]


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``body``."""
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    text = doc.read_text() if doc.exists() else HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        pre, rest = text.split(begin, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
