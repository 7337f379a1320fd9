"""Score every source against every target in one jitted call."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._base import get_estimator, unresolved_flag, warn_unresolved
from ._checks import as_mask

__all__ = ["score_matrix"]


def _map_chunks(fn, xs, size: int, total: int):
    """``fn`` on chunks of ``size`` leading items of the pytree ``xs``, outputs concatenated.

    One chunk runs at a time (``lax.map``), which bounds memory. A chunk of one
    calls ``fn`` on the unbatched item, so data-dependent branches inside stay
    real branches.
    """
    if size == 1:
        return lax.map(lambda x: fn(x, batched=False), xs)
    if size >= total:
        return fn(xs, batched=True)
    chunks = -(-total // size)
    pad = chunks * size - total

    def padded(x):
        x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
        return x.reshape(chunks, size, *x.shape[1:])

    out = lax.map(lambda x: fn(x, batched=True), jax.tree.map(padded, xs))
    return jax.tree.map(lambda o: o.reshape(chunks * size, *o.shape[2:])[:total], out)


@partial(jax.jit, static_argnames=("info", "static", "batch"))
def _matrix(sources, targets, source_mask, target_mask, dynamic, *, info, static, batch):
    opts = {**dict(static), **dynamic}

    def per_source(s, sm):
        """Scores [T] and whether the working precision resolves this source."""
        if target_mask is None:
            state = info.prepare(s, sm, **opts)
            scores = jax.vmap(lambda t: info.finish(state, t, sm, **opts))(targets)
            return scores, unresolved_flag(info, state, opts)

        def pair(t, tm):
            m = tm if sm is None else sm & tm
            state = info.prepare(s, m, **opts)
            return info.finish(state, t, m, **opts), unresolved_flag(info, state, opts)

        scores, flags = jax.vmap(pair)(targets, target_mask)
        return scores, jnp.any(flags)

    def step(chunk, *, batched):
        s, sm = chunk
        if info.matrix is not None:
            if not batched:
                s, sm = s[None], None if sm is None else sm[None]
            out = info.matrix(s, targets, sm, target_mask, **opts)
            flags = jnp.zeros(out.shape[:1], bool)
            return (out, flags) if batched else (out[0], flags[0])
        return jax.vmap(per_source)(s, sm) if batched else per_source(s, sm)

    return _map_chunks(step, (sources, source_mask), batch, sources.shape[0])


def score_matrix(
    estimator: str | Callable,
    sources,
    targets,
    *,
    mask=None,
    source_mask=None,
    target_mask=None,
    batch_size: int | None = None,
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
        features [S, n, d].
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
        256 MB of count tables for NCE).
      **options: the estimator's keyword options (class counts, ``l2``...).
        Class counts are inferred from all sources/targets on eager calls.

    Returns:
      [S, T] scores, or [S, T, L] when the estimator returns L values per pair
      (``linear_mse`` with an array of ``l2``).

    Raises:
      ValueError, TypeError: as the estimator, naming the stacked arguments;
        unknown estimator names; masks of the wrong shape.

    Example:
      >>> import jaxtransfer as jt
      >>> jt.score_matrix("nce", [[0, 1, 0, 1], [0, 0, 1, 1]], [[0, 1, 0, 1]]).shape
      (2, 1)
    """
    fn = get_estimator(estimator)
    info = fn.info
    for name, value in (("sources", sources), ("targets", targets)):
        shape = getattr(value, "shape", None)
        if shape is None:
            try:
                shape = np.shape(value)
            except ValueError:  # ragged: the estimator's check names it
                continue
        if len(shape) > 0 and shape[0] == 0:
            raise ValueError(
                f"{name} is empty (shape {tuple(shape)}): "
                "score_matrix needs at least one source and one target"
            )
    checked = info.check(sources, targets, options, 1)
    src, tgt, n = checked.source, checked.target, checked.n
    s, t = src.shape[0], tgt.shape[0]
    shared = as_mask("mask", mask, (n,))
    smask = as_mask("source_mask", source_mask, (s, n))
    tmask = as_mask("target_mask", target_mask, (t, n))
    if shared is not None:
        smask = jnp.broadcast_to(shared[None, :], (s, n)) if smask is None else smask & shared[None, :]
    if batch_size is None:
        batch = info.default_batch(s, t, checked.static) if info.default_batch else s
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        batch = batch_size
    scores, flags = _matrix(
        src,
        tgt,
        smask,
        tmask,
        checked.dynamic,
        info=info,
        static=tuple(sorted(checked.static.items())),
        batch=min(batch, s),
    )
    warn_unresolved(info, flags, what="the features of some sources", stacklevel=2)
    return scores
