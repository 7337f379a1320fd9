"""Feature extraction: source features, source predictions, per-layer features and streamed statistics.

:func:`extract` runs a model over a dataset once and returns what the
estimators take as their source input:

* ``features`` [N, d]: the penultimate layer (the input of the source head);
* ``logits`` [N, C] and, from them, ``probabilities`` and argmax ``labels``;
* ``layers``: named intermediate activations, each pooled to [N, c] (global
  average over spatial axes), for per-layer scoring;
* ``stats`` and ``layer_stats`` (with ``targets=``): the streaming
  estimators' sufficient statistics (:class:`StreamedStats`) of the features
  and of each layer against every target task at once, accumulated inside the
  compiled step, so that [N, d] features never need to sit in memory.

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

Devices: with several local devices (``devices=None``, the default, uses
them all), each batch is split along its sample axis over a 1-D mesh of the
devices (``jax.sharding.Mesh``, axis ``"batch"``); the model's state and the
statistics are replicated, and XLA sums the per-device statistics (an
all-reduce it inserts from the shardings). The batch size is rounded up to a
multiple of the device count; the extra rows are padding, masked out. With
one device nothing is placed or sharded: the step is the single-device one.
Kept per-sample outputs come back sharded along their sample axis.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _streamed
from ._nnx import get_value
from ._progress import progress_bar
from ._streamed import DEFAULT_ESTIMATORS, STREAMED_ESTIMATORS, StreamedStats, TargetSpec

__all__ = [
    "DEFAULT_ESTIMATORS",
    "STREAMED_ESTIMATORS",
    "Extracted",
    "StreamedStats",
    "check_input",
    "extract",
    "pool",
]


class Extracted(NamedTuple):
    """The result of :func:`extract`. Arrays are ``jax.Array``: on the default device, or sharded
    along the sample axis over the devices the extraction ran on.

    Attributes:
      features: [N, d] penultimate features, or ``None`` when not kept.
      logits: [N, C] source head outputs, or ``None`` (no head, or not kept).
      layers: name -> [N, c] pooled intermediate activations (the kept ones).
      stats: :class:`StreamedStats` of the penultimate features, or ``None``
        without ``targets``/``statistics``.
      count: N, the number of samples seen.
      layer_stats: name -> :class:`StreamedStats` of each of ``layers`` (empty
        without statistics); a layer has no head, so no NCE.
    """

    features: jax.Array | None
    logits: jax.Array | None
    layers: dict[str, jax.Array]
    stats: StreamedStats | None
    count: int
    layer_stats: Mapping[str, StreamedStats] = {}

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


def _build_step(key, layers, wanted, preprocess, streamed, sharding):
    """The forward function and the jitted extraction step; see :func:`_step`.

    ``streamed``: the outputs whose statistics accumulate (``features`` and
    layer names); ``sharding``: the batch's ``NamedSharding`` over several
    devices, or ``None``.
    """
    fn = _apply_fn(key, layers)

    def forward(state, x):
        x = preprocess(x) if preprocess is not None else x
        return fn(state, x)

    @jax.jit
    def step(state, x, valid, ys, acc):
        out = forward(state, x)
        feats = jnp.asarray(out["features"])
        if feats.ndim != 2:
            feats = pool(feats)
        arrays = {"features": feats, **{name: pool(out[name]) for name in layers}}
        if out.get("logits") is not None:
            arrays["logits"] = out["logits"]
        if sharding is not None:  # keep every per-sample output split along the batch
            arrays = {k: jax.lax.with_sharding_constraint(v, sharding) for k, v in arrays.items()}
        kept = {k: arrays[k] for k in wanted if k in arrays}
        if acc is None:
            return kept, None
        mask = jnp.arange(x.shape[0]) < valid
        logits = arrays.get("logits")
        new = {
            name: _streamed.update(acc[name], arrays[name], logits if name == "features" else None, ys, mask)
            for name in streamed
        }
        return kept, new

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


# --------------------------------------------------------------------------------- targets


def _is_many(targets) -> bool:
    """Many target tasks: a mapping, or a list/tuple of arrays (a flat list is one task)."""
    if isinstance(targets, Mapping):
        return True
    return (
        isinstance(targets, (list, tuple))
        and len(targets) > 0
        and all(isinstance(t, (np.ndarray, jax.Array)) for t in targets)
    )


def _as_tasks(targets, what: str) -> tuple[tuple[str, ...], tuple[np.ndarray, ...], bool]:
    """(names, host arrays, single) of ``targets``: one array, a sequence of arrays or a mapping."""
    if isinstance(targets, Mapping):
        if not targets:
            raise ValueError(f"{what}: the mapping of target tasks is empty")
        names = tuple(str(k) for k in targets)
        arrays = tuple(np.asarray(v) for v in targets.values())
        single = False
    elif _is_many(targets):
        names = tuple(f"task{i}" for i in range(len(targets)))
        arrays = tuple(np.asarray(v) for v in targets)
        single = False
    else:
        names, arrays, single = ("target",), (np.asarray(targets),), True
    for name, y in zip(names, arrays, strict=True):
        if y.ndim == 0 or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise ValueError(
                f"{what}: target {name!r} must be integer labels [N] or real values [N] / [N, k], "
                f"got {y.dtype} of shape {y.shape}"
            )
    return names, arrays, single


def _is_labels(y: np.ndarray) -> bool:
    return np.issubdtype(y.dtype, np.integer) and y.ndim == 1


def _class_counts(num_target_classes, names, arrays, from_batches) -> tuple[int | None, ...]:
    """C_t per target (``None`` for regression): given, or the largest label + 1 of an array."""
    out = []
    for t, (name, y) in enumerate(zip(names, arrays, strict=True)):
        if not _is_labels(y):
            out.append(None)
            continue
        given = num_target_classes
        if isinstance(given, Mapping):
            given = given.get(name)
        elif isinstance(given, (list, tuple)):
            if len(given) != len(names):
                raise ValueError(
                    f"num_target_classes has {len(given)} entries but there are {len(names)} targets"
                )
            given = given[t]
        if given is None:
            if from_batches:
                raise ValueError(
                    "num_target_classes is needed when integer class labels come in (x, y) batches: the "
                    "class count must be known before the first batch (pass num_target_classes=C)"
                )
            given = int(y.max()) + 1 if y.size else 1
        if isinstance(given, bool) or not isinstance(given, (int, np.integer)) or given < 1:
            raise ValueError(f"num_target_classes for {name!r} must be a positive int, got {given!r}")
        out.append(int(given))
    return tuple(out)


def _check_estimators(estimators) -> tuple[str, ...]:
    if estimators is None:
        return DEFAULT_ESTIMATORS
    if isinstance(estimators, str):
        estimators = (estimators,)
    names = tuple(dict.fromkeys(estimators))
    unknown = [e for e in names if e not in STREAMED_ESTIMATORS]
    if unknown:
        raise ValueError(
            f"estimators {unknown} cannot be streamed; choose from {', '.join(STREAMED_ESTIMATORS)} "
            "(LEEP, NLEEP, soft NCE and regression TransRate need per-sample outputs: keep them)"
        )
    return names


# --------------------------------------------------------------------------------- batches


def _batches(data, batch_size: int | None, tasks) -> tuple[Iterator[tuple[Any, Any]], int | None, int | None]:
    """Yield (x, ys) host batches of at most ``batch_size`` (ys: a tuple, one array per task, or the
    batch's raw y); return (iterator, size, total count)."""
    if isinstance(data, (np.ndarray, jax.Array)):
        n = data.shape[0]
        if n == 0:
            raise ValueError("data is empty: got 0 samples")
        if tasks is not None:
            for name, y in zip(*tasks[:2], strict=True):
                if y.shape[0] != n:
                    what = "targets" if tasks[2] else f"targets[{name!r}]"
                    raise ValueError(f"{what} has {y.shape[0]} samples but data has {n}")
        size = min(batch_size or 64, n)

        def gen():
            for i in range(0, n, size):
                yield data[i : i + size], None if tasks is None else tuple(y[i : i + size] for y in tasks[1])

        return gen(), size, n
    if tasks is not None:
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
                yield x[i : i + step], _slice_targets(y, i, step)

    return gen(), batch_size, None


def _slice_targets(y, i, step):
    if y is None:
        return None
    if isinstance(y, Mapping):
        return {k: v[i : i + step] for k, v in y.items()}
    if _is_many(y):
        return type(y)(v[i : i + step] for v in y)
    return y[i : i + step]


def _peek(batches: Iterator) -> tuple[Iterator, Any]:
    """The batches, unchanged, and the first batch's targets (None when it has none).

    An iterable dataset's targets are known only from its batches; how many
    tasks there are, and whether each holds class labels (integers, one per
    sample) or regression values, is read from the first one.
    """
    first = next(batches, None)
    if first is None:
        return iter(()), None
    return itertools.chain([first], batches), first[1]


def _task_batches(batches: Iterator, names, classes, single, raw: bool) -> Iterator:
    """Each batch's targets as a tuple of arrays in the tasks' order; class labels checked.

    ``raw``: the batches carry targets as the user's iterable gave them (an
    array, a tuple or a dict); otherwise they are already such tuples.
    """
    for x, y in batches:
        if y is None:
            raise ValueError("every batch must carry targets once the first one did")
        arrays = y
        if raw:
            got_names, arrays, got_single = _as_tasks(y, "targets")
            if got_single != single or (not single and len(arrays) != len(names)):
                raise ValueError(f"every batch must carry the targets of the first: {list(names)}")
            if isinstance(y, Mapping) and got_names != names:
                raise ValueError(
                    f"every batch must carry the targets of the first: {list(names)}, got {list(got_names)}"
                )
        for name, a, c in zip(names, arrays, classes, strict=True):
            if c is None:
                continue
            if not _is_labels(a):
                what = "targets" if single else f"targets[{name!r}]"
                raise ValueError(
                    f"{what}: every batch must hold integer class labels [b], like the first; got {a.dtype} "
                    f"of shape {a.shape}"
                )
            if a.size and (a.min() < 0 or a.max() >= c):
                raise ValueError(
                    f"targets: labels must lie in [0, {c}) (num_target_classes={c}), "
                    f"got values from {a.min()} to {a.max()}"
                )
        yield x, arrays


def _pad(x, size: int):
    b = x.shape[0]
    if b == size:
        return x
    pad = [(0, size - b)] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad) if isinstance(x, jax.Array) else np.pad(np.asarray(x), pad)


