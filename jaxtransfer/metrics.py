"""Transferability estimators as Flax NNX metrics, for training and evaluation loops.

Each estimator whose sufficient statistics add (:mod:`jaxtransfer.streaming`)
is offered as an :class:`flax.nnx.metrics.Metric`: its state is the
estimator's statistics pytree in one :class:`~flax.nnx.metrics.MetricState`,
so it lives in a model or training state, is updated batch by batch inside
``nnx.jit`` (``update``), gives its score on the device (``compute`` returns a
``jax.Array``; nothing is copied to the host), starts again (``reset``) and
combines with the same metric on other devices or hosts (``merge``,
``all_reduce``, or ``update(..., axis_name=...)`` under ``shard_map``/``pmap``).

The maths are the streaming module's: ``update`` adds a batch's moments to the
statistics (about a shift, in closed form), ``compute`` finalises them — the
ridge closed form for Linear/Label MSE, LogME's evidence maximisation on the
spectrum of the centred Gram matrix, the H-scores, TransRate and GBC from class
sums and Gram blocks, entropies of exact integer counts for NCE, conditional
entropy and hardness — and the score equals the whole-array estimator on all
the samples seen (to ~1e-12 with ``dtype=jnp.float64`` under x64; in float32
to the precision documented in ``jaxtransfer/estimators/_streaming.py``).

==========================  ================================  ===========================
constructor                 ``update`` keyword arguments      ``compute`` options (static)
==========================  ================================  ===========================
``linear_mse(d, k)``        ``features``, ``targets``          ``l2``
``label_mse(d, k)``         ``source_predictions``, ``targets``  ``l2``
``logme(d, k)``             ``features``, ``targets``          ``max_iter``, ``tol``
``hscore(d, C)``,           ``features``, ``targets``          —
``shrinkage_hscore(d, C)``
``transrate(d, C)``         ``features``, ``targets``          ``eps``, ``weighting``
``gbc(d, C)``               ``features``, ``targets``          ``num_components``,
                                                               ``explained_variance``
``nce(Cz, Cy)``,            ``source_labels``, ``targets``     —
``conditional_entropy``
``hardness(C)``             ``targets``                        —
``leep(Cz, Cy)``            ``source_probs``, ``targets``      — (two passes, see below)
==========================  ================================  ===========================

Every ``update`` also takes ``mask`` (bool [b], True keeps a sample) and
``axis_name``; other keyword arguments are ignored, so that one
:class:`flax.nnx.MultiMetric` can hold several of these metrics (and
``nnx.metrics.Average``) and pass them one batch. ``argnames=`` renames the
keywords a metric reads.

Devices. Statistics of disjoint sample sets merge exactly (the streaming
``merge``). Two ways to use several devices:

* ``update(..., axis_name="data")`` inside ``shard_map`` (or ``pmap``): each
  device adds its shard of the batch to empty statistics, these are summed
  over the axis (one ``psum`` of the batch statistics), then merged into the
  metric, which stays replicated — the same on every device;
* per-device metrics, each updated with ``update(...)`` on its own samples
  (state with a leading device axis under ``pmap``), merged once at the end
  with ``all_reduce(axis_name)``. Never ``all_reduce`` replicated copies of
  one metric: the same samples would count once per device.

LEEP takes two passes over the same samples: ``update`` over all of them,
``second_pass()`` (after merging every device's first pass, e.g. with
``axis_name`` updates), ``update`` again over the same samples, then
``compute``. ``second_pass`` flips a static field of the statistics, so a
jitted step traced in the first pass is traced once more in the second;
``reset`` returns to the first pass. NLEEP, soft NCE and regression TransRate
have no additive statistics and no metric (see the streaming module).

Sizes (feature width, target columns, class counts) and ``compute`` options
are static: they are fixed when the metric is built, so ``compute`` compiles
once. Eager ``update`` calls validate the batch (shape, dtype, label range,
finiteness: one host round trip) and raise ``ValueError``/``TypeError``
naming the argument; inside ``jit`` only shapes and dtypes are checked.

Example:
  >>> import jax, numpy as np
  >>> from flax import nnx
  >>> import jaxtransfer as jt
  >>> from jaxtransfer import metrics
  >>> rng = np.random.default_rng(0)
  >>> f, y = rng.normal(size=(96, 8)).astype(np.float32), rng.integers(0, 3, 96)
  >>> metric = metrics.logme(8, num_target_classes=3)
  >>> @nnx.jit
  ... def eval_step(metric, features, targets):
  ...     metric.update(features=features, targets=targets)
  >>> for i in range(0, 96, 32):
  ...     eval_step(metric, f[i : i + 32], y[i : i + 32])
  >>> score = metric.compute()  # a jax.Array on the device
  >>> bool(np.isclose(score, jt.logme(f, y, num_target_classes=3), rtol=1e-4))
  True
  >>> metric.reset()

References:
  The estimators' own references (LogME: You et al., ICML 2021; Linear MSE:
  Nguyen et al., UAI 2023; H-score: Bao et al., ICIP 2019; NCE: Tran et al.,
  ICCV 2019; LEEP: Nguyen et al., ICML 2020; TransRate: Huang et al., ICML
  2022; GBC: Pándy et al., CVPR 2022); the metric interface is Flax NNX's
  ``nnx.metrics.Metric`` (reset/update/compute on ``MetricState`` variables).
"""

