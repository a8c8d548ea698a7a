"""Data-layer benchmark -> the ``data`` section of docs/benchmarks.md.

Events decoded per second by each reader (vectorised numpy, one thread), events -> frames per second,
the background-activity filter, and samples/s of the in-memory loader (Fashion-MNIST, batches of 128)
next to torch's DataLoader over the same dataset. Synthetic event files are written in the real formats by
the writers of ``tests/data/datafmt_writers.py``; real files come from ``--data-dir`` (default:
``$SPIKEFORGE_DATA``, else ``../shared/data``).

    python benchmarks/data_bench.py
    python benchmarks/data_bench.py --data-dir "$SPIKEFORGE_DATA" --events 5000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from _report import machine_line, median_time, write_section  # noqa: E402
from datafmt_writers import (aedat2_bytes, aedat4_bytes, aedat31_bytes, orchard_bin_bytes,  # noqa: E402
                             prophesee_dat_bytes, random_events)

from spikeforge.data import (Denoise, InMemoryLoader, cifar_augment, events_to_frames, get_dataset,  # noqa: E402
                             load_arrays, read_events)
from spikeforge.data.events import decode_aedat2, decode_aedat4, decode_aedat31, decode_orchard_bin  # noqa: E402


def _data_dir(arg):
    if arg:
        return Path(arg)
    env = os.environ.get("SPIKEFORGE_DATA", "").split(os.pathsep)[0]
    if env and Path(env).is_dir():
        return Path(env)
    default = ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def _rate(n, seconds):
    return f"{n / seconds / 1e6:.1f}"


def bench_readers(n, tmp: Path, data_dir):
    rng = np.random.default_rng(0)
    rows = []
    cases = [
        ("Orchard .bin (N-MNIST, 34x34)", "a.bin", orchard_bin_bytes(random_events(rng, n, (34, 34, 2), t_max=8_000_000)),
         decode_orchard_bin),
        ("AEDAT 2.0 (DVS128)", "a.aedat", aedat2_bytes(random_events(rng, n, (128, 128, 2), t_max=10**9)), decode_aedat2),
        ("AEDAT 3.1 (DVS128, 4096-event packets)", "b.aedat",
         aedat31_bytes(random_events(rng, n, (128, 128, 2), t_max=10**9), packet_size=4096, special_packets=False),
         decode_aedat31),
        ("AEDAT 4 (LZ4, 2048-event packets)", "c.aedat4",
         aedat4_bytes(random_events(rng, n, (320, 240, 2), t_max=10**9), (320, 240), "lz4", 2048, imu_packets=False),
         decode_aedat4),
        ("AEDAT 4 (uncompressed, 2048-event packets)", "d.aedat4",
         aedat4_bytes(random_events(rng, n, (320, 240, 2), t_max=10**9), (320, 240), "none", 2048, imu_packets=False),
         decode_aedat4),
        ("Prophesee .dat (EVT 2.0)", "e.dat", prophesee_dat_bytes(random_events(rng, n, (304, 240, 2), t_max=10**9)), None),
    ]
    for label, name, blob, decode in cases:
        path = tmp / name
        path.write_bytes(blob)
        t_file = median_time(lambda path=path: read_events(path), repeat=5, warmup=1)
        t_dec = median_time(lambda d=decode, b=blob: d(b), repeat=5, warmup=1) if decode else None
        rows.append((label, f"{n:,}", f"{len(blob) / 2**20:.0f}", _rate(n, t_dec) if t_dec else "-", _rate(n, t_file)))
    if data_dir is not None:
        files = sorted((data_dir / "events" / "nmnist-subset").glob("*/*/*.bin"))
        if files:
            total = sum(len(read_events(f).events) for f in files)
            t = median_time(lambda: [read_events(f) for f in files], repeat=5, warmup=1)
            rows.append((f"real N-MNIST, {len(files)} files (per-file overhead included)", f"{total:,}",
                         f"{sum(f.stat().st_size for f in files) / 2**20:.1f}", "-", _rate(total, t)))
        sample = data_dir / "events" / "tonic-test-samples" / "sample.aedat4"
        if sample.exists():
            k = len(read_events(sample).events)
            t = median_time(lambda: read_events(sample), repeat=7, warmup=1)
            rows.append(("real sample.aedat4 (DVXplorer, LZ4 + IMU packets)", f"{k:,}",
                         f"{sample.stat().st_size / 2**20:.1f}", "-", _rate(k, t)))
    return rows


def bench_frames(n):
    rng = np.random.default_rng(1)
    rows = []
    for sensor, kw, label in [((34, 34, 2), dict(n_time_bins=10), "34x34x2, T=10 (time)"),
                              ((128, 128, 2), dict(n_time_bins=16), "128x128x2, T=16 (time)"),
                              ((128, 128, 2), dict(n_time_bins=16, split_by="number"), "128x128x2, T=16 (number)"),
                              ((128, 128, 2), dict(time_window=50_000), "128x128x2, 50 ms windows")]:
        ev = random_events(rng, n, sensor, t_max=1_000_000)
        t = median_time(lambda ev=ev, sensor=sensor, kw=kw: events_to_frames(ev, sensor, **kw), repeat=5, warmup=1)
        rows.append((f"events_to_frames {label}", f"{n:,}", _rate(n, t)))
    m = min(n, 2_000_000)
    ev = random_events(rng, m, (128, 128, 2), t_max=2_000_000)
    d = Denoise((128, 128, 2), 10_000)
    d(ev[:10])  # compile
    t = median_time(lambda: d(ev), repeat=5, warmup=1)
    rows.append(("Denoise (background-activity filter, numba)", f"{m:,}", _rate(m, t)))
    return rows


def bench_loader(data_dir, batches_dl=200):
    rows = []
    source = "Fashion-MNIST train (real files)"
    try:
        x, y = load_arrays("fashion_mnist", "train", data_dir=data_dir)
    except (FileNotFoundError, ValueError):
        x, y = torch.rand(60000, 1, 28, 28), torch.randint(0, 10, (60000,))
        source = "random 60000x1x28x28 (Fashion-MNIST files not found)"
    loader = InMemoryLoader(x, y, 128, shuffle=True, seed=0)

    def epoch():
        for _ in loader:
            pass

    t = median_time(epoch, repeat=5, warmup=1)
    rows.append((f"InMemoryLoader, {source}, batch 128, shuffled", f"{len(x) / t:,.0f}", f"{t / len(loader) * 1e6:.0f}"))
    xc, yc = torch.rand(50000, 3, 32, 32), torch.randint(0, 10, (50000,))
    aug = InMemoryLoader(xc, yc, 128, seed=0, transform=cifar_augment(cutout=16))

    def epoch_aug():
        for _ in aug:
            pass

    t = median_time(epoch_aug, repeat=3, warmup=1)
    rows.append(("InMemoryLoader, CIFAR-size 50000x3x32x32, batch 128, crop+flip+cutout", f"{len(xc) / t:,.0f}",
                 f"{t / len(aug) * 1e6:.0f}"))
    try:
        ds = get_dataset("fashion_mnist", "train", data_dir=data_dir)
        dl = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=0)

        def some():
            it = iter(dl)
            for _ in range(batches_dl):
                next(it)

        t = median_time(some, repeat=3, warmup=1)
        rows.append(("torch DataLoader over get_dataset('fashion_mnist'), batch 128, 0 workers",
                     f"{batches_dl * 128 / t:,.0f}", f"{t / batches_dl * 1e6:.0f}"))
    except (FileNotFoundError, ValueError):
        pass
    return rows


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--events", type=int, default=5_000_000, help="events per synthetic file / frame benchmark")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not write docs/benchmarks.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data_dir = _data_dir(args.data_dir)
    cmd = "python benchmarks/data_bench.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.time()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        readers = bench_readers(args.events, Path(tmp), data_dir)
    frames = bench_frames(args.events)
    loader = bench_loader(data_dir)
    body = "\n".join([
        "## data",
        "",
        f"Written by `{cmd}` (one thread: `torch.set_num_threads(1)`; numpy is single-threaded).  ",
        machine_line() + f" · numpy {np.__version__}  ",
        f"Load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end on {os.cpu_count()} cores (other jobs "
        "share this machine: numbers on an idle core are higher).  ",
        "Median of 5 runs after a warm-up. Synthetic files are random events written in the real format "
        "(`tests/data/datafmt_writers.py`); targets: readers >= 50 M events/s, frames >= 20 M events/s.",
        "",
        "### Event readers",
        "",
        table(["file", "events", "MiB", "decode from bytes (M ev/s)", "read_events(path) (M ev/s)"], readers),
        "",
        "### Event transforms",
        "",
        table(["operation", "events", "M events/s"], frames),
        "",
        "### Static-set loading",
        "",
        table(["loader", "samples/s", "us per batch"], loader),
        "",
        f"(total benchmark time {time.time() - t0:.0f} s)",
    ])
    print(body)
    if not args.no_write:
        write_section("data", body)


if __name__ == "__main__":
    main()
