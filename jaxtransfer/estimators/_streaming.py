"""Streaming estimators: statistics that add batch by batch, then one finalize (``jaxtransfer.streaming``).

Every estimator whose sufficient statistics add (DESIGN.md, "sufficient
statistics, then finalize") is offered as four pure, jit-compatible functions
over a pytree of statistics, in the style of JAX metrics (CLU, ``flax.nnx.metrics``):

* ``init(sizes..., dtype=None)`` — empty statistics; sizes (feature width d,
  target columns k, class counts) shape arrays and are static;
* ``update(stats, batch..., mask=None)`` — the statistics with one batch added
  (features [b, d], targets [b] or [b, k], optional bool mask [b]);
* ``merge(a, b)`` — the statistics of the union of two sample sets (batches,
  devices, hosts): commutative (bit for bit) and associative up to rounding;
  :func:`all_reduce` is the same under ``jax.lax.psum`` over a named axis;
* ``finalize(stats, **options)`` — the score, equal to the whole-array
  estimator on the concatenated samples.

Sample sizes never shape anything, so ``update`` compiles once per batch shape
and the statistics can live in a training state, updated inside a jitted eval
step with no host sync. Eager calls validate the batch (shape, dtype, label
range, finiteness) and raise ``ValueError``/``TypeError`` naming the argument;
traced calls check what is static.

==========================  ==========================  =================================
estimator                   statistics (additive part)  finalize
==========================  ==========================  =================================
linear_mse, label_mse       :class:`LinearStats`:       ridge closed form (any ``l2``),
                            n, Σf, ΣffᵀΣ, Σfyᵀ, Σy,     :func:`~jaxtransfer_kernels.
                            Σy² (kernels' SourceStats,  ridge_objective_from_stats`
                            CrossStats)
logme                       the same                    spectrum of FᵀF + projections,
                                                        then LogME's maximisation
hscore, shrinkage_hscore    :class:`ClassStats`: n_c,   eigh of the centred Gram,
                            class sums, Gram, Σ‖u‖²u,   Ledoit–Wolf α from Σ‖x−μ‖⁴
                            Σ‖u‖⁴
transrate, gbc              :class:`ClassGramStats`:    per-class log-dets (TransRate);
                            n_c, class sums, class      PCA of the summed Gram, class
                            Gram blocks [C, d, d]       moments along it (GBC)
nce, conditional_entropy,   :class:`CountStats`: joint  entropies of counts (exact)
hardness                    counts [Cz, Cy] (integers)
leep (two passes)           :class:`LeepStats`: soft    pass 1: P̂(y|z);
                            joint n·P̂(z, y); then       pass 2: (1/n) Σ log Σ_z
                            Σ log-likelihood            P̂(yᵢ|z)θ_z(xᵢ)
==========================  ==========================  =================================

Shifts. Sums of products are accumulated about a shift s, u = x − s (the
first non-empty batch's mean), so that float32 keeps its digits on features
with a large mean (post-ReLU features). Two statistics about different shifts
are re-expressed about a common one — the count-weighted mean of their shifts —
exactly, in closed form: with δ = s − s' (x − s' = u + δ),

    Σ(u+δ) = t + nδ,    Σ(u+δ)(u+δ)ᵀ = G + tδᵀ + δtᵀ + nδδᵀ,
    Σ(u+δ)(v+ε)ᵀ = X + tεᵀ + δt_vᵀ + nδεᵀ,   Σ(v+ε)² = q + 2εt_v + nε²,
    Σ‖u+δ‖²(u+δ) = Q₃ + tr(G)δ + 2Gδ + 2(δᵀt)δ + ‖δ‖²t + n‖δ‖²δ,
    Σ‖u+δ‖⁴ = Q₄ + 4δᵀQ₃ + 4δᵀGδ + 2‖δ‖²tr(G) + 4‖δ‖²δᵀt + n‖δ‖⁴,

and per class with n_c and the class sums t_c. The same formulas with
s' = μ (δ = −t/n) give the centred statistics at finalize.

Precision. The whole-array estimators centre the samples in two passes,
factorise the features themselves (their SVD, where the Gram matrix would lose
digits) and compute residuals directly. Streamed statistics cannot: they form
the Gram matrix, whose eigenvalues carry an absolute error of about
eps·λ_max (eigenvalues at or below eps·max(n, d)·λ_max count as zero here,
where the whole-array SVD route keeps directions down to ~eps·σ_max), and
residuals as ‖y‖² − ‖Uᵀy‖². Measured by ``bench/bench_streaming.py``
(n = 2000, d = 256, C = 10, batches of 256; |streamed − whole-array| in the
same dtype):

* float64 accumulation (``dtype=jnp.float64`` under x64): every estimator
  within 1e-14 on ReLU features with a mean offset, within 5e-12 on the
  ill-conditioned case (column scales 1e-3..1): no digits lost that matter.
* float32, ReLU features with an offset (well conditioned): Linear MSE,
  LEEP 1e-7; LogME, H-score, shrinkage H-score, GBC about 5e-7 relative —
  the same size as the whole-array route's own float32 error; TransRate
  1e-3 relative (0.28 on 280: κ = 10⁴ weighs the small eigenvalues the Gram
  matrix rounds).
* float32, ill-conditioned features (Gram condition number ~1e6, beyond
  1/(eps·max(n, d))): Linear MSE (λ = 1) and GBC (variance floor 1e-6) still
  agree to 1e-7 and 3e-7; shrinkage H-score 7e-3, H-score 7e-2, LogME 0.2,
  TransRate 0.2 relative, because the directions below the Gram route's
  resolution are dropped. Accumulate in float64 there.

Counts (NCE, conditional entropy,
hardness, class counts) are exact integers (int32, int64 under x64); sample
counts n of the moment statistics are floats (exact up to 2²⁴ in float32).

Not streamed: NLEEP (its Gaussian mixture is fitted by EM over all samples),
regression TransRate (quantile bins need the whole sample), soft NCE, and the
``feature_mask`` option of the H-scores. GBC here is exact in one pass because
the per-class Gram blocks give the class variances along any PCA basis; with
many classes and wide features (C·d² too large) the alternative is two
passes — a :class:`LinearStats` pass for the PCA basis, then class moments of
the k projected components — which is not provided.

Example:
  >>> import numpy as np
  >>> import jaxtransfer as jt
  >>> from jaxtransfer import streaming
  >>> rng = np.random.default_rng(0)
  >>> f, y = rng.normal(size=(100, 4)).astype(np.float32), rng.integers(0, 3, 100)
  >>> stats = streaming.hscore.init(4, num_target_classes=3)
  >>> for i in range(0, 100, 32):
  ...     stats = streaming.hscore.update(stats, f[i : i + 32], y[i : i + 32])
  >>> bool(np.isclose(streaming.hscore.finalize(stats), jt.hscore(f, y), rtol=1e-4))
  True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from numbers import Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import (
    CrossStats,
    SourceStats,
    add_stats,
    conditional_entropy_from_counts,
    cross_stats,
    entropy_from_counts,
    joint_histogram,
    label_counts,
    matmul,
    power_of_two_scale,
    ridge_objective_from_stats,
    sample_weights,
    soft_joint_histogram,
    source_stats,
)

from ._checks import choice, is_concrete, nonnegative_values, static_int, to_array
from ._gbc import gbc_from_moments
from ._hscore import ledoit_wolf_from_moments, shrinkage_weights
from ._leep import leep_conditional, leep_log_terms
from ._logme import LogMEDetails, logme_from_spectrum
from ._pca import VARIANCE_FLOOR, explained_variance_arg, num_components_arg
from ._transrate import RELEASED_CODE_COEFFICIENT

__all__ = [
    "ClassGramStats",
    "ClassStats",
    "CountStats",
    "LeepStats",
    "LinearStats",
    "Streaming",
    "TwoPassStreaming",
    "all_reduce",
    "merge",
    "stream_conditional_entropy",
    "stream_gbc",
    "stream_hardness",
    "stream_hscore",
    "stream_label_mse",
    "stream_leep",
    "stream_linear_mse",
    "stream_logme",
    "stream_nce",
    "stream_shrinkage_hscore",
    "stream_transrate",
]


class Streaming(NamedTuple):
    """An estimator as four pure functions over a pytree of statistics (module docstring)."""

    init: Callable[..., Any]
    update: Callable[..., Any]
    merge: Callable[[Any, Any], Any]
    finalize: Callable[..., jax.Array]


class TwoPassStreaming(NamedTuple):
    """An estimator that needs two passes over the samples (LEEP): ``second_pass`` between them."""

    init: Callable[..., Any]
    update: Callable[..., Any]
    merge: Callable[[Any, Any], Any]
    second_pass: Callable[[Any], Any]
    finalize: Callable[..., jax.Array]


def _pytree(*meta):
    """A frozen dataclass registered as a pytree; ``meta`` fields are static (part of the tree)."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = [n for n in names if n not in meta]
        return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(meta))

    return wrap