from __future__ import annotations

import dataclasses
import inspect
from numbers import Number
from typing import Any

import jax
import numpy as np
from flax import nnx

from .estimators import LeepStats, Streaming, TwoPassStreaming
from .estimators import all_reduce as _all_reduce_stats
from .estimators import merge as _merge_stats
from .estimators import stream_conditional_entropy as _conditional_entropy
from .estimators import stream_gbc as _gbc
from .estimators import stream_hardness as _hardness
from .estimators import stream_hscore as _hscore
from .estimators import stream_label_mse as _label_mse
from .estimators import stream_leep as _leep
from .estimators import stream_linear_mse as _linear_mse
from .estimators import stream_logme as _logme
from .estimators import stream_nce as _nce
from .estimators import stream_shrinkage_hscore as _shrinkage_hscore
from .estimators import stream_transrate as _transrate

__all__ = [
    "EstimatorMetric",
    "conditional_entropy",
    "gbc",
    "hardness",
    "hscore",
    "label_mse",
    "leep",
    "linear_mse",
    "logme",
    "nce",
    "shrinkage_hscore",
    "transrate",
]

_NAMES = {
    _conditional_entropy: "conditional_entropy",
    _gbc: "gbc",
    _hardness: "hardness",
    _hscore: "hscore",
    _label_mse: "label_mse",
    _leep: "leep",
    _linear_mse: "linear_mse",
    _logme: "logme",
    _nce: "nce",
    _shrinkage_hscore: "shrinkage_hscore",
    _transrate: "transrate",
}


def _freeze(name: str, value: Any):
    """A ``compute`` option in a hashable form (options are static): arrays and lists become tuples."""
    if isinstance(value, (jax.Array, np.ndarray, list, tuple)):
        try:
            arr = np.asarray(value)
        except jax.errors.TracerArrayConversionError:
            raise TypeError(
                f"{name} must be a concrete value (a metric's options are static), got a tracer"
            ) from None
        return arr.item() if arr.ndim == 0 else tuple(arr.tolist())
    if value is None or isinstance(value, (Number, str, bool)):
        return value
    raise TypeError(f"{name} must be a number, a string, an array or None, got {type(value).__name__}")


