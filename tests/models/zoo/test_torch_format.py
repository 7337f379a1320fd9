"""The allow-list reader of legacy ``.pth`` files: exact tensors, no code run, corruption refused.

Files are written by :mod:`legacy_pth` with fake ``torch`` modules present only
while pickling; every read happens with ``torch`` unimportable.
"""

import collections
import importlib
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from legacy_pth import MAGIC, SYS_INFO, Call, RawPid, Storage, Tensor, chunks, tensor, write

from jaxtransfer.zoo import UnsafeFileError, read_torch_state_dict

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
    """``import torch`` fails for the whole test (the writer installs fakes only while pickling)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch._utils", None)


def sample(dtype, shape, rng):
    """Random values of ``dtype``, with the extremes (and for floats -0, inf, NaN) mixed in."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) > 0.5)
    if dtype.kind == "f":
        values = np.asarray(rng.standard_normal(shape)).astype(dtype)
        special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).tiny, np.finfo(dtype).max])
    else:
        info = np.iinfo(dtype)
        values = np.asarray(rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True))
        special = np.array([info.min, info.max, 0])
    flat = values.reshape(-1)  # a view
    flat[: min(flat.size, special.size)] = special[: flat.size].astype(dtype)
    return values


def assert_same(actual, expected):
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.dtype.isnative
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    assert actual.tobytes() == np.ascontiguousarray(expected).tobytes()  # bit-exact: -0.0, NaN payloads


def assert_all_same(result, expected):
    assert list(result) == list(expected)
    for name in expected:
        assert_same(result[name], expected[name])


# ---------------------------------------------------------------- round trips


def test_torch_is_not_importable_while_reading():
    data = write({"w": tensor(np.arange(3, dtype=np.float32), "0")})
    assert sys.modules["torch"] is None
    with pytest.raises(ImportError):
        importlib.import_module("torch")
    with pytest.raises(ImportError):
        importlib.import_module("torch._utils")
    assert_same(read_torch_state_dict(data)["w"], np.arange(3, dtype=np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4), (1, 5, 1)], ids=str)
def test_round_trip_dtypes(dtype, shape, rng):
    array = sample(dtype, shape, rng)
    result = read_torch_state_dict(write({"x": tensor(array, "0")}))
    assert_all_same(result, {"x": array})


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_scalars(dtype, rng):
    array = sample(dtype, (), rng)
    assert array.shape == ()
    result = read_torch_state_dict(write({"s": tensor(array, "0")}))
    assert_all_same(result, {"s": array})


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_scalar_at_offset_in_shared_storage(dtype, rng):
    flat = sample(dtype, (5,), rng)
    storage = Storage("0", flat)
    state = {f"s{i}": Tensor(storage, i, (), ()) for i in range(5)}
    result = read_torch_state_dict(write(state))
    assert_all_same(result, {f"s{i}": flat[i] for i in range(5)})
    for i in range(5):
        assert result[f"s{i}"].shape == ()


@pytest.mark.parametrize("protocol", [1, 2, 4, 5])
def test_pickle_protocols(protocol, rng):
    a, b = sample(np.float32, (3, 2), rng), sample(np.int64, (4,), rng)
    result = read_torch_state_dict(write({"a": tensor(a, "0"), "b": tensor(b, "1")}, protocol=protocol))
    assert_all_same(result, {"a": a, "b": b})


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int32, np.uint8], ids=lambda d: np.dtype(d).name
)
def test_transposed_view_is_not_c_order(dtype, rng):
    base = sample(dtype, (3, 4), rng)
    storage = Storage("0", base)
    transposed = Tensor(storage, 0, (4, 3), (1, 4))  # base.T: stride not C-order
    result = read_torch_state_dict(write({"t": transposed, "base": Tensor(storage, 0, (3, 4), (4, 1))}))
    assert_all_same(result, {"t": base.T, "base": base})
    assert result["t"].flags.c_contiguous or result["t"].flags.f_contiguous