# ----------------------------------------------------------------------------- re-centring


def _outer(a, b):
    return a[..., :, None] * b[..., None, :]


def _recentre_source(s: SourceStats, shift) -> SourceStats:
    """Σ(x−s')… from Σ(x−s)… with δ = s − s' (module docstring)."""
    delta = s.shift - shift
    n, t = s.count, s.total
    gram = s.gram + _outer(t, delta) + _outer(delta, t) + n * _outer(delta, delta)
    return SourceStats(n, shift, t + n * delta, gram)


def _recentre_cross(c: CrossStats, s: SourceStats, feature_shift, target_shift) -> CrossStats:
    """Cross sums about new shifts; ``s`` is the matching source statistics about its old shift."""
    delta = s.shift - feature_shift
    eps = c.shift - target_shift
    n = s.count
    cross = c.cross + _outer(s.total, eps) + _outer(delta, c.total) + n * _outer(delta, eps)
    squares = c.squares + 2 * eps * c.total + n * eps * eps
    return CrossStats(target_shift, c.total + n * eps, cross, squares)


def _recentre_moments(s: SourceStats, cubic, quartic, shift):
    """Σ‖u+δ‖²(u+δ) and Σ‖u+δ‖⁴ from the sums about the old shift (module docstring)."""
    delta = s.shift - shift
    n, t, g = s.count, s.total, s.gram
    tr = jnp.trace(g)
    dd = jnp.sum(delta * delta)
    gd = matmul(g, delta)
    dt = jnp.sum(delta * t)
    cubic_new = cubic + tr * delta + 2 * gd + 2 * dt * delta + dd * t + n * dd * delta
    quartic_new = (
        quartic
        + 4 * jnp.sum(delta * cubic)
        + 4 * jnp.sum(delta * gd)
        + 2 * dd * tr
        + 4 * dd * dt
        + n * dd * dd
    )
    return cubic_new, quartic_new


def _recentre_classes(counts, totals, grams, delta):
    """Per-class sums (and Gram blocks, when given) about a new shift, δ = old − new."""
    nc = counts.astype(totals.dtype)[:, None]
    new_totals = totals + nc * delta[None, :]
    if grams is None:
        return new_totals, None
    d_out = delta[None, :, None] * totals[:, None, :]
    grams = grams + _outer(totals, delta[None, :]) + d_out + nc[:, :, None] * _outer(delta, delta)[None]
    return new_totals, grams


# ----------------------------------------------------------------------------- statistics


@_pytree("num_target_classes")
class LinearStats:
    """Moments of the features and the targets: Linear/Label MSE and LogME.

    Attributes:
      features: :class:`~jaxtransfer_kernels.SourceStats` n, s, Σ(f−s), Σ(f−s)(f−s)ᵀ.
      targets: :class:`~jaxtransfer_kernels.CrossStats` r, Σ(y−r), Σ(f−s)(y−r)ᵀ, Σ(y−r)².
      num_target_classes: static; when set, ``update`` takes integer labels and
        accumulates their one-hot columns (k = C), as LogME's classification.

    The same pair is :class:`jaxtransfer.features.StreamedStats`' ``features``
    and ``targets``: ``LinearStats(s.features, s.targets)`` finalises statistics
    accumulated during :func:`jaxtransfer.features.extract`.
    """

    features: SourceStats
    targets: CrossStats
    num_target_classes: int | None = None

    def _count(self):
        return self.features.count

    def _shifts(self):
        return (self.features.shift, self.targets.shift)

    def _recentre(self, shifts):
        fshift, tshift = shifts
        cross = _recentre_cross(self.targets, self.features, fshift, tshift)
        return dataclasses.replace(self, features=_recentre_source(self.features, fshift), targets=cross)

    def _restore(self, ref):
        f = self.features._replace(shift=ref.features.shift)
        return dataclasses.replace(self, features=f, targets=self.targets._replace(shift=ref.targets.shift))


@_pytree()
class ClassStats:
    """Class counts, class sums, the Gram matrix and the fourth-moment sums: the H-scores.

    Attributes:
      features: :class:`~jaxtransfer_kernels.SourceStats` about the shift s.
      counts: int [C] samples per class.
      class_totals: [C, d] Σ_{i: yᵢ=c} uᵢ, u = f − s.
      cubic: [d] Σ‖u‖²u.
      quartic: [] Σ‖u‖⁴ (the Ledoit–Wolf β needs Σ‖f − μ‖⁴).
    """

    features: SourceStats
    counts: jax.Array
    class_totals: jax.Array
    cubic: jax.Array
    quartic: jax.Array

    def _count(self):
        return self.features.count

    def _shifts(self):
        return (self.features.shift,)

    def _recentre(self, shifts):
        (shift,) = shifts
        delta = self.features.shift - shift
        cubic, quartic = _recentre_moments(self.features, self.cubic, self.quartic, shift)
        totals, _ = _recentre_classes(self.counts, self.class_totals, None, delta)
        return ClassStats(_recentre_source(self.features, shift), self.counts, totals, cubic, quartic)

    def _restore(self, ref):
        return dataclasses.replace(self, features=self.features._replace(shift=ref.features.shift))