class EstimatorMetric(nnx.metrics.Metric):
    """A streaming estimator as an NNX metric: statistics in a ``MetricState``, score on the device.

    Args:
      estimator: a :class:`jaxtransfer.streaming.Streaming` (or ``TwoPassStreaming``, LEEP)
        object, e.g. ``jaxtransfer.streaming.logme``.
      *sizes: the positional sizes of ``estimator.init`` (static), e.g. ``d`` and ``k``.
      argnames: the keyword arguments ``update`` reads, in the order of ``estimator.update``;
        default the names of ``estimator.update``'s parameters (``("features", "targets")``).
      **options: keyword arguments of ``estimator.init`` (``num_target_classes``, ``dtype``,
        ``logits``...) and of ``estimator.finalize`` (``l2``, ``max_iter``, ``eps``...), told
        apart by name. All are static; arrays (``l2=[0.0, 1.0]``) are stored as tuples.

    Raises:
      TypeError: ``estimator`` is not a streaming estimator, an unknown option, a traced option.
      ValueError: a size or an option out of range (from the estimator's own checks, which
        run when the metric is built).

    Example:
      >>> import numpy as np
      >>> from jaxtransfer import metrics, streaming
      >>> m = metrics.EstimatorMetric(streaming.linear_mse, 4, l2=0.1)
      >>> m.update(features=np.eye(4, dtype=np.float32), targets=np.arange(4.0, dtype=np.float32))
      >>> round(float(m.compute()), 4)
      -0.3571
    """

    def __init__(self, estimator, *sizes, argnames=None, **options):
        if not isinstance(estimator, (Streaming, TwoPassStreaming)):
            raise TypeError(
                "estimator must be a streaming estimator such as jaxtransfer.streaming.logme, "
                f"got {type(estimator).__name__}"
            )
        init_params = inspect.signature(estimator.init).parameters
        finalize_params = list(inspect.signature(estimator.finalize).parameters)[1:]
        update_params = [p for p in inspect.signature(estimator.update).parameters if p != "mask"][1:]
        name = _NAMES.get(estimator, "estimator")
        unknown = sorted(set(options) - set(init_params) - set(finalize_params))
        if unknown:
            raise TypeError(
                f"{name} metric got unknown options {unknown}; its sizes and options are "
                f"{list(init_params)} (init) and {finalize_params} (compute)"
            )
        if argnames is None:
            argnames = tuple(update_params)
        elif isinstance(argnames, str):
            argnames = (argnames,)
        argnames = tuple(argnames)
        if len(argnames) != len(update_params) or not all(isinstance(a, str) for a in argnames):
            raise ValueError(
                f"argnames must be {len(update_params)} strings (for {update_params}), got {argnames!r}"
            )
        if "mask" in argnames or "axis_name" in argnames:
            raise ValueError(
                f"argnames must not use the reserved names 'mask' and 'axis_name', got {argnames}"
            )
        self.name = name
        self.estimator = estimator
        self.argnames = argnames
        self._sizes = tuple(sizes)
        self._init_options = tuple(sorted((k, v) for k, v in options.items() if k in init_params))
        self._options = tuple(sorted((k, _freeze(k, v)) for k, v in options.items() if k not in init_params))
        stats = self._empty()
        # validate the compute options now, on abstract values (nothing is computed)
        if isinstance(estimator, TwoPassStreaming):
            jax.eval_shape(lambda s: self._finalize(estimator.second_pass(s)), stats)
        else:
            jax.eval_shape(self._finalize, stats)
        self.stats = nnx.metrics.MetricState(stats)

    # ------------------------------------------------------------------ helpers
    def _empty(self):
        return self.estimator.init(*self._sizes, **dict(self._init_options))

    def _finalize(self, stats):
        return self.estimator.finalize(stats, **dict(self._options))

    def _batch(self, kwargs):
        missing = [a for a in self.argnames if a not in kwargs]
        if missing:
            raise TypeError(
                f"{self.name} metric: update needs the keyword arguments {list(self.argnames)}; "
                f"missing {missing}, got {sorted(kwargs)}"
            )
        return [kwargs[a] for a in self.argnames]

    def _check_other(self, other):
        if not isinstance(other, EstimatorMetric):
            raise TypeError(f"other must be an EstimatorMetric, got {type(other).__name__}")
        mine = (self.estimator, self._sizes, self._init_options, self._options)
        theirs = (other.estimator, other._sizes, other._init_options, other._options)
        if mine != theirs:
            raise ValueError(
                f"other must be the same metric with the same sizes and options: got {other.name} "
                f"{other._sizes} {dict(other._init_options + other._options)}, expected {self.name} "
                f"{self._sizes} {dict(self._init_options + self._options)}"
            )

    # ------------------------------------------------------------------ the Metric API
    def reset(self) -> None:
        """Empty statistics (LEEP: back to the first pass)."""
        self.stats.set_value(self._empty())

    def update(self, *, mask=None, axis_name=None, **batch) -> None:
        """Add a batch to the statistics, in place.

        Args:
          mask: optional bool [b]; True keeps a sample.
          axis_name: optional name of a mapped axis (``shard_map``, ``pmap``): every member
            holds a shard of the batch; their statistics are summed over the axis and merged
            into this metric, which must be the same on every member (replicated).
          **batch: the arrays named by ``argnames`` (``features`` [b, d] and ``targets`` [b]
            or [b, k], by default); other keywords are ignored (``nnx.MultiMetric``).

        Raises:
          TypeError: a keyword of ``argnames`` is missing; a batch of the wrong dtype.
          ValueError: a batch of the wrong shape; eagerly, labels out of range or
            non-finite values.
        """
        args = self._batch(batch)
        stats = self.stats.get_value()
        if axis_name is None:
            self.stats.set_value(self.estimator.update(stats, *args, mask))
            return
        empty = self._empty()
        if isinstance(stats, LeepStats) and stats.second:  # pass 2 adds log-likelihoods under P̂(y|z)
            empty = dataclasses.replace(empty, joint=stats.joint, conditional=stats.conditional, second=True)
        part = _all_reduce_stats(self.estimator.update(empty, *args, mask), axis_name)
        self.stats.set_value(_merge_stats(stats, part))

    def compute(self) -> jax.Array:
        """The score of the samples seen so far (a ``jax.Array``; no transfer to the host).

        With no samples the score is whatever the estimator gives empty statistics (NaN
        or a meaningless number): update before computing.
        """
        return self._finalize(self.stats.get_value())

    # ------------------------------------------------------------------ devices and passes
    def merge(self, other: EstimatorMetric) -> None:
        """Add ``other``'s statistics (the same metric, on other samples) to this one, in place.

        Raises:
          TypeError: ``other`` is not an :class:`EstimatorMetric`.
          ValueError: a different estimator, sizes or options.
        """
        self._check_other(other)
        self.stats.set_value(_merge_stats(self.stats.get_value(), other.stats.get_value()))

    def all_reduce(self, axis_name) -> None:
        """Merge this metric over a mapped axis, in place: every member then holds the union.

        Each member's statistics must be of its own samples (per-device metrics); replicated
        copies of one metric would count the same samples once per member.
        """
        self.stats.set_value(_all_reduce_stats(self.stats.get_value(), axis_name))

    def second_pass(self) -> None:
        """LEEP: end the first pass (fix P̂(y|z)); then update again over the same samples.

        Raises:
          TypeError: the estimator takes one pass.
          ValueError: already in the second pass.
        """
        if not isinstance(self.estimator, TwoPassStreaming):
            raise TypeError(f"{self.name} takes one pass; second_pass is for two-pass estimators (leep)")
        self.stats.set_value(self.estimator.second_pass(self.stats.get_value()))


