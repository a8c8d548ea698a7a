"""``spikeforge datasets [--data-dir D] [--details]``: list datasets, their sizes and expected files, and
where they are looked for (only ``--data-dir`` when given, else ``$SPIKEFORGE_DATA``, then the user cache).

``spikeforge datasets download NAME [--data-dir D]``: fetch a dataset from its official source, checked
against its checksums; an interrupted download resumes where it stopped."""

from __future__ import annotations

import argparse


def _shape(info) -> str:
    if info.kind == "static":
        return "x".join(str(v) for v in info.input_shape)
    w, h, c = info.sensor_size
    return f"{w}x{h}x{c} sensor"


def _sizes(info) -> str:
    return " ".join(f"{s}={n}" for s, n in info.num_samples.items()) or "-"


def _present(name, cls, info, found, data_dir, problems) -> str:
    """Samples actually on disk per split (0 where a split is missing)."""
    parts = []
    for split in info.splits:
        if split not in found:
            parts.append(f"{split}=0")
            continue
        try:
            parts.append(f"{split}={cls.count_samples(split, data_dir)}")
        except (ValueError, OSError) as e:  # a corrupt or unreadable file: say so below the table
            parts.append(f"{split}=unreadable")
            problems.append(f"unreadable: {name} {split}: {e}")
    return " ".join(parts)


def run(args) -> int:
    from .base import pretty_pattern
    from .paths import resolve_data_dirs
    from .registry import DATASETS, get_info

    roots = resolve_data_dirs(args.data_dir)
    print("data folders searched, in order: " + ", ".join(str(r) for r in roots))
    rows, problems = [], []
    for name in DATASETS.list():
        info = get_info(name)
        cls = DATASETS.get(name).factory
        if not info.files:
            where, present = "embedded", _sizes(info)
        else:
            found = {}
            for split in info.splits:
                folder, _ = cls.find(split, args.data_dir)
                if folder is not None:
                    found[split] = folder
            where = ", ".join(f"{s}: {p}" for s, p in found.items()) if found else "missing"
            present = _present(name, cls, info, found, args.data_dir, problems) if found else "-"
        rows.append((name, info.kind, str(info.num_classes), _shape(info), _sizes(info), present, where))
    header = ("name", "kind", "classes", "shape", "full set", "on disk", "found")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header) - 1)]
    for r in [header] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[-1])
    for p in problems:
        print(p)
    if args.details:
        for name in DATASETS.list():
            info = get_info(name)
            cls = DATASETS.get(name).factory
            print(f"\n{name}: {info.description}")
            print(f"  url: {info.url}")
            if info.manual_download:
                print(f"  manual download: {info.manual_download}")
            for split in info.splits:
                files = ", ".join(pretty_pattern(p) for p in cls.expected_files(split)) if info.files else "(none)"
                print(f"  {split}: {files}")
            if info.files:
                _, searched = cls.find(info.splits[0], args.data_dir)
                print("  folders searched: " + ", ".join(str(p) for p in searched))
    return 0


def download(args) -> int:
    from .errors import DatasetNotFoundError, DownloadError
    from .paths import writable_data_dir
    from .registry import DATASETS, get_info

    info = get_info(args.name)  # an unknown name raises, listing the known ones
    cls = DATASETS.get(args.name).factory
    if not info.files:
        print(f"{info.name}: ships inside spikeforge, nothing to download")
        return 0
    found = {split: cls.find(split, args.data_dir)[0] for split in info.splits}
    if all(found.values()):
        print(f"{info.name}: already present: " + ", ".join(f"{s}: {p}" for s, p in found.items()))
        return 0
    try:
        target = cls.fetch_files(args.data_dir, progress=not args.no_progress)
    except DatasetNotFoundError as e:
        if not isinstance(e.__cause__, DownloadError):  # e.g. no download source: the message says where to get it
            raise
        where = cls.download_target(writable_data_dir(args.data_dir))
        raise DownloadError(f"{info.name}: download into {where} failed: {e.__cause__}; rerun the same command to "
                            "resume it") from None
    found = {split: cls.find(split, args.data_dir)[0] for split in info.splits}
    missing = [s for s, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(f"{info.name}: downloaded into {target}, but split(s) {', '.join(missing)} are still "
                                f"missing; expected: " + ", ".join(cls.expected_files(missing[0])))
    print(f"{info.name}: downloaded and verified into {target}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "datasets", help="list datasets, their files and where they are looked for; download one",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="the only data folder searched (default: $SPIKEFORGE_DATA, cache)")
    p.add_argument("--details", action="store_true", help="also print expected files, folders searched and URLs")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="datasets_command", metavar="{download}")
    d = sub.add_parser("download", help="fetch a dataset (checksummed, resumable)",
                       description="Fetch NAME from its official source into --data-dir (else the first writable "
                       "of $SPIKEFORGE_DATA and the cache), verify every file's checksum and extract archives. "
                       "Rerunning resumes an interrupted download.")
    d.add_argument("name", metavar="NAME", help="dataset name, as listed by `spikeforge datasets`")
    d.add_argument("--data-dir", default=argparse.SUPPRESS, help="download into this folder")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=download)
