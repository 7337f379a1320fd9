"""How well do an estimator's scores predict actual transfer? Correlations, hits, regret, intervals.

An estimator is judged on a matrix of scores ``[S, T]`` (S sources, T targets)
against the actual transfer ``[S, T]`` measured after training (higher is better
for both). Every statistic is reported two ways:

* **pooled** over all S·T pairs, which mostly rewards knowing which targets are
  hard (in the UAI 2023 keypoint benchmark the target alone explains 99% of
  the variance of actual transfer);
* **within target**: computed over the S sources of each target, then averaged
  over targets. This is what tells whether the estimator picks the right
  source for a given target.

The statistics are written in JAX for one vector pair and batched with
``vmap``; the bootstrap resamples sources (the same resample for every
target), as one ``vmap`` over resamples. All correlation functions follow
SciPy's definitions and defaults: ``pearson`` (``pearsonr``), ``spearman``
(``spearmanr``, average ranks for ties), ``kendall_tau`` (``kendalltau``,
τ-b), ``weighted_tau`` (``weightedtau`` with its defaults: hyperbolic weigher
1/(r+1), additive weights, the average of the two rankings by (x, y) and by
(y, x)). They are O(n²) pairwise formulas, meant for the tens to thousands of
pairs of an estimator benchmark.

References:
  S. Vigna, "A weighted correlation index for rankings with ties", WWW 2015.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Interval",
    "evaluate",
    "kendall_tau",
    "pearson",
    "rankdata",
    "regret",
    "spearman",
    "top_k_hit",
    "weighted_tau",
]


def _safe_div(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.nan)


def _spread(v, vc):
    """Σ vc², or 0 when it is within rounding of a constant vector's (a relative cut-off from the dtype)."""
    ss = jnp.sum(vc * vc)
    floor = v.shape[0] * (8 * jnp.finfo(v.dtype).eps * jnp.max(jnp.abs(v))) ** 2
    return jnp.where(ss > floor, ss, 0)


