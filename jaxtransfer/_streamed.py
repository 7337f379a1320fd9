"""Many targets' streaming statistics of one layer, accumulated inside :func:`jaxtransfer.features.extract`.

One :class:`StreamedStats` holds, for one layer's features and every target
task at once, the statistics of :mod:`jaxtransfer.streaming` that the chosen
estimators finalise from. Nothing here is new accumulation maths: each batch
goes through the streaming estimators' own ``update`` functions, and each score
through their ``finalize``.

How the targets share the work (T targets, T_c of them class labels):

* :class:`~jaxtransfer.streaming.LinearStats` (Linear MSE, LogME): **one**
  set for all targets. The feature moments n, Σf, Σffᵀ are taken once; the
  targets' columns sit side by side in the cross moments — C_t one-hot columns
  for a class-label target (C_t its class count), k value columns for a
  regression target. A target's statistics are the shared feature moments
  and its own columns (a slice: the columns of a ridge or LogME problem are
  independent).
* :class:`~jaxtransfer.streaming.ClassStats` (H-score, shrinkage H-score) and
  :class:`~jaxtransfer.streaming.ClassGramStats` (TransRate, GBC): stacked
  along a leading axis of the T_c class-label targets (``vmap`` of ``update``),
  with the largest class count; a target's classes beyond its own C_t stay
  empty and are sliced off before finalising, so each score equals the
  estimator with ``num_target_classes=C_t``. Their feature moments are
  repeated per target (T_c·d² memory; T_c·C·d² for the class Gram blocks).
* :class:`~jaxtransfer.streaming.CountStats` (NCE, conditional entropy,
  hardness): joint counts of the source head's argmax label and each
  class-label target, stacked the same way ([T_c, Cz, C]).

LEEP is not streamed here: it takes two passes over the samples (keep the
logits, [N, Cz], and call :func:`jaxtransfer.leep`, or run
:data:`jaxtransfer.streaming.leep` over two extractions). Nor are NLEEP (EM
over all samples), regression TransRate (quantile bins) or soft NCE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtransfer_kernels import CrossStats

from . import estimators as est

__all__ = ["DEFAULT_ESTIMATORS", "STREAMED_ESTIMATORS", "StreamedStats"]

STREAMED_ESTIMATORS: dict[str, str] = {
    "linear_mse": "linear",
    "logme": "linear",
    "hscore": "classes",
    "shrinkage_hscore": "classes",
    "transrate": "class_grams",
    "gbc": "class_grams",
    "nce": "counts",
    "conditional_entropy": "counts",
    "hardness": "counts",
}
"""Estimators :func:`jaxtransfer.features.extract` can stream, and the statistics each finalises from."""

DEFAULT_ESTIMATORS = ("linear_mse", "logme", "nce", "conditional_entropy", "hardness")
"""Streamed when ``estimators`` is not given: those of the shared feature moments and of the counts,
which cost one d×d Gram matrix per batch whatever the number of targets."""

_STREAM = {
    "linear_mse": est.stream_linear_mse,
    "logme": est.stream_logme,
    "hscore": est.stream_hscore,
    "shrinkage_hscore": est.stream_shrinkage_hscore,
    "transrate": est.stream_transrate,
    "gbc": est.stream_gbc,
    "nce": est.stream_nce,
    "conditional_entropy": est.stream_conditional_entropy,
    "hardness": est.stream_hardness,
}
_CLASS_ONLY = ("classes", "class_grams", "counts")


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """The static layout of the targets (hashable: part of the statistics' pytree structure).

    Attributes:
      names: one name per target.
      classes: C_t for a class-label target, ``None`` for a regression target.
      widths: the target's columns in the shared cross moments (C_t, or k values).
      single: the targets came as one array (scores are then scalars).
      estimators: the estimators whose statistics are accumulated.
      head: source classes Cz of the counts' joint table (0: no head, the
        table has one source row and only hardness is defined).
    """

    names: tuple[str, ...]
    classes: tuple[int | None, ...]
    widths: tuple[int, ...]
    single: bool
    estimators: tuple[str, ...]
    head: int

    @property
    def class_targets(self) -> tuple[int, ...]:
        return tuple(t for t, c in enumerate(self.classes) if c is not None)

    def needs(self, kind: str) -> bool:
        wanted = any(STREAMED_ESTIMATORS[e] == kind for e in self.estimators)
        return wanted and (kind == "linear" or bool(self.class_targets))


@dataclasses.dataclass(frozen=True)
class StreamedStats:
    """Streaming statistics of one layer's features against every target, finalised by name.

    Built by :func:`jaxtransfer.features.extract` (``out.stats`` for the
    penultimate features, ``out.layer_stats[name]`` for a layer). Sizes do not
    depend on N. A pytree: it can be passed through ``jit``, ``device_put``
    and saved leaf by leaf.

    Attributes:
      linear: :class:`~jaxtransfer.streaming.LinearStats`, the feature moments and
        every target's columns side by side (module notes).
      classes: :class:`~jaxtransfer.streaming.ClassStats` stacked over the
        class-label targets, or ``None`` unless an H-score was asked for.
      class_grams: :class:`~jaxtransfer.streaming.ClassGramStats` stacked, or
        ``None`` unless TransRate or GBC was asked for.
      counts: :class:`~jaxtransfer.streaming.CountStats` stacked, or ``None``.
      spec: the static layout (:class:`TargetSpec`).

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jaxtransfer import features
      >>> fn = lambda w, x: {"features": jnp.tanh(x @ w), "logits": x @ w}
      >>> x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
      >>> tasks = {"sign": (x[:, 0] > 0).astype(int), "value": x[:, 1] ** 2}
      >>> stats = features.extract(fn, x, params=np.eye(3, dtype=np.float32), keep=(), targets=tasks,
      ...                          estimators=("logme", "linear_mse", "hscore")).stats
      >>> stats.score("logme").shape, stats.names                  # one score per target
      ((2,), ('sign', 'value'))
      >>> bool(jnp.isnan(stats.score("hscore")[1]))                 # H-score needs class labels
      True
      >>> float(stats.score("linear_mse", target="sign", l2=0.1)) < 0
      True
    """

    linear: Any
    classes: Any
    class_grams: Any
    counts: Any
    spec: TargetSpec

    # -- the layout -------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The targets' names (``task0``, … for a sequence of targets; ``target`` for one array)."""
        return self.spec.names

    @property
    def estimators(self) -> tuple[str, ...]:
        """The estimators :meth:`score` can finalise."""
        return self.spec.estimators

    @property
    def features(self):
        """The features' :class:`~jaxtransfer_kernels.SourceStats` (count, shift, sum, Gram)."""
        return self.linear.features

    @property
    def targets(self):
        """Every target's cross moments, columns side by side (:class:`~jaxtransfer_kernels.CrossStats`)."""
        return self.linear.targets

    @property
    def joint(self):
        """Joint counts of the head's argmax label and the class-label targets: int [Cz, C] for one
        target, [T_c, Cz, C] for several; ``None`` without a head or class labels."""
        if self.counts is None or not self.spec.head:
            return None
        return self.counts.joint[0] if self.spec.single else self.counts.joint

    # -- finalising -------------------------------------------------------------------------------

    def score(self, estimator: str, target: str | int | None = None, **options) -> jax.Array:
        """``estimator``'s score from the statistics, for one target or all of them.

        Args:
          estimator: one of :attr:`estimators` (see :data:`STREAMED_ESTIMATORS`).
          target: a target's name or index; ``None``: every target.
          **options: the streaming ``finalize``'s options (``l2`` for Linear MSE;
            ``max_iter``, ``tol`` for LogME; ``eps``, ``weighting`` for TransRate;
            ``num_components``, ``explained_variance`` for GBC).

        Returns:
          The score of ``target``; with ``target=None``, a [T] array (NaN where
          the estimator does not apply, e.g. an H-score of a regression target),
          or a scalar when ``extract`` got one target array.

        Raises:
          ValueError: an estimator that was not streamed, an unknown target, an
            estimator that needs class labels asked for a regression target, or
            NCE without a source head.
        """
        if estimator not in self.spec.estimators:
            raise ValueError(
                f"estimator {estimator!r} was not streamed; streamed: {', '.join(self.spec.estimators)} "
                f"(pass estimators=... to features.extract; streamable: {', '.join(STREAMED_ESTIMATORS)})"
            )
        kind = STREAMED_ESTIMATORS[estimator]
        if kind == "counts" and estimator != "hardness" and not self.spec.head:
            raise ValueError(
                f"{estimator} needs the source head's predictions: this model (or layer) has no logits"
            )
        if target is not None or self.spec.single:
            t = 0 if target is None else self._index(target)
            if kind in _CLASS_ONLY and self.spec.classes[t] is None:
                raise ValueError(
                    f"{estimator} needs class-label targets; target {self.spec.names[t]!r} is regression "
                    "values"
                )
            return self._score_one(estimator, kind, t, options)
        if kind == "linear":
            return self._score_linear(estimator, options)
        scores = [
            None if kind in _CLASS_ONLY and c is None else self._score_one(estimator, kind, t, options)
            for t, c in enumerate(self.spec.classes)
        ]
        like = next((s for s in scores if s is not None), None)
        if like is None:
            raise ValueError(f"{estimator} needs class-label targets; every target is regression values")
        nan = jnp.full(jnp.shape(like), jnp.nan, jnp.result_type(like))
        return jnp.stack([nan if s is None else s for s in scores])

    def _index(self, target) -> int:
        if isinstance(target, str):
            if target not in self.spec.names:
                raise ValueError(f"target {target!r} is not among the targets {list(self.spec.names)}")
            return self.spec.names.index(target)
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if not -len(self.spec.names) <= target < len(self.spec.names):
                raise ValueError(f"target index {target} out of range for {len(self.spec.names)} targets")
            return int(target) % len(self.spec.names)
        raise TypeError(f"target must be a name, an index or None, got {type(target).__name__}")

    def _score_linear(self, estimator, options):
        """[T] scores of a feature-moment estimator from ONE finalisation over every target's columns.

        The features' eigendecomposition (d×d, the costly part for wide
        features) is shared by all targets; each column's terms are those of a
        finalisation of its target alone (LogME maximises each column on its
        own, Linear MSE's objective is a sum over columns), and are summed per
        target here.
        """
        widths = np.asarray(self.spec.widths)
        segments = jnp.asarray(np.repeat(np.arange(widths.size), widths))
        fin = _STREAM[estimator].finalize
        if estimator == "logme":
            out = fin(self.linear, details=True, **options)
            used = out.used.astype(out.evidence.dtype)
            total = jax.ops.segment_sum(jnp.where(out.used, out.evidence, 0), segments, widths.size)
            count = jax.ops.segment_sum(used, segments, widths.size)
            return total / jnp.where(count > 0, count, jnp.nan)
        per_column = fin(self.linear, columns=True, **options)  # [*l2.shape, k]
        return jax.ops.segment_sum(jnp.moveaxis(per_column, -1, 0), segments, widths.size)  # [T, *l2.shape]

    def _score_one(self, estimator, kind, t, options):
        fin = _STREAM[estimator].finalize
        if kind == "linear":
            start = sum(self.spec.widths[:t])
            cols = slice(start, start + self.spec.widths[t])
            c = self.linear.targets
            part = CrossStats(c.shift[cols], c.total[cols], c.cross[:, cols], c.squares[cols])
            return fin(est.LinearStats(self.linear.features, part), **options)
        i = self.spec.class_targets.index(t)
        ct = self.spec.classes[t]
        stats = jax.tree.map(lambda a: a[i], getattr(self, kind))
        if kind == "classes":
            stats = dataclasses.replace(stats, counts=stats.counts[:ct], class_totals=stats.class_totals[:ct])
        elif kind == "class_grams":
            stats = dataclasses.replace(
                stats,
                counts=stats.counts[:ct],
                class_totals=stats.class_totals[:ct],
                class_grams=stats.class_grams[:ct],
            )
        else:
            stats = est.CountStats(stats.joint[:, :ct])
        return fin(stats, **options)

    def linear_mse(self, l2: float = 1.0) -> jax.Array:
        """Linear MSE (:func:`jaxtransfer.linear_mse`): ``score("linear_mse", l2=l2)``.

        Closed form on the streamed Gram matrix: it loses digits in float32 when
        the targets are almost in the span of the features (enable x64 to
        accumulate in float64); the whole-array :func:`jaxtransfer.linear_mse`
        computes the residual directly.
        """
        if not self.spec.names:
            raise ValueError("linear_mse needs targets: pass targets= to extract(..., statistics=True)")
        return self.score("linear_mse", l2=l2)

    def nce(self) -> jax.Array:
        """NCE (:func:`jaxtransfer.nce`) of the source's argmax labels against the target labels."""
        if "nce" not in self.spec.estimators or self.counts is None or not self.spec.head:
            raise ValueError("nce needs the model's logits and integer target labels (num_target_classes=)")
        return self.score("nce")


