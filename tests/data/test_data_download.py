"""download=True: checksummed, resumable, atomic, safe extraction. Served from a local HTTP server in the
test process: nothing touches the internet."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from datafmt_writers import idx_bytes
from spikeforge.data import DatasetNotFoundError, DownloadError, Resource, get_dataset
from spikeforge.data.download import download_file, extract_archive
from spikeforge.data.mnist import MNIST


class _Server:
    def __init__(self, files: dict[str, bytes], ranges: bool = True):
        self.files, self.ranges, self.requests = files, ranges, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if rng and outer.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    body = body[start:]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


PAYLOAD = bytes(range(256)) * 4000
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_verifies_and_moves_atomically(tmp_path):
    with _Server({"/f.bin": PAYLOAD}) as s:
        out = download_file(s.url + "/f.bin", tmp_path / "f.bin", md5=MD5, progress=False)
    assert out.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()


def test_download_resumes_a_partial_file(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:300_000])
    with _Server({"/f.bin": PAYLOAD}) as s:
        download_file(s.url + "/f.bin", tmp_path / "f.bin", md5=MD5, progress=False)
        assert s.requests == [("/f.bin", "bytes=300000-")]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_restarts_when_server_ignores_ranges(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"stale" * 10)
    with _Server({"/f.bin": PAYLOAD}, ranges=False) as s:
        download_file(s.url + "/f.bin", tmp_path / "f.bin", md5=MD5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_download_checksum_mismatch_leaves_nothing(tmp_path):
    with _Server({"/f.bin": PAYLOAD[:-1] + b"X"}) as s:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download_file(s.url + "/f.bin", tmp_path / "f.bin", md5=MD5, progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_download_tries_mirrors_in_order(tmp_path):
    with _Server({"/good.bin": PAYLOAD}) as s:
        download_file([s.url + "/missing.bin", s.url + "/good.bin"], tmp_path / "f.bin", md5=MD5, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_extract_rejects_path_traversal(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.txt", "x")
    (tmp_path / "a.zip").write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match="escapes"):
        extract_archive(tmp_path / "a.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_tar_merges_into_target(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ("d/a.txt", "d/b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            t.addfile(info, io.BytesIO(b"1"))
    (tmp_path / "a.tar.gz").write_bytes(buf.getvalue())
    (tmp_path / "out" / "d").mkdir(parents=True)
    (tmp_path / "out" / "d" / "old.txt").write_text("keep")
    extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "d").iterdir()) == ["a.txt", "b.txt", "old.txt"]


def test_get_dataset_download_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_DATA", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 9), ("t10k", 4)):
        files[f"/{prefix}-images-idx3-ubyte.gz"] = idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=True)
        files[f"/{prefix}-labels-idx1-ubyte.gz"] = idx_bytes(rng.integers(0, 10, n).astype(np.uint8), gz=True)
    with _Server(files) as s:
        res = tuple(Resource(k[1:], (s.url + k,), md5=hashlib.md5(v).hexdigest()) for k, v in files.items())
        monkeypatch.setattr(MNIST, "info", dataclasses.replace(MNIST.info, resources=res))
        with pytest.raises(DatasetNotFoundError, match="download=True"):
            get_dataset("mnist", "train", data_dir=tmp_path / "root")
        ds = get_dataset("mnist", "train", data_dir=tmp_path / "root", download=True)
        assert len(ds) == 9 and ds.root == tmp_path / "root" / "mnist"
        bad = tuple(dataclasses.replace(r, md5="0" * 32) for r in res)
        monkeypatch.setattr(MNIST, "info", dataclasses.replace(MNIST.info, resources=bad))
        with pytest.raises(DatasetNotFoundError, match="download failed: .*checksum mismatch"):
            get_dataset("mnist", "train", data_dir=tmp_path / "other", download=True)


def _mnist_served(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    files = {}
    for prefix, n in (("train", 9), ("t10k", 4)):
        files[f"/{prefix}-images-idx3-ubyte.gz"] = idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=True)
        files[f"/{prefix}-labels-idx1-ubyte.gz"] = idx_bytes(rng.integers(0, 10, n).astype(np.uint8), gz=True)
    return files


def test_cli_datasets_download(tmp_path, monkeypatch, capsys):
    from spikeforge.cli import main

    monkeypatch.setenv("SPIKEFORGE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = _mnist_served()
    root = tmp_path / "root"
    # an interrupted earlier download: the next run resumes it with a Range request
    big = "/train-images-idx3-ubyte.gz"
    (root / "mnist").mkdir(parents=True)
    (root / "mnist" / (big[1:] + ".part")).write_bytes(files[big][:1000])
    with _Server(files) as s:
        res = tuple(Resource(k[1:], (s.url + k,), md5=hashlib.md5(v).hexdigest()) for k, v in files.items())
        monkeypatch.setattr(MNIST, "info", dataclasses.replace(MNIST.info, resources=res))
        with pytest.raises(DatasetNotFoundError, match=f"`spikeforge datasets download mnist --data-dir {root}`"):
            get_dataset("mnist", "train", data_dir=root)
        assert main(["datasets", "download", "mnist", "--data-dir", str(root), "--no-progress"]) == 0
        assert (big, "bytes=1000-") in s.requests and len(s.requests) == 4
        assert f"mnist: downloaded and verified into {root / 'mnist'}" in capsys.readouterr().out
        assert len(get_dataset("mnist", "train", data_dir=root)) == 9 and len(get_dataset("mnist", "test", data_dir=root)) == 4
        s.requests.clear()
        assert main(["datasets", "download", "mnist", "--data-dir", str(root)]) == 0  # nothing to do, nothing fetched
        assert s.requests == [] and "already present" in capsys.readouterr().out
        # no --data-dir: into the first writable root ($SPIKEFORGE_DATA)
        assert main(["datasets", "download", "mnist", "--no-progress"]) == 0
        assert get_dataset("mnist", "test").root == tmp_path / "env" / "mnist"
        # a checksum mismatch: exit 2 and one message naming the file, nothing left behind
        bad = tuple(dataclasses.replace(r, md5="0" * 32) for r in res)
        monkeypatch.setattr(MNIST, "info", dataclasses.replace(MNIST.info, resources=bad))
        capsys.readouterr()
        assert main(["datasets", "download", "mnist", "--data-dir", str(tmp_path / "other"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()  # one line: not the "not found, run datasets download" message
        assert err.startswith("spikeforge datasets: error: mnist: download into ") and "checksum mismatch" in err
        assert "\n" not in err and "rerun the same command" in err, err
        assert not any((tmp_path / "other").rglob("*.gz"))
    assert main(["datasets", "download", "imagenet", "--data-dir", str(tmp_path / "x")]) == 2
    assert "cannot fetch 'imagenet'" in capsys.readouterr().err
    assert main(["datasets", "download", "digits"]) == 0
    assert "nothing to download" in capsys.readouterr().out
