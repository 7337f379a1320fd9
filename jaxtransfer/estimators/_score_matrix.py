"""Score every source against every target in one jitted call."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh

from ._matrix_core import score_stacked
from ._source_stream import is_source_stream, stream_score_matrix

__all__ = ["score_matrix"]


def score_matrix(
    estimator: str | Callable,
    sources,
    targets,
    *,
    mask=None,
    source_mask=None,
    target_mask=None,
    batch_size: int | None = None,
    mesh: Mesh | None = None,
    source_axis: str | None = None,
    sample_axis: str | None = None,
    **options,
) -> jax.Array:
    """Score S stacked sources against T stacked targets on the same n inputs.

    ``out[s, t] = estimator(sources[s], targets[t], **options)``, but the work
    that depends on a source alone (its one-hot labels, its centred Gram matrix
    and eigendecomposition, its probabilities) is done once per source, not
    once per pair, and the targets are batched with ``vmap`` (or, for the
    entropy estimators, all pairs' counts come from one matrix product or one
    scatter-add).

    Args:
      estimator: a jaxtransfer estimator (``jaxtransfer.nce``...) or its name.
      sources: [S, n, ...], e.g. labels [S, n], probabilities [S, n, Cz],
        features [S, n, d]; or a stream of S sources that are never all in
        memory, each one sample set ([n, d], [n]...): a folder (every ``*.npy``
        in it, sorted by name), a glob pattern or a file, as a ``str`` or
        ``os.PathLike``; a list or tuple holding paths (one ``.npy`` per
        source, memory-mapped; a single-array ``.npz`` is read whole); an
        iterator (a generator, ``map(...)``); or a callable ``i -> source``
        (e.g. a model's feature extraction) with ``num_sources=S``. A stream
        is scored a chunk of ``batch_size`` sources at a time (default: about
        8 MB of sources), so memory does not grow with S; keywords
        ``num_sources``, ``names`` and ``progress`` apply to streams only
        (``jaxtransfer.estimators._source_stream.score_sources``, which also
        returns the file names). Anything else — an array, a memory-mapped
        array, a nested list of numbers, a list of arrays — is stacked as
        one array. Samples given in batches (n too large for memory) are for
        the streaming statistics, :mod:`jaxtransfer.streaming`.
      targets: [T, n, ...], labels [T, n] or values [T, n] / [T, n, k].
      mask: optional bool [n] shared by all pairs.
      source_mask: optional bool [S, n]: the samples each source covers.
      target_mask: optional bool [T, n]: the samples each target covers (for
        targets padded to a common n). A pair uses the samples all given masks
        keep. With a target mask, source work that depends on the samples (a
        Gram matrix) is redone per pair; the histogram estimators don't mind.
      batch_size: sources per step; bounds memory (each step holds one chunk of
        sources against all T targets). Default: the estimator's own choice
        (one source at a time for the ridge estimators, as many as fit in about
        256 MB of count tables for NCE). On GPUs and TPUs a chunk of the
        estimators that factorise each source (the ridge and spectral ones)
        runs side by side under ``vmap``, one factorisation route per chunk;
        on a CPU its sources run one after another, because XLA:CPU gains
        nothing from batching them and loses cache
        (``estimators._matrix_core.SEQUENTIAL_PLATFORMS``).
      mesh: optional :class:`jax.sharding.Mesh` to run on (several devices,
        or several processes after ``jax.distributed.initialize()``). Default:
        follow the inputs — when ``sources`` is a ``jax.Array`` with a
        ``NamedSharding`` over more than one device, its mesh, and the mesh
        axes of its first two dimensions as ``source_axis`` and
        ``sample_axis``; otherwise one device. Inside a ``jit`` the inputs'
        placement is unknown: pass ``mesh=`` (and the axes) there.
      source_axis: the mesh axis that splits the sources (S). Each device
        factorises its own sources against every target (targets are
        replicated); the output is sharded along S. The result equals the
        one-device result (the same arithmetic per source). A 1-D ``mesh``
        without axis names splits the sources.
      sample_axis: the mesh axis that splits the samples (n). Each device
        accumulates the estimator's sufficient statistics on its samples, the
        statistics are summed with ``psum`` and finalised
        (:mod:`jaxtransfer.streaming`): nothing of size n leaves a device, at
        the streamed statistics' precision (about 1e-6 relative in float32 on
        well-conditioned features; see ``_sample_split.py``). Not for
        ``nleep``, ``soft_nce`` or regression TransRate (ValueError). Both
        axes at once on a 2-D mesh split sources and samples. S and n are
        padded to multiples of the axis sizes (copies of a source, masked
        samples) when they are not; divisible sizes move no data.
      **options: the estimator's keyword options (class counts, ``l2``...).
        Class counts are inferred from all sources/targets on eager calls.

    Returns:
      [S, T] scores, or [S, T, L] when the estimator returns L values per pair
      (``linear_mse`` with an array of ``l2``). On a mesh, a ``jax.Array``
      sharded along S over ``source_axis`` (replicated over the other axes);
      in a multi-process program it is a global array: fetch it on every
      process with ``jax.experimental.multihost_utils.process_allgather``.

    Raises:
      ValueError, TypeError: as the estimator, naming the stacked arguments;
        unknown estimator names; masks of the wrong shape.

    Example:
      >>> import jaxtransfer as jt
      >>> jt.score_matrix("nce", [[0, 1, 0, 1], [0, 0, 1, 1]], [[0, 1, 0, 1]]).shape
      (2, 1)
    """
    if is_source_stream(sources):
        return stream_score_matrix(
            estimator, sources, targets, mask=mask, source_mask=source_mask, target_mask=target_mask,
            batch_size=batch_size, mesh=mesh, source_axis=source_axis, sample_axis=sample_axis, **options,
        )  # fmt: skip
    return score_stacked(
        estimator, sources, targets, mask=mask, source_mask=source_mask, target_mask=target_mask,
        batch_size=batch_size, mesh=mesh, source_axis=source_axis, sample_axis=sample_axis, stacklevel=4,
        **options,
    )  # fmt: skip