def test_non_contiguous_3d_permutation_and_step(rng):
    base = sample(np.float64, (2, 3, 4), rng)
    storage = Storage("0", base)
    permuted = Tensor(storage, 0, (4, 2, 3), (1, 12, 4))  # base.transpose(2, 0, 1)
    every_other = Tensor(storage, 1, (2, 3, 2), (12, 4, 2))  # base[:, :, 1::2]
    result = read_torch_state_dict(write({"p": permuted, "e": every_other}))
    assert_all_same(result, {"p": base.transpose(2, 0, 1), "e": base[:, :, 1::2]})


def test_two_tensors_share_one_storage_at_different_offsets(rng):
    flat = sample(np.float32, (10,), rng)
    storage = Storage("shared", flat)
    state = {
        "head": Tensor(storage, 0, (4,), (1,)),
        "tail": Tensor(storage, 4, (2, 3), (3, 1)),
        "overlap": Tensor(storage, 2, (2, 2), (1, 1)),  # overlapping windows
    }
    data = write(state)
    assert data.count(flat.tobytes()) == 1  # the storage is written once
    result = read_torch_state_dict(data)
    overlap = np.array([[flat[2], flat[3]], [flat[3], flat[4]]])
    assert_all_same(result, {"head": flat[:4], "tail": flat[4:].reshape(2, 3), "overlap": overlap})


def test_shared_storage_results_are_independent_copies(rng):
    flat = sample(np.float32, (6,), rng)
    storage = Storage("0", flat)
    result = read_torch_state_dict(
        write({"a": Tensor(storage, 0, (6,), (1,)), "b": Tensor(storage, 0, (6,), (1,))})
    )
    result["a"][...] = 0  # must not show through "b"
    assert_same(result["b"], flat)


def test_expanded_tensor_with_zero_stride_is_refused(rng):
    row = sample(np.float32, (4,), rng)
    with pytest.raises(UnsafeFileError, match="expanded tensors are not supported"):
        read_torch_state_dict(write({"e": Tensor(Storage("0", row), 0, (3, 4), (0, 1))}))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 5)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_], ids=lambda d: np.dtype(d).name)
def test_zero_size_tensor(shape, dtype):
    array = np.zeros(shape, dtype)
    result = read_torch_state_dict(write({"empty": tensor(array, "0")}))
    assert_all_same(result, {"empty": array})


def test_zero_size_tensor_next_to_others(rng):
    full = sample(np.float32, (3,), rng)
    storage = Storage("0", full)
    state = {"full": Tensor(storage, 0, (3,), (1,)), "none": Tensor(storage, 3, (0, 2), (2, 1))}
    result = read_torch_state_dict(write(state))
    assert_all_same(result, {"full": full, "none": np.zeros((0, 2), np.float32)})


def test_nested_dicts_are_flattened_with_dots(rng):
    arrays = {name: sample(np.float32, (2,), rng) for name in ("a.w", "a.b.c", "a.b.d", "top")}
    state = {
        "a": {
            "w": tensor(arrays["a.w"], "0"),
            "b": {"c": tensor(arrays["a.b.c"], "1"), "d": tensor(arrays["a.b.d"], "2")},
        },
        "top": tensor(arrays["top"], "3"),
    }
    assert_all_same(read_torch_state_dict(write(state)), arrays)


def test_ordered_dict_keeps_order_and_metadata_is_ignored(rng):
    names = ["features.0.0.weight", "features.0.1.running_mean", "features.0.1.num_batches_tracked", "a", "z"]
    arrays = {name: sample(np.float32, (2, 2), rng) for name in names}
    arrays["features.0.1.num_batches_tracked"] = np.array(7, np.int64)
    state = collections.OrderedDict((name, tensor(arrays[name], str(i))) for i, name in enumerate(names))
    # like nn.Module.state_dict(): the OrderedDict carries a _metadata attribute (pickled with BUILD)
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("features.0.1", {"version": 2})])
    data = write(state)
    assert b"_metadata" in data
    result = read_torch_state_dict(data)
    assert list(result) == names
    assert_all_same(result, arrays)


def test_typical_state_dict_with_many_storages(rng):
    arrays = {}
    for i in range(12):  # more than 10 keys: "10" sorts before "2"
        arrays[f"layer{i}.weight"] = sample(np.float32, (3, 2, 1, 1), rng)
        arrays[f"layer{i}.num_batches_tracked"] = np.array(i, np.int64)
    state = collections.OrderedDict((name, tensor(a, str(k))) for k, (name, a) in enumerate(arrays.items()))
    assert_all_same(read_torch_state_dict(write(state)), arrays)