def pearson(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson's r of two vectors [n] (NaN when either is constant, to rounding)."""
    x = jnp.asarray(x, jnp.result_type(float))
    y = jnp.asarray(y, x.dtype)
    xc, yc = x - jnp.mean(x), y - jnp.mean(y)
    return _safe_div(jnp.sum(xc * yc), jnp.sqrt(_spread(x, xc) * _spread(y, yc)))


def rankdata(x: jax.Array) -> jax.Array:
    """Ranks 1…n with ties given their average rank (``scipy.stats.rankdata``)."""
    x = jnp.asarray(x)
    less = jnp.sum(x[None, :] < x[:, None], axis=1)
    equal = jnp.sum(x[None, :] == x[:, None], axis=1)
    return (less + (equal + 1) / 2).astype(jnp.result_type(float))


def spearman(x: jax.Array, y: jax.Array) -> jax.Array:
    """Spearman's ρ: Pearson's r of the average ranks."""
    return pearson(rankdata(x), rankdata(y))


def _signs(v):
    return jnp.sign(v[:, None] - v[None, :])


def kendall_tau(x: jax.Array, y: jax.Array) -> jax.Array:
    """Kendall's τ-b: (concordant − discordant) / sqrt(pairs untied in x · pairs untied in y)."""
    sx, sy = _signs(jnp.asarray(x)), _signs(jnp.asarray(y))
    num = jnp.sum(sx * sy)
    return _safe_div(num, jnp.sqrt(jnp.sum(sx * sx) * jnp.sum(sy * sy)))


def _lexi_rank(primary, secondary):
    """Rank 0 for the largest (primary, secondary), decreasing lexicographic order."""
    n = primary.shape[0]
    order = jnp.lexsort((secondary, primary))[::-1]
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def _weighted_tau_one(x, y, rank):
    w = 1.0 / (rank.astype(jnp.result_type(float)) + 1)
    wij = w[:, None] + w[None, :]
    sx, sy = _signs(x), _signs(y)
    num = jnp.sum(wij * sx * sy)
    return _safe_div(num, jnp.sqrt(jnp.sum(wij * sx * sx) * jnp.sum(wij * sy * sy)))


def weighted_tau(x: jax.Array, y: jax.Array) -> jax.Array:
    """Weighted τ with ``scipy.stats.weightedtau``'s defaults.

    An exchange of elements i, j weighs 1/(r_i + 1) + 1/(r_j + 1), where r is
    an element's 0-based position when sorted by decreasing (x, y); the same is
    done with the ranking by decreasing (y, x), and the two τ are averaged.
    Exchanges among the top of the ranking count most.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    return 0.5 * (_weighted_tau_one(x, y, _lexi_rank(x, y)) + _weighted_tau_one(x, y, _lexi_rank(y, x)))


def top_k_hit(scores: jax.Array, actual: jax.Array, k: int = 1) -> jax.Array:
    """1.0 when the source that actually transfers best is among the k best-scored, else 0.0.

    Args:
      scores, actual: [S] for one target (vmap over targets for a matrix).
      k: static.
    """
    best = jnp.argmax(jnp.asarray(actual))
    top = jax.lax.top_k(jnp.asarray(scores), k)[1]
    return jnp.any(top == best).astype(jnp.result_type(float))


def regret(scores: jax.Array, actual: jax.Array) -> jax.Array:
    """Actual transfer of the best source minus that of the best-scored source (≥ 0), for one target."""
    actual = jnp.asarray(actual, jnp.result_type(float))
    return jnp.max(actual) - actual[jnp.argmax(jnp.asarray(scores))]


_CORRELATIONS = {
    "pearson": pearson,
    "spearman": spearman,
    "kendall": kendall_tau,
    "weighted_tau": weighted_tau,
}


def _statistics(scores, actual, k):
    """Pooled and within-target statistics of one [S, T] pair of matrices."""
    out = {}
    for name, fn in _CORRELATIONS.items():
        out[f"{name}_pooled"] = fn(scores.reshape(-1), actual.reshape(-1))
        out[f"{name}_within"] = jnp.nanmean(jax.vmap(fn, in_axes=1)(scores, actual))
    out[f"top{k}_hit"] = jnp.mean(jax.vmap(lambda s, a: top_k_hit(s, a, k), in_axes=1)(scores, actual))
    out["top1_hit"] = jnp.mean(jax.vmap(top_k_hit, in_axes=1)(scores, actual))
    out["regret"] = jnp.mean(jax.vmap(regret, in_axes=1)(scores, actual))
    return out


_point = jax.jit(_statistics, static_argnums=2)


@functools.partial(jax.jit, static_argnums=3)
def _bootstrap(scores, actual, idx, k):
    """The statistics of every resample of the sources (rows), as one vmap."""
    return jax.vmap(lambda i: _statistics(scores[i], actual[i], k))(idx)


class Interval(NamedTuple):
    """A statistic with its bootstrap percentile interval."""

    value: float
    low: float
    high: float


def evaluate(
    scores, actual, *, k: int = 3, num_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Interval]:
    """Every statistic of an estimator, pooled and within target, with bootstrap intervals.

    Args:
      scores: [S, T] estimator scores (higher = predicted to transfer better).
      actual: [S, T] actual transfer (higher = better: accuracy, log-likelihood,
        negative MSE).
      k: the k of the top-k hit rate (static; clipped to S).
      num_bootstrap: resamples of the sources; 0 gives intervals equal to the value.
      confidence: the percentile interval's coverage.
      seed: the resampling key.

    Returns:
      ``{name: Interval}`` for ``pearson_pooled``, ``pearson_within``, the same
      for ``spearman``, ``kendall`` and ``weighted_tau``, ``top1_hit``,
      ``top{k}_hit`` and ``regret`` (mean over targets).

    Raises:
      ValueError: shapes differ, fewer than 2 sources, or non-finite values.

    Example:
      >>> import numpy as np
      >>> actual = np.array([[0.9, 0.5], [0.7, 0.6], [0.2, 0.1]])
      >>> r = evaluate(actual + 0.01, actual, num_bootstrap=0)
      >>> float(r["spearman_within"].value), float(r["regret"].value)
      (1.0, 0.0)
    """
    s = np.asarray(scores, dtype=float)
    a = np.asarray(actual, dtype=float)
    if s.ndim == 1:
        s, a = s[:, None], a[:, None] if a.ndim == 1 else a
    if s.shape != a.shape or s.ndim != 2:
        raise ValueError(f"scores and actual must both be [S, T]; got {s.shape} and {a.shape}")
    if s.shape[0] < 2:
        raise ValueError(f"need at least 2 sources to rank, got S={s.shape[0]}")
    for name, v in (("scores", s), ("actual", a)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} has non-finite values")
    k = min(k, s.shape[0])
    sj, aj = jnp.asarray(s), jnp.asarray(a)
    point = _point(sj, aj, k)
    if num_bootstrap <= 0:
        return {name: Interval(float(v), float(v), float(v)) for name, v in point.items()}
    idx = jax.random.randint(jax.random.key(seed), (num_bootstrap, s.shape[0]), 0, s.shape[0])
    boot = _bootstrap(sj, aj, idx, k)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out = {}
    for name, v in point.items():
        b = np.asarray(boot[name])
        b = b[np.isfinite(b)]
        low, high = np.percentile(b, [lo, hi]) if b.size else (np.nan, np.nan)
        out[name] = Interval(float(v), float(low), float(high))
    return out
