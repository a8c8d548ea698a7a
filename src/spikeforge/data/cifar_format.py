"""CIFAR-10/100 files: the python-pickle batches and the binary version.

The python version of CIFAR is a pickle *by definition* (``cifar-10-batches-py/data_batch_1`` etc. are what
``cPickle.dump`` wrote), so it cannot be read without unpickling. :class:`_RestrictedUnpickler` never
imports anything: ``find_class`` refuses every global except the few names numpy and Python 2 use to
describe an ndarray and a byte string, and even for those returns an inert placeholder that records its
arguments, not the real function. After loading, only the expected keys are taken, and each array is
rebuilt by hand from the recorded (shape, dtype, bytes) after checking them.

Binary version: records of 1 label byte (CIFAR-10) or 2 (coarse, fine; CIFAR-100) + 3072 pixel bytes
(1024 red, 1024 green, 1024 blue; row-major 32x32).
"""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np

from .errors import CorruptFileError

PIXELS = 3 * 32 * 32

# (module, name) pairs numpy / Python 2 pickles use for an ndarray, its dtype and bytes; nothing else is allowed
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
}
_SIMPLE_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


class _Global:
    """Inert stand-in for an allowed global: calling it records the call, nothing runs."""

    def __init__(self, kind):
        self.kind = kind

    def __call__(self, *args):
        return _Call(self.kind, args)


class _Call:
    """A recorded ``global(*args)`` plus the state BUILD gives it."""

    def __init__(self, kind, args):
        self.kind, self.args, self.state = kind, args, None

    def __setstate__(self, state):
        self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        kind = _ALLOWED.get((module, name))
        if kind is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: CIFAR pickles hold only arrays and lists")
        return _Global(kind)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def _load_pickle(raw: bytes, name):
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except CorruptFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, UnicodeDecodeError, MemoryError, RecursionError, struct.error) as e:
        raise CorruptFileError(name, f"not a valid CIFAR pickle ({type(e).__name__}: {e})") from None


def _as_bytes(obj, name, what) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, _Call) and obj.kind == "encode" and len(obj.args) == 2 and isinstance(obj.args[0], str) \
            and obj.args[1] in ("latin1", "latin-1"):
        try:
            return obj.args[0].encode("latin1")
        except UnicodeEncodeError:
            pass
    raise CorruptFileError(name, f"{what}: expected a byte string")


def _as_str(obj) -> str | None:
    if isinstance(obj, bytes):
        return obj.decode("latin1")
    if isinstance(obj, str):
        return obj
    return None


def _dtype(obj, name) -> np.dtype:
    if not (isinstance(obj, _Call) and obj.kind == "dtype" and obj.args):
        raise CorruptFileError(name, "array dtype is not a numpy dtype record")
    code = _as_str(obj.args[0])
    if code not in _SIMPLE_DTYPES:
        raise CorruptFileError(name, f"array dtype {code!r} is not a plain numeric type")
    order = "<"
    if isinstance(obj.state, tuple) and len(obj.state) > 1:
        o = _as_str(obj.state[1])
        if o in ("<", ">", "|", "="):
            order = "<" if o in ("|", "=") else o
    return np.dtype(code).newbyteorder(order) if np.dtype(code).itemsize > 1 else np.dtype(code)


def _array(obj, name, key) -> np.ndarray:
    """Rebuild an ndarray from a recorded ``_reconstruct(ndarray, (0,), b'b')`` + BUILD state."""
    if isinstance(obj, list):
        try:
            return np.asarray(obj, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise CorruptFileError(name, f"{key!r}: list is not all integers") from None
    if not (isinstance(obj, _Call) and obj.kind == "reconstruct" and obj.args
            and isinstance(obj.args[0], _Global) and obj.args[0].kind == "ndarray"):
        raise CorruptFileError(name, f"{key!r} is not a numpy array or a list")
    st = obj.state
    if not (isinstance(st, tuple) and len(st) == 5):
        raise CorruptFileError(name, f"{key!r}: numpy array state is not (version, shape, dtype, fortran, data)")
    _, shape, dt, fortran, data = st
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and 0 <= s < 2**40 for s in shape) and len(shape) <= 4):
        raise CorruptFileError(name, f"{key!r}: bad array shape {shape!r}")
    dtype = _dtype(dt, name)
    data = _as_bytes(data, name, f"{key!r} array data")
    count = 1
    for s in shape:
        count *= s
    if len(data) != count * dtype.itemsize:
        raise CorruptFileError(name, f"{key!r}: shape {shape} needs {count * dtype.itemsize} bytes, array holds {len(data)}")
    arr = np.frombuffer(data, dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def _get(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def decode_cifar_pickle(raw: bytes, name="<bytes>", label_keys=("labels",)) -> tuple[np.ndarray, dict]:
    """A CIFAR python batch: ``(images uint8 [N, 3, 32, 32], {label_key: int64 [N]})``."""
    obj = _load_pickle(raw, name)
    if not isinstance(obj, dict):
        raise CorruptFileError(name, f"top-level object is a {type(obj).__name__}, not the batch dict")
    data = _get(obj, "data")
    if data is None:
        raise CorruptFileError(name, "the batch dict has no 'data' key")
    x = _array(data, name, "data")
    if x.ndim != 2 or x.shape[1] != PIXELS or x.dtype != np.uint8:
        raise CorruptFileError(name, f"'data' must be uint8 [N, {PIXELS}], got {x.dtype} {list(x.shape)}")
    labels = {}
    for key in label_keys:
        v = _get(obj, key)
        if v is None:
            raise CorruptFileError(name, f"the batch dict has no {key!r} key")
        y = _array(v, name, key).astype(np.int64)
        if y.shape != (x.shape[0],):
            raise CorruptFileError(name, f"{key!r} has {y.size} entries for {x.shape[0]} images")
        labels[key] = y
    return x.reshape(-1, 3, 32, 32), labels


def decode_cifar_meta(raw: bytes, name="<bytes>", key="label_names") -> list[str]:
    """Class names from ``batches.meta`` / ``meta``."""
    obj = _load_pickle(raw, name)
    v = _get(obj, key) if isinstance(obj, dict) else None
    if not isinstance(v, list) or not all(_as_str(s) is not None for s in v):
        raise CorruptFileError(name, f"meta file has no list of strings under {key!r}")
    return [_as_str(s) for s in v]


def decode_cifar_binary(raw: bytes, name="<bytes>", label_bytes=1, num_classes=(10,)) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR binary batch: ``(images uint8 [N, 3, 32, 32], labels uint8 [N, label_bytes])``."""
    rec = label_bytes + PIXELS
    n, rem = divmod(len(raw), rec)
    if rem:
        raise CorruptFileError(name, f"{len(raw)} bytes is not a whole number of {rec}-byte records: truncated file")
    a = np.frombuffer(raw, np.uint8).reshape(n, rec)
    labels = a[:, :label_bytes]
    for j, k in enumerate(num_classes):
        bad = labels[:, j] >= k
        if bad.any():
            i = int(np.argmax(bad))
            raise CorruptFileError(name, f"record {i} has label {int(labels[i, j])}, outside 0..{k - 1}: not a CIFAR file?")
    return a[:, label_bytes:].reshape(n, 3, 32, 32), labels
