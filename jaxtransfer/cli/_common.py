"""What every command shares: one-line user errors, the argument parser, argument types, files.

Option names are the same across commands: ``--out/-o`` is where a command writes
(:func:`add_out_argument`; ``--output`` is its deprecated alias).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .._io import check_output_file, check_output_folder, map_npy, npz_names, read_npz

__all__ = [
    "CLIError",
    "Parser",
    "add_out_argument",
    "check_output",
    "load_array",
    "non_negative_int",
    "out_argument",
    "positive_int",
    "write_text",
]


class CLIError(Exception):
    """A user error: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CLIError`s: one line, exit status 2 (sub-commands too)."""

    def error(self, message: str):
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def add_out_argument(parser: argparse.ArgumentParser, help: str, **kwargs) -> None:
    """Add ``--out/-o`` and its deprecated alias ``--output`` (hidden from ``--help``).

    Read the value with :func:`out_argument`.
    """
    parser.add_argument("--out", "-o", help=help, **kwargs)
    parser.add_argument("--output", dest="deprecated_output", help=argparse.SUPPRESS)


def out_argument(args: argparse.Namespace) -> str | None:
    """The ``--out`` value; the deprecated ``--output`` still works, with a warning line on stderr.

    Raises:
      CLIError: both were given.
    """
    old = getattr(args, "deprecated_output", None)
    if old is None:
        return args.out
    print("jaxtransfer: warning: --output is deprecated; use --out (or -o)", file=sys.stderr)
    if args.out is not None:
        raise CLIError("--out and its deprecated alias --output were both given; pass --out only")
    return old


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer (1 or more)")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def load_array(spec: str, what: str) -> np.ndarray:
    """Read ``FILE.npy``, ``FILE.npz`` (its only array) or ``FILE.npz:KEY``; nothing is unpickled.

    A ``.npy`` file is memory-mapped read-only (nothing is read until used; the
    pages read are the page cache's, and go when the array does); an ``.npz``
    member cannot be, and is read whole.

    Raises:
      CLIError: a missing file, a file that is not ``.npy``/``.npz``, an array
        of Python objects, a truncated or corrupt file, or a missing or
        ambiguous ``KEY``; the message starts with ``what``.
    """
    path, _, key = spec.partition(":") if spec.count(":") == 1 and not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: no such file: {path}")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    kind = "npy" if magic == b"\x93NUMPY" else "npz" if magic.startswith(b"PK") else None
    if kind is None:
        raise CLIError(
            f"{what}: {path} is not a readable .npy/.npz file ("
            + ("it is empty)" if not magic else "no NumPy or zip header)")
        )
    try:
        if kind == "npy":
            if key:
                raise CLIError(f"{what}: {path} is a .npy file; ':{key}' applies only to .npz files")
            return map_npy(p, what=".npy file")
        keys = npz_names(p, what=".npz file")
        if key:
            if key not in keys:
                raise CLIError(f"{what}: {path} has no array {key!r}; it has {', '.join(keys) or 'none'}")
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise CLIError(
                f"{what}: {path} holds {len(keys) or 'no'} arrays"
                + (f" ({', '.join(keys)}); choose one with {path}:KEY" if keys else "")
            )
        return read_npz(p, what=".npz file", names=[key])[key]
    except ValueError as err:
        raise CLIError(f"{what}: {err}") from None


def check_output(path: str, what: str, *, folder: bool = False) -> Path:
    """``path`` checked as an output file (or folder) before any work starts; CLIError if unusable."""
    try:
        return check_output_folder(path, what=what) if folder else check_output_file(path, what=what)
    except ValueError as err:
        raise CLIError(str(err)) from None


def write_text(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path``; an OS error becomes a one-line CLIError."""
    try:
        path.write_text(text)
    except OSError as err:
        raise CLIError(f"{what}: could not write {path} ({err.strerror or err})") from None
