"""Score sources that never sit in memory together: files, generators, loaders.

:func:`jaxtransfer.score_matrix` on stacked arrays holds all S sources at
once ([S, n, d]: 4 GB for 1,000 sources of n = 4,000, d = 256, and about three
times that at its peak). Scores of different sources do not interact, so the
[S, T] matrix can be filled a block of rows at a time: here the sources come
one by one (``.npy`` files memory-mapped, an iterator, a callable
``i -> source``), a chunk of them is stacked on the host, the existing jitted
``score_matrix`` scores the chunk against all T targets, and its rows are
written into a preallocated host result. Memory then holds one chunk of
sources (on the host and its device copy), the targets and the [S, T] result,
whatever S is.

What counts as a stream of sources (:func:`is_source_stream`):

- a ``str`` or ``os.PathLike``: a folder (every ``*.npy`` file in it, sorted by
  name), a glob pattern (its matches, sorted by name) or one file;
- a list or tuple holding at least one ``str``/``os.PathLike`` (each path is
  one source; other entries are arrays);
- an iterator (a generator, ``map(...)``, ``iter(list_of_arrays)``): sources of
  unknown number unless ``num_sources`` is given;
- a callable ``i -> source`` (a model's feature extraction, a loader), called
  for ``i = 0 .. num_sources - 1``; ``num_sources`` is required.

Everything else (NumPy and JAX arrays, memory-mapped arrays, nested lists of
numbers, a list of arrays) is an array-like and takes the stacked route.

Each source is one sample set: features [n, d], probabilities [n, Cz], labels
[n]... as the estimator takes for one pair; a file holds one source. ``.npy``
files are memory-mapped (``np.load(mmap_mode="r", allow_pickle=False)``) and
unmapped once their rows are copied; an ``.npz`` archive cannot be
memory-mapped, so one holding a single array is read whole, one source at a
time.

Samples that do not fit in memory (targets and features given as batches of
samples rather than as whole arrays) are a different axis: the streaming
statistics of :mod:`jaxtransfer.streaming` accumulate them batch by batch.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._io import array_files, map_npy, npz_names, read_npz
from .._progress import progress_bar
from ._base import PrecisionWarning, get_estimator
from ._matrix_core import score_stacked

__all__ = ["CHUNK_BYTES", "SourceScores", "is_source_stream", "score_sources", "stream_score_matrix"]

CHUNK_BYTES = 8 * 2**20
"""Default bytes of sources stacked per step (at least one source): 2 sources of n = 4,000, d = 256.