@_pytree()
class ClassGramStats:
    """Per-class counts, sums and Gram blocks about one shift: TransRate and GBC.

    Attributes:
      shift: [d] s.
      counts: int [C].
      class_totals: [C, d] Σ_{i: yᵢ=c} (fᵢ − s).
      class_grams: [C, d, d] Σ_{i: yᵢ=c} (fᵢ − s)(fᵢ − s)ᵀ (memory C·d²).
    """

    shift: jax.Array
    counts: jax.Array
    class_totals: jax.Array
    class_grams: jax.Array

    def _count(self):
        return jnp.sum(self.counts).astype(self.shift.dtype)

    def _shifts(self):
        return (self.shift,)

    def _recentre(self, shifts):
        (shift,) = shifts
        totals, grams = _recentre_classes(
            self.counts, self.class_totals, self.class_grams, self.shift - shift
        )
        return ClassGramStats(shift, self.counts, totals, grams)

    def _restore(self, ref):
        return dataclasses.replace(self, shift=ref.shift)


@_pytree()
class CountStats:
    """Joint label counts: int [Cz, Cy] (NCE, conditional entropy; hardness uses Cz = 1)."""

    joint: jax.Array

    def _count(self):
        return jnp.zeros((), jnp.float32)

    def _shifts(self):
        return ()

    def _recentre(self, shifts):
        return self

    def _restore(self, ref):
        return self


@_pytree("logits", "second")
class LeepStats:
    """LEEP's two passes.

    Attributes:
      joint: [Cz, Cy] soft joint counts n·P̂(z, y) (pass 1; kept, not added, in pass 2).
      conditional: [Cz, Cy] P̂(y|z), fixed by :func:`stream_leep.second_pass`.
      log_likelihood: [] Σᵢ log Σ_z P̂(yᵢ|z)θ_z(xᵢ) (pass 2).
      count: [] samples seen in the current pass.
      logits: static, the source input is logits (a softmax is applied).
      second: static, the statistics are in the second pass.
    """

    joint: jax.Array
    conditional: jax.Array
    log_likelihood: jax.Array
    count: jax.Array
    logits: bool = False
    second: bool = False

    def _count(self):
        return self.count

    def _shifts(self):
        return ()

    def _recentre(self, shifts):
        return self

    def _restore(self, ref):
        if not self.second:
            return self
        return dataclasses.replace(self, joint=ref.joint, conditional=ref.conditional)


_STATS = (LinearStats, ClassStats, ClassGramStats, CountStats, LeepStats)


# ----------------------------------------------------------------------------- merge


def _check_pair(a, b) -> None:
    if not isinstance(a, _STATS):
        raise TypeError(
            f"a must be streaming statistics ({', '.join(map(repr, _STATS))}), got {type(a).__name__}"
        )
    if type(b) is not type(a):
        raise TypeError(f"b must be {type(a).__name__} like a, got {type(b).__name__}")
    ta, tb = jax.tree.structure(a), jax.tree.structure(b)
    shapes_a = [(x.shape, x.dtype) for x in jax.tree.leaves(a)]
    shapes_b = [(x.shape, x.dtype) for x in jax.tree.leaves(b)]
    if ta != tb or shapes_a != shapes_b:
        raise ValueError(
            f"b must have the sizes, dtype and options of a: got {tb} with {shapes_b}, "
            f"expected {ta} with {shapes_a}"
        )


def _common_shifts(a, b):
    """The count-weighted mean of the two shifts (symmetric in a and b; 0 when both are empty)."""
    na, nb = a._count(), b._count()
    total = na + nb
    safe = jnp.where(total > 0, total, 1)
    return tuple((na * sa + nb * sb) / safe for sa, sb in zip(a._shifts(), b._shifts(), strict=True))


@jax.jit
def _merge(a, b):
    shifts = _common_shifts(a, b)
    ra, rb = a._recentre(shifts), b._recentre(shifts)
    return jax.tree.map(jnp.add, ra, rb)._restore(ra)


def merge(a, b):
    """The statistics of the union of two sample sets (any streaming statistics, same sizes).

    Both are re-expressed exactly about the count-weighted mean of their shifts
    (module docstring) and added, so statistics accumulated independently —
    on other devices or hosts, from other first batches — merge correctly.
    ``merge(a, b)`` equals ``merge(b, a)`` bit for bit; grouping changes only
    rounding. Pure and jit-compatible.

    Args:
      a, b: statistics of one type with the same sizes, dtype and options.

    Returns:
      Statistics of the same type.

    Raises:
      TypeError: not streaming statistics, or of different types.
      ValueError: different sizes, dtypes or options.

    Example:
      >>> import numpy as np
      >>> from jaxtransfer import streaming
      >>> f, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 1, 0])
      >>> a = streaming.hscore.update(streaming.hscore.init(2, num_target_classes=2), f[:2], y[:2])
      >>> b = streaming.hscore.update(streaming.hscore.init(2, num_target_classes=2), f[2:], y[2:])
      >>> [int(c) for c in streaming.merge(a, b).counts]
      [3, 3]
    """
    _check_pair(a, b)
    return _merge(a, b)


def all_reduce(stats, axis_name):
    """:func:`merge` over a named mapped axis (``shard_map``, ``pmap``, ``vmap(axis_name=)``).

    Every member is re-expressed about the count-weighted mean of all the
    shifts (one ``psum`` of n·s and of n), then the additive fields are summed
    with ``jax.lax.psum``; every member receives the merged statistics.

    Args:
      stats: this member's statistics.
      axis_name: the mapped axis to reduce over.

    Returns:
      The merged statistics (the same on every member).

    Example:
      >>> import jax, numpy as np
      >>> from jaxtransfer import streaming
      >>> f, y = np.arange(16.0).reshape(2, 4, 2), np.array([[0, 1, 0, 1], [1, 1, 0, 0]])
      >>> empty = streaming.hscore.init(2, num_target_classes=2)
      >>> s = jax.vmap(lambda f, y: streaming.hscore.update(empty, f, y))(f, y)  # two "devices"
      >>> merged = jax.vmap(lambda s: streaming.all_reduce(s, "i"), axis_name="i")(s)
      >>> [int(c) for c in merged.counts[0]]
      [4, 4]
    """
    n = stats._count()
    total = lax.psum(n, axis_name)
    safe = jnp.where(total > 0, total, 1)
    shifts = tuple(lax.psum(n * s, axis_name) / safe for s in stats._shifts())
    local = stats._recentre(shifts)
    return jax.tree.map(lambda x: lax.psum(x, axis_name), local)._restore(local)


