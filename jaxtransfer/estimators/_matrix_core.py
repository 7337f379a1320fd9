"""The stacked route of ``score_matrix``: all sources in memory, one jitted call, on one device or a mesh."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtransfer_kernels import uniform_batch

from ._base import get_estimator, one_source_per_step, unresolved_flag, warn_unresolved
from ._checks import as_mask, is_concrete
from ._sample_split import check_can_split, split_pair

__all__ = ["SEQUENTIAL_PLATFORMS", "score_stacked"]

# Where the sources of a step run one after another even when ``batch_size`` > 1, for the estimators
# that factorise each source (``default_batch`` is ``one_source_per_step``). XLA:CPU gains nothing
# from running them side by side: its matmuls already use every core, its LAPACK calls loop over a
# batch, and a chunk of features no longer fits the cache that one source's passes reuse. Measured
# (bench/bench_scale.py, CPU time, chunks vmapped with one route each): Linear MSE 1.0-1.3× one
# source per step at n = 2,000, d = 128 and up to 1.5× at n = 200, d = 16; LogME 0.9-1.0×. So on a
# CPU a larger ``batch_size`` is never slower than 1; GPUs and TPUs vmap each chunk.
SEQUENTIAL_PLATFORMS = frozenset({"cpu"})


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


_CHUNK_AXIS = "jaxtransfer_sources"  # the vmap axis of a chunk of sources (kernels' uniform branches)


def _whole(sources, targets, source_mask, target_mask, opts, *, info, batch):
    """Scores [S, T] and precision flags [S] of this device's sources, every sample here."""

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
        if not batched:
            return per_source(s, sm)
        with uniform_batch(_CHUNK_AXIS):  # a run-time factorisation choice runs one route per chunk
            return jax.vmap(per_source, axis_name=_CHUNK_AXIS)(s, sm)

    return _map_chunks(step, (sources, source_mask), batch, sources.shape[0])


def _split(sources, targets, source_mask, target_mask, opts, *, info, axis):
    """Scores [S, T] of this device's sources from its slice of the samples, merged over ``axis``."""

    def per_source(x):
        s, sm = x

        def pair(t, tm):
            m = tm if sm is None else (sm if tm is None else sm & tm)
            return split_pair(info.name, s, t, m, axis, opts)

        if target_mask is None:
            return jax.vmap(lambda t: pair(t, None))(targets)
        return jax.vmap(pair)(targets, target_mask)

    scores = lax.map(per_source, (sources, source_mask))
    return scores, jnp.zeros(scores.shape[:1], bool)


def _matrix_impl(sources, targets, source_mask, target_mask, dynamic, *, info, static, batch, layout):
    opts = {**dict(static), **dynamic}
    if layout is None:
        return _whole(sources, targets, source_mask, target_mask, opts, info=info, batch=batch)
    mesh, s_axis, n_axis = layout
    if n_axis is None:
        body = partial(_whole, info=info, batch=batch)
    else:
        body = partial(_split, info=info, axis=n_axis)
    specs = (
        P(s_axis, n_axis),  # sources [S, n, ...]
        P(None, n_axis),  # targets [T, n, ...], every target on every source device
        P(s_axis, n_axis),  # source mask [S, n]
        P(None, n_axis),  # target mask [T, n]
        P(),  # options
    )
    run = jax.shard_map(
        lambda *a: body(*a[:4], {**dict(static), **a[4]}),
        mesh=mesh,
        in_specs=specs,
        out_specs=(P(s_axis), P(s_axis)),
        check_vma=False,
    )
    return run(sources, targets, source_mask, target_mask, dynamic)


_matrix = jax.jit(_matrix_impl, static_argnames=("info", "static", "batch", "layout"))


def score_stacked(
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
    stacklevel: int = 2,
    **options,
) -> jax.Array:
    """:func:`score_matrix` on stacked arrays (sources [S, n, ...] all in memory); see its docstring."""
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
    layout = _layout(src, mesh, source_axis, sample_axis)
    if layout is not None:
        if layout[2] is not None:
            check_can_split(info.name, checked.static)
        src, tgt, smask, tmask = _place(layout, src, tgt, smask, tmask)
        local = src.shape[0] // (layout[0].shape[layout[1]] if layout[1] is not None else 1)
        batch = min(batch, local)
    if info.default_batch is one_source_per_step and _platform(src, layout) in SEQUENTIAL_PLATFORMS:
        batch = 1
    scores, flags = _matrix(
        src,
        tgt,
        smask,
        tmask,
        checked.dynamic,
        info=info,
        static=tuple(sorted(checked.static.items())),
        batch=min(batch, src.shape[0]),
        layout=layout,
    )
    if scores.shape[0] != s:  # sources padded to a multiple of the devices
        # the [S, T] output is small: replicate it, then drop the padding (uneven shards cannot be sliced)
        whole = NamedSharding(layout[0], P())
        scores, flags = jax.device_put(scores, whole)[:s], jax.device_put(flags, whole)[:s]
    if not is_concrete(flags) or flags.is_fully_addressable:
        warn_unresolved(info, flags, what="the features of some sources", stacklevel=stacklevel)
    elif bool(_any(flags)):
        warn_unresolved(info, np.ones((), bool), what="the features of some sources", stacklevel=stacklevel)
    return scores


