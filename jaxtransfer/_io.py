"""Writing ``.npz`` files safely: any array names, atomic replace, no pickle."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["read_npz", "write_npz"]


def read_npz(
    path: Path, *, what: str, error: type[Exception] = ValueError, hint: str = ""
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False`` (object arrays refused).

    Raises:
      error: ``"{path} is not a readable {what} (...){hint}"`` when the file is
        not a zip of ``.npy`` arrays, holds pickled objects, or is truncated.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as err:
        raise error(f"{path} is not a readable {what} ({type(err).__name__}: {err}){hint}") from None


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` that ``np.load`` reads.

    Unlike ``np.savez(path, **arrays)`` any name is allowed (``file`` and
    ``allow_pickle`` included), object arrays are refused, and the file appears
    atomically: a temporary file in the same folder is renamed over ``path``,
    and removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