def test_reads_path_str_bytes_and_bytearray(tmp_path, rng):
    arrays = {"w": sample(np.float16, (2, 5), rng), "b": sample(np.bool_, (5,), rng)}
    data = write({name: tensor(a, str(i)) for i, (name, a) in enumerate(arrays.items())})
    path = tmp_path / "model.pth"
    path.write_bytes(data)
    for source in (path, str(path), data, bytearray(data)):
        assert_all_same(read_torch_state_dict(source), arrays)


def test_empty_state_dict():
    assert read_torch_state_dict(write({})) == {}
    assert read_torch_state_dict(write(collections.OrderedDict())) == {}


# ---------------------------------------------------------------- security


def hostile_payloads(marker):
    """name of the refused global -> a hand-written pickle that would create ``marker``."""
    m = str(marker)
    assert "\n" not in m and "\\" not in m
    cmd = f"touch {m}".encode()
    return {
        "os.system": f"cos\nsystem\n(V{cmd.decode()}\ntR.".encode(),
        "posix.system": f"cposix\nsystem\n(V{cmd.decode()}\ntR.".encode(),
        "builtins.eval": f"cbuiltins\neval\n(V__import__('pathlib').Path({m!r}).touch()\ntR.".encode(),
        "subprocess.Popen": f"csubprocess\nPopen\n((Vtouch\nV{m}\nltR.".encode(),
        # protocol 2: PROTO, GLOBAL, BINUNICODE, TUPLE1, REDUCE, STOP
        "os.system/2": b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R.",
        # protocol 4: STACK_GLOBAL
        "os.system/4": b"\x80\x04\x8c\x02os\x8c\x06system\x93X"
        + struct.pack("<I", len(cmd))
        + cmd
        + b"\x85R.",
        # protocol 0 INST: calls builtins.exec(source)
        "builtins.exec": f"(V__import__('os').system({cmd.decode()!r})\nibuiltins\nexec\n.".encode(),
    }


HOSTILE = list(hostile_payloads("/tmp/x"))


def refused_name(kind):
    return kind.split("/")[0]


def wait_for(path, seconds=5.0):
    import time

    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.exists()


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_payloads_are_live_under_plain_pickle(kind, tmp_path):
    """Control: each payload really runs its command with an ordinary unpickler."""
    marker = tmp_path / "pwned"
    value = pickle.loads(hostile_payloads(marker)[kind])
    if isinstance(value, subprocess.Popen):
        value.wait(timeout=10)
    assert wait_for(marker)