_any = jax.jit(jnp.any)


def _platform(sources, layout) -> str:
    """The platform the scores are computed on: the mesh's, the sources' device's, or the default."""
    if layout is not None:
        return layout[0].devices.flat[0].platform
    if is_concrete(sources) and hasattr(sources, "devices"):
        return next(iter(sources.devices())).platform
    return jax.default_backend()  # traced inside a jit: placed on the default backend


def _layout(sources, mesh, source_axis, sample_axis):
    """(mesh, source axis, sample axis) to run on, or None for one device (``score_matrix``'s rules)."""
    if mesh is None:
        if source_axis is not None or sample_axis is not None:
            raise ValueError("source_axis and sample_axis name axes of a mesh: pass mesh= as well")
        if not is_concrete(sources):  # inside a jit the placement is not known: pass mesh=
            return None
        sharding = getattr(sources, "sharding", None)
        if not isinstance(sharding, NamedSharding) or sharding.mesh.size == 1:
            return None
        spec = (*sharding.spec, None, None)
        for dim, entry in zip(("sources (S)", "samples (n)"), spec[:2], strict=True):
            if entry is not None and not isinstance(entry, str):
                raise ValueError(
                    f"sources is sharded over several mesh axes {entry} along its {dim} dimension; "
                    "score_matrix splits each dimension over at most one axis: pass mesh=, "
                    "source_axis= and sample_axis="
                )
        if spec[0] is None and spec[1] is None:
            return None
        return sharding.mesh, spec[0], spec[1]
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = tuple(mesh.axis_names)
    if source_axis is None and sample_axis is None:
        if len(names) != 1:
            raise ValueError(
                f"mesh has the axes {names}: say which splits the sources (source_axis=) "
                "and/or which splits the samples (sample_axis=)"
            )
        source_axis = names[0]
    for arg, value in (("source_axis", source_axis), ("sample_axis", sample_axis)):
        if value is not None and value not in names:
            raise ValueError(f"{arg}={value!r} is not an axis of the mesh; its axes are {names}")
    if source_axis == sample_axis:
        raise ValueError(f"source_axis and sample_axis must be different mesh axes, both are {source_axis!r}")
    return mesh, source_axis, sample_axis


def _pad(x, axis: int, size: int):
    """``x`` padded along ``axis`` to ``size`` with copies of its last entry (valid values; masked)."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    edge = lax.slice_in_dim(x, x.shape[axis] - 1, x.shape[axis], axis=axis)
    return jnp.concatenate([x, jnp.repeat(edge, extra, axis=axis)], axis=axis)


def _place(layout, src, tgt, smask, tmask):
    """The inputs padded to multiples of the axis sizes and put on the mesh as ``_matrix`` splits them."""
    mesh, s_axis, n_axis = layout
    s, n = src.shape[:2]
    s_pad = -(-s // mesh.shape[s_axis]) * mesh.shape[s_axis] if s_axis is not None else s
    n_pad = -(-n // mesh.shape[n_axis]) * mesh.shape[n_axis] if n_axis is not None else n
    if n_pad != n:  # padded samples are masked out of every pair
        keep = jnp.arange(n_pad) < n
        smask = jnp.broadcast_to(keep, (s, n_pad)) if smask is None else _pad(smask, 1, n_pad) & keep
        tmask = None if tmask is None else _pad(tmask, 1, n_pad) & keep
        src, tgt = _pad(src, 1, n_pad), _pad(tgt, 1, n_pad)
    if s_pad != s:
        src = _pad(src, 0, s_pad)
        smask = None if smask is None else _pad(smask, 0, s_pad)

    def put(x, spec):
        return None if x is None else jax.device_put(x, NamedSharding(mesh, spec))

    return (
        put(src, P(s_axis, n_axis)),
        put(tgt, P(None, n_axis)),
        put(smask, P(s_axis, n_axis)),
        put(tmask, P(None, n_axis)),
    )
