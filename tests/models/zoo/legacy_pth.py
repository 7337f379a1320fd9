"""A writer of PyTorch's legacy (non-zip) ``.pth`` files that needs no torch.

``torch.save(obj, f, _use_new_zipfile_serialization=False)`` writes five pickles
(magic number, protocol version, system information, the object, the sorted
storage keys) and then, per key, an int64 element count and the storage bytes.
Tensors pickle as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, backward_hooks)`` and storages as persistent ids
``('storage', torch.<Type>Storage, key, location, numel, view)``.

To produce the same bytes, fake ``torch`` and ``torch._utils`` modules are put
in ``sys.modules`` only while pickling (so pickle's ``save_global`` can find
the names), and removed again before anything is read.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
from typing import Any

import numpy as np
import pytest

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}

STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks):
    raise AssertionError("the fake torch is only for pickling; nothing may call it")


def _fake_modules() -> dict[str, types.ModuleType]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in STORAGE_CLASSES.values():
        setattr(torch, name.__name__, name)
    return {"torch": torch, "torch._utils": utils}


def _storage_class(name: str) -> type:
    cls = type(name, (), {})
    cls.__module__ = "torch"
    cls.__qualname__ = name
    return cls


# ComplexFloatStorage is a real torch type the reader does not allow-list.
STORAGE_CLASSES = {name: _storage_class(name) for name in [*STORAGE_NAMES.values(), "ComplexFloatStorage"]}


class Storage:
    """A torch storage: a flat array of one dtype, saved under ``key``.

    ``pid`` replaces the whole persistent id (for malformed files); ``type_name``,
    ``numel`` and ``view`` replace single fields of it.
    """

    def __init__(self, key: str, data, *, type_name=None, numel=None, view=None, pid=None):
        self.key = key
        self.data = np.ascontiguousarray(np.asarray(data)).reshape(-1)
        self.type_name = type_name if type_name is not None else STORAGE_NAMES[self.data.dtype]
        self.numel = self.data.size if numel is None else numel
        self.view = view
        self.pid = pid

    def persistent_id(self):
        if self.pid is not None:
            return self.pid
        storage_type = STORAGE_CLASSES.get(self.type_name, self.type_name)
        return ("storage", storage_type, self.key, "cpu", self.numel, self.view)

    def blob(self) -> bytes:
        data = self.data.astype(self.data.dtype.newbyteorder("<"), copy=False)
        return struct.pack("<q", self.data.size) + data.tobytes()


class Tensor:
    """A tensor: a strided view of a :class:`Storage` (offset, shape, stride in elements)."""

    def __init__(self, storage: Storage, offset: int, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def __reduce__(self):
        args = (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class RawPid:
    """An object pickled as the persistent id ``value`` (to write ids that are not storages)."""

    def __init__(self, value):
        self.value = value


class Call:
    """Pickles as ``func(*args)``: a REDUCE of any global, for hostile files."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def tensor(array, key: str) -> Tensor:
    """A C-contiguous tensor with its own storage ``key`` holding ``array``."""
    array = np.asarray(array)
    stride, step = [], 1
    for n in reversed(array.shape):
        stride.insert(0, step)
        step *= n
    return Tensor(Storage(key, array), 0, array.shape, stride)


class _Pickler(pickle.Pickler):
    def __init__(self, fh, protocol):
        super().__init__(fh, protocol=protocol)
        self.storages: dict[str, Storage] = {}

    def persistent_id(self, obj):
        if isinstance(obj, RawPid):
            return obj.value
        if isinstance(obj, Storage):
            self.storages.setdefault(obj.key, obj)
            return obj.persistent_id()
        return None


def chunks(
    state: Any,
    *,
    protocol: int = 2,
    magic: Any = MAGIC,
    version: Any = PROTOCOL_VERSION,
    sys_info: Any = None,
    keys: Any = None,
) -> list[bytes]:
    """The pieces of a legacy file: five pickles, then one blob per storage (sorted keys).

    ``keys`` replaces the pickled storage key list (the blobs still follow the
    real, sorted keys).
    """
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _fake_modules().items():
            mp.setitem(sys.modules, name, module)
        fh = io.BytesIO()
        pickler = _Pickler(fh, protocol)
        pickler.dump(state)
        state_pickle = fh.getvalue()
    real_keys = sorted(pickler.storages)
    return [
        pickle.dumps(magic, protocol=protocol),
        pickle.dumps(version, protocol=protocol),
        pickle.dumps(SYS_INFO if sys_info is None else sys_info, protocol=protocol),
        state_pickle,
        pickle.dumps(real_keys if keys is None else keys, protocol=protocol),
        *(pickler.storages[k].blob() for k in real_keys),
    ]


def write(state: Any, **kwargs) -> bytes:
    """The bytes of ``torch.save(state)`` in the legacy format (see :func:`chunks`)."""
    return b"".join(chunks(state, **kwargs))