@pytest.mark.parametrize("position", [0, 1, 2, 3, 4], ids=["magic", "protocol", "sysinfo", "state", "keys"])
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_global_is_refused_and_not_run(kind, position, tmp_path):
    marker = tmp_path / "pwned"
    parts = chunks({"w": tensor(np.arange(4, dtype=np.float32), "0")})
    parts[position] = hostile_payloads(marker)[kind]
    with pytest.raises(UnsafeFileError, match=r"refusing to load") as err:
        read_torch_state_dict(b"".join(parts))
    assert f"asks for {refused_name(kind)}," in str(err.value)
    assert "nothing was executed" in str(err.value)
    assert isinstance(err.value, ValueError)
    assert not wait_for(marker, seconds=0.2)


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_file_on_disk_is_refused(kind, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(hostile_payloads(marker)[kind])  # the whole file is the payload
    with pytest.raises(UnsafeFileError, match=refused_name(kind).replace(".", r"\.")):
        read_torch_state_dict(path)
    assert not wait_for(marker, seconds=0.2)


@pytest.mark.parametrize(
    "func_name", ["os.system", "subprocess.call", "builtins.exec"], ids=lambda s: s.replace(".", "-")
)
def test_hostile_entry_among_real_tensors_is_refused(func_name, tmp_path):
    """A REDUCE of a dangerous function inside an otherwise valid state dict."""
    marker = tmp_path / "pwned"
    module, name = func_name.split(".")
    func = getattr(importlib.import_module(module), name)
    arg = {
        "os.system": f"touch {marker}",
        "subprocess.call": ["touch", str(marker)],
        "builtins.exec": f"open({str(marker)!r}, 'w').close()",
    }[func_name]
    state = collections.OrderedDict(
        [
            ("a", tensor(np.ones(3, np.float32), "0")),
            ("evil", Call(func, arg)),
            ("b", tensor(np.ones(2), "1")),
        ]
    )
    with pytest.raises(UnsafeFileError, match=r"refusing to load: the file asks for \w+\." + name):
        read_torch_state_dict(write(state))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("torch", "load"),
        ("torch", "Tensor"),
        ("torch", "ComplexFloatStorage"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_qtensor"),
        ("collections", "defaultdict"),
        ("builtins", "getattr"),
        ("builtins", "dict"),
        ("copyreg", "_reconstructor"),
        ("numpy", "frombuffer"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("jaxtransfer.zoo._torch_format", "_rebuild_tensor"),
        ("pickle", "loads"),
    ],
)
def test_only_allow_listed_globals_resolve(module, name):
    parts = chunks({})
    parts[3] = f"c{module}\n{name}\n)R.".encode()
    with pytest.raises(UnsafeFileError, match=rf"asks for {module}\.{name},"):
        read_torch_state_dict(b"".join(parts))


def test_unknown_storage_type_is_refused():
    storage = Storage("0", np.zeros(4, np.float32), type_name="ComplexFloatStorage")
    with pytest.raises(UnsafeFileError, match=r"torch\.ComplexFloatStorage"):
        read_torch_state_dict(write({"c": Tensor(storage, 0, (2,), (1,))}))


@pytest.mark.parametrize(
    "payload",
    [
        b"ctorch\nFloatStorage\n)R.",  # the storage stand-in is not callable
        b"ctorch._utils\n_rebuild_tensor_v2\n)R.",  # missing arguments
        b"ccollections\nOrderedDict\n(I1\ntR.",  # OrderedDict(1)
    ],
    ids=["call-storage-type", "rebuild-no-args", "ordereddict-bad-arg"],
)
def test_allowed_names_called_wrongly_are_corrupt(payload):
    parts = chunks({})
    parts[3] = payload
    with pytest.raises(UnsafeFileError, match=r"corrupt file: could not read the state dict"):
        read_torch_state_dict(b"".join(parts))


# ---------------------------------------------------------------- corruption


def small_file():
    return chunks(
        {
            "w": tensor(np.arange(6, dtype=np.float32).reshape(2, 3), "0"),
            "n": tensor(np.array(3, np.int64), "1"),
        }
    )


def test_unsafe_file_error_is_a_value_error():
    assert issubclass(UnsafeFileError, ValueError)


def test_every_truncation_is_refused():
    data = b"".join(small_file())
    assert read_torch_state_dict(data)  # the whole file is fine
    for n in range(len(data)):
        with pytest.raises(UnsafeFileError, match="corrupt file"):
            read_torch_state_dict(data[:n])


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda p: len(b"".join(p)) - 3, r"storage '1' is truncated"),
        (lambda p: len(b"".join(p[:5])) + 8 + 5, r"storage '0' is truncated"),
        (lambda p: len(b"".join(p[:5])) + 4, r"truncated before storage '0'"),
        (lambda p: len(b"".join(p[:5])), r"truncated before storage '0'"),
        (lambda p: len(b"".join(p[:6])), r"truncated before storage '1'"),
        (lambda p: len(b"".join(p[:3])) + 10, r"could not read the state dict"),
        (lambda p: len(b"".join(p[:4])) + 3, r"could not read the storage keys"),
        (lambda p: len(b"".join(p[:2])) + 5, r"could not read the system information"),
        (lambda p: len(p[0]) + 2, r"could not read the protocol version"),
        (lambda p: 4, r"could not read the magic number"),
        (lambda p: 0, r"could not read the magic number"),
    ],
    ids=[
        "last-storage-bytes",
        "first-storage-bytes",
        "in-header",
        "before-header",
        "before-second-header",
        "state-pickle",
        "keys-pickle",
        "sysinfo-pickle",
        "protocol-pickle",
        "magic-pickle",
        "empty",
    ],
)
def test_truncation_messages(cut, message):
    parts = small_file()
    data = b"".join(parts)
    with pytest.raises(UnsafeFileError, match=message):
        read_torch_state_dict(data[: cut(parts)])


