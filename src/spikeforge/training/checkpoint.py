"""Checkpoints: one safetensors file holding every tensor, plus a JSON sidecar; nothing is ever unpickled.

``save_checkpoint(path, model_state, optim_state, meta)`` writes ``<path>.safetensors`` atomically
(temporary file in the same folder, fsync, ``os.replace``, fsync of the folder): a crash at any point
leaves the previous checkpoint intact. The file embeds the JSON metadata (config, epoch, step, the
optimiser's non-tensor state, RNG state, metric history), so it is self-contained and the rename is the
single commit point; ``<path>.json`` is a readable copy written after it.

Integrity: the metadata carries a SHA-256 digest of every tensor (name, dtype, shape and bytes, in name
order) and the header a SHA-256 digest of the metadata text, both verified by :func:`load_checkpoint`, so
flipped bytes in the tensor data or the metadata (epoch, RNG state, the digest itself) are an error naming
the file instead of a silently different model or resume. A checkpoint is never written with a NaN or infinite value in
a floating-point tensor: :func:`save_checkpoint` raises :class:`NonFiniteCheckpointError` instead, so the
file on disk stays the last good one.

Example:
    >>> import tempfile, torch
    >>> from spikeforge.training.checkpoint import save_checkpoint, load_checkpoint
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Linear(2, 3)
    >>> opt = torch.optim.Adam(net.parameters())
    >>> net(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> _ = save_checkpoint(d + "/last", net.state_dict(), opt.state_dict(), {"epoch": 1})
    >>> ck = load_checkpoint(d + "/last")
    >>> ck["meta"]["epoch"], torch.equal(ck["model"]["weight"], net.weight)
    (1, True)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "spikeforge-checkpoint/1"
META_DIGEST_KEY = "spikeforge_sha256"  # header entry: SHA-256 of the metadata text (absent in older checkpoints)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class NonFiniteCheckpointError(ValueError):
    """A tensor to be saved holds NaN or inf; nothing was written."""


def tensor_digest(tensors: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def nonfinite_names(tensors: dict) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    names = [k for k, v in tensors.items() if v.is_floating_point() and v.numel()]
    if not names:
        return []
    # the inf-norm is NaN or inf exactly when a value is, and cannot overflow
    norms = torch._foreach_norm([tensors[k].detach() for k in names], float("inf"))
    bad = ~torch.isfinite(torch.stack([n.float().cpu() for n in norms]))
    return [k for k, b in zip(names, bad.tolist()) if b]


def _named(e: OSError, path) -> OSError:
    """``e`` naming ``path``: a failed write or fsync names no file, a failed ``mkstemp`` its temporary file."""
    return type(e)(e.errno, e.strerror, str(path)) if e.errno is not None else e


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _named(e, path) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a run folder's files follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - folders cannot be fsynced on some filesystems
        pass


def _read_umask() -> int:
    mask = os.umask(0o22)  # reading the umask means setting it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    _atomic_write(Path(path), text.encode())


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def _split_optim(optim_state: dict, tensors: dict) -> dict:
    """Tensors of the optimiser state go to ``tensors``; the rest is returned as JSON-able data."""
    state_meta = {}
    for idx, st in optim_state.get("state", {}).items():
        entry = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                name = f"optim.{idx}.{k}"
                tensors[name] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": name}
            else:
                entry[k] = {"value": _jsonable(v)}
        state_meta[str(idx)] = entry
    return {"state": state_meta, "param_groups": _jsonable(optim_state.get("param_groups", []))}


def _join_optim(meta: dict, tensors: dict) -> dict:
    state = {}
    for idx, entry in meta["state"].items():
        state[int(idx)] = {k: (tensors[e["tensor"]] if "tensor" in e else e["value"]) for k, e in entry.items()}
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):  # torch keeps betas as a tuple; JSON made it a list
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def rng_state(tensors: dict) -> dict:
    """Capture torch (CPU and CUDA), numpy and Python RNG states: tensors into ``tensors``, the rest returned."""
    tensors["rng.torch"] = torch.get_rng_state()
    n_cuda = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
        n_cuda = torch.cuda.device_count()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    return {"cuda_devices": n_cuda, "numpy": [kind, int(pos), int(has_gauss), float(cached)],
            "python": [py[0], list(py[1]), py[2]]}


def restore_rng_state(meta: dict, tensors: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if meta.get("cuda_devices") and torch.cuda.is_available():
        states = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"]) if f"rng.cuda.{i}" in tensors]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))


def save_checkpoint(path, model_state: dict, optim_state: dict | None, meta: dict,
                    save_rng: bool = True) -> Path:
    """Write ``<path>.safetensors`` (atomically) and its ``<path>.json`` sidecar; returns the safetensors path."""
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        if not torch.is_tensor(v):
            raise ValueError(f"model_state[{k!r}]: expected a tensor, got {type(v).__name__}")
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    full = {"format": FORMAT, **_jsonable(meta)}
    if optim_state is not None:
        full["optimizer"] = _split_optim(optim_state, tensors)
    if save_rng:
        full["rng"] = rng_state(tensors)
    # safetensors refuses tensors sharing memory; clone the few that do (e.g. tied weights)
    seen = {}
    for k, v in list(tensors.items()):
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr is not None and ptr in seen:
            tensors[k] = v.clone()
        seen[ptr] = k
    bad = nonfinite_names(tensors)
    if bad:
        raise NonFiniteCheckpointError(f"{path}: not saved, {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); "
                                       "the previous checkpoint is kept")
    full["tensor_sha256"] = tensor_digest(tensors)
    meta_text = json.dumps(full)
    st_path = path.with_name(path.name + ".safetensors")
    _atomic_write(st_path, save(tensors, metadata={"spikeforge": meta_text, META_DIGEST_KEY: _sha256(meta_text)}))
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(full, indent=1) + "\n")
    return st_path


def checkpoint_exists(path) -> bool:
    path = Path(path)
    return path.with_name(path.name + ".safetensors").is_file()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`: ``{"model", "optimizer", "meta", "tensors"}``.

    Only safetensors and JSON are parsed (no pickle). ``optimizer`` is ``None`` when none was saved. A
    truncated or corrupt file, foreign metadata or a tensor digest mismatch raise one ``ValueError`` naming
    the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    st_path = path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")
    if not st_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(st_path)!r} does not exist")
    tensors = {}
    try:
        with safe_open(str(st_path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{st_path}: not a readable checkpoint (truncated or corrupt: {reason})") from None
    if "spikeforge" not in header:
        raise ValueError(f"{st_path}: not a spikeforge checkpoint (no 'spikeforge' metadata in the header)")
    if META_DIGEST_KEY in header and header[META_DIGEST_KEY] != _sha256(header["spikeforge"]):
        raise ValueError(f"{st_path}: the checkpoint's metadata does not match its SHA-256 digest (the file is "
                         "corrupt); use another checkpoint of the run or retrain")
    try:
        meta = json.loads(header["spikeforge"])
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{st_path}: the checkpoint's 'spikeforge' metadata is not a JSON object (corrupt file)")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{st_path}: checkpoint format {meta.get('format')!r}; this spikeforge reads {FORMAT!r}")
    digest = meta.get("tensor_sha256")
    if digest is not None and digest != tensor_digest(tensors):
        raise ValueError(f"{st_path}: tensor data does not match the SHA-256 digest in its metadata (the file is "
                         "corrupt); use another checkpoint of the run or retrain")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        optim = _join_optim(meta["optimizer"], tensors) if "optimizer" in meta else None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{st_path}: optimizer state in the metadata is malformed ({type(e).__name__}: {e})") from None
    if str(map_location) != "cpu":
        model = {k: v.to(map_location) for k, v in model.items()}
    return {"model": model, "optimizer": optim, "meta": meta, "tensors": tensors}


def load_model_state(model: torch.nn.Module, state: dict, source) -> None:
    """``model.load_state_dict(state)``, or one ``ValueError`` naming ``source`` and what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise ValueError(f"{source}: checkpoint does not fit the model {type(model).__name__} "
                         f"(saved from another model or config?); {'; '.join(parts)}")
    model.load_state_dict(state)