# ----------------------------------------------------------------------------- batch checks


def _dtype(dtype):
    """The accumulation dtype: ``None`` is the default float (float64 under x64)."""
    default = jnp.result_type(float)
    if dtype is None:
        return default
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dtype!r}") from None
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32, got {dt}")
    if dt.itemsize > np.dtype(default).itemsize:
        raise ValueError(
            f"dtype={dt} needs jax_enable_x64 (jax.config.update('jax_enable_x64', True)); "
            f"without it statistics accumulate in {np.dtype(default)}"
        )
    return dt


def _count_dtype():
    return jnp.asarray(0).dtype  # int32, or int64 under x64


def _size(name, value, minimum=1):
    return static_int(name, value, minimum, "a static size")


def _batch_features(name, x, d, dtype):
    """A real [b, d] batch (a vector [b] when d = 1), cast to the statistics' dtype; finite when concrete."""
    arr = to_array(name, x)
    if jnp.issubdtype(arr.dtype, jnp.complexfloating) or not (
        jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool
    ):
        raise TypeError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if arr.ndim == 1 and d == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != d:
        raise ValueError(
            f"{name} must have shape [b, {d}] (the width the statistics were initialised with), "
            f"got shape {tuple(arr.shape)}"
        )
    arr = jnp.asarray(arr).astype(dtype)
    if is_concrete(arr) and not bool(jnp.all(jnp.isfinite(arr))):
        bad = np.argwhere(~np.isfinite(np.asarray(arr)))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(f"{name} contains a non-finite value ({np.asarray(arr)[where]}) at index {where}")
    return arr


def _batch_labels(name, x, b, num_classes, class_arg):
    arr = to_array(name, x)
    if not (jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool):
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != b:
        raise ValueError(
            f"{name} must have shape [{b}] (one label per sample of the batch), got {tuple(arr.shape)}"
        )
    arr = jnp.asarray(arr).astype(jnp.int32)
    if is_concrete(arr) and b:
        lo, hi = int(jnp.min(arr)), int(jnp.max(arr))
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{name} contains the label {bad}, but the statistics have {class_arg}={num_classes}; "
                f"labels must lie in [0, {num_classes})"
            )
    return arr


def _batch_mask(mask, b):
    if mask is None:
        return None
    arr = to_array("mask", mask)
    if not (arr.dtype == bool or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"mask must be a boolean array (True keeps a sample), got dtype {arr.dtype}")
    if tuple(arr.shape) != (b,):
        raise ValueError(
            f"mask must have shape [{b}] (one entry per sample of the batch), got {tuple(arr.shape)}"
        )
    return jnp.asarray(arr).astype(bool)