# ----------------------------------------------------------------------------- named constructors


def linear_mse(d, k=None, *, num_target_classes=None, l2=1.0, dtype=None, argnames=None) -> EstimatorMetric:
    """Linear MSE (:func:`jaxtransfer.linear_mse`): ``update(features=[b, d], targets=[b] or [b, k])``.

    −min_{A,b} (1/n)Σ‖yᵢ − Afᵢ − b‖² + λ‖A‖²_F; ``num_target_classes`` takes integer labels
    (their one-hot columns); ``l2`` a number or a 1-D array (one score each).
    """
    return EstimatorMetric(
        _linear_mse, d, k, num_target_classes=num_target_classes, l2=l2, dtype=dtype, argnames=argnames
    )


def label_mse(d=1, k=None, *, l2=1.0, dtype=None, argnames=None) -> EstimatorMetric:
    """Label MSE (:func:`jaxtransfer.label_mse`): ``update(source_predictions=[b] or [b, d], targets=)``."""
    return EstimatorMetric(_label_mse, d, k, l2=l2, dtype=dtype, argnames=argnames)


def logme(d, k=None, *, num_target_classes=None, max_iter=100, tol=None, dtype=None, argnames=None):
    """LogME (:func:`jaxtransfer.logme`): ``update(features=[b, d], targets=...)``.

    Classification with ``num_target_classes`` (integer labels, averaged over one-hot
    columns); otherwise k real target columns (regression, multi-label 0/1).
    """
    return EstimatorMetric(
        _logme,
        d,
        k,
        num_target_classes=num_target_classes,
        max_iter=max_iter,
        tol=tol,
        dtype=dtype,
        argnames=argnames,
    )