jax.tree_util.register_dataclass(
    StreamedStats, data_fields=["linear", "classes", "class_grams", "counts"], meta_fields=["spec"]
)


# --------------------------------------------------------------------------------- init and update


def _stack(stats, t: int):
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (t, *a.shape)), stats)


def init(d: int, spec: TargetSpec, dtype) -> StreamedStats:
    """Empty statistics for d features and the targets of ``spec``."""
    k = sum(spec.widths)
    linear = est.stream_linear_mse.init(d, 1, dtype=dtype)
    z = jnp.zeros((k,), dtype)
    linear = dataclasses.replace(linear, targets=CrossStats(z, z, jnp.zeros((d, k), dtype), z))
    tc = len(spec.class_targets)
    cmax = max((spec.classes[t] for t in spec.class_targets), default=1)
    classes = _stack(est.stream_hscore.init(d, cmax, dtype=dtype), tc) if spec.needs("classes") else None
    grams = _stack(est.stream_gbc.init(d, cmax, dtype=dtype), tc) if spec.needs("class_grams") else None
    counts = _stack(est.stream_nce.init(max(spec.head, 1), cmax), tc) if spec.needs("counts") else None
    return StreamedStats(linear, classes, grams, counts, spec)


def update(stats: StreamedStats, feats, logits, ys: Sequence[jax.Array] | None, mask) -> StreamedStats:
    """Add one padded batch (traced, inside the extraction step).

    Features [b, d], the head's logits [b, Cz] (or ``None``), one array per
    target ([b] labels or [b, ...] values; ``None``: no targets), bool mask [b].
    """
    spec = stats.spec
    ys = () if ys is None else tuple(ys)
    dtype = stats.linear.features.shift.dtype
    b = feats.shape[0]
    cols = [
        jax.nn.one_hot(y, c, dtype=dtype) if c is not None else jnp.reshape(y, (b, -1)).astype(dtype)
        for y, c in zip(ys, spec.classes, strict=True)
    ]
    y_all = jnp.concatenate(cols, axis=1) if cols else jnp.zeros((b, 0), dtype)
    linear = est.stream_linear_mse.update(stats.linear, feats, y_all, mask)
    classes, grams, counts = stats.classes, stats.class_grams, stats.counts
    if spec.class_targets:
        labels = jnp.stack([ys[t] for t in spec.class_targets]).astype(jnp.int32)  # [T_c, b]
        if classes is not None:
            classes = jax.vmap(lambda s, y: est.stream_hscore.update(s, feats, y, mask))(classes, labels)
        if grams is not None:
            grams = jax.vmap(lambda s, y: est.stream_gbc.update(s, feats, y, mask))(grams, labels)
        if counts is not None:
            z = jnp.argmax(logits, axis=-1).astype(jnp.int32) if spec.head else jnp.zeros((b,), jnp.int32)
            counts = jax.vmap(lambda s, y: est.stream_nce.update(s, z, y, mask))(counts, labels)
    return StreamedStats(linear, classes, grams, counts, spec)
