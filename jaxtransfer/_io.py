"""Files: reading ``.npy``/``.npz`` safely (never unpickled), writing atomically, checking output paths.

Every reader here refuses object arrays without unpickling them, and says
precisely what is wrong with a bad file: not NumPy at all, a zip member that is
not a ``.npy`` array, Python objects, or a truncated or corrupt file.

Every file the package writes goes through :func:`atomic_write` (or
:func:`atomic_open`, for a file written as a stream): it appears whole or not
at all, never half-written.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import math
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "array_files",
    "atomic_open",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "map_npy",
    "npz_names",
    "read_npy",
    "read_npz",
    "write_npz",
]

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000  # as numpy's own reader: a longer header is refused before it is parsed


class _BadFile(Exception):
    """Why a file cannot be read; the public readers turn it into the caller's error type."""


def _read_exact(fh: BinaryIO, size: int, what: str) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise _BadFile(f"it is truncated: {what} ends after {len(data)} of {size} bytes")
    return data


def _read_header(fh: BinaryIO, label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` header (versions 1.0, 2.0 and 3.0)."""
    magic = fh.read(8)
    if not magic:
        raise _BadFile(f"{label} is empty")
    if not (magic.startswith(_NPY_MAGIC) or _NPY_MAGIC.startswith(magic)):
        raise _BadFile(f"{label} is not a .npy array (no NumPy header)")
    if len(magic) < 8:
        raise _BadFile(f"it is truncated: {label} ends inside its .npy header")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise _BadFile(f"{label} has an unknown .npy format version {version[0]}.{version[1]}")
    width = 2 if version == (1, 0) else 4
    (length,) = struct.unpack("<H" if width == 2 else "<I", _read_exact(fh, width, f"{label}'s header"))
    if length > _MAX_HEADER:
        raise _BadFile(f"{label} has a {length}-byte .npy header, longer than the {_MAX_HEADER} accepted")
    text = _read_exact(fh, length, f"{label}'s header").decode("utf8" if version == (3, 0) else "latin1")
    try:
        header = ast.literal_eval(text)
        if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
            raise ValueError(f"keys {sorted(header) if isinstance(header, dict) else type(header).__name__}")
        shape, fortran = header["shape"], header["fortran_order"]
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise ValueError(f"shape {shape!r}")
        if not isinstance(fortran, bool):
            raise ValueError(f"fortran_order {fortran!r}")
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise _BadFile(f"{label} has a corrupt .npy header ({err})") from None
    return shape, fortran, dtype


def _check_npy(fh: BinaryIO, size: int, label: str) -> None:
    """Parse a ``.npy`` header; refuse object arrays and data shorter than the header announces."""
    shape, _, dtype = _read_header(fh, label)
    if dtype.hasobject:
        raise _BadFile(f"{label} holds Python objects (dtype {dtype}), which are never loaded")
    nbytes = math.prod(shape) * dtype.itemsize
    available = size - fh.tell()
    if available < nbytes:
        raise _BadFile(
            f"it is truncated: {label} has {max(available, 0)} of the {nbytes} data bytes "
            f"its header announces for shape {shape} {dtype}"
        )


def _read_array(fh: BinaryIO, size: int, label: str) -> np.ndarray:
    """The array of a seekable ``.npy`` stream of ``size`` bytes, checked before NumPy reads it.

    The header is parsed here first, so that object arrays and truncated data
    get their own messages; NumPy then reads the array with ``allow_pickle=False``.
    """
    _check_npy(fh, size, label)
    fh.seek(0)
    try:
        return np.lib.format.read_array(fh, allow_pickle=False)
    except ValueError as err:
        raise _BadFile(f"it is truncated or corrupt: {label}: {err}") from None


def _fail(error: type[Exception], path: Path, what: str, reason: str, hint: str) -> Exception:
    return error(f"{path} is not a readable {what} ({reason}){hint}")


def read_npy(
    path: str | os.PathLike, *, what: str = ".npy file", error: type[Exception] = ValueError, hint: str = ""
) -> np.ndarray:
    """The array of a ``.npy`` file; object arrays are refused, never unpickled.

    Raises:
      error: ``"{path} is not a readable {what} ({reason}){hint}"`` when the
        file is not a ``.npy`` array, holds Python objects, or is truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _read_array(fh, os.fstat(fh.fileno()).st_size, "the file")
    except _BadFile as err:
        raise _fail(error, path, what, str(err), hint) from None
    except OSError as err:
        raise _fail(error, path, what, f"{type(err).__name__}: {err}", hint) from None


def map_npy(
    path: str | os.PathLike, *, what: str = ".npy file", error: type[Exception] = ValueError, hint: str = ""
) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped read-only (``np.load(mmap_mode="r")``), checked first.

    Nothing is read until it is used, and the pages read belong to the page
    cache: dropping the last reference to the array (or to a view of it)
    unmaps them. The header is checked as :func:`read_npy` does, so a bad file
    gets the same message.

    Raises:
      error: as :func:`read_npy`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            _check_npy(fh, os.fstat(fh.fileno()).st_size, "the file")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except _BadFile as err:
        raise _fail(error, path, what, str(err), hint) from None
    except (OSError, ValueError) as err:
        raise _fail(error, path, what, f"{type(err).__name__}: {err}", hint) from None


_GLOB_CHARS = frozenset("*?[")


def array_files(
    specs: str | os.PathLike | Sequence[str | os.PathLike], *, what: str, error: type[Exception] = ValueError
) -> list[Path]:
    """The array files named by ``specs``, one entry per file, in a fixed order.

    Each spec is a folder (every ``*.npy`` file in it, sorted by name), a
    glob pattern with ``*``, ``?`` or ``[...]`` (its matches, sorted by name;
    ``**`` reaches into sub-folders) or one file. An existing path is taken
    as it is, even when its name holds glob characters. The files are not
    opened here.

    Raises:
      error: a missing file, a folder with no ``.npy`` file, a pattern that
        matches no file; the message starts with ``what``.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.npy") if p.is_file())
            if not found:
                raise error(f"{what}: the folder {path} holds no .npy file; expected one per source")
            out.extend(found)
        elif path.exists():
            out.append(path)
        elif _GLOB_CHARS & set(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if os.path.isfile(p))
            if not found:
                raise error(f"{what}: no file matches the pattern {str(spec)!r}")
            out.extend(found)
        else:
            raise error(f"{what}: no such file: {spec}")
    return out


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        size = path.stat().st_size
        if size == 0:
            raise _BadFile("it is empty") from None
        with open(path, "rb") as fh:
            start = fh.read(4)
        if start.startswith(b"PK"):
            raise _BadFile(
                f"it is truncated or corrupt: a zip archive without a readable directory ({err})"
            ) from None
        raise _BadFile("it is not a .npz (zip) archive") from None


def _array_name(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def npz_names(
    path: str | os.PathLike, *, what: str = ".npz file", error: type[Exception] = ValueError, hint: str = ""
) -> list[str]:
    """The array names of an ``.npz`` file (its member names less ``.npy``), in file order.

    Raises:
      error: as :func:`read_npz`, when the file is not a readable zip archive.
    """
    path = Path(path)
    try:
        with _open_zip(path) as zf:
            return [_array_name(m) for m in zf.namelist()]
    except _BadFile as err:
        raise _fail(error, path, what, str(err), hint) from None
    except OSError as err:
        raise _fail(error, path, what, f"{type(err).__name__}: {err}", hint) from None


def read_npz(
    path: str | os.PathLike,
    *,
    what: str = ".npz file",
    error: type[Exception] = ValueError,
    hint: str = "",
    names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (only ``names`` when given); object arrays are refused, never unpickled.

    Raises:
      error: ``"{path} is not a readable {what} ({reason}){hint}"`` when the
        file is not a zip archive, a member is not a ``.npy`` array, an array
        holds Python objects, or the file is truncated or corrupt. A name in
        ``names`` that the file lacks raises ``KeyError``.
    """
    path = Path(path)
    try:
        with _open_zip(path) as zf:
            members = {_array_name(info.filename): info for info in zf.infolist()}
            out = {}
            for name in members if names is None else names:
                info = members[name]
                label = f"array {name!r}"
                if not info.filename.endswith(".npy"):
                    raise _BadFile(f"member {info.filename!r} is not a .npy array")
                with zf.open(info) as fh:
                    out[name] = _read_array(fh, info.file_size, label)
            return out
    except _BadFile as err:
        raise _fail(error, path, what, str(err), hint) from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # CRC mismatch, bad deflate stream
        raise _fail(error, path, what, f"it is truncated or corrupt: {err}", hint) from None
    except (OSError, NotImplementedError) as err:  # NotImplementedError: an unsupported compression
        raise _fail(error, path, what, f"{type(err).__name__}: {err}", hint) from None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace ``path`` only once the ``with`` block completes.

    The data go to a temporary file in the same folder (``.NAME.XXXX.tmp``),
    which is renamed over ``path`` when the block ends without an exception
    and removed if anything fails, so ``path`` is never left half-written. The
    new file gets the permissions of the file it replaces, or the usual ones
    (0666 less the umask) when it is new. A symbolic link to a file keeps
    pointing to it (the file it names is replaced); a path that is not a
    regular file (a device such as ``/dev/stdout``, a pipe) is written
    directly, as it cannot be renamed over. The folder must exist.

    Raises:
      OSError: the folder is missing or not writable, or the write fails.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows links
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "wb") as fh:
            yield fh
        return
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give the file the usual permissions
        os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text is encoded as UTF-8) to ``path`` atomically; return ``path`` as a ``Path``.

    See :func:`atomic_open`: a temporary file in the same folder is renamed
    over ``path`` when complete, and removed on any failure.

    Raises:
      TypeError: ``data`` is neither ``str`` nor ``bytes`` (nothing is written).
      OSError: as :func:`atomic_open`.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be str or bytes, got {type(data).__name__}")
    path = Path(path)
    with atomic_open(path) as fh:
        fh.write(data)
    return path


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` that ``np.load`` reads.

    Unlike ``np.savez(path, **arrays)`` any name is allowed (``file`` and
    ``allow_pickle`` included), object arrays are refused, and the file appears
    atomically (:func:`atomic_open`: streamed to a temporary file in the same
    folder, renamed over ``path``, removed if anything fails). Missing folders
    are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_open(path) as fh,
        zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
    return path


def check_output_file(path: str | os.PathLike, *, what: str) -> Path:
    """Check, before any work, that a file can be written at ``path``; return it as a ``Path``.

    Raises:
      ValueError: ``path`` is an existing folder, or its folder is missing,
        not a folder, or not writable. The message starts with ``what``
        (the option's name).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a folder; expected the path of a file to write")
    folder = path.parent
    if not folder.exists():
        raise ValueError(
            f"{what}: {path} is in a folder that does not exist ({folder}); "
            "expected a file in an existing folder"
        )
    if not folder.is_dir():
        raise ValueError(f"{what}: {path} is inside {folder}, which is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{what}: {path} cannot be written (no permission)")
    return path


def check_output_folder(path: str | os.PathLike, *, what: str) -> Path:
    """Check, before any work, that ``path`` is a folder or can be created as one; return it as a ``Path``.

    Raises:
      ValueError: ``path`` is an existing file, a parent of it is a file, or
        the nearest existing folder is not writable. The message starts with
        ``what`` (the option's name).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{what}: {path} is an existing file, not a folder; expected a folder (existing or new)"
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: cannot create the folder {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: {path} cannot be written to ({existing} is not writable)")
    return path