def hscore(d, num_target_classes, *, dtype=None, argnames=None) -> EstimatorMetric:
    """H-score (:func:`jaxtransfer.hscore`): tr(cov(f)⁺ cov(E[f|y])); ``update(features=, targets=)``."""
    return EstimatorMetric(_hscore, d, num_target_classes, dtype=dtype, argnames=argnames)


def shrinkage_hscore(d, num_target_classes, *, dtype=None, argnames=None) -> EstimatorMetric:
    """Shrinkage H-score (:func:`jaxtransfer.shrinkage_hscore`), Ledoit–Wolf covariance."""
    return EstimatorMetric(_shrinkage_hscore, d, num_target_classes, dtype=dtype, argnames=argnames)


def transrate(d, num_target_classes, *, eps=None, weighting="proportional", dtype=None, argnames=None):
    """TransRate (:func:`jaxtransfer.transrate`, classification); accumulate in float64 (streaming notes)."""
    return EstimatorMetric(
        _transrate, d, num_target_classes, eps=eps, weighting=weighting, dtype=dtype, argnames=argnames
    )


def gbc(d, num_target_classes, *, num_components=None, explained_variance=None, dtype=None, argnames=None):
    """GBC (:func:`jaxtransfer.gbc`): −Σ Bhattacharyya coefficients of per-class Gaussians along a PCA."""
    return EstimatorMetric(
        _gbc,
        d,
        num_target_classes,
        num_components=num_components,
        explained_variance=explained_variance,
        dtype=dtype,
        argnames=argnames,
    )


def nce(num_source_classes, num_target_classes, *, argnames=None) -> EstimatorMetric:
    """NCE = −H(Y|Z) (:func:`jaxtransfer.nce`): ``update(source_labels=[b], targets=[b])``, exact counts."""
    return EstimatorMetric(_nce, num_source_classes, num_target_classes, argnames=argnames)


def conditional_entropy(num_source_classes, num_target_classes, *, argnames=None) -> EstimatorMetric:
    """H(Y|Z) (:func:`jaxtransfer.conditional_entropy`): ``update(source_labels=[b], targets=[b])``."""
    return EstimatorMetric(_conditional_entropy, num_source_classes, num_target_classes, argnames=argnames)


def hardness(num_target_classes, *, argnames=None) -> EstimatorMetric:
    """Hardness H(Y) (:func:`jaxtransfer.hardness`): ``update(targets=[b])``."""
    return EstimatorMetric(_hardness, num_target_classes, argnames=argnames)


def leep(num_source_classes, num_target_classes, *, logits=False, dtype=None, argnames=None):
    """LEEP (:func:`jaxtransfer.leep`) in two passes: ``update(source_probs=[b, Cz], targets=[b])``
    over the samples, ``second_pass()``, the same updates again, then ``compute()``."""
    return EstimatorMetric(
        _leep, num_source_classes, num_target_classes, logits=logits, dtype=dtype, argnames=argnames
    )
