"""Run folders: ``runs/<name>/`` with ``config.yaml``, ``run.json`` (code version, device, command),
``metrics.jsonl`` (one JSON object per epoch), ``checkpoints/{last,best}.safetensors`` (+ ``.json``),
``plots/*.png`` and ``report.md``.

A run folder is marked by the file ``.spikeforge-run``, written first when the folder is created. A non-empty
folder is never reused unless the caller resumes it or passes ``force``, and ``force`` empties only a folder
that is recognisably a run (its marker, or the ``run.json`` of runs made before the marker existed): any
other folder is refused, whatever its contents.

Example:
    >>> import tempfile
    >>> from spikeforge.training.runs import RunDir
    >>> run = RunDir.create(tempfile.mkdtemp() + "/demo")
    >>> run.append_metrics({"epoch": 1, "test_acc": 0.5}); run.read_metrics()
    [{'epoch': 1, 'test_acc': 0.5}]
    >>> RunDir.create(run.path)
    Traceback (most recent call last):
    ...
    ValueError: run folder ... is not empty; pass --resume to continue it or --force to overwrite it
    >>> import os; os.remove(run.path / RunDir.MARKER)
    >>> RunDir.create(run.path, force=True)
    Traceback (most recent call last):
    ...
    ValueError: --force: ... is not a spikeforge run folder (no .spikeforge-run marker); it is left untouched: choose an empty or new folder with --out
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from pathlib import Path

from .checkpoint import atomic_write_text


def code_version() -> dict:
    """spikeforge's version and, when the package sits in a git checkout, the commit (``+dirty`` if modified)."""
    from .. import __version__

    out = {"spikeforge": __version__, "git_commit": None}
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                                   capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                out["git_commit"] += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    import torch

    out["torch"] = torch.__version__
    return out


def default_run_name(dataset: str, model: str) -> str:
    return f"{dataset}-{model}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """One run's folder and the files in it."""

    MARKER = ".spikeforge-run"

    def __init__(self, path):
        self.path = Path(path)

    @staticmethod
    def is_run_folder(path) -> bool:
        """``path`` holds the run marker, or a ``run.json`` written by spikeforge (older runs)."""
        path = Path(path)
        if (path / RunDir.MARKER).is_file():
            return True
        try:
            info = json.loads((path / "run.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(info, dict) and isinstance(info.get("code"), dict) and "spikeforge" in info["code"]

    # ------------------------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path, force: bool = False) -> "RunDir":
        """A fresh run folder holding only its marker; a non-empty one is refused unless ``force`` and it is
        a run folder (then it is emptied)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"run folder {str(path)!r} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if not force:
                raise ValueError(f"run folder {str(path)!r} is not empty; pass --resume to continue it or "
                                 "--force to overwrite it")
            if not cls.is_run_folder(path):
                raise ValueError(f"--force: {str(path)!r} is not a spikeforge run folder (no {cls.MARKER} marker); "
                                 "it is left untouched: choose an empty or new folder with --out")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / cls.MARKER, json.dumps({"spikeforge_run": 1}) + "\n")
        return cls(path)

    @classmethod
    def open(cls, path) -> "RunDir":
        """An existing run folder (must hold ``config.yaml``)."""
        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a run folder (no config.yaml in it)")
        return cls(path)

    # ------------------------------------------------------------------------------------ files
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def load_config(self):
        from ..config import TrainConfig

        return TrainConfig.from_yaml(self.config_path)

    def write_json(self, name: str, obj) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=1) + "\n")

    def read_json(self, name: str):
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else None

    def append_metrics(self, record: dict) -> None:
        """Append one epoch's record (one line, flushed and fsynced)."""
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a failed write or fsync names no file
            if e.filename is None and e.errno is not None:
                raise OSError(e.errno, e.strerror, str(self.metrics_path)) from None
            raise

    def read_metrics(self, strict: bool = True) -> list[dict]:
        """Every complete record. A torn last line (a crash mid-write) is ignored; a damaged earlier line is a
        ``ValueError`` naming the file and line (so nothing is truncated after it), or skipped when not ``strict``."""
        if not self.metrics_path.is_file():
            return []
        lines = self.metrics_path.read_text(errors="replace").splitlines()
        out = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = None
            if isinstance(rec, dict):
                out.append(rec)
            elif strict and i < len(lines):
                raise ValueError(f"{self.metrics_path}: line {i} is not valid JSON (a damaged epoch record); repair "
                                 "or delete that line (the file was left as it is)")
        return out

    def truncate_metrics(self, epochs_done: int) -> list[dict]:
        """Keep only records of epochs ``<= epochs_done`` (what the checkpoint knows); returns them."""
        keep = [r for r in self.read_metrics() if r.get("epoch", 0) <= epochs_done]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))
        return keep