# --------------------------------------------------------------------------------- devices


class _Placement(NamedTuple):
    """Where the step runs: ``count`` devices; ``batch``/``replicated`` shardings over their 1-D
    mesh (``None`` with one device); ``device``: the one device when it is not the default."""

    count: int
    batch: NamedSharding | None
    replicated: NamedSharding | None
    device: Any

    def put(self, tree, *, split: bool):
        if self.batch is not None:
            return jax.device_put(tree, self.batch if split else self.replicated)
        if self.device is not None:
            return jax.device_put(tree, self.device)
        return tree


def _placement(devices) -> _Placement:
    """``devices``: None (every local device), a count of local devices, or a sequence of devices."""
    local = jax.local_devices()
    if devices is None:
        chosen = local
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be between 1 and {len(local)} (the local devices), got {devices}")
        chosen = local[: int(devices)]
    elif isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices must be distinct, got {chosen}")
    else:
        raise TypeError(
            f"devices must be None (all local devices), a positive int or a sequence of jax devices, "
            f"got {devices!r}"
        )
    if len(chosen) == 1:
        return _Placement(1, None, None, None if chosen[0] == local[0] else chosen[0])
    mesh = Mesh(np.array(chosen), ("batch",))
    return _Placement(
        len(chosen), NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec()), None
    )


