"""Read PyTorch's legacy ``.pth`` state-dict files without torch and without running code.

A legacy (pre-zip) PyTorch file is five pickles followed by raw tensor storages:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version, 1001;
3. a dict of system information (byte order, C type sizes);
4. the state dict itself, whose tensors refer to storages through pickle's
   *persistent ids* ``('storage', <type>, key, location, numel, view)``;
5. the list of storage keys, in the order their bytes follow;

then, for each key, an int64 element count and the storage's bytes.

Pickle can call any importable function, so an ordinary ``pickle.load`` of such a
file runs whatever the file asks for. :class:`_AllowListUnpickler` resolves only
the few names a state dict needs (``collections.OrderedDict``, the tensor
rebuild functions, the storage types) to inert local stand-ins, and refuses every
other global with :class:`UnsafeFileError` before anything is called. Tensors are
rebuilt as NumPy arrays from the storage bytes, with every offset, shape and
stride checked against the storage size.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

__all__ = ["UnsafeFileError", "read_torch_state_dict"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001

# torch storage type name -> little-endian NumPy dtype.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafeFileError(ValueError):
    """The file is not a plain tensor state dict: it is corrupt, or asks to run code."""


class _StorageType(NamedTuple):
    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    key: str
    dtype: np.dtype
    numel: int


class _TensorRef(NamedTuple):
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise UnsafeFileError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: records, never computes."""
    if not isinstance(storage, _StorageRef):
        raise UnsafeFileError(f"tensor storage must be a persistent storage reference, got {type(storage)}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise UnsafeFileError(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise UnsafeFileError(f"tensor size {shape} and stride {strides} differ in length")
    numel = int(np.prod(shape, dtype=object))
    if numel > storage.numel:
        raise UnsafeFileError(
            f"tensor of size {shape} has more elements than its storage ({storage.numel}); expanded "
            "tensors are not supported (a few bytes could ask for any amount of memory)"
        )
    if all(shape):
        last = storage_offset + sum((s - 1) * st for s, st in zip(shape, strides, strict=True))
        if last >= storage.numel:
            raise UnsafeFileError(
                f"tensor of size {shape}, stride {strides} at offset {storage_offset} reads past the end "
                f"of its storage of {storage.numel} elements"
            )
    return _TensorRef(storage, storage_offset, shape, strides)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
}


class _AllowListUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed names, to inert stand-ins."""

    def __init__(self, fh: BinaryIO):
        super().__init__(fh)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"refusing to load: the file asks for {module}.{name}, which is not one of the "
                "tensor-building names a state dict needs; nothing was executed"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeFileError(f"unsupported persistent id {pid!r:.80}; only tensor storages are read")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise UnsafeFileError(f"malformed storage reference {pid!r:.80}")
        if type(numel) is not int or numel < 0:
            raise UnsafeFileError(f"storage {key!r} has an invalid element count {numel!r}")
        if view is not None:
            raise UnsafeFileError(f"storage {key!r} is a view of another storage, which is not supported")
        ref = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if ref != _StorageRef(key, storage_type.dtype, numel):
            raise UnsafeFileError(f"storage {key!r} is declared twice with different types or sizes")
        return ref


def _load_plain(fh: BinaryIO, what: str) -> Any:
    try:
        return _AllowListUnpickler(fh).load()
    except UnsafeFileError:
        raise
    except Exception as err:  # any malformed pickle: EOF, bad opcode, bad REDUCE arguments
        raise UnsafeFileError(
            f"corrupt file: could not read the {what} ({type(err).__name__}: {err})"
        ) from None


def _materialise(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        flat = arrays[obj.storage.key]
        itemsize = flat.dtype.itemsize
        if not all(obj.shape):
            return np.zeros(obj.shape, flat.dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[obj.offset :], shape=obj.shape, strides=[s * itemsize for s in obj.stride], writeable=False
        )
        return np.array(view, dtype=flat.dtype.newbyteorder("="))
    if isinstance(obj, dict):
        return {k: _materialise(v, arrays) for k, v in obj.items()}
    return obj


def read_torch_state_dict(path: str | Path | bytes) -> dict[str, np.ndarray]:
    """Read a legacy PyTorch state-dict file into NumPy arrays, executing nothing.

    Args:
      path: a ``.pth`` file written by ``torch.save`` in the legacy (non-zip)
        format, holding a dict of tensors, or that file's bytes.

    Returns:
      A dict mapping each parameter name to a NumPy array with the tensor's
      shape and dtype (native byte order). Nested dicts are flattened with ``.``.

    Raises:
      UnsafeFileError: the file is corrupt or truncated, is in another format, or
        refers to any Python name other than the allow-listed tensor builders
        (for instance ``os.system``); in that case nothing from it was called.
    """
    data = bytes(path) if isinstance(path, bytes | bytearray) else Path(path).read_bytes()
    path = "the file" if isinstance(path, bytes | bytearray) else path
    if data[:2] == b"PK":
        raise UnsafeFileError(f"{path} is a zip-format torch file; only the legacy format is supported")
    fh = io.BytesIO(data)
    if _load_plain(fh, "magic number") != _MAGIC:
        raise UnsafeFileError(f"{path} is not a PyTorch legacy file (bad magic number)")
    if _load_plain(fh, "protocol version") != _PROTOCOL:
        raise UnsafeFileError(f"{path} has an unsupported PyTorch protocol version")
    info = _load_plain(fh, "system information")
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise UnsafeFileError(f"{path} was not written on a little-endian machine, which is not supported")
    unpickler = _AllowListUnpickler(fh)
    try:
        state = unpickler.load()
    except UnsafeFileError:
        raise
    except Exception as err:
        raise UnsafeFileError(
            f"corrupt file: could not read the state dict ({type(err).__name__}: {err})"
        ) from None
    keys = _load_plain(fh, "storage keys")
    if (
        not isinstance(keys, list)
        or not all(isinstance(k, str) for k in keys)
        or sorted(keys) != sorted(unpickler.storages)
    ):
        raise UnsafeFileError(f"{path}: the storage list does not match the storages the tensors use")
    arrays = {}
    for key in keys:
        ref = unpickler.storages[key]
        header = fh.read(8)
        if len(header) != 8:
            raise UnsafeFileError(f"corrupt file: truncated before storage {key!r}")
        (count,) = struct.unpack("<q", header)
        if count != ref.numel:
            raise UnsafeFileError(
                f"corrupt file: storage {key!r} holds {count} elements, expected {ref.numel}"
            )
        if count * ref.dtype.itemsize > len(data) - fh.tell():
            raise UnsafeFileError(f"corrupt file: storage {key!r} is truncated")
        raw = fh.read(count * ref.dtype.itemsize)
        if len(raw) != count * ref.dtype.itemsize:
            raise UnsafeFileError(f"corrupt file: storage {key!r} is truncated")
        arrays[key] = np.frombuffer(raw, dtype=ref.dtype)
    if fh.read(1):
        raise UnsafeFileError(f"corrupt file: {path} has bytes after its last storage")
    if not isinstance(state, dict):
        raise UnsafeFileError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _flatten(_materialise(state, arrays))


def _flatten(tree: dict, prefix: str = "", out: dict | None = None) -> dict[str, np.ndarray]:
    out = {} if out is None else out
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if name in out:
            raise UnsafeFileError(f"two entries flatten to the same name {name!r}")
        if isinstance(v, dict):
            _flatten(v, name + ".", out)
        elif isinstance(v, np.ndarray):
            out[name] = v
        else:
            raise UnsafeFileError(f"entry {name!r} is a {type(v).__name__}, not a tensor")
    return out