@pytest.mark.parametrize("magic", [0, MAGIC + 1, MAGIC - 1, "magic", None, [MAGIC]], ids=repr)
def test_bad_magic_number(magic):
    data = write({"w": tensor(np.ones(2, np.float32), "0")}, magic=magic)
    with pytest.raises(UnsafeFileError, match="bad magic number"):
        read_torch_state_dict(data)


def test_not_a_pickle_at_all(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(UnsafeFileError, match="corrupt file: could not read the magic number"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("version", [1000, 1002, 0, "1001", None], ids=repr)
def test_wrong_protocol_version(version):
    data = write({"w": tensor(np.ones(2, np.float32), "0")}, version=version)
    with pytest.raises(UnsafeFileError, match="unsupported PyTorch protocol version"):
        read_torch_state_dict(data)


@pytest.mark.parametrize(
    "info",
    [
        {**SYS_INFO, "little_endian": False},
        {"protocol_version": 1001},
        [("little_endian", True)],
        "little_endian",
    ],
    ids=["big-endian", "missing", "list", "str"],
)
def test_not_little_endian(info):
    data = write({"w": tensor(np.ones(2, np.float32), "0")}, sys_info=info)
    with pytest.raises(UnsafeFileError, match="little-endian"):
        read_torch_state_dict(data)


@pytest.mark.parametrize("count", [3, 5, 0, -1, 2**62])
def test_element_count_header_mismatch(count):
    parts = chunks({"w": tensor(np.arange(4, dtype=np.float32), "0")})
    parts[5] = struct.pack("<q", count) + parts[5][8:]
    with pytest.raises(UnsafeFileError, match=rf"storage '0' holds {count} elements, expected 4"):
        read_torch_state_dict(b"".join(parts))


def test_declared_numel_differs_from_stored_count():
    storage = Storage("0", np.arange(4, dtype=np.float32), numel=5)
    with pytest.raises(UnsafeFileError, match=r"storage '0' holds 4 elements, expected 5"):
        read_torch_state_dict(write({"w": Tensor(storage, 0, (4,), (1,))}))


@pytest.mark.parametrize(
    "extra",
    [b"\x00", b"PK", struct.pack("<q", 0), struct.pack("<q", 2) + bytes(8)],
    ids=["byte", "PK", "empty", "storage"],
)
def test_trailing_bytes_after_last_storage(extra):
    data = b"".join(small_file()) + extra
    with pytest.raises(UnsafeFileError, match="bytes after its last storage"):
        read_torch_state_dict(data)


@pytest.mark.parametrize(
    ("offset", "shape", "stride", "numel"),
    [
        (2, (3,), (1,), 4),
        (0, (5,), (1,), 4),
        (0, (2, 3), (3, 1), 5),
        (0, (2, 2), (4, 1), 5),
        (0, (3, 2), (1, 3), 5),  # transposed view of a 2x3 storage that is one short
        (4, (), (), 4),  # scalar at offset == numel
        (0, (1,), (1,), 0),  # empty storage
        (0, (2, 2), (0, 4), 4),  # broadcast dim fine, the other reads past
    ],
)
def test_tensor_reading_past_its_storage(offset, shape, stride, numel):
    storage = Storage("0", np.arange(numel, dtype=np.float32))
    with pytest.raises(
        UnsafeFileError, match=r"reads past the end of its storage|more elements than its storage"
    ):
        read_torch_state_dict(write({"w": Tensor(storage, offset, shape, stride)}))


@pytest.mark.parametrize(
    ("offset", "shape", "stride", "message"),
    [
        (-1, (2,), (1,), r"storage offset must be a non-negative int"),
        (1.0, (2,), (1,), r"storage offset must be a non-negative int"),
        (True, (2,), (1,), r"storage offset must be a non-negative int"),
        (0, (-1,), (1,), r"tensor size must be a tuple of non-negative ints"),
        (2, (2,), (-1,), r"tensor stride must be a tuple of non-negative ints"),
        (0, [2], (1,), r"tensor size must be a tuple"),
        (0, (2,), [1], r"tensor stride must be a tuple"),
        (0, (True,), (1,), r"tensor size must be a tuple of non-negative ints"),
        (0, (2.0,), (1,), r"tensor size must be a tuple of non-negative ints"),
        (0, (2,), (1, 1), r"differ in length"),
        (0, (2, 2), (1,), r"differ in length"),
    ],
)
def test_malformed_tensor_arguments(offset, shape, stride, message):
    class Raw(Tensor):
        def __reduce__(self):
            return (super().__reduce__()[0], (self.storage, offset, shape, stride, False, None))

    storage = Storage("0", np.arange(4, dtype=np.float32))
    with pytest.raises(UnsafeFileError, match=message):
        read_torch_state_dict(write({"w": Raw(storage, 0, (), ())}))


def test_tensor_storage_that_is_not_a_storage_reference():
    class NoStorage(Tensor):
        def __reduce__(self):
            func, args = super().__reduce__()
            return func, ("not a storage", *args[1:])

    with pytest.raises(UnsafeFileError, match="must be a persistent storage reference"):
        read_torch_state_dict(write({"w": NoStorage(Storage("0", np.zeros(2)), 0, (2,), (1,))}))


@pytest.mark.parametrize(
    "keys",
    [["0", "1", "2"], ["0"], [], ("0", "1"), "01", ["0", "0", "1"], ["1", "0", "1"], {"0": 1, "1": 2}, None],
    ids=["extra", "missing", "empty", "tuple", "str", "duplicate", "duplicate2", "dict", "none"],
)
def test_storage_key_list_does_not_match(keys):
    parts = small_file()
    parts[4] = pickle.dumps(keys, protocol=2)
    with pytest.raises(UnsafeFileError, match="storage list does not match"):
        read_torch_state_dict(b"".join(parts))


@pytest.mark.parametrize("keys", [[None, "0", "1"], ["0", 1]], ids=["none-and-str", "int-and-str"])
def test_storage_key_list_of_mixed_types(keys):
    parts = small_file()
    parts[4] = pickle.dumps(keys, protocol=2)
    with pytest.raises(UnsafeFileError, match="storage list does not match"):
        read_torch_state_dict(b"".join(parts))


def test_storage_blobs_follow_the_key_list_order():
    """As in torch, the pickled key list (not sorted order) says which blob belongs to which storage."""
    a, b = np.arange(4, dtype=np.float32), np.arange(4, 8, dtype=np.float32)
    parts = chunks({"a": tensor(a, "0"), "b": tensor(b, "1")})
    parts[4] = pickle.dumps(["1", "0"], protocol=2)
    result = read_torch_state_dict(b"".join(parts))  # the blobs are now attributed the other way round
    assert_all_same(result, {"a": b, "b": a})


def test_zip_format_is_refused(tmp_path):
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        zf.writestr("archive/version", "3\n")
    for source in (path, path.read_bytes(), b"PK\x03\x04" + b"".join(small_file())):
        with pytest.raises(UnsafeFileError, match="zip-format torch file; only the legacy format"):
            read_torch_state_dict(source)


@pytest.mark.parametrize(
    "pid",
    ["0", ("module", "x"), ("storage", "a", "b"), ("module", None, "0", "cpu", 4, None), ["storage"] * 6, 7],
    ids=repr,
)
def test_persistent_id_that_is_not_a_storage(pid):
    with pytest.raises(UnsafeFileError, match="unsupported persistent id"):
        read_torch_state_dict(write({"w": RawPid(pid)}))


@pytest.mark.parametrize("where", ["magic", "sysinfo"])
def test_persistent_id_outside_the_state_dict(where):
    parts = chunks({})
    index = {"magic": 0, "sysinfo": 2}[where]
    parts[index] = b"\x80\x02X\x01\x00\x00\x000Q."  # BINPERSID of "0"
    with pytest.raises(UnsafeFileError, match="unsupported persistent id"):
        read_torch_state_dict(b"".join(parts))


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        (Storage("0", np.zeros(4, np.float32), type_name="NotAStorageClass"), "malformed storage reference"),
        (
            Storage("0", np.zeros(4, np.float32), pid=("storage", None, "0", "cpu", 4, None)),
            "malformed storage",
        ),
        (Storage(0, np.zeros(4, np.float32)), "malformed storage reference"),
        (Storage("0", np.zeros(4, np.float32), numel=-1), r"storage '0' has an invalid element count -1"),
        (Storage("0", np.zeros(4, np.float32), numel=4.0), r"storage '0' has an invalid element count 4\.0"),
        (Storage("0", np.zeros(4, np.float32), numel=True), r"invalid element count True"),
    ],
    ids=["type-str", "type-none", "key-int", "numel-negative", "numel-float", "numel-bool"],
)
def test_malformed_storage_reference(storage, message):
    with pytest.raises(UnsafeFileError, match=message):
        read_torch_state_dict(write({"w": Tensor(storage, 0, (2,), (1,))}))