# --------------------------------------------------------------------------------- extract


def extract(
    model: Any,
    data: Any,
    *,
    params: Any = None,
    variables: Any = None,
    batch_size: int | None = 64,
    layers: Sequence[str] = (),
    preprocess: Callable[[jax.Array], jax.Array] | str | None = "auto",
    keep: Sequence[str] | None = None,
    statistics: bool = False,
    targets: Any = None,
    num_target_classes: int | Sequence[int | None] | Mapping[str, int] | None = None,
    estimators: Sequence[str] | None = None,
    devices: int | Sequence[jax.Device] | None = None,
    progress: bool | None = None,
) -> Extracted:
    """Run ``model`` over ``data`` once; return features, logits, chosen layers and streamed statistics.

    With ``targets``, the statistics of every estimator in ``estimators``
    accumulate for every target task at once, in the same compiled step as
    the forward pass, for the penultimate features (``stats``) and each of
    ``layers`` (``layer_stats``); ``keep=()`` then holds no [N, d] array.
    ``stats.score(name)`` finalises a score (:class:`StreamedStats`). The
    scores equal the whole-array estimators on the concatenated outputs, to
    the precision of the Gram-matrix route (:mod:`jaxtransfer.streaming`:
    accumulate in float64 under x64 for every digit).

    Args:
      model: a Flax NNX module, a Linen module (with ``variables``) or a
        function ``fn(params, x)`` (with ``params``); see the module notes for
        what its output may be.
      data: an array [N, ...] of inputs, or an iterable of batches, each an
        array or an ``(x, y)`` pair whose ``y`` (an array, a tuple of arrays
        or a dict of arrays, as ``targets``) feeds the streamed statistics.
      params, variables: the state of a plain function or a Linen module.
      batch_size: samples per step. Every step has this shape (a short batch
        is zero-padded and masked), so the step compiles once. ``None`` with an
        iterable uses the size of its first batch. Rounded up to a multiple
        of the device count.
      layers: names of intermediate layers, pooled to [N, c]. For the zoo,
        ``model.layer_names``; static: changing it recompiles.
      preprocess: applied to each batch inside the jitted step. ``"auto"``
        uses ``model.preprocess`` when the model has one (the zoo's backbones
        resize and normalise raw images), else nothing.
      keep: the per-sample outputs to return: any of ``"features"``,
        ``"logits"`` and names in ``layers``. ``None``: all of them. A layer
        left out is only streamed (its statistics in ``layer_stats``).
      statistics: accumulate statistics even without targets (the features'
        moments only); implied by ``targets``.
      targets: aligned with an array ``data``: one task — [N] integer labels
        or [N]/[N, k] real values — or many: a sequence of such arrays (named
        ``task0``, ``task1``, …) or a dict name -> array. Integer [N] arrays
        are class labels, anything else regression values.
      num_target_classes: class count C_t of the label targets: one int for
        all, a sequence (one per target, ``None`` for regression) or a dict by
        name; default the largest label + 1 of each (needed for an iterable
        of batches). Static.
      estimators: the estimators whose statistics accumulate, from
        :data:`STREAMED_ESTIMATORS`; default :data:`DEFAULT_ESTIMATORS`
        (Linear MSE, LogME, NCE, conditional entropy, hardness: one Gram
        matrix per batch). The H-scores add C·d per label target, TransRate
        and GBC C·d² per label target. Static.
      devices: ``None`` every local device, an int (the first that many) or
        a sequence of devices: each batch is split along its samples over a
        1-D mesh of them (module notes).
      progress: show a progress bar; ``None`` shows one when stderr is a terminal.

    Returns:
      :class:`Extracted`.

    Raises:
      TypeError: an unsupported model, or missing ``params``/``variables``.
      ValueError: empty data, unknown layer names, mismatched targets, an
        estimator that cannot be streamed, bad ``devices``.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> fn = lambda w, x: {"features": jnp.tanh(x @ w), "logits": x @ w}
      >>> out = extract(fn, jnp.ones((5, 3)), params=jnp.eye(3), batch_size=2)
      >>> out.features.shape, out.labels.shape
      ((5, 3), (5,))
      >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
      >>> tasks = {"a": (x[:, 0] > 0).astype(int), "b": (x[:, 1] > 0).astype(int)}
      >>> stats = extract(fn, x, params=jnp.eye(3), keep=(), targets=tasks).stats
      >>> stats.score("logme").shape, stats.score("nce", target="a").shape
      ((2,), ())
    """
    preprocess = _check_options(model, keep, batch_size, layers, preprocess)
    keep = ("features", "logits", *layers) if keep is None else tuple(keep)
    estimators = _check_estimators(estimators)
    place = _placement(devices)
    tasks = None
    if targets is not None:
        statistics = True
        tasks = _as_tasks(targets, "targets")
    key, state = _adapter(model, params, variables)
    batches, size, total = _batches(data, batch_size, tasks)
    batches, first_y = _peek(batches)
    from_batches = tasks is None and first_y is not None
    if from_batches:
        statistics = True
        tasks = _as_tasks(first_y, "targets")
    classes: tuple[int | None, ...] = ()
    if tasks is not None:
        classes = _class_counts(num_target_classes, tasks[0], tasks[1], from_batches)
        batches = _task_batches(batches, tasks[0], classes, tasks[2], from_batches)
    if size is not None and size % place.count:
        size += place.count - size % place.count
    dtype = jnp.result_type(float)
    streamed = ("features", *layers) if statistics else ()
    forward, step = _step(key, tuple(layers), keep, preprocess, streamed, place.batch)
    state = place.put(state, split=False)
    init = None
    if statistics:
        names, arrays, single = tasks if tasks is not None else ((), (), True)
        widths = tuple(
            c if c is not None else int(np.prod(a.shape[1:])) for a, c in zip(arrays, classes, strict=True)
        )
        spec = (names, classes, widths, single, estimators)
        init = functools.partial(_init_stats, forward, state, layers=tuple(layers), spec=spec, dtype=dtype)
    bar = progress_bar(total, progress, getattr(model, "name", "extract"), unit="img")
    try:
        outputs, acc, seen = _run(step, state, batches, size, init, bar, place)
    finally:
        bar.close()
    cat = {k: jnp.concatenate(v, axis=0) for k, v in outputs.items()}
    return Extracted(
        features=cat.get("features"),
        logits=cat.get("logits"),
        layers={name: cat[name] for name in layers if name in cat},
        stats=None if acc is None else acc["features"],
        count=seen,
        layer_stats={} if acc is None else {name: acc[name] for name in layers},
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
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of names, got the string {layers!r}")
    if keep is not None:
        if isinstance(keep, str):
            raise TypeError(f"keep must be a sequence of names, got the string {keep!r}")
        unknown = set(keep) - {"features", "logits", *layers}
        if unknown:
            raise ValueError(
                f"keep must hold 'features', 'logits' or names in layers {list(layers)}, "
                f"got {sorted(unknown)}"
            )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if preprocess == "auto":
        return getattr(model, "preprocess", None)
    if isinstance(preprocess, str):
        raise ValueError(f"preprocess must be 'auto', None or a function, got {preprocess!r}")
    return preprocess


def _run(step, state, batches, size, init, bar, place):
    """Feed every batch, padded to ``size``, through the compiled ``step``.

    ``init(x, ys)`` gives zero statistics from the first batch (``None``: no
    statistics). Returns the kept outputs (name -> list of [b, ...] arrays),
    the statistics (name -> :class:`StreamedStats`, or ``None``) and the number
    of samples seen.
    """
    outputs: dict[str, list] = {}
    acc = None
    seen = 0
    for x, ys in batches:
        b = x.shape[0]
        if b == 0:
            continue
        if size is None:
            size = b + (-b) % place.count
        if init is not None and acc is None:
            acc = place.put(init(x, ys), split=False)
        xp = place.put(_pad(x, size), split=True)
        yp = None if (ys is None or init is None) else place.put(tuple(_pad(y, size) for y in ys), split=True)
        kept, acc_new = step(state, xp, b, yp, acc)
        acc = acc_new if init is not None else acc
        for k, v in kept.items():
            outputs.setdefault(k, []).append(v if b == size else v[:b])
        seen += b
        bar.update(b)
    if seen == 0:
        raise ValueError("data is empty: it yielded no samples")
    return outputs, acc, seen


def _init_stats(forward, state, x, ys, *, layers, spec, dtype):
    """Zero statistics of every streamed output (shapes by tracing only; nothing is compiled)."""
    out = jax.eval_shape(forward, state, jnp.asarray(x))
    names, classes, widths, single, estimators = spec
    head = out["logits"].shape[-1] if out.get("logits") is not None else 0
    stats = {}
    for name in ("features", *layers):
        shape = out[name].shape
        d = int(np.prod(shape[1:])) if len(shape) == 2 else shape[-1]
        # a layer has no head: its counts (hardness only) have one source row
        target_spec = TargetSpec(
            tuple(names), tuple(classes), tuple(widths), single, tuple(estimators),
            head if name == "features" else 0,
        )  # fmt: skip
        stats[name] = _streamed.init(d, target_spec, dtype)
    return stats
