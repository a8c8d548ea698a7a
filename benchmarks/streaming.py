"""Streaming data path benchmark -> the ``streaming`` section of docs/benchmarks.md.

1. Peak resident memory of one streaming training epoch (the loader alone: decode, augment, batch) over a
   synthetic ImageNet-layout folder of 256x256 JPEGs, and over a synthetic CIFAR10-DVS-size event set
   (128x128x2 sensor, 10 frames, frames read from the on-disk frame store), each at 1x and 4x the number
   of samples: flat when the path streams. The event set's in-memory path at 1x is the comparison.
2. Data wait as a fraction of the training step (``data_fraction`` of the trainer's metrics) for
   ``sew_resnet18`` at 64x64 (Tiny-ImageNet / ImageNet-64 size, random-resized crop + flip in the workers)
   with 0, 1 and 2 worker processes.

Each measurement runs in its own process (a fresh peak RSS). Generating the files is not timed; the memory
part measures no speed; the data-wait part is timed (results accumulate in ``SCRATCH/results.json``):

    python benchmarks/streaming.py --scratch SCRATCH --stage prepare
    python benchmarks/streaming.py --scratch SCRATCH --stage rss
    flock -x <bench lock> python benchmarks/streaming.py --scratch SCRATCH --stage wait
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "data"))

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ------------------------------------------------------------------------------------------------ files
def _smooth_image(rng, size=256):
    """A natural-ish image (upsampled low-resolution noise plus fine noise): JPEG sizes like photos'."""
    from PIL import Image

    low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def make_images(root: Path, classes: int, per_class: int, size: int = 256, seed: int = 0) -> None:
    """``root/imagenet4x`` (all classes) and ``root/imagenet1x`` (a quarter of them, as symlinks)."""
    rng = np.random.default_rng(seed)
    full = root / "imagenet4x" / "imagenet"
    for k in range(classes):
        w = f"n{k:08d}"
        for split, n in (("train", per_class), ("val", 2)):
            d = full / split / w
            d.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                p = d / f"{w}_{j}.JPEG"
                if not p.exists():
                    _smooth_image(rng, size).save(p, quality=90)
    quarter = root / "imagenet1x" / "imagenet"
    for split in ("train", "val"):
        (quarter / split).mkdir(parents=True, exist_ok=True)
        for k in range(classes // 4):
            link = quarter / split / f"n{k:08d}"
            if not link.exists():
                link.symlink_to(full / split / f"n{k:08d}", target_is_directory=True)


def make_events(root: Path, per_class_1x: int, events: int, seed: int = 1) -> None:
    """CIFAR10-DVS layouts (AEDAT 2.0, 128x128 DVS): ``events1x`` and ``events4x`` (4x the recordings per
    class), plus 2 test recordings per class (indices >= 900)."""
    from datafmt_writers import aedat2_bytes, random_events

    rng = np.random.default_rng(seed)
    for tag, n in (("events1x", per_class_1x), ("events4x", 4 * per_class_1x)):
        for c in CIFAR_CLASSES:
            d = root / tag / "cifar10-dvs" / c
            d.mkdir(parents=True, exist_ok=True)
            for i in list(range(n)) + [900, 901]:
                p = d / f"cifar10_{c}_{i}.aedat"
                if not p.exists():
                    p.write_bytes(aedat2_bytes(random_events(rng, events, sensor=(128, 128, 2), t_max=1_300_000)))


# ------------------------------------------------------------------------------------------------ children
def _images_cfg(root: Path, workers: int, extra=()):
    from spikeforge.config import TrainConfig

    return TrainConfig().override([
        "data.name=imagenet", f"data.data_dir={root}", "data.options={resize: 72, crop: 64}", "data.augment=rrc_flip",
        "data.loader=stream", f"data.num_workers={workers}", "data.batch_size=64", "run.progress=false",
        "run.plots=false", "run.device=cpu", *extra])


def _events_cfg(root: Path, cache: Path, workers: int, loader: str):
    from spikeforge.config import TrainConfig

    return TrainConfig().override([
        "data.name=cifar10_dvs", f"data.data_dir={root}", "data.frames=10", "model.T=10", f"data.loader={loader}",
        f"data.num_workers={workers}", "data.batch_size=64", f"data.options={{cache_dir: {cache}}}",
        "run.progress=false", "run.plots=false", "run.device=cpu"])


def _rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def child_epoch(kind: str, root: Path, cache: Path, workers: int, loader: str) -> dict:
    """One training epoch's batches (loader only); peak RSS of this process and of its largest worker."""
    import gc

    import torch

    from spikeforge.training import distributed as D
    from spikeforge.training.data import load_data, train_batches

    torch.set_num_threads(1)
    base = _rss_mb()
    cfg = _images_cfg(root, workers) if kind == "images" else _events_cfg(root, cache, workers, loader)
    data = load_data(cfg.data, seed=0)
    t0 = time.perf_counter()
    order = D.batches(len(data.y_train), cfg.data.batch_size, 0, 1)
    n = 0
    for xb, yb, _ in train_batches(data, cfg.data, 0, 1, order, 0):
        n += len(yb)
    seconds = time.perf_counter() - t0
    if data.loader == "stream":
        data.x_train.close()
        data.x_test.close()
    del data
    gc.collect()
    time.sleep(0.5)  # workers exit; their peak RSS is then in RUSAGE_CHILDREN
    return {"samples": n, "seconds": seconds, "main_peak_mb": _rss_mb(), "after_import_mb": base,
            "worker_peak_mb": _rss_mb(resource.RUSAGE_CHILDREN)}


def child_build(root: Path, cache: Path, workers: int) -> dict:
    from spikeforge.training.data import load_data

    t0 = time.perf_counter()
    load_data(_events_cfg(root, cache, workers, "stream").data)
    return {"seconds": time.perf_counter() - t0, "main_peak_mb": _rss_mb(),
            "worker_peak_mb": _rss_mb(resource.RUSAGE_CHILDREN)}


def child_train(root: Path, workers: int, steps: int) -> dict:
    import tempfile

    from spikeforge.training import train

    cfg = _images_cfg(root, workers, ["model.name=sew_resnet18", "model.T=2", "data.batch_size=32",
                                      "run.epochs=2", f"run.max_steps_per_epoch={steps}", "data.test_subset=32",
                                      "model.kwargs={stem: imagenet}"])
    res = train(cfg, run_dir=tempfile.mkdtemp(prefix="sf-stream-bench-") + "/run", verbose=False)
    lines = (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    return {"data_fraction": [r["data_fraction"] for r in recs], "train_seconds": [r["train_seconds"] for r in recs],
            "steps": steps, "samples_per_s": [r["samples_per_s"] for r in recs]}


def _run_child(*args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ main
def measure_rss(scratch: Path) -> dict:
    cache = scratch / "frame-cache"
    rows = []
    for tag, mult in (("imagenet1x", 1), ("imagenet4x", 4)):
        r = _run_child("epoch", "images", scratch / tag, cache, 2, "stream")
        rows.append(("images 256x256 JPEG -> rrc 64, 2 workers", mult, r))
        print(tag, r, flush=True)
    builds = {}
    for tag in ("events1x", "events4x"):
        builds[tag] = _run_child("build", scratch / tag, cache, 2)
        print("build", tag, builds[tag], flush=True)
    for tag, mult in (("events1x", 1), ("events4x", 4)):
        r = _run_child("epoch", "events", scratch / tag, cache, 2, "stream")
        rows.append(("CIFAR10-DVS-size frames (stream, 2 workers)", mult, r))
        print(tag, r, flush=True)
    r = _run_child("epoch", "events", scratch / "events1x", cache, 0, "memory")
    rows.append(("CIFAR10-DVS-size frames (in memory)", 1, r))
    print("memory events1x", r, flush=True)
    return {"rows": rows, "builds": builds, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": os.getloadavg()[0]}


def measure_wait(scratch: Path, steps: int) -> dict:
    waits = {}
    for w in (0, 1, 2):
        waits[str(w)] = _run_child("train", scratch / "imagenet4x", w, steps)
        print("train workers", w, waits[str(w)], flush=True)
    return {"waits": waits, "steps": steps, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": os.getloadavg()[0]}


def report(res: dict, events: int, classes: int, per_class: int, ev_per_class: int) -> str:
    import torch

    from _report import machine_line

    rss, wait = res.get("rss"), res.get("wait")
    rows, builds = (rss["rows"], rss["builds"]) if rss else ([], {})
    waits, steps = (wait["waits"], wait["steps"]) if wait else ({}, 0)

    n_img = classes * per_class
    n_ev = 10 * ev_per_class
    lines = [
        "## Streaming data path (`benchmarks/streaming.py`)", "",
        f"{machine_line()}", "",
        f"Synthetic sets written by the script: an ImageNet layout of {n_img // 4} (1x) and {n_img} (4x) 256x256 "
        f"JPEGs ({classes // 4} / {classes} classes x {per_class}); a CIFAR10-DVS layout (AEDAT 2.0, 128x128x2) of "
        f"{n_ev} (1x) and {4 * n_ev} (4x) recordings of {events:,} random events each (the real set has 10,000 "
        "recordings of ~100-300k events: smaller here so generation fits the time budget; per-sample frame size "
        "is the real one, 10 x 2 x 128 x 128).", "",
        "Peak resident memory (MiB) of one training epoch of the loader alone (decode, augment, normalise, "
        "batch 64); main process and the largest worker process, each measured in a fresh process"
        + (f" ({rss['when']}, shared machine, load average {rss['load']:.1f}: memory, not speed, is the point "
           "here; epoch seconds are indicative only)" if rss else "") + ":", "",
        "| set | size | samples | epoch s | main peak RSS | worker peak RSS |", "|---|---|---|---|---|---|"]
    for name, mult, r in rows:
        worker = f"{r['worker_peak_mb']:.0f}" if r["worker_peak_mb"] > 0 else "-"
        lines.append(f"| {name} | {mult}x | {r['samples']} | {r['seconds']:.1f} | {r['main_peak_mb']:.0f} | {worker} |")
    lines += ["", "Frame store build (once per binning; 2 workers): " + ", ".join(
        f"{t}: {b['seconds']:.1f} s, peak RSS main {b['main_peak_mb']:.0f} / worker {b['worker_peak_mb']:.0f} MiB"
        for t, b in builds.items()) + ".", ""]
    lines += [
        f"Data wait as a fraction of training time (`data_fraction`), `sew_resnet18` (ImageNet stem) at 64x64, T=2, "
        f"batch 32, random-resized crop + flip from 256x256 JPEGs, {steps or 6} steps per epoch; epoch 1 includes "
        "starting the workers, epoch 2 reuses them (persistent workers); the goal is <= 5% where the model step "
        "is the bottleneck"
        + (f"; {wait['when']}, under the exclusive benchmark lock, load average {wait['load']:.1f}" if wait else
           "; not measured yet") + ":", "",
        "| workers | data wait, epoch 1 | data wait, epoch 2 | samples/s (epoch 2) |", "|---|---|---|---|"]
    if not waits:
        lines.append("| - | not measured: the exclusive benchmark lock was not obtained in time | | |")
    for w, r in sorted(waits.items()):
        lines.append(f"| {w} | {100 * r['data_fraction'][0]:.1f}% | {100 * r['data_fraction'][1]:.1f}% | "
                     f"{r['samples_per_s'][1]:.1f} |")
    lines += ["", f"The machine has {os.cpu_count()} cores: decoding workers and the model's "
              f"{torch.get_num_threads()} threads compete for them, so here the cores, not the loader design, "
              "bound the step; on a GPU machine the workers have the CPU to themselves.",
              "", "    python benchmarks/streaming.py --scratch SCRATCH --stage prepare",
              "    python benchmarks/streaming.py --scratch SCRATCH --stage rss",
              "    flock -x <bench lock> python benchmarks/streaming.py --scratch SCRATCH --stage wait"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        what, *rest = argv[1:]
        if what == "epoch":
            out = child_epoch(rest[0], Path(rest[1]), Path(rest[2]), int(rest[3]), rest[4])
        elif what == "build":
            out = child_build(Path(rest[0]), Path(rest[1]), int(rest[2]))
        else:
            out = child_train(Path(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(out))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", required=True, help="folder for the synthetic sets and the frame store")
    ap.add_argument("--stage", choices=("prepare", "rss", "wait", "measure", "report", "all"), default="all",
                    help="rss: memory only (no timing: the shared lock will do); wait: the timed data-wait runs")
    ap.add_argument("--classes", type=int, default=100, help="image classes at 4x (a quarter at 1x)")
    ap.add_argument("--per-class", type=int, default=100, help="JPEGs per class")
    ap.add_argument("--event-per-class", type=int, default=50, help="recordings per class at 1x")
    ap.add_argument("--events", type=int, default=20000, help="events per recording")
    ap.add_argument("--steps", type=int, default=6, help="training steps per epoch in the data-wait runs")
    args = ap.parse_args(argv)
    scratch = Path(args.scratch)
    if args.stage in ("prepare", "all"):
        t0 = time.perf_counter()
        make_images(scratch, args.classes, args.per_class)
        make_events(scratch, args.event_per_class, args.events)
        print(f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.stage != "prepare":
        from _report import write_section

        saved = scratch / "results.json"
        res = json.loads(saved.read_text()) if saved.exists() else {}
        if args.stage in ("rss", "measure", "all"):
            res["rss"] = measure_rss(scratch)
        if args.stage in ("wait", "measure", "all"):
            res["wait"] = measure_wait(scratch, args.steps)
        # --stage report: rewrite the section from the saved results only
        saved.write_text(json.dumps(res))
        body = report(res, args.events, args.classes, args.per_class, args.event_per_class)
        write_section("streaming", body)
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
