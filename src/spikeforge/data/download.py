"""Downloads: checksummed, resumable (HTTP Range into ``<file>.part``), atomic (``os.replace`` when verified),
and safe archive extraction. Only ever called when a user asks for ``download=True``; tests never reach the
internet (they serve files from a local HTTP server)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .errors import DownloadError

CHUNK = 1 << 20
USER_AGENT = "spikeforge-data/1 (+https://github.com/)"


def file_checksum(path, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, md5: str | None = None, sha256: str | None = None) -> str | None:
    """None when ``path`` matches every given checksum, else a message saying which one differs."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_checksum(path, algo)
            if got.lower() != want.lower():
                return f"{algo} {got} != expected {want}"
    return None


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (resuming from its size when the server allows ranges)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file may already be complete
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        mode = "ab"
        if status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {have}-"):
                raise DownloadError(f"{url}: server resumed at the wrong offset ({crange!r}, have {have} bytes)")
        else:
            mode, have = "wb", 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total and total.isdigit() else None
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], disable=None)
            except ImportError:  # tqdm is a dependency, but a progress bar is never worth failing for
                bar = None
        with open(part, mode) as f:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                if bar is not None:
                    bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        if bar is not None:
            bar.close()


def download_file(urls, dest, md5: str | None = None, sha256: str | None = None, timeout: float = 60.0,
                  progress: bool = True) -> Path:
    """Download ``dest`` from the first URL that works; verify; move into place atomically.

    An interrupted download leaves ``dest.part``; the next call resumes it. A checksum mismatch deletes the
    part file and raises :class:`DownloadError`; ``dest`` only ever appears complete and verified.
    """
    if not (md5 or sha256):
        raise ValueError("download_file needs a checksum (md5 or sha256)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and verify(dest, md5, sha256) is None:
        return dest
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in ([urls] if isinstance(urls, str) else list(urls)):
        for _attempt in range(2):
            try:
                _fetch(url, part, timeout, progress)
            except (urllib.error.URLError, OSError, DownloadError) as e:
                errors.append(f"{url}: {e}")
                break
            bad = verify(part, md5, sha256)
            if bad is None:
                os.replace(part, dest)
                return dest
            part.unlink(missing_ok=True)  # corrupt: start over once from byte 0, then give up on this URL
            errors.append(f"{url}: checksum mismatch ({bad})")
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors))


def _safe_members_zip(zf: zipfile.ZipFile, name):
    for info in zf.infolist():
        p = Path(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise DownloadError(f"{name}: archive member {info.filename!r} escapes the target folder")
    return zf.infolist()


def _merge(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; when both are folders, move ``src``'s entries in one by one."""
    if not dst.exists():
        os.replace(src, dst)
    elif src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def extract_archive(archive, dest) -> None:
    """Extract a ``.zip``/``.tar*`` archive (or gunzip a single ``.gz``) into ``dest``, safely and atomically
    per top-level entry (extracted into a temporary folder beside it first)."""
    import gzip

    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".extract-{archive.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp, members=_safe_members_zip(zf, archive.name))
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        elif archive.suffix == ".gz":
            with gzip.open(archive, "rb") as src, open(tmp / archive.stem, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        else:
            raise DownloadError(f"{archive}: not a zip, tar or gzip archive")
        for child in list(tmp.iterdir()):
            _merge(child, dest / child.name)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise DownloadError(f"could not extract {archive}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_resources(resources, target: Path, progress: bool = True) -> None:
    """Download (and extract) each resource into ``target``."""
    target = Path(target)
    for res in resources:
        path = download_file(res.urls, target / res.filename, res.md5, res.sha256, progress=progress)
        if res.extract:
            marker = target / f".{res.filename}.extracted"
            if not marker.exists():
                extract_archive(path, target)
                marker.write_text("ok\n")