@pytest.mark.parametrize("view", [("root", 0, 4), "root", 0, ()], ids=repr)
def test_storage_view_is_refused(view):
    storage = Storage("0", np.zeros(4, np.float32), view=view)
    with pytest.raises(UnsafeFileError, match=r"storage '0' is a view of another storage"):
        read_torch_state_dict(write({"w": Tensor(storage, 0, (2,), (1,))}))


@pytest.mark.parametrize(
    "other",
    [
        Storage("0", np.zeros(4, np.float64)),
        Storage("0", np.zeros(5, np.float32)),
        Storage("0", np.zeros(4, np.int32)),
    ],
    ids=["dtype", "numel", "same-itemsize"],
)
def test_storage_declared_twice_differently(other):
    first = Storage("0", np.zeros(4, np.float32))
    state = {"a": Tensor(first, 0, (2,), (1,)), "b": Tensor(other, 0, (2,), (1,))}
    with pytest.raises(UnsafeFileError, match=r"storage '0' is declared twice"):
        read_torch_state_dict(write(state))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([tensor(np.ones(2, np.float32), "0")], "holds a list, not a state dict"),
        (tensor(np.ones(2, np.float32), "0"), "not a state dict"),
        (None, "holds a NoneType, not a state dict"),
        ({"a": 3}, "entry 'a' is a int, not a tensor"),
        ({"a": {"b": "text"}}, "entry 'a.b' is a str, not a tensor"),
        ({"a": [tensor(np.ones(2, np.float32), "0")]}, "entry 'a' is a list, not a tensor"),
        ({"a": (tensor(np.ones(2, np.float32), "0"),)}, "entry 'a' is a tuple, not a tensor"),
    ],
    ids=["list", "tensor", "none", "int", "nested-str", "list-entry", "tuple-entry"],
)
def test_state_that_is_not_a_dict_of_tensors(state, message):
    with pytest.raises(UnsafeFileError, match=message):
        read_torch_state_dict(write(state))


@pytest.mark.parametrize(
    "payload",
    [b"\x80\x02\xff.", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01", b"\x80\x02h\x05.", b"garbage", b""],
    ids=["bad-opcode", "no-stop", "bad-memo", "garbage", "empty"],
)
def test_corrupt_state_pickle(payload):
    parts = chunks({})
    parts[3] = payload
    with pytest.raises(UnsafeFileError, match="corrupt file"):
        read_torch_state_dict(b"".join(parts))


def test_storage_larger_than_any_file():
    parts = chunks({"w": Tensor(Storage("0", np.zeros(2, np.float32), numel=2**62), 0, (2,), (1,))})
    parts[5] = struct.pack("<q", 2**62) + parts[5][8:]
    with pytest.raises(UnsafeFileError, match="truncated"):
        read_torch_state_dict(b"".join(parts))


def test_huge_broadcast_tensor_from_a_tiny_storage():
    storage = Storage("0", np.zeros(1, np.float32))
    data = write({"w": Tensor(storage, 0, (2**40, 2**40), (0, 0))})
    assert len(data) < 1000
    with pytest.raises(UnsafeFileError):
        read_torch_state_dict(data)
