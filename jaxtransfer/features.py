"""Feature extraction: source features, source predictions and per-layer features in one pass.

:func:`extract` runs a model over a dataset once and returns what the
estimators take as their source input:

* ``features`` [N, d]: the penultimate layer (the input of the source head);
* ``logits`` [N, C] and, from them, ``probabilities`` and argmax ``labels``;
* ``layers``: named intermediate activations, each pooled to [N, c] (global
  average over spatial axes), for per-layer scoring;
* ``stats`` (optional): the estimators' sufficient statistics accumulated
  batch by batch (:class:`StreamedStats`), so that features never need to sit
  in memory all at once.

Models
------
Any of:

* a Flax NNX module. If it has a ``taps(x) -> dict`` method (the zoo's
  backbones and :mod:`jaxtransfer.sources` do), that dict is used: it holds
  ``features``, ``logits`` and every named layer. Otherwise ``model(x)`` is
  called, and layers are the values the module stored with
  ``self.sow(nnx.Intermediate, name, value)``.
* a Flax Linen module, with ``variables=``; layers are matched against the
  ``/``-joined paths of ``capture_intermediates``.
* a plain function ``fn(params, x)``, with ``params=``.

A model's output is read as: a dict with ``features`` (and optionally
``logits`` and layers), a ``(features, logits)`` pair, or a single array of
features.

Execution: one ``nnx.split``, one jitted step compiled once; every batch
(the last, short one padded and masked) reuses it. The same code runs on CPU,
GPU and TPU; nothing is transferred back to the host unless asked.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtransfer_kernels import (
    CrossStats,
    SourceStats,
    add_stats,
    conditional_entropy_from_counts,
    cross_stats,
    joint_histogram,
    ridge_objective_from_stats,
    source_stats,
)

from ._nnx import get_value
from ._progress import progress_bar

__all__ = ["Extracted", "StreamedStats", "check_input", "extract", "pool"]


class StreamedStats(NamedTuple):
    """Sufficient statistics accumulated during extraction (all sizes independent of N).

    Attributes:
      features: :class:`~jaxtransfer_kernels.SourceStats` of the features
        (count, sum and Gram matrix about the first batch's mean).
      targets: :class:`~jaxtransfer_kernels.CrossStats` of the features against
        the targets (one-hot for class labels), or ``None`` without targets.
      joint: int32 [Cz, Cy] joint counts of the source's argmax label and the
        target label, or ``None`` (needs logits and class-label targets).
    """

    features: SourceStats
    targets: CrossStats | None
    joint: jax.Array | None

    def linear_mse(self, l2: float = 1.0) -> jax.Array:
        """Linear MSE (:func:`jaxtransfer.linear_mse`) from the statistics.

        Closed form on the streamed Gram matrix: it loses digits in float32 when
        the targets are almost in the span of the features (enable x64 to
        accumulate in float64); the whole-array :func:`jaxtransfer.linear_mse`
        computes the residual directly.
        """
        if self.targets is None:
            raise ValueError("linear_mse needs targets: pass targets= to extract(..., statistics=True)")
        return -jnp.sum(ridge_objective_from_stats(self.features, self.targets, l2), axis=-1)

    def nce(self) -> jax.Array:
        """NCE (:func:`jaxtransfer.nce`) of the source's argmax labels against the target labels."""
        if self.joint is None:
            raise ValueError("nce needs the model's logits and integer target labels (num_target_classes=)")
        return -conditional_entropy_from_counts(self.joint)


class Extracted(NamedTuple):
    """The result of :func:`extract`. Arrays are ``jax.Array`` on the default device.

    Attributes:
      features: [N, d] penultimate features, or ``None`` when not kept.
      logits: [N, C] source head outputs, or ``None`` (no head, or not kept).
      layers: name -> [N, c] pooled intermediate activations.
      stats: :class:`StreamedStats`, or ``None`` unless ``statistics=True``.
      count: N, the number of samples seen.
    """

    features: jax.Array | None
    logits: jax.Array | None
    layers: dict[str, jax.Array]
    stats: StreamedStats | None
    count: int

    @property
    def probabilities(self) -> jax.Array:
        """Softmax of the logits, [N, C]."""
        if self.logits is None:
            raise ValueError("this extraction has no logits (the model has no head, or keep= left them out)")
        return jax.nn.softmax(self.logits, axis=-1)

    @property
    def labels(self) -> jax.Array:
        """Argmax source labels on the inputs, int32 [N]."""
        if self.logits is None:
            raise ValueError("this extraction has no logits (the model has no head, or keep= left them out)")
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


def pool(x: jax.Array) -> jax.Array:
    """Global average over every axis between the first (batch) and the last (channels)."""
    x = jnp.asarray(x)
    return x if x.ndim <= 2 else jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _interpret(out: Any, layers: Sequence[str]) -> dict[str, jax.Array]:
    if isinstance(out, dict):
        if "features" not in out:
            raise ValueError(f"the model returned a dict without 'features' (keys: {sorted(out)})")
        res = {"features": out["features"]}
        if out.get("logits") is not None:
            res["logits"] = out["logits"]
        missing = [name for name in layers if name not in out]
        if missing:
            keys = sorted(k for k in out if k not in ("features", "logits"))
            raise ValueError(f"layers {missing} are not among the model's outputs {keys}")
        res.update({name: out[name] for name in layers})
        return res
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(
                f"a model returning a tuple must return (features, logits), got {len(out)} items"
            )
        return {"features": out[0], "logits": out[1]}
    return {"features": out}


def _flat_intermediates(state) -> dict[str, Any]:
    found = {}
    for path, value in nnx.to_flat_state(state):
        value = get_value(value)
        found["/".join(str(p) for p in path)] = value[-1] if isinstance(value, tuple) else value
    return found


def _call_capturing(module: nnx.Module, x) -> tuple[Any, dict[str, Any]]:
    """``module(x)`` and the values it sowed as ``nnx.Intermediate``."""
    if hasattr(nnx, "capture"):  # flax >= 0.12: sow only records inside nnx.capture
        out, state = nnx.capture(module, nnx.Intermediate)(x)
        return out, _flat_intermediates(state)
    out = module(x)  # pragma: no cover - older flax
    return out, _flat_intermediates(nnx.pop(module, nnx.Intermediate))


def _match(found: dict[str, Any], layers: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in layers:
        hits = [k for k in found if k == name or k.endswith("/" + name) or k.split("/")[-2:-1] == [name]]
        if len(hits) != 1:
            what = "no" if not hits else "several"
            raise ValueError(f"layer {name!r}: {what} matching intermediate among {sorted(found)}")
        out[name] = found[hits[0]]
    return out


def _adapter(model, params, variables) -> tuple[tuple, Any]:
    """A hashable description of how to call ``model``, and the state to call it with."""
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        return ("nnx", graphdef), state
    linen = sys.modules.get("flax.linen")
    if linen is not None and isinstance(model, linen.Module):
        if variables is None:
            raise TypeError("a Linen module needs its variables: extract(module, data, variables=...)")
        return ("linen", model), variables
    if callable(model):
        if params is None:
            raise TypeError("a plain function model is called as fn(params, x): pass params=")
        return ("fn", model), params
    raise TypeError(
        f"model must be a Flax NNX module, a Linen module or a function, got {type(model).__name__}"
    )


def _apply_fn(key: tuple, layers: tuple[str, ...]) -> Callable[[Any, jax.Array], dict]:
    """``fn(state, x) -> {'features', ['logits'], *layers}`` for a key from :func:`_adapter`."""
    kind, obj = key
    if kind == "nnx":

        def fn(state, x):
            module = nnx.merge(obj, state)
            if callable(getattr(module, "taps", None)):
                return _interpret(module.taps(x), layers)
            if not layers:
                return _interpret(module(x), ())
            raw, found = _call_capturing(module, x)
            out = _interpret(raw, ())
            out.update(_match(found, layers))
            return out

        return fn
    if kind == "linen":

        def fn(variables, x):
            if not layers:
                return _interpret(obj.apply(variables, x), ())
            out, mods = obj.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
            found = {}
            flat = jax.tree_util.tree_flatten_with_path(
                mods["intermediates"], is_leaf=lambda v: isinstance(v, tuple)
            )
            for path, value in flat[0]:
                keys = [getattr(p, "key", getattr(p, "name", str(p))) for p in path]
                keys = [k for k in keys if k != "__call__"]
                found["/".join(map(str, keys))] = value[-1] if isinstance(value, tuple) else value
            res = _interpret(out, ())
            res.update(_match(found, layers))
            return res

        return fn
    return lambda params, x: _interpret(obj(params, x), layers)


def _accumulate(acc, feats, out, y, mask, classify, num_target_classes, dtype):
    """Add one padded batch to the streamed statistics ``acc = (features, targets, joint)``.

    ``mask`` marks the real rows. The first batch (count 0) fixes the shifts
    the sums and Gram matrices are taken about: its own feature and target means.
    """
    fstats, tstats, joint = acc
    f = feats.astype(dtype)
    first = fstats.count == 0
    w = mask.astype(dtype)[:, None]
    fshift = jnp.where(first, jnp.sum(f * w, axis=0) / jnp.maximum(jnp.sum(w), 1), fstats.shift)
    fstats = add_stats(fstats._replace(shift=fshift), source_stats(f, mask, shift=fshift))
    if tstats is not None:
        yy = jax.nn.one_hot(y, num_target_classes, dtype=dtype) if classify else y.reshape(y.shape[0], -1)
        yy = yy.astype(dtype)
        tshift = jnp.where(first, jnp.sum(yy * w, axis=0) / jnp.maximum(jnp.sum(w), 1), tstats.shift)
        tstats = add_stats(
            tstats._replace(shift=tshift),
            cross_stats(f, yy, mask, feature_shift=fshift, target_shift=tshift),
        )
    if joint is not None:
        z = jnp.argmax(out["logits"], axis=-1)
        joint = joint + joint_histogram(z, y, num_z=joint.shape[0], num_y=joint.shape[1], mask=mask)
    return fstats, tstats, joint


def _build_step(key, layers, wanted, preprocess, classify, num_target_classes, dtype):
    """The forward function and the jitted extraction step; see :func:`_step`."""
    fn = _apply_fn(key, layers)

    def forward(state, x):
        x = preprocess(x) if preprocess is not None else x
        return fn(state, x)

    @jax.jit
    def step(state, x, valid, y, acc):
        out = forward(state, x)
        feats = jnp.asarray(out["features"])
        if feats.ndim != 2:
            feats = pool(feats)
        kept = {k: (feats if k == "features" else pool(out[k])) for k in wanted if k in out}
        if acc is None:
            return kept, None
        mask = jnp.arange(x.shape[0]) < valid
        return kept, _accumulate(acc, feats, out, y, mask, classify, num_target_classes, dtype)

    return forward, step


_cached_step = functools.lru_cache(maxsize=32)(_build_step)


def _step(*args):
    """The step for these settings, compiled once per model structure and reused across calls.

    The cache is keyed on the model's structure (NNX graphdef, Linen module or
    function), never on its weights, so a second :func:`extract` of the same
    model, or of a model with other weights, does not recompile. Settings that
    cannot be hashed (an unhashable ``preprocess``) fall back to a fresh step.
    """
    try:
        return _cached_step(*args)
    except TypeError:
        return _build_step(*args)


def _batches(
    data, batch_size: int | None, targets
) -> tuple[Iterator[tuple[Any, Any]], int | None, int | None]:
    """Yield (x, y) host batches of at most ``batch_size``; return (iterator, size, total count)."""
    if isinstance(data, (np.ndarray, jax.Array)):
        n = data.shape[0]
        if n == 0:
            raise ValueError("data is empty: got 0 samples")
        if targets is not None and np.shape(targets)[0] != n:
            raise ValueError(f"targets has {np.shape(targets)[0]} samples but data has {n}")
        size = min(batch_size or 64, n)

        def gen():
            for i in range(0, n, size):
                yield data[i : i + size], None if targets is None else targets[i : i + size]

        return gen(), size, n
    if targets is not None:
        raise ValueError(
            "targets= goes with an array dataset; an iterable dataset yields (x, y) batches instead"
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be an array [N, ...] or an iterable of batches, got {type(data).__name__}"
        )

    def gen():
        for item in data:
            x, y = item if isinstance(item, (tuple, list)) else (item, None)
            x = x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)
            step = batch_size or x.shape[0]
            for i in range(0, x.shape[0], step):
                yield x[i : i + step], None if y is None else y[i : i + step]

    return gen(), batch_size, None


def _peek_targets(batches: Iterator) -> tuple[Iterator, np.ndarray | None]:
    """The batches, unchanged, and the first batch's targets (None when it has none).

    An iterable dataset's targets are known only from its batches; whether
    they are class labels (integers, one per sample) or regression targets
    is read from the first one.
    """
    first = next(batches, None)
    if first is None:
        return iter(()), None
    y = None if first[1] is None else np.asarray(first[1])
    return itertools.chain([first], batches), y


def _checked_labels(batches: Iterator, num_classes: int) -> Iterator:
    """The batches, each checked to hold integer class labels in [0, ``num_classes``)."""
    for x, y in batches:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise ValueError(
                f"targets: every batch must hold integer class labels [b], like the first; got {y.dtype} "
                f"of shape {y.shape}"
            )
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(
                f"targets: labels must lie in [0, {num_classes}) (num_target_classes={num_classes}), "
                f"got values from {y.min()} to {y.max()}"
            )
        yield x, y


def _pad(x, size: int):
    b = x.shape[0]
    if b == size:
        return x
    pad = [(0, size - b)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad) if isinstance(x, jax.Array) else np.pad(np.asarray(x), pad)


def extract(
    model: Any,
    data: Any,
    *,
    params: Any = None,
    variables: Any = None,
    batch_size: int | None = 64,
    layers: Sequence[str] = (),
    preprocess: Callable[[jax.Array], jax.Array] | str | None = "auto",
    keep: Sequence[str] = ("features", "logits"),
    statistics: bool = False,
    targets: Any = None,
    num_target_classes: int | None = None,
    progress: bool | None = None,
) -> Extracted:
    """Run ``model`` over ``data`` once; return features, logits and chosen layers.

    Args:
      model: a Flax NNX module, a Linen module (with ``variables``) or a
        function ``fn(params, x)`` (with ``params``); see the module notes for
        what its output may be.
      data: an array [N, ...] of inputs, or an iterable of batches, each an
        array or an ``(x, y)`` pair whose ``y`` feeds the streamed statistics.
      params, variables: the state of a plain function or a Linen module.
      batch_size: samples per step. Every step has this shape (a short batch
        is zero-padded and masked), so the step compiles once. ``None`` with an
        iterable uses the size of its first batch.
      layers: names of intermediate layers to return, pooled to [N, c]. For
        the zoo, ``model.layer_names``; static: changing it recompiles.
      preprocess: applied to each batch inside the jitted step. ``"auto"``
        uses ``model.preprocess`` when the model has one (the zoo's backbones
        resize and normalise raw images), else nothing.
      keep: which per-sample outputs to keep: any of ``"features"``,
        ``"logits"``. Leave out ``"features"`` and set ``statistics=True`` to
        stream without holding [N, d] features.
      statistics: accumulate :class:`StreamedStats` batch by batch.
      targets: [N] integer labels or [N, k] real targets aligned with an
        array ``data``, for the streamed cross statistics.
      num_target_classes: static class count when ``targets`` are labels
        (one-hot cross statistics and the joint label counts).
      progress: show a progress bar; ``None`` shows one when stderr is a terminal.

    Returns:
      :class:`Extracted`.

    Raises:
      TypeError: an unsupported model, or missing ``params``/``variables``.
      ValueError: empty data, unknown layer names, mismatched targets.

    Example:
      >>> import jax.numpy as jnp
      >>> fn = lambda w, x: {"features": jnp.tanh(x @ w), "logits": x @ w}
      >>> out = extract(fn, jnp.ones((5, 3)), params=jnp.eye(3), batch_size=2)
      >>> out.features.shape, out.labels.shape
      ((5, 3), (5,))
    """
    preprocess = _check_options(model, keep, batch_size, layers, preprocess)
    if targets is not None:
        statistics = True
        targets = np.asarray(targets)
    key, state = _adapter(model, params, variables)
    batches, size, total = _batches(data, batch_size, targets)
    batches, first_y = _peek_targets(batches)
    from_batches = targets is None and first_y is not None
    if from_batches:
        targets, statistics = first_y, True
    classify = targets is not None and np.issubdtype(targets.dtype, np.integer) and targets.ndim == 1
    if classify and num_target_classes is None:
        if from_batches:
            raise ValueError(
                "num_target_classes is needed when integer class labels come in (x, y) batches: the class "
                "count must be known before the first batch (pass num_target_classes=C)"
            )
        num_target_classes = int(targets.max()) + 1
    if classify:
        batches = _checked_labels(batches, num_target_classes)
    wanted = tuple(keep) + tuple(layers)
    dtype = jnp.result_type(float)
    forward, step = _step(key, tuple(layers), wanted, preprocess, classify, num_target_classes, dtype)
    init = None
    if statistics:
        init = functools.partial(
            _init_stats, forward, state, classify=classify, num_target_classes=num_target_classes, dtype=dtype
        )
    bar = progress_bar(total, progress, getattr(model, "name", "extract"), unit="img")
    try:
        outputs, acc, seen = _run(step, state, batches, size, init, bar)
    finally:
        bar.close()
    cat = {k: jnp.concatenate(v, axis=0) for k, v in outputs.items()}
    return Extracted(
        features=cat.get("features"),
        logits=cat.get("logits"),
        layers={name: cat[name] for name in layers},
        stats=None if acc is None else StreamedStats(*acc),
        count=seen,
    )


def check_input(
    model: Any,
    data: Any,
    *,
    params: Any = None,
    variables: Any = None,
    layers: Sequence[str] = (),
    preprocess: Callable[[jax.Array], jax.Array] | str | None = "auto",
) -> dict[str, tuple[int, ...]]:
    """Check, before any work, that ``model`` can take the samples of ``data``; return its output shapes.

    One sample is traced through the preprocessing and the model
    (``jax.eval_shape``: nothing is compiled or run), so a mismatch, such as a
    1-channel model and RGB images, is refused in a fraction of a second
    instead of failing inside the first compiled step. Arguments are those
    of :func:`extract`.

    Returns:
      name -> shape of one sample's outputs (``features``, ``logits`` when the
      model has a head, and each of ``layers``), batch axis included.

    Raises:
      ValueError: the model cannot take the samples; the message gives their
        shape and dtype and, for a convolutional model, the input channels
        of its first convolution.
    """
    preprocess = _check_options(model, ("features",), None, layers, preprocess)
    key, state = _adapter(model, params, variables)
    sample = np.asarray(data[:1]) if isinstance(data, (np.ndarray, jax.Array)) else np.asarray(data)
    fn = _apply_fn(key, tuple(layers))

    def forward(state, x):
        return fn(state, preprocess(x) if preprocess is not None else x)

    try:
        out = jax.eval_shape(forward, state, jax.ShapeDtypeStruct(sample.shape, sample.dtype))
    except (TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        conv = (
            next((m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Conv)), None)
            if (key[0] == "nnx")
            else None
        )
        expects = "" if conv is None else f"; its first convolution takes {conv.in_features} input channel(s)"
        raise ValueError(
            f"the model cannot take inputs of shape {sample.shape[1:]} ({sample.dtype}){expects} ({first})"
        ) from None
    return {k: tuple(v.shape) for k, v in out.items()}


def _check_options(model, keep, batch_size, layers, preprocess):
    """Check :func:`extract`'s options; return the preprocessing function (or ``None``)."""
    unknown = set(keep) - {"features", "logits"}
    if unknown:
        raise ValueError(f"keep must hold 'features' and/or 'logits', got {sorted(unknown)}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of names, got the string {layers!r}")
    if preprocess == "auto":
        return getattr(model, "preprocess", None)
    if isinstance(preprocess, str):
        raise ValueError(f"preprocess must be 'auto', None or a function, got {preprocess!r}")
    return preprocess


def _run(step, state, batches, size, init, bar):
    """Feed every batch, padded to ``size``, through the compiled ``step``.

    ``init(x, y)`` gives zero statistics from the first batch (``None``: no
    statistics). Returns the kept outputs (name -> list of [b, ...] arrays),
    the statistics (or ``None``) and the number of samples seen.
    """
    outputs: dict[str, list] = {}
    acc = None
    seen = 0
    for x, y in batches:
        b = x.shape[0]
        if b == 0:
            continue
        if size is None:
            size = b
        if init is not None and acc is None:
            acc = init(x, y)
        if init is not None and y is None and acc[1] is not None:
            raise ValueError("every batch must carry targets once the first one did")
        xp = _pad(x, size)
        yp = None if (y is None or init is None) else _pad(np.asarray(y), size)
        kept, acc_new = step(state, xp, b, yp, acc)
        acc = acc_new if init is not None else acc
        for k, v in kept.items():
            outputs.setdefault(k, []).append(v if b == size else v[:b])
        seen += b
        bar.update(b)
    if seen == 0:
        raise ValueError("data is empty: it yielded no samples")
    return outputs, acc, seen


def _init_stats(forward, state, x, y, *, classify, num_target_classes, dtype):
    """Zero statistics of the right shapes (shapes by tracing only; nothing is compiled)."""
    out = jax.eval_shape(forward, state, jnp.asarray(x))
    d = (
        int(np.prod(out["features"].shape[1:]))
        if len(out["features"].shape) == 2
        else out["features"].shape[-1]
    )
    zero = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
    fstats = SourceStats(zero(), zero(d), zero(d), zero(d, d))
    tstats = joint = None
    if y is not None:
        k = num_target_classes if classify else int(np.prod(np.shape(y)[1:]))
        tstats = CrossStats(zero(k), zero(k), zero(d, k), zero(k))
        if classify and "logits" in out:
            joint = jnp.zeros((out["logits"].shape[-1], num_target_classes), jnp.int32)
    return fstats, tstats, joint
