"""Work split over the processes of a multi-process JAX program, and its results gathered.

After ``jax.distributed.initialize()`` every process runs the same program.
Work that comes in rows (one row per source) is split by an *owner* array:
``owner[i]`` is the process that computes row ``i``. Each process computes its
own rows (:func:`local_rows`), in increasing order, and :func:`gather_rows`
puts every process's rows back in the global order, on every process. Two
assignments are provided: :func:`strided` (row ``i`` to process ``i % P``)
and :func:`by_group` (rows that share a key, such as the layers of one model,
to one process).

:func:`gather_json` brings small JSON-able values (reasons, timings) from every
process to every process, and :func:`fail_together` makes an exception raised
in one process raise in all of them instead of leaving the others waiting in
the next collective.

With one process every function is a no-op that starts no collective and
imports nothing from JAX's multi-host utilities.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "ProcessFailedError",
    "by_group",
    "fail_together",
    "gather_json",
    "gather_rows",
    "local_rows",
    "place_rows",
    "strided",
]


class ProcessFailedError(RuntimeError):
    """Another process raised an exception other than a ``ValueError``, ``TypeError`` or ``OSError``."""


def strided(total: int, count: int) -> np.ndarray:
    """Owners [total] of rows dealt in turn: row ``i`` to process ``i % count``."""
    _check_count(count)
    return np.arange(int(total)) % count


def by_group(keys: Sequence[Hashable], count: int) -> np.ndarray:
    """Owners [len(keys)] that keep rows with one key on one process.

    The ``k``-th distinct key, in order of first appearance, goes to process
    ``k % count``; every row with that key goes with it.
    """
    _check_count(count)
    first: dict[Hashable, int] = {}
    return np.array([first.setdefault(k, len(first)) % count for k in keys], dtype=np.int64)


def local_rows(owner: np.ndarray, index: int) -> np.ndarray:
    """The rows process ``index`` computes, in increasing order."""
    return np.flatnonzero(np.asarray(owner) == index)


def place_rows(every: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Every process's rows in the global order: ``every`` [P, width, ...] holds process ``p``'s rows
    (:func:`local_rows`) first in ``every[p]``, padding after; returns [len(owner), ...].

    Raises:
      ValueError: ``every`` has fewer processes than ``owner`` names, or a
        process has more rows than ``width``.
    """
    owner = np.asarray(owner)
    count, width = every.shape[:2]
    if owner.size and (owner.min() < 0 or owner.max() >= count):
        raise ValueError(f"owner: expected process indices in [0, {count}), got {owner.min()}..{owner.max()}")
    out = np.empty((owner.size, *every.shape[2:]), every.dtype)
    for p in range(count):
        rows = local_rows(owner, p)
        if rows.size > width:
            raise ValueError(f"every: process {p} owns {rows.size} rows, but each holds only {width}")
        out[rows] = every[p, : rows.size]
    return out


def gather_rows(local: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Every process's rows, in the global order, on every process.

    Every process calls it with its own rows ``local`` [r, ...] (those of
    :func:`local_rows` for it, in that order) and the same ``owner``; the
    rows travel as bytes, so any dtype arrives bit for bit, but the dtype and
    the trailing shape must be the same on every process. One
    ``process_allgather`` of ``max rows per process`` rows.

    Returns:
      [len(owner), ...]; ``local`` itself with one process.

    Raises:
      ValueError: ``local`` does not hold this process's number of rows.
    """
    local = np.asarray(local)
    owner = np.asarray(owner)
    index, count = jax.process_index(), jax.process_count()
    mine = int((owner == index).sum())
    if local.ndim == 0 or local.shape[0] != mine:
        raise ValueError(
            f"local: process {index} owns {mine} of the {owner.size} rows; "
            f"got an array of shape {local.shape}"
        )
    if count == 1:
        return local
    from jax.experimental import multihost_utils

    width = int(np.bincount(owner, minlength=count).max())
    row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:], dtype=np.int64))
    padded = np.zeros((width, row_bytes), np.uint8)
    padded[:mine] = np.ascontiguousarray(local).reshape(mine, -1).view(np.uint8).reshape(mine, row_bytes)
    every = np.asarray(multihost_utils.process_allgather(padded))  # [count, width, row_bytes]
    every = every.view(local.dtype).reshape(count, width, *local.shape[1:])
    return place_rows(every, owner)


def gather_json(value: Any) -> list[Any]:
    """``value`` (anything ``json.dumps`` takes) from every process, in process order, on every process.

    Two collectives: the encoded lengths, then the bytes padded to the longest.
    With one process: ``[value]``, not encoded.
    """
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).ravel()
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    every = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(every, sizes, strict=True)]


_KINDS = {"ValueError": ValueError, "TypeError": TypeError, "OSError": OSError}


@contextlib.contextmanager
def fail_together() -> Iterator[None]:
    """Run a block that every process runs; if it raises in any process, raise in every process.

    The process that raised re-raises its own exception. The others raise,
    after the block, the first failing process's message with the kind of its
    exception: ``ValueError``, ``TypeError`` or ``OSError``, else
    :class:`ProcessFailedError`. Without this, a process that fails leaves
    the others waiting in their next collective. One :func:`gather_json` at
    the end of the block; nothing with one process.
    """
    if jax.process_count() == 1:
        yield
        return
    try:
        yield
    except Exception as err:
        kind = next((k for k, cls in _KINDS.items() if isinstance(err, cls)), "")
        gather_json([kind, str(err)])
        raise
    failed = [(p, e) for p, e in enumerate(gather_json(None)) if e is not None]
    if failed:
        p, (kind, message) = failed[0]
        raise _KINDS.get(kind, ProcessFailedError)(f"{message} (raised on process {p})")


def _check_count(count: int) -> None:
    if not (isinstance(count, (int, np.integer)) and not isinstance(count, bool) and count >= 1):
        raise ValueError(f"count: expected a positive number of processes, got {count!r}")