def _check_stats(name, stats, cls):
    if not isinstance(stats, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name} must be {names} (from this estimator's init), got {type(stats).__name__}")


def _batch_size(name, x):
    shape = np.shape(x)
    if len(shape) == 0:
        raise ValueError(f"{name} must be an array of samples, got a scalar")
    return shape[0]


def _first_shift(count, shift, x, w):
    """The statistics' shift, or this batch's (weighted) mean while nothing has been accumulated."""
    mean = jnp.sum(x * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1)
    return jnp.where(count > 0, shift, mean)


# ----------------------------------------------------------------------------- Linear/Label MSE, LogME


def _linear_init(d, k=None, *, num_target_classes=None, dtype=None) -> LinearStats:
    """Empty :class:`LinearStats` for d features and k target columns (or C one-hot classes).

    Args:
      d: feature width (static).
      k: number of target columns (static); default 1 unless ``num_target_classes`` is given.
      num_target_classes: static class count: ``update`` then takes integer labels.
      dtype: accumulation dtype; default float32 (float64 under x64).
    """
    d = _size("d", d)
    dt = _dtype(dtype)
    if num_target_classes is not None:
        if k is not None:
            raise ValueError("give k (target columns) or num_target_classes (labels), not both")
        k = _size("num_target_classes", num_target_classes)
        num_target_classes = k
    else:
        k = 1 if k is None else _size("k", k)
    z = partial(jnp.zeros, dtype=dt)
    return LinearStats(
        SourceStats(z(()), z((d,)), z((d,)), z((d, d))),
        CrossStats(z((k,)), z((k,)), z((d, k)), z((k,))),
        num_target_classes,
    )


@jax.jit
def _linear_update(stats: LinearStats, f, y, mask):
    w = sample_weights(f.shape[0], mask, f.dtype)
    fshift = _first_shift(stats.features.count, stats.features.shift, f, w)
    tshift = _first_shift(stats.features.count, stats.targets.shift, y, w)
    fs = source_stats(f, mask, shift=fshift)
    cs = cross_stats(f, y, mask, feature_shift=fshift, target_shift=tshift)
    return dataclasses.replace(
        stats,
        features=add_stats(stats.features._replace(shift=fshift), fs),
        targets=add_stats(stats.targets._replace(shift=tshift), cs),
    )


def _linear_update_checked(stats, features, targets, mask=None, *, features_name="features"):
    _check_stats("stats", stats, LinearStats)
    d, dtype = stats.features.shift.shape[0], stats.features.shift.dtype
    f = _batch_features(features_name, features, d, dtype)
    b = f.shape[0]
    classes = stats.num_target_classes
    if classes is not None:
        labels = _batch_labels("targets", targets, b, classes, "num_target_classes")
        y = jax.nn.one_hot(labels, classes, dtype=dtype)
    else:
        k = stats.targets.shift.shape[0]
        y = _batch_features("targets", targets, k, dtype)
        if y.shape[0] != b:
            raise ValueError(f"{features_name} has {b} samples but targets has {y.shape[0]}")
    return _linear_update(stats, f, y, _batch_mask(mask, b))


def _linear_update_public(stats, features, targets, mask=None):
    """Add a batch: features [b, d], targets [b] or [b, k] (integer labels [b] with classes), mask [b]."""
    return _linear_update_checked(stats, features, targets, mask)


def _label_update_public(stats, source_predictions, targets, mask=None):
    """Add a batch: source_predictions [b] or [b, d], targets [b] or [b, k], mask [b]."""
    return _linear_update_checked(
        stats, source_predictions, targets, mask, features_name="source_predictions"
    )


@jax.jit
def _linear_mse_finalize(stats: LinearStats, l2):
    return -jnp.sum(ridge_objective_from_stats(stats.features, stats.targets, l2), axis=-1)


def _linear_finalize_public(stats, *, l2=1.0, columns=False):
    """−min_{A,b} (1/n)Σ‖yᵢ − Afᵢ − b‖² + λ‖A‖²_F from the statistics (:func:`jaxtransfer.linear_mse`).

    The closed form n·J(λ) = ‖Y_c‖² − Σ_j (v_jᵀG)²/(e_j + nλ) of
    :func:`jaxtransfer_kernels.ridge_objective_from_stats` on the centred Gram
    matrix C = V diag(e) Vᵀ and G = F_cᵀY_c; ``l2`` a scalar or a 1-D array (one
    score each). It loses digits when the fit is nearly exact (module notes).
    ``columns=True`` returns each target column's term [*l2.shape, k] (the
    score is their sum): the targets that share the statistics' columns are
    then scored from one eigendecomposition of C.
    """
    _check_stats("stats", stats, LinearStats)
    l2 = nonnegative_values("l2", l2, stats.features.shift.dtype)
    if columns:
        return -ridge_objective_from_stats(stats.features, stats.targets, l2)
    return _linear_mse_finalize(stats, l2)


def _logme_tol(tol, dtype):
    if tol is None:
        return jnp.asarray(np.sqrt(np.finfo(dtype).eps), dtype)
    if isinstance(tol, (str, bytes, bool)) or not isinstance(tol, (Real, jax.Array, np.ndarray)):
        raise TypeError(f"tol must be a positive number or None, got {tol!r}")
    if is_concrete(tol) and not (np.isfinite(float(tol)) and float(tol) > 0):
        raise ValueError(f"tol must be finite and > 0, got {float(tol)!r}")
    return jnp.asarray(tol, dtype)


@jax.jit
def _logme_finalize(stats: LinearStats, tol, max_iter) -> LogMEDetails:
    """LogME's spectrum from the moments: F = F_c + 1μᵀ, so FᵀF = C + nμμᵀ = MᵀM with
    M = [diag(√λ)Wᵀ; √n μᵀ] for C = W diag(λ) Wᵀ. The SVD of the (d+1)×d matrix M gives σ and
    V of F with the accuracy C allows (never the eigenvalues of FᵀF itself, which lose the spread
    under the mean); z = diag(1/σ)Vᵀ(Fᵀy), ‖y_⊥‖² = ‖y‖² − ‖z‖² (a difference: module notes)."""
    f, c = stats.features, stats.targets
    dtype = f.gram.dtype
    eps = jnp.finfo(dtype).eps
    d = f.gram.shape[0]
    n = f.count
    safe = jnp.maximum(n, 1)
    offset = f.total / safe
    cov = f.gram - _outer(f.total, offset)
    mu = f.shift + offset
    fy_c = c.cross - _outer(f.total, c.total) / safe  # F_cᵀY_c
    ybar = c.shift + c.total / safe
    yy = jnp.maximum(c.squares - c.total**2 / safe, 0) + n * ybar**2  # ‖y‖² per column
    fty = fy_c + n * _outer(mu, ybar)  # Fᵀy
    size = jnp.maximum(n, d)
    lam, w = jnp.linalg.eigh((cov + cov.T) / 2)
    lam = jnp.where(lam > eps * size * jnp.max(lam), lam, 0)
    m = jnp.concatenate([jnp.sqrt(lam)[:, None] * w.T, jnp.sqrt(n) * mu[None, :]])
    scale = power_of_two_scale(jnp.max(jnp.abs(m)))
    _, sigma, vt = jnp.linalg.svd(m * scale, full_matrices=False)
    keep = (sigma > eps * jnp.sqrt(size) * sigma[0]) & (jnp.arange(d) < n)
    proj = matmul(vt, fty * scale)
    z = jnp.where(keep[:, None], proj / jnp.where(keep, sigma, 1)[:, None], 0)
    y_scale = jax.vmap(power_of_two_scale)(jnp.sqrt(yy / safe))
    z2 = (z * y_scale[None, :]) ** 2
    yy = yy * y_scale**2
    # ‖y_⊥‖² is a difference of sums here, resolved only down to about eps·√max(n, d)·‖y‖²: below
    # that the whole-array route (a second pass) tells a tiny residual from none, the statistics
    # cannot. Clamped at that resolution the evidence is finite and approximate, never the +inf of
    # "y in the span of the features", which the statistics cannot establish.
    resolution = 16 * eps * jnp.sqrt(size) * yy
    yperp2 = jnp.maximum(yy - jnp.sum(z2, axis=0), resolution)
    return logme_from_spectrum(
        jnp.where(keep, sigma * sigma, 0),
        keep,
        z2,
        yperp2,
        count=n,
        residual_floor=jnp.zeros_like(yy),  # never "unbounded" (above)
        y_scale=y_scale,
        feature_scale=scale,
        tol=tol,
        max_iter=max_iter,
    )


def _logme_finalize_public(stats, *, max_iter=100, tol=None, details=False):
    """LogME (:func:`jaxtransfer.logme`) from the statistics: the score, or :class:`LogMEDetails`.

    The features' uncentred spectrum comes from the centred Gram matrix and the
    mean (the SVD of M = [diag(√λ)Wᵀ; √n μᵀ], MᵀM = FᵀF), the projections from
    Fᵀy; LogME's maximisation is :func:`jaxtransfer.logme`'s own. Targets are
    the one-hot columns (``num_target_classes``) or the k value columns
    (regression, multi-label 0/1). ``details`` is static.

    A target fitted more closely than the statistics resolve (residual below
    about 16·eps·√max(n, d)·‖y‖², as on well-separated classes in float32)
    gets the evidence at that resolution: finite and approximate (the residual
    is known only to that resolution; 4.07 against the whole-array 3.93 on one
    such case of n = 200, d = 16 with 5 dead units), never a false +inf.
    Accumulate in float64 to resolve it.
    """
    _check_stats("stats", stats, LinearStats)
    dtype = stats.features.shift.dtype
    it = jnp.asarray(static_int("max_iter", max_iter, 1, "a cap on the iterations"), jnp.int32)
    out = _logme_finalize(stats, _logme_tol(tol, dtype), it)
    return out if details else out.score


stream_linear_mse = Streaming(_linear_init, _linear_update_public, merge, _linear_finalize_public)
"""Linear MSE (:func:`jaxtransfer.linear_mse`) streamed: :class:`LinearStats`; ``finalize(stats, l2=1.0)``."""

stream_label_mse = Streaming(_linear_init, _label_update_public, merge, _linear_finalize_public)
"""Label MSE (:func:`jaxtransfer.label_mse`): ``update(stats, source_predictions, targets, mask)``."""

stream_logme = Streaming(_linear_init, _linear_update_public, merge, _logme_finalize_public)
"""LogME (:func:`jaxtransfer.logme`) streamed on :class:`LinearStats`; ``finalize(stats, max_iter, tol)``."""


# ----------------------------------------------------------------------------- H-score, shrinkage H-score


def _class_init(d, num_target_classes, *, dtype=None) -> ClassStats:
    """Empty :class:`ClassStats` for d features and C classes; ``dtype`` as :class:`LinearStats`."""
    d = _size("d", d)
    c = _size("num_target_classes", num_target_classes)
    dt = _dtype(dtype)
    z = partial(jnp.zeros, dtype=dt)
    return ClassStats(
        SourceStats(z(()), z((d,)), z((d,)), z((d, d))),
        jnp.zeros((c,), _count_dtype()),
        z((c, d)),
        z((d,)),
        z(()),
    )


def _onehot(labels, num_classes, w, dtype):
    return (labels[:, None] == jnp.arange(num_classes, dtype=jnp.int32)[None, :]).astype(dtype) * w[:, None]


@jax.jit
def _class_update(stats: ClassStats, f, labels, mask):
    c = stats.counts.shape[0]
    w = sample_weights(f.shape[0], mask, f.dtype)
    shift = _first_shift(stats.features.count, stats.features.shift, f, w)
    u = (f - shift[None, :]) * w[:, None]
    sq = jnp.sum(u * u, axis=1)
    counts = stats.counts + label_counts(labels, num_classes=c, mask=mask).astype(stats.counts.dtype)
    totals = stats.class_totals + matmul(_onehot(labels, c, w, f.dtype).T, u)
    return ClassStats(
        add_stats(stats.features._replace(shift=shift), source_stats(f, mask, shift=shift)),
        counts,
        totals,
        stats.cubic + jnp.sum(sq[:, None] * u, axis=0),
        stats.quartic + jnp.sum(sq * sq),
    )


def _class_update_public(stats, features, targets, mask=None):
    """Add a batch: features [b, d], integer labels targets [b] in [0, C), mask [b]."""
    _check_stats("stats", stats, (ClassStats, ClassGramStats))
    d = stats.class_totals.shape[1]
    f = _batch_features("features", features, d, stats.class_totals.dtype)
    y = _batch_labels("targets", targets, f.shape[0], stats.counts.shape[0], "num_target_classes")
    m = _batch_mask(mask, f.shape[0])
    return (_class_update if isinstance(stats, ClassStats) else _class_gram_update)(stats, f, y, m)


def _centred_spectrum(gram, total, count):
    """Eigenpairs (descending) of C = G − ttᵀ/n with the Gram-route rank rule (λ ≤ eps·max(n, d)·λ_max,
    and index ≥ n − 1, count as zero)."""
    d = gram.shape[0]
    eps = jnp.finfo(gram.dtype).eps
    cov = gram - _outer(total, total) / jnp.maximum(count, 1)
    lam, v = jnp.linalg.eigh((cov + cov.T) / 2)
    lam, v = jnp.maximum(lam[::-1], 0), v[:, ::-1]
    keep = (lam > eps * jnp.maximum(count, d) * lam[0]) & (jnp.arange(d) < count - 1)
    return jnp.where(keep, lam, 0), v, keep, cov


def _hscore_terms(stats: ClassStats):
    f = stats.features
    lam, v, keep, cov = _centred_spectrum(f.gram, f.total, f.count)
    nc = stats.counts.astype(lam.dtype)
    sums = stats.class_totals - nc[:, None] * (f.total / jnp.maximum(f.count, 1))[None, :]  # about μ
    proj2 = matmul(sums, v) ** 2  # [C, d] (v_jᵀ s_c)²
    present = stats.counts > 0
    per_dir = jnp.where(keep, 1 / jnp.where(keep, lam, 1), 0)  # 1/λ_j
    return lam, keep, cov, nc, present, proj2, per_dir


def _energy(g, nc, present, proj2, per_dir):
    """Σ_c Σ_j g_j (v_jᵀ s_c)²/λ_j / n_c over the present classes."""
    per_class = jnp.sum(proj2 * (g * per_dir)[None, :], axis=1) / jnp.where(present, nc, 1)
    return jnp.sum(jnp.where(present, per_class, 0))


@jax.jit
def _hscore_finalize(stats: ClassStats):
    lam, keep, _, nc, present, proj2, per_dir = _hscore_terms(stats)
    return _energy(keep.astype(lam.dtype), nc, present, proj2, per_dir)


@jax.jit
def _shrinkage_finalize(stats: ClassStats):
    lam, keep, cov, nc, present, proj2, per_dir = _hscore_terms(stats)
    f = stats.features
    mean_shift = f.shift + f.total / jnp.maximum(f.count, 1)
    _, fourth = _recentre_moments(f, stats.cubic, stats.quartic, mean_shift)  # Σ‖x − μ‖⁴
    d = lam.shape[0]
    trace = jnp.trace(cov)
    alpha = ledoit_wolf_from_moments(lam, keep, trace, fourth, f.count, jnp.asarray(d, lam.dtype))
    g = shrinkage_weights(lam, alpha, trace, jnp.asarray(d, lam.dtype))
    return _energy(g, nc, present, proj2, per_dir)


def _hscore_finalize_public(stats):
    """H-score (:func:`jaxtransfer.hscore`): Σ_c s_cᵀC⁺s_c / n_c, centred Gram C, class sums s_c."""
    _check_stats("stats", stats, ClassStats)
    return _hscore_finalize(stats)


def _shrinkage_finalize_public(stats):
    """Shrinkage H-score (:func:`jaxtransfer.shrinkage_hscore`); α from Σ‖x − μ‖⁴ re-centred exactly."""
    _check_stats("stats", stats, ClassStats)
    return _shrinkage_finalize(stats)


stream_hscore = Streaming(_class_init, _class_update_public, merge, _hscore_finalize_public)
"""H-score (:func:`jaxtransfer.hscore`) streamed: :class:`ClassStats`; ``init(d, num_target_classes)``."""

stream_shrinkage_hscore = Streaming(_class_init, _class_update_public, merge, _shrinkage_finalize_public)
"""Shrinkage H-score (:func:`jaxtransfer.shrinkage_hscore`) streamed on :class:`ClassStats`."""


# ----------------------------------------------------------------------------- TransRate, GBC


def _class_gram_init(d, num_target_classes, *, dtype=None) -> ClassGramStats:
    """Empty :class:`ClassGramStats` (C·d² numbers) for d features and C classes."""
    d = _size("d", d)
    c = _size("num_target_classes", num_target_classes)
    dt = _dtype(dtype)
    return ClassGramStats(
        jnp.zeros((d,), dt), jnp.zeros((c,), _count_dtype()), jnp.zeros((c, d), dt), jnp.zeros((c, d, d), dt)
    )


@jax.jit
def _class_gram_update(stats: ClassGramStats, f, labels, mask):
    b, d = f.shape
    c = stats.counts.shape[0]
    w = sample_weights(b, mask, f.dtype)
    count = jnp.sum(stats.counts)
    shift = _first_shift(count, stats.shift, f, w)
    u = (f - shift[None, :]) * w[:, None]
    oh = _onehot(labels, c, w, f.dtype)  # masked rows 0 (u is already 0 there)
    counts = stats.counts + label_counts(labels, num_classes=c, mask=mask).astype(stats.counts.dtype)
    spread = (oh[:, :, None] * u[:, None, :]).reshape(b, c * d)
    grams = matmul(spread.T, u).reshape(c, d, d)
    return ClassGramStats(shift, counts, stats.class_totals + matmul(oh.T, u), stats.class_grams + grams)


def _class_gram_centred(stats: ClassGramStats):
    """Per-class blocks about the overall mean μ (TransRate's Z_cᵀZ_c), their sum, n and n_c."""
    nc = stats.counts.astype(stats.shift.dtype)
    n = jnp.sum(nc)
    offset = jnp.sum(stats.class_totals, axis=0) / jnp.maximum(n, 1)  # μ − s
    totals, grams = _recentre_classes(stats.counts, stats.class_totals, stats.class_grams, -offset)
    return n, nc, totals, grams


def _half_logdet(lam, coef, keep):
    """½ Σ log(1 + coef·λ) over the kept eigenvalues, without overflow for large coef·λ."""
    x = coef * jnp.where(keep, lam, 0)
    big = x > 1
    safe = jnp.where(big, x, 1)
    return 0.5 * jnp.sum(jnp.where(big, jnp.log(safe) + jnp.log1p(1 / safe), jnp.log1p(x)))


def _gram_keep(lam, count, d):
    """Descending eigenvalues of a Gram block: the Gram-route rank rule, at most ``count`` of them."""
    eps = jnp.finfo(lam.dtype).eps
    return (lam > eps * jnp.maximum(count, d) * lam[0]) & (jnp.arange(d) < count)


@partial(jax.jit, static_argnames=("weighting",))
def _transrate_finalize(stats: ClassGramStats, coef, weighting):
    n, nc, _, grams = _class_gram_centred(stats)
    d = grams.shape[-1]
    total = jnp.sum(grams, axis=0)
    lam = jnp.maximum(jnp.linalg.eigvalsh((total + total.T) / 2)[::-1], 0)
    rate = _half_logdet(lam, coef / jnp.maximum(n, 1), _gram_keep(lam, n - 1, d))
    lam_c = jnp.maximum(jnp.linalg.eigvalsh((grams + jnp.swapaxes(grams, 1, 2)) / 2)[:, ::-1], 0)
    keep_c = jax.vmap(_gram_keep, in_axes=(0, 0, None))(lam_c, nc, d)
    rates = jax.vmap(_half_logdet)(lam_c, coef / jnp.maximum(nc, 1), keep_c)
    present = nc > 0
    if weighting == "proportional":
        weights = nc / jnp.maximum(n, 1)
    else:
        weights = present.astype(nc.dtype) / jnp.maximum(jnp.sum(present), 1).astype(nc.dtype)
    return rate - jnp.sum(jnp.where(present, weights * rates, 0))


def _transrate_finalize_public(stats, *, eps=None, weighting="proportional"):
    """TransRate (:func:`jaxtransfer.transrate`, classification) from per-class Gram blocks.

    R(Z) − Σ_c w_c R(Z_c) with every ½ log det(I + κ/n·ZᵀZ) taken from the
    eigenvalues of a Gram block (κ = d/ε², default 10⁴). The whole-array
    TransRate takes singular values of the features instead, because a float32
    Gram matrix loses the eigenvalues below about eps·λ_max, which κ = 10⁴ still
    weighs: accumulate in float64 for more than a few digits (module notes).
    """
    _check_stats("stats", stats, ClassGramStats)
    weighting = choice("weighting", weighting, ("proportional", "uniform"))
    dtype = stats.shift.dtype
    d = stats.shift.shape[0]
    if eps is None:
        coef = RELEASED_CODE_COEFFICIENT
    else:
        if isinstance(eps, (str, bytes, bool)) or not isinstance(eps, (Real, jax.Array, np.ndarray)):
            raise TypeError(f"eps must be a positive number or None, got {eps!r}")
        if is_concrete(eps) and not (np.isfinite(float(eps)) and float(eps) > 0):
            raise ValueError(f"eps must be finite and > 0, got {float(eps)!r}")
        coef = d / jnp.asarray(eps, dtype) ** 2
    return _transrate_finalize(stats, jnp.asarray(coef, dtype), weighting)


@partial(jax.jit, static_argnames=("num_components",))
def _gbc_finalize(stats: ClassGramStats, explained_variance, num_components):
    n, nc, totals, grams = _class_gram_centred(stats)
    d = grams.shape[-1]
    total = jnp.sum(grams, axis=0)
    lam, v = jnp.linalg.eigh((total + total.T) / 2)
    lam, v = jnp.maximum(lam[::-1], 0), v[:, ::-1]
    keep = _gram_keep(lam, n - 1, d)[:num_components]
    lam_k = lam[:num_components]
    if explained_variance is not None:
        before = jnp.cumsum(lam_k) - lam_k
        keep = keep & (before < explained_variance * jnp.trace(total))
    vk = v[:, :num_components] * keep[None, :]
    variances = jnp.where(keep, lam_k, 0) / jnp.maximum(n, 1)
    floor = jnp.where(variances[0] > 0, VARIANCE_FLOOR * variances[0], 1).astype(lam.dtype)
    present = nc > 0
    safe = jnp.where(present, nc, 1)[:, None]
    means = matmul(totals, vk) / safe  # [C, k] class means about μ, in PCA coordinates
    within = grams - _outer(totals, totals / safe)  # about each class mean
    var = (
        jnp.maximum(jnp.sum(vk[None] * jnp.matmul(within, vk, precision=lax.Precision.HIGHEST), axis=1), 0)
        / safe
    )
    return gbc_from_moments(present, means, var, floor)


def _gbc_finalize_public(stats, *, num_components=None, explained_variance=None):
    """GBC (:func:`jaxtransfer.gbc`): the PCA of the summed Gram, class means and diagonal variances along it.

    The class variances along any basis V come from the class Gram blocks
    (diag(Vᵀ C_c V)), so no second pass over the samples is needed.
    ``num_components`` is static.
    """
    _check_stats("stats", stats, ClassGramStats)
    d = stats.shift.shape[0]
    k = num_components_arg(num_components, d)
    q = explained_variance_arg(explained_variance, stats.shift.dtype)
    return _gbc_finalize(stats, q, k)


stream_transrate = Streaming(_class_gram_init, _class_update_public, merge, _transrate_finalize_public)
"""TransRate (classification) streamed: :class:`ClassGramStats`; ``finalize(stats, eps, weighting)``."""

stream_gbc = Streaming(_class_gram_init, _class_update_public, merge, _gbc_finalize_public)
"""GBC streamed: :class:`ClassGramStats`; ``finalize(stats, num_components, explained_variance)``."""


# ----------------------------------------------------------------------------- counts


_conditional_entropy = jax.jit(conditional_entropy_from_counts)
_entropy = jax.jit(entropy_from_counts)
_leep_conditional = jax.jit(leep_conditional)


def _count_init(num_source_classes, num_target_classes) -> CountStats:
    """Empty joint counts [Cz, Cy] (integers)."""
    cz = _size("num_source_classes", num_source_classes)
    cy = _size("num_target_classes", num_target_classes)
    return CountStats(jnp.zeros((cz, cy), _count_dtype()))


@jax.jit
def _count_update(stats: CountStats, z, y, mask):
    cz, cy = stats.joint.shape
    joint = joint_histogram(z, y, num_z=cz, num_y=cy, mask=mask)
    return CountStats(stats.joint + joint.astype(stats.joint.dtype))


def _count_update_public(stats, source_labels, targets, mask=None):
    """Add a batch: source_labels [b] in [0, Cz), targets [b] in [0, Cy), mask [b]."""
    _check_stats("stats", stats, CountStats)
    cz, cy = stats.joint.shape
    b = _batch_size("source_labels", source_labels)
    z = _batch_labels("source_labels", source_labels, b, cz, "num_source_classes")
    y = _batch_labels("targets", targets, b, cy, "num_target_classes")
    return _count_update(stats, z, y, _batch_mask(mask, b))


def _hardness_init(num_target_classes) -> CountStats:
    """Empty label counts [1, Cy]."""
    return _count_init(1, num_target_classes)


def _hardness_update_public(stats, targets, mask=None):
    """Add a batch of target labels [b] in [0, Cy)."""
    _check_stats("stats", stats, CountStats)
    b = _batch_size("targets", targets)
    y = _batch_labels("targets", targets, b, stats.joint.shape[1], "num_target_classes")
    return _count_update(stats, jnp.zeros((b,), jnp.int32), y, _batch_mask(mask, b))


def _conditional_entropy_finalize(stats):
    """H(Y|Z) (:func:`jaxtransfer.conditional_entropy`) from the joint counts, exact counts."""
    _check_stats("stats", stats, CountStats)
    return _conditional_entropy(stats.joint)


def _nce_finalize(stats):
    """NCE = −H(Y|Z) (:func:`jaxtransfer.nce`)."""
    return -_conditional_entropy_finalize(stats)


def _hardness_finalize(stats):
    """H(Y) (:func:`jaxtransfer.hardness`) from the target marginal of any :class:`CountStats`."""
    _check_stats("stats", stats, CountStats)
    return _entropy(jnp.sum(stats.joint, axis=0))


stream_nce = Streaming(_count_init, _count_update_public, merge, _nce_finalize)
"""NCE streamed: :class:`CountStats`; ``init(num_source_classes, num_target_classes)``."""

stream_conditional_entropy = Streaming(
    _count_init, _count_update_public, merge, _conditional_entropy_finalize
)
"""Conditional entropy H(Y|Z) streamed on :class:`CountStats`."""

stream_hardness = Streaming(_hardness_init, _hardness_update_public, merge, _hardness_finalize)
"""Hardness H(Y) streamed: ``init(num_target_classes)``, ``update(stats, targets, mask)``."""


# ----------------------------------------------------------------------------- LEEP


def _leep_init(num_source_classes, num_target_classes, *, logits=False, dtype=None) -> LeepStats:
    """Empty first-pass :class:`LeepStats`; ``logits`` (static) applies a softmax to the source input."""
    cz = _size("num_source_classes", num_source_classes)
    cy = _size("num_target_classes", num_target_classes)
    if not isinstance(logits, bool):
        raise TypeError(f"logits must be True or False, got {logits!r}")
    dt = _dtype(dtype)
    z = jnp.zeros((cz, cy), dt)
    return LeepStats(z, z, jnp.zeros((), dt), jnp.zeros((), dt), logits, False)


@jax.jit
def _leep_update(stats: LeepStats, theta, y, mask):
    if stats.logits:
        theta = jnp.exp(jax.nn.log_softmax(theta, axis=-1))
    w = sample_weights(theta.shape[0], mask, theta.dtype)
    count = stats.count + jnp.sum(w)
    if not stats.second:
        joint = soft_joint_histogram(theta, y, num_y=stats.joint.shape[1], mask=mask)
        return dataclasses.replace(stats, joint=stats.joint + joint, count=count)
    ll = stats.log_likelihood + jnp.sum(leep_log_terms(theta, y, stats.conditional, w))
    return dataclasses.replace(stats, log_likelihood=ll, count=count)


def _leep_update_public(stats, source_probs, targets, mask=None):
    """Add a batch: source_probs [b, Cz] (rows of probabilities, or logits), targets [b], mask [b]."""
    _check_stats("stats", stats, LeepStats)
    cz, cy = stats.joint.shape
    theta = _batch_features("source_probs", source_probs, cz, stats.joint.dtype)
    if not stats.logits and is_concrete(theta) and theta.shape[0]:
        tol = float(np.sqrt(max(np.finfo(np.dtype(theta.dtype)).eps, np.finfo(np.float32).eps))) + cz * 1e-7
        if bool(jnp.any(theta < -tol)) or bool(jnp.any(jnp.abs(jnp.sum(theta, axis=1) - 1) > tol)):
            raise ValueError(
                "source_probs rows must be probabilities (non-negative, summing to 1); "
                "if these are logits, init the statistics with logits=True"
            )
    y = _batch_labels("targets", targets, theta.shape[0], cy, "num_target_classes")
    return _leep_update(stats, theta, y, _batch_mask(mask, theta.shape[0]))


def _leep_second_pass(stats) -> LeepStats:
    """End the first pass: fix P̂(y|z) = P̂(z, y)/P̂(z) and start the second (same samples again).

    Merge first-pass statistics of every batch, device and host *before*
    calling this: the conditional must be the one of all the samples.
    """
    _check_stats("stats", stats, LeepStats)
    if stats.second:
        raise ValueError("stats are already in LEEP's second pass")
    zero = jnp.zeros((), stats.joint.dtype)
    cond = _leep_conditional(stats.joint)
    return LeepStats(stats.joint, cond, zero, zero, stats.logits, True)


def _leep_finalize(stats):
    """LEEP = (1/n) Σᵢ log Σ_z P̂(yᵢ|z)θ_z(xᵢ) (:func:`jaxtransfer.leep`), after the second pass."""
    _check_stats("stats", stats, LeepStats)
    if not stats.second:
        raise ValueError(
            "LEEP needs two passes: call stream_leep.second_pass(stats) after the first pass, "
            "update again over the same samples, then finalize"
        )
    return stats.log_likelihood / stats.count


stream_leep = TwoPassStreaming(_leep_init, _leep_update_public, merge, _leep_second_pass, _leep_finalize)
"""LEEP in two passes: ``init``, ``update`` over the data, ``second_pass``, ``update`` again, ``finalize``.

Pass 1 accumulates the soft joint counts n·P̂(z, y) = Σ_{i: yᵢ=y} θ_z(xᵢ);
``second_pass`` fixes P̂(y|z); pass 2 accumulates Σᵢ log Σ_z P̂(yᵢ|z)θ_z(xᵢ)
(the same guards as :func:`jaxtransfer.leep`). Merge within a pass only.
"""