Each source in a chunk costs about 20 MB of peak memory at n = 4,000, d = 256
(its host copy, its device copy, the validation's temporaries): scoring
80 such sources from one file peaked at 571 MiB with chunks of one source
and 730 MiB with chunks of eight (bench/bench_out_of_core.py), while the
time per source is the factorisation's, so small chunks cost little.
"""

_FLOAT_KINDS = ("features", "probabilities")
_ROUTING = ("mesh", "source_axis", "sample_axis")  # score_matrix's placement keywords, passed per chunk
_WHERE = re.compile(r" \(sources ([0-9, ]+)\)")


class SourceScores(NamedTuple):
    """Scores of a stream of sources.

    Attributes:
      scores: [S, T] host array (``[S, T, L]`` for an estimator that returns L
        values per pair), in the order the sources came.
      names: one name per source: the file stems for sources given as paths
        (the paths themselves where two stems are equal), the ``names``
        passed by the caller, or ``None``.
    """

    scores: np.ndarray
    names: tuple[str, ...] | None


def is_source_stream(sources: Any) -> bool:
    """True when ``sources`` is a stream of sources rather than an array-like (module docstring)."""
    if isinstance(sources, (str, os.PathLike)):
        return True
    if isinstance(sources, (list, tuple)):
        return any(isinstance(s, (str, os.PathLike)) for s in sources)
    if isinstance(sources, Iterator):
        return True
    return (
        callable(sources)
        and not isinstance(sources, (np.ndarray, jax.Array, type))
        and not hasattr(sources, "__array__")
    )


def score_sources(
    estimator: str | Callable,
    sources,
    targets,
    *,
    num_sources: int | None = None,
    names: Sequence[str] | None = None,
    mask=None,
    source_mask=None,
    target_mask=None,
    batch_size: int | None = None,
    progress: bool | None = None,
    **options,
) -> SourceScores:
    """Score a stream of sources against T stacked targets, one chunk of sources in memory at a time.

    ``scores[s, t] = estimator(source_s, target_t, **options)``, equal to
    :func:`jaxtransfer.score_matrix` on the stacked sources, computed by calling
    it on successive chunks of ``batch_size`` sources stacked on the host
    (float sources as the default float dtype). Memory holds one chunk (on the
    host and its device copy), the targets and the result, independently of S.

    Chunks all have the same size, so the jitted program compiles once: when
    S is known, S is split into ``ceil(S / batch_size)`` equal chunks and the
    last one is padded with copies of its last source (fewer than one extra
    source per chunk); for an iterator of unknown length the last, shorter
    chunk compiles once more. The targets are validated and converted once.

    Args:
      estimator: a jaxtransfer estimator or its name.
      sources: a stream (module docstring): a folder, a glob pattern, a file,
        a list of paths, an iterator or a callable ``i -> source``. Each
        source is one sample set ([n, d] features, [n] labels...), all of the
        same shape.
      targets: [T, n, ...], as for :func:`jaxtransfer.score_matrix`.
      num_sources: S; required with a callable, optional with an iterator
        (then it sizes the result and the progress bar, and the iterator must
        yield exactly S sources).
      names: optional S names for the sources (default: file stems for paths).
      mask, target_mask: as for :func:`jaxtransfer.score_matrix`.
      source_mask: optional bool [S, n], sliced per chunk.
      batch_size: sources stacked per step, also passed to ``score_matrix``.
        Default: as many as fit in :data:`CHUNK_BYTES` (at least one), and the
        estimator's own batch inside the step.
      progress: a progress bar over sources (``jaxtransfer._progress``):
        ``True`` a tqdm bar, ``None`` a bar on a terminal and plain lines on
        stderr otherwise, ``False`` nothing.
      **options: the estimator's options. With label sources, pass
        ``num_source_classes``: otherwise each chunk infers its own count, which
        leaves the scores unchanged but may compile once per distinct count.

    Returns:
      :class:`SourceScores`: the [S, T] host array and the source names.

    Raises:
      ValueError, TypeError: as ``score_matrix`` (a message about a chunk of
        several sources says which sources it holds); a source that cannot be
        read, has another shape than the first or holds non-finite features,
        naming it; ``num_sources``/``names``/``source_mask`` that disagree with
        the number of sources; an empty stream.

    Example:
      >>> import numpy as np, jaxtransfer as jt
      >>> from jaxtransfer.estimators._source_stream import score_sources
      >>> labels = np.array([[0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]])
      >>> out = score_sources("nce", lambda i: labels[i], labels[:1], num_sources=3, batch_size=2)
      >>> bool(np.allclose(out.scores, jt.score_matrix("nce", labels, labels[:1])))
      True
    """
    # locals() is exactly the arguments here (``options`` the dict of the rest): keep this first
    return _score_stream(**locals(), stacklevel=3)


def stream_score_matrix(estimator, sources, targets, **kwargs) -> jax.Array:
    """:func:`score_sources`'s scores as a ``jax.Array``: ``score_matrix``'s route for streams.

    Takes the arguments of :func:`score_sources`. Warnings point at the caller
    of ``score_matrix``.
    """
    arguments = inspect.signature(score_sources).bind(estimator, sources, targets, **kwargs)
    arguments.apply_defaults()
    return jnp.asarray(_score_stream(**arguments.arguments, stacklevel=4).scores)


# ----------------------------------------------------------------------------- sources, one at a time


def _raw_items(sources, num_sources: int | None) -> tuple[Iterator, int | None]:
    """An iterator over the unloaded sources (paths, arrays, loader results) and S when known."""
    if num_sources is not None:
        if isinstance(num_sources, bool) or not isinstance(num_sources, int) or num_sources < 1:
            raise ValueError(f"num_sources must be a positive int, got {num_sources!r}")
    if isinstance(sources, (str, os.PathLike)):
        files = array_files(sources, what="sources")
        items: Sequence = files
    elif isinstance(sources, (list, tuple)):
        items = sources
    elif isinstance(sources, Iterator):
        return sources, num_sources
    else:  # a callable i -> source
        if num_sources is None:
            raise TypeError(
                "sources is a callable (i -> source); pass num_sources=<int>, the number of sources, with it"
            )
        return (sources(i) for i in range(num_sources)), num_sources
    if not items:
        raise ValueError("sources is empty: score_matrix needs at least one source")
    if num_sources is not None and num_sources != len(items):
        raise ValueError(f"num_sources={num_sources}, but sources lists {len(items)} sources")
    return iter(items), len(items)


def _load(item, label: str) -> np.ndarray:
    """One source as a NumPy array: a ``.npy`` file memory-mapped, anything else as an array."""
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise ValueError(f"{label}: no such file: {path}")
        with open(path, "rb") as fh:
            zipped = fh.read(2) == b"PK"
        try:
            if not zipped:
                return map_npy(path)
            keys = npz_names(path)
            if len(keys) != 1:
                raise ValueError(
                    f"{path} is a .npz archive holding {len(keys)} arrays; one source per file is "
                    "expected: save each source as its own .npy (np.save), which is also memory-mapped "
                    "(.npz members cannot be)"
                )
            return read_npz(path, names=keys)[keys[0]]
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
    if item is None or isinstance(item, (bytes, dict, set)):
        raise TypeError(f"{label} must be an array or the path of a .npy file, got {type(item).__name__}")
    try:
        arr = np.asarray(item)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{label} must be an array, got {type(item).__name__} ({err})") from None
    if arr.dtype == object:
        raise TypeError(f"{label} must be a numeric array, got an object array (ragged or mixed input?)")
    return arr


def _label(index: int, item) -> str:
    return f"sources[{index}]" + (f" ({item})" if isinstance(item, (str, os.PathLike)) else "")


def _check_source(arr: np.ndarray, label: str, first: tuple[tuple[int, ...], str] | None, floats: bool):
    if floats and (
        not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise TypeError(f"{label} must be a real-valued array, got dtype {arr.dtype}")
    if first is not None and arr.shape != first[0]:
        raise ValueError(
            f"{label} has shape {list(arr.shape)}, but {first[1]} has shape {list(first[0])}; "
            "every source must have the same shape (one sample set of the same n inputs)"
        )


def _check_finite(row: np.ndarray, label: str) -> None:
    bad = ~np.isfinite(row)
    if bad.any():
        where = tuple(int(i[0]) for i in np.nonzero(bad))
        raise ValueError(f"{label} contains a non-finite value ({row[where]}) at index {where}")


class _Chunks:
    """Successive host blocks of sources, each loaded, checked and copied one source at a time."""

    def __init__(self, items: Iterator, total: int | None, floats: bool):
        self.items, self.total, self.floats = items, total, floats
        self.dtype = np.dtype(jnp.result_type(float)) if floats else None
        self.count = 0  # sources taken so far
        self.paths: list[Path | None] = []
        self.first: tuple[tuple[int, ...], str] | None = None
        self._peeked: np.ndarray | None = None

    def peek(self) -> np.ndarray | None:
        """Load the first source (None for an empty stream); it opens the first chunk."""
        got = self._next()
        if got is not None:
            self._peeked = got
            self.first = (got.shape, self._last_label)
        return got

    def _next(self) -> np.ndarray | None:
        try:
            item = next(self.items)
        except StopIteration:
            return None
        index = self.count
        self.count += 1
        self.paths.append(Path(item) if isinstance(item, (str, os.PathLike)) else None)
        label = _label(index, item)
        arr = _load(item, label)
        _check_source(arr, label, self.first, self.floats)
        self._last_label = label
        return arr

    def block(self, size: int, pad: bool) -> tuple[np.ndarray | None, int]:
        """Up to ``size`` sources stacked [k, ...] and how many are real (copies of the last pad it)."""
        rows: list[np.ndarray] = []
        buf = None
        real = 0
        while real < size:
            if self._peeked is not None:
                arr, self._peeked = self._peeked, None
            else:
                arr = self._next()
                if arr is None:
                    break
            if self.floats:
                if buf is None:
                    buf = np.empty((size, *arr.shape), self.dtype)
                buf[real] = arr  # reads the mapped pages; the mapping goes with ``arr``
                _check_finite(buf[real], self._last_label)
            else:
                rows.append(np.array(arr))
            del arr
            real += 1
        if real == 0:
            return None, 0
        if not self.floats:
            buf = np.stack(rows)
            if pad and real < size:
                buf = np.concatenate([buf, np.repeat(buf[-1:], size - real, axis=0)])
        elif real < size:
            if pad:
                buf[real:] = buf[real - 1]
            else:
                buf = buf[:real]
        return buf, real


# ----------------------------------------------------------------------------- the loop


def _chunk_size(batch_size, first: np.ndarray, floats: bool, total: int | None) -> int:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        size = batch_size
    else:
        itemsize = np.dtype(jnp.result_type(float)).itemsize if floats else first.dtype.itemsize
        size = max(1, CHUNK_BYTES // max(1, first.size * itemsize))
    if total is not None:  # equal chunks: the padding is less than one source per chunk
        size = math.ceil(total / math.ceil(total / size))
    return size


def _where(first: int, last: int, names: list[str | None]) -> str:
    shown = [n for n in names if n is not None][:3]
    more = ", ..." if len([n for n in names if n is not None]) > 3 else ""
    return f"sources {first}..{last}" + (f" ({', '.join(shown)}{more})" if shown else "")


def _score_stream(
    estimator,
    sources,
    targets,
    *,
    num_sources,
    names,
    mask,
    source_mask,
    target_mask,
    batch_size,
    progress,
    options,
    stacklevel,
) -> SourceScores:
    fn = get_estimator(estimator)
    info = fn.info
    options = dict(options)
    routing = {k: options.pop(k) for k in _ROUTING if k in options}  # score_matrix's, not the estimator's
    items, total = _raw_items(sources, num_sources)
    floats = info.source in _FLOAT_KINDS
    smask = None
    if source_mask is not None:
        smask = np.asarray(source_mask)
        if smask.ndim != 2 or (total is not None and smask.shape[0] != total):
            expected = f"[{total if total is not None else 'S'}, n]"
            raise ValueError(f"source_mask must have shape {expected}, got shape {list(smask.shape)}")
    if names is not None and total is not None:
        _names(names, [], total)  # before any work
    chunks = _Chunks(items, total, floats)
    first = chunks.peek()
    if first is None:
        raise ValueError("sources is empty: the stream yielded no source; score_matrix needs at least one")
    size = _chunk_size(batch_size, first, floats, total)
    del first

    result: np.ndarray | None = None
    filled = 0
    checked_targets = None
    unresolved: list[int] = []
    message = None
    with progress_bar(total, progress, desc="score_matrix", unit="source") as bar:
        while True:
            start = filled
            block, real = chunks.block(size, pad=total is not None)
            if block is None:
                break
            whole = total is not None and start == 0 and real == total
            files = [p and p.name for p in chunks.paths[start : start + real]]
            where = _where(start, start + real - 1, files)
            chunk_mask = None
            if smask is not None:
                chunk_mask = smask[start : start + real]
                if chunk_mask.shape[0] < real:
                    raise ValueError(
                        f"source_mask has {smask.shape[0]} rows, but sources yields more sources"
                    )
                if block.shape[0] > real:
                    chunk_mask = np.concatenate(
                        [chunk_mask, np.repeat(chunk_mask[-1:], block.shape[0] - real, axis=0)]
                    )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    if checked_targets is None:  # validated and converted once
                        checked_targets = info.check(block, targets, options, 1).target
                    out = score_stacked(
                        fn,
                        block,
                        checked_targets,
                        mask=mask,
                        source_mask=chunk_mask,
                        target_mask=target_mask,
                        batch_size=batch_size,
                        **routing,
                        **options,
                    )
                    out = np.asarray(out)
                except (ValueError, TypeError) as err:
                    if whole:
                        raise
                    kind = ValueError if isinstance(err, ValueError) else TypeError
                    raise kind(f"{where}: {err} (indices counted from source {start})") from None
            for w in caught:
                found = _WHERE.search(str(w.message)) if issubclass(w.category, PrecisionWarning) else None
                if found is None:
                    warnings.warn(w.message, w.category, stacklevel=stacklevel)
                    continue
                message = message or str(w.message)
                local = [int(i) for i in found.group(1).split(",")]
                unresolved += [start + i for i in local if i < real]
            if result is None:
                capacity = total if total is not None else max(4 * size, 64)
                result = np.empty((capacity, *out.shape[1:]), out.dtype)
            elif filled + real > result.shape[0]:  # an iterator of unknown length: grow
                grown = np.empty((max(2 * result.shape[0], filled + real), *result.shape[1:]), result.dtype)
                grown[:filled] = result[:filled]
                result = grown
            result[filled : filled + real] = out[:real]
            filled += real
            bar.update(real)
    count = chunks.count
    if num_sources is not None and count != num_sources:
        raise ValueError(f"num_sources={num_sources}, but sources yielded {count} sources")
    if smask is not None and smask.shape[0] != count:
        raise ValueError(f"source_mask must have shape [{count}, n], got shape {list(smask.shape)}")
    scores = result[:filled] if result.shape[0] != filled else result
    labels = _names(names, chunks.paths, count)
    if unresolved:
        listed = ", ".join(
            f"{i} ({labels[i]})" if labels is not None else str(i) for i in unresolved[:10]
        ) + (", ..." if len(unresolved) > 10 else "")
        warnings.warn(
            _WHERE.sub(f" (sources {listed})", message, count=1), PrecisionWarning, stacklevel=stacklevel
        )
    return SourceScores(scores, labels)


def _names(names, paths: list[Path | None], count: int) -> tuple[str, ...] | None:
    if names is not None:
        if isinstance(names, str):
            raise TypeError("names must be a sequence of strings (one per source), got a str")
        out = tuple(str(n) for n in names)
        if len(out) != count:
            raise ValueError(f"names has {len(out)} entries, but there are {count} sources")
        return out
    if not paths or any(p is None for p in paths):
        return None
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return tuple(stems)
    return tuple(str(p) for p in paths)
