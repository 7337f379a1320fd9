"""How well do an estimator's scores predict actual transfer? Correlations, hits, regret, intervals.

An estimator is judged on a matrix of scores ``[S, T]`` (S sources, T targets)
against the actual transfer ``[S, T]`` measured after training (higher is better
for both). Every statistic is reported two ways:

* **pooled** over all S·T pairs, which mostly rewards knowing which targets are
  hard (in the UAI 2023 keypoint benchmark the target alone explains 99% of
  the variance of actual transfer);
* **within target**: computed over the sources of each target, then averaged
  over targets. This is what tells whether the estimator picks the right
  source for a given target. Kendall's τ within target is the headline: it
  is robust to outlying pairs and is what model-selection papers report.

Pairs that do not exist — a task paired with itself, a failed transfer run, a
target a source cannot serve — are given as NaN in ``scores`` or ``actual``, or
as False in a ``mask``. Each target is then judged over the sources present
for it (a target with fewer than two is left out of the within-target means),
and the pooled statistics run over the present pairs.

The statistics are written in JAX for one vector pair with a mask of the
present elements and batched with ``vmap``; the bootstrap resamples sources
(the same draw of S sources, with replacement, for every target; each target
then keeps the drawn sources that are present for it, so a source missing for
a target stays missing in every resample), as one ``vmap`` over resamples. All
correlation functions follow SciPy's definitions and defaults: ``pearson``
(``pearsonr``), ``spearman`` (``spearmanr``, average ranks for ties),
``kendall_tau`` (``kendalltau``, τ-b), ``weighted_tau`` (``weightedtau`` with its
defaults: hyperbolic weigher 1/(r+1), additive weights, the average of the two
rankings by (x, y) and by (y, x)). They are O(n²) pairwise formulas, meant for
the tens to thousands of pairs of an estimator benchmark.

How good can an estimator get? Actual transfer measured with a seed (a new
head's initialisation, the order of mini-batches) is itself noisy.
:func:`seed_agreement` measures how well one run of the transfer predicts a
run with another seed, with the same statistics and bootstrap as the
estimators; :func:`noise_ceiling` turns that agreement into the correlation
that the noise-free transfer itself would have with the mean over the seeds —
the figure no estimator can be expected to beat when it is judged against that
mean.

References:
  S. Vigna, "A weighted correlation index for rankings with ties", WWW 2015.
  M. G. Kendall, "Rank and product-moment correlation", Biometrika 36, 1949
  (τ = (2/π) arcsin ρ and ρ_S = (6/π) arcsin(ρ/2) for the bivariate normal).
  C. Spearman, "Correlation calculated from faulty data", Br. J. Psychol. 3,
  1910; W. Brown, same volume (the Spearman–Brown prophecy formula).
  H. Nili et al., "A toolbox for representational similarity analysis", PLoS
  Comput. Biol. 2014 (noise ceilings for model comparison).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "Interval",
    "evaluate",
    "kendall_tau",
    "noise_ceiling",
    "pearson",
    "rankdata",
    "regret",
    "seed_agreement",
    "spearman",
    "top_k_hit",
    "weighted_tau",
]


def _safe_div(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.nan)


def _prepare(x, y, mask):
    """Float x, y [n] with absent entries set to 0 (so a NaN there cannot leak), and the mask as 0/1."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    m = jnp.ones(x.shape, bool) if mask is None else jnp.asarray(mask, bool)
    return jnp.where(m, x, 0), jnp.where(m, y, 0), m


def _spread(v, vc, m):
    """Σ vc² over the present entries, or 0 when it is within rounding of a constant vector's (a
    relative cut-off from the dtype)."""
    ss = jnp.sum(vc * vc)
    floor = jnp.sum(m) * (8 * jnp.finfo(vc.dtype).eps * jnp.max(jnp.abs(v) * m)) ** 2
    return jnp.where(ss > floor, ss, 0)


def _pearson(x, y, m):
    dtype = jnp.result_type(x.dtype, float)
    x, y, w = x.astype(dtype), y.astype(dtype), m.astype(dtype)
    count = jnp.sum(w)
    xc = (x - jnp.sum(w * x) / jnp.maximum(count, 1)) * w
    yc = (y - jnp.sum(w * y) / jnp.maximum(count, 1)) * w
    return _safe_div(jnp.sum(xc * yc), jnp.sqrt(_spread(x, xc, m) * _spread(y, yc, m)))


def pearson(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Pearson's r of two vectors [n] (NaN when either is constant, to rounding).

    ``mask``: bool [n], the entries present (default all); absent entries are
    ignored whatever their value, NaN included.
    """
    return _pearson(*_prepare(x, y, mask))


def _rank(x, m):
    less = jnp.sum(m[None, :] & (x[None, :] < x[:, None]), axis=1)
    equal = jnp.sum(m[None, :] & (x[None, :] == x[:, None]), axis=1)
    return (less + (equal + 1) / 2).astype(jnp.result_type(float))


def rankdata(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Ranks 1…n with ties given their average rank (``scipy.stats.rankdata``).

    With ``mask``, the ranks among the present entries (absent entries get
    meaningless ranks).
    """
    x, _, m = _prepare(x, x, mask)
    return _rank(x, m)


def spearman(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Spearman's ρ: Pearson's r of the average ranks (of the present entries, with ``mask``)."""
    x, y, m = _prepare(x, y, mask)
    return _pearson(_rank(x, m), _rank(y, m), m)


def _pair_signs(v, m):
    """sign(v_i − v_j) for the pairs of present entries, 0 for the others."""
    return jnp.sign(v[:, None] - v[None, :]) * (m[:, None] & m[None, :])


def _kendall(x, y, m):
    sx, sy = _pair_signs(x, m), _pair_signs(y, m)
    return _safe_div(jnp.sum(sx * sy), jnp.sqrt(jnp.sum(sx * sx) * jnp.sum(sy * sy)))


def kendall_tau(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Kendall's τ-b of two vectors [n] (``scipy.stats.kendalltau``'s default).

    τ_b = (C − D) / sqrt((P − X)(P − Y)): C and D count the concordant and the
    discordant pairs, P all pairs, X the pairs tied in x and Y those tied in
    y; equivalently Σ_{i<j} sgn(x_i − x_j) sgn(y_i − y_j) divided by the root
    of the product of the numbers of untied pairs. NaN when either vector is
    constant. With ``mask``, over the pairs of present entries only.
    """
    return _kendall(*_prepare(x, y, mask))


def _lexi_rank(primary, secondary, m):
    """Rank 0 for the largest (primary, secondary) among the present entries, decreasing lexicographic
    order; absent entries come after every present one."""
    n = primary.shape[0]
    order = jnp.lexsort((secondary, primary, m.astype(jnp.int32)))[::-1]
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def _weighted_tau_one(x, y, rank, m):
    w = 1.0 / (rank.astype(jnp.result_type(float)) + 1)
    wij = (w[:, None] + w[None, :]) * (m[:, None] & m[None, :])
    sx, sy = jnp.sign(x[:, None] - x[None, :]), jnp.sign(y[:, None] - y[None, :])
    num = jnp.sum(wij * sx * sy)
    return _safe_div(num, jnp.sqrt(jnp.sum(wij * sx * sx) * jnp.sum(wij * sy * sy)))


def _weighted_tau(x, y, m):
    a = _weighted_tau_one(x, y, _lexi_rank(x, y, m), m)
    return 0.5 * (a + _weighted_tau_one(x, y, _lexi_rank(y, x, m), m))


def weighted_tau(x: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Weighted τ with ``scipy.stats.weightedtau``'s defaults.

    An exchange of elements i, j weighs 1/(r_i + 1) + 1/(r_j + 1), where r is
    an element's 0-based position when sorted by decreasing (x, y); the same is
    done with the ranking by decreasing (y, x), and the two τ are averaged.
    Exchanges among the top of the ranking count most. With ``mask``, over
    the present entries only (positions counted among them).
    """
    return _weighted_tau(*_prepare(x, y, mask))


def _top_k_hit(scores, actual, m, k):
    best = jnp.argmax(jnp.where(m, actual, -jnp.inf))
    top = jax.lax.top_k(jnp.where(m, scores, -jnp.inf), k)[1]
    return jnp.any(top == best).astype(jnp.result_type(float))


def top_k_hit(scores: jax.Array, actual: jax.Array, k: int = 1, mask: jax.Array | None = None) -> jax.Array:
    """1.0 when the source that actually transfers best is among the k best-scored, else 0.0.

    Args:
      scores, actual: [S] for one target (vmap over targets for a matrix).
      k: static.
      mask: bool [S], the sources present (default all); with fewer than k
        present, every present source is among the k best-scored.
    """
    return _top_k_hit(*_prepare(scores, actual, mask), k)


def _regret(scores, actual, m):
    actual = actual.astype(jnp.result_type(actual.dtype, float))
    return jnp.max(jnp.where(m, actual, -jnp.inf)) - actual[jnp.argmax(jnp.where(m, scores, -jnp.inf))]


def regret(scores: jax.Array, actual: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Actual transfer of the best source minus that of the best-scored source (≥ 0), for one target
    (over the sources present, with ``mask``)."""
    return _regret(*_prepare(scores, actual, mask))


_CORRELATIONS = {
    "pearson": _pearson,
    "spearman": lambda x, y, m: _pearson(_rank(x, m), _rank(y, m), m),
    "kendall": _kendall,
    "weighted_tau": _weighted_tau,
}


def _statistics(scores, actual, mask, k):
    """Pooled and within-target statistics of one [S, T] pair of matrices, over the pairs ``mask``
    [S, T] marks present; targets with fewer than two present sources are left out of the means."""
    scores, actual = jnp.where(mask, scores, 0), jnp.where(mask, actual, 0)
    ranked = jnp.sum(mask, axis=0) >= 2  # [T]: targets with a choice to make

    def within(per_target):  # [T] -> mean over the targets that have a choice (NaN where undefined)
        return jnp.nanmean(jnp.where(ranked, per_target, jnp.nan))

    out = {}
    for name, fn in _CORRELATIONS.items():
        out[f"{name}_pooled"] = fn(scores.reshape(-1), actual.reshape(-1), mask.reshape(-1))
        out[f"{name}_within"] = within(jax.vmap(fn, in_axes=1)(scores, actual, mask))
    for kk in (k, 1):
        hit = jax.vmap(functools.partial(_top_k_hit, k=kk), in_axes=1)
        out[f"top{kk}_hit"] = within(hit(scores, actual, mask))
    out["regret"] = within(jax.vmap(_regret, in_axes=1)(scores, actual, mask))
    return out


_point = jax.jit(_statistics, static_argnums=3)


_BOOTSTRAP_BATCH = 64
"""Resamples evaluated at once (``lax.map`` batches): bounds memory at 64 × the (S·T)² pairwise terms."""


@functools.partial(jax.jit, static_argnums=4)
def _bootstrap(scores, actual, mask, idx, k):
    """The statistics of every resample of the sources (rows), in vmapped batches."""
    return lax.map(lambda i: _statistics(scores[i], actual[i], mask[i], k), idx, batch_size=_BOOTSTRAP_BATCH)


def _agreement(runs, mask, k):
    """Mean over ordered pairs (i ≠ j) of runs [N, S, T] of the statistics of run i against run j."""
    n = runs.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    left = jnp.asarray([i for i, _ in pairs])
    right = jnp.asarray([j for _, j in pairs])
    stats = jax.vmap(lambda a, b: _statistics(a, b, mask, k))(runs[left], runs[right])
    return {name: jnp.nanmean(v) for name, v in stats.items()}


_agreement_point = jax.jit(_agreement, static_argnums=2)


@functools.partial(jax.jit, static_argnums=3)
def _agreement_bootstrap(runs, mask, idx, k):
    # resamples in batches: all at once, the pooled pairwise statistics of N(N − 1) run pairs need
    # resamples × pairs × (S·T)² numbers (32 GB for 1000 × 6 × 400², the digits' 20 tasks)
    return lax.map(lambda i: _agreement(runs[:, i], mask[i], k), idx, batch_size=_BOOTSTRAP_BATCH)


class Interval(NamedTuple):
    """A statistic with its bootstrap percentile interval."""

    value: float
    low: float
    high: float


def _as_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"mask must be a bool array, got dtype {m.dtype}")
    if m.shape != shape:
        raise ValueError(f"mask must have the shape of scores and actual {shape}, got {m.shape}")
    return m


def _check_present(name: str, v: np.ndarray) -> None:
    if np.any(np.isinf(v)):
        raise ValueError(f"{name} has infinite values; expected finite values, or NaN for a missing pair")


def _check_choice(present: np.ndarray) -> None:
    if present.shape[0] < 2:
        raise ValueError(f"need at least 2 sources to rank, got S={present.shape[0]}")
    if not np.any(present.sum(axis=0) >= 2):
        raise ValueError(
            "need at least 2 sources to rank, got no target with 2 present pairs "
            f"(present pairs per target: {present.sum(axis=0).tolist()}); a pair is missing where it is "
            "NaN in scores or actual, or False in mask"
        )


def _intervals(point, boot, confidence: float) -> dict[str, Interval]:
    if boot is None:
        return {name: Interval(float(v), float(v), float(v)) for name, v in point.items()}
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out = {}
    for name, v in point.items():
        b = np.asarray(boot[name])
        b = b[np.isfinite(b)]
        low, high = np.percentile(b, [lo, hi]) if b.size else (np.nan, np.nan)
        out[name] = Interval(float(v), float(low), float(high))
    return out


def evaluate(
    scores,
    actual,
    *,
    mask=None,
    k: int = 3,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Every statistic of an estimator, pooled and within target, with bootstrap intervals.

    A pair is *present* where ``mask`` is True (default: everywhere) and both
    ``scores`` and ``actual`` are not NaN; the others (self-pairs, failed runs,
    targets a source cannot serve) are left out. Within-target statistics of
    target t run over the sources present for t, and their mean over the
    targets with at least two present sources (and a defined value: a
    correlation with a constant vector is NaN and left out); pooled statistics
    over all present pairs. The bootstrap draws S sources with replacement,
    the same draw for every target, and each target keeps the drawn sources
    present for it; so a target with m present sources gets about m of them
    per resample, and a source's pairs stay together across targets.

    Args:
      scores: [S, T] estimator scores (higher = predicted to transfer better);
        NaN marks a missing pair.
      actual: [S, T] actual transfer (higher = better: accuracy, log-likelihood,
        negative MSE); NaN marks a missing pair.
      mask: bool [S, T], True for the pairs that exist (default all).
      k: the k of the top-k hit rate (static; clipped to S).
      num_bootstrap: resamples of the sources; 0 gives intervals equal to the value.
      confidence: the percentile interval's coverage.
      seed: the resampling key.

    Returns:
      ``{name: Interval}`` for ``pearson_pooled``, ``pearson_within``, the same
      for ``spearman``, ``kendall`` and ``weighted_tau``, ``top1_hit``,
      ``top{k}_hit`` and ``regret`` (means over targets).

    Raises:
      ValueError: shapes differ, fewer than 2 sources, no target with 2
        present sources, or infinite values.
      TypeError: a mask that is not bool.

    Example:
      >>> import numpy as np
      >>> actual = np.array([[0.9, 0.5], [0.7, 0.6], [0.2, 0.1]])
      >>> r = evaluate(actual + 0.01, actual, num_bootstrap=0)
      >>> float(r["spearman_within"].value), float(r["regret"].value)
      (1.0, 0.0)
      >>> off = ~np.eye(3, 2, dtype=bool)  # leave out pairs (0, 0) and (1, 1)
      >>> float(evaluate(-actual, actual, mask=off, num_bootstrap=0)["kendall_within"].value)
      -1.0
    """
    s = np.asarray(scores, dtype=float)
    a = np.asarray(actual, dtype=float)
    if s.ndim == 1:  # one target
        s, a = s[:, None], a[:, None] if a.ndim == 1 else a
        mask = mask if mask is None or np.ndim(mask) != 1 else np.asarray(mask)[:, None]
    if s.shape != a.shape or s.ndim != 2:
        raise ValueError(f"scores and actual must both be [S, T]; got {s.shape} and {a.shape}")
    m = _as_mask(mask, s.shape)
    _check_present("scores", s)
    _check_present("actual", a)
    present = m & ~np.isnan(s) & ~np.isnan(a)
    _check_choice(present)
    k = min(k, s.shape[0])
    sj, aj = jnp.asarray(np.where(present, s, 0)), jnp.asarray(np.where(present, a, 0))
    mj = jnp.asarray(present)
    point = _point(sj, aj, mj, k)
    boot = None
    if num_bootstrap > 0:
        idx = jax.random.randint(jax.random.key(seed), (num_bootstrap, s.shape[0]), 0, s.shape[0])
        boot = _bootstrap(sj, aj, mj, idx, k)
    return _intervals(point, boot, confidence)


def seed_agreement(
    runs,
    *,
    mask=None,
    k: int = 3,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """How well one run of the transfer predicts another that differs only in its seed.

    For N runs a_1 … a_N [S, T] of the actual transfer, each statistic of
    :func:`evaluate` is computed with run i in the place of the scores and run
    j in the place of the actual transfer, and averaged over the N(N − 1)
    ordered pairs i ≠ j (the correlations are symmetric; top-k hits and
    regret are not). It is what a perfect estimator of *one* run's transfer
    would be expected to reach: the noise between seeds caps every
    estimator's figures against a single run. Against the mean over the N runs
    (less noisy) the cap is higher: :func:`noise_ceiling`.

    A pair is present where ``mask`` holds and no run has NaN; the bootstrap
    draws sources exactly as :func:`evaluate`'s does, one draw shared by
    every pair of runs, so the interval is comparable with the estimators'.

    Args:
      runs: [N, S, T], N ≥ 2 runs of the transfer with different seeds.
      mask, k, num_bootstrap, confidence, seed: as :func:`evaluate`.

    Returns:
      ``{name: Interval}`` with :func:`evaluate`'s names.

    Raises:
      ValueError: fewer than 2 runs, a shape that is not [N, S, T], as
        :func:`evaluate` otherwise.
    """
    r = np.asarray(runs, dtype=float)
    if r.ndim != 3:
        raise ValueError(f"runs must be [N, S, T] (N runs of the transfer), got shape {r.shape}")
    if r.shape[0] < 2:
        raise ValueError(f"runs must hold at least 2 runs (seeds) to compare, got N={r.shape[0]}")
    m = _as_mask(mask, r.shape[1:])
    _check_present("runs", r)
    present = m & ~np.isnan(r).any(axis=0)
    _check_choice(present)
    k = min(k, r.shape[1])
    rj, mj = jnp.asarray(np.where(present[None], r, 0)), jnp.asarray(present)
    point = _agreement_point(rj, mj, k)
    boot = None
    if num_bootstrap > 0:
        idx = jax.random.randint(jax.random.key(seed), (num_bootstrap, r.shape[1]), 0, r.shape[1])
        boot = _agreement_bootstrap(rj, mj, idx, k)
    return _intervals(point, boot, confidence)


# statistic -> (to a Pearson-type correlation under bivariate normality, and back)
_LINKS = {
    "pearson": (lambda c: c, lambda r: r),
    "spearman": (lambda c: 2 * math.sin(math.pi * c / 6), lambda r: 6 / math.pi * math.asin(r / 2)),
    "kendall": (lambda c: math.sin(math.pi * c / 2), lambda r: 2 / math.pi * math.asin(r)),
}


def _ceiling_one(c: float, link, back, num_runs: int) -> float:
    if not np.isfinite(c):
        return float("nan")
    r = min(max(link(c), 0.0), 1.0)  # no agreement between seeds: no signal to predict
    reliability = num_runs * r / (1 + (num_runs - 1) * r)
    return float(back(math.sqrt(reliability)))


def noise_ceiling(agreement: dict[str, Interval], num_runs: int) -> dict[str, Interval]:
    """The correlation the noise-free transfer would have with the mean of ``num_runs`` seeds.

    The model: run i measures a_i = μ + ε_i, the ε_i independent with equal
    variance σ². Two runs then correlate r = var μ / (var μ + σ²) (the
    reliability of one run), the mean of N runs has reliability
    r_N = N r / (1 + (N − 1) r) (Spearman–Brown), and the noise-free μ
    correlates with that mean √r_N. Any estimator whose errors are independent
    of the seeds' noise correlates with the mean at most corr(score, μ)·√r_N ≤
    √r_N: that is the ceiling. Rank statistics go through a Pearson-type
    correlation by the bivariate-normal identities τ = (2/π) arcsin ρ and
    ρ_S = (6/π) arcsin(ρ/2) (Kendall 1949): ρ = sin(πτ/2) or 2 sin(πρ_S/6) in,
    the same identity back out. A negative agreement is taken as 0 (no
    signal). The map is increasing, so it carries the bootstrap percentile
    interval's ends over as they are.

    Applied to a within-target statistic, the map acts on the mean over
    targets, not target by target: an approximation, like the normality the
    rank identities assume. Weighted τ, top-k hits and regret have no such
    map and are left out.

    Args:
      agreement: :func:`seed_agreement`'s result.
      num_runs: N, the number of runs the ground truth averages (≥ 1).

    Returns:
      ``{name: Interval}`` for the Pearson, Spearman and Kendall statistics,
      pooled and within, present in ``agreement``.

    Raises:
      ValueError: ``num_runs`` below 1.

    Example:
      >>> one = {"pearson_pooled": Interval(0.5, 0.5, 0.5)}
      >>> round(noise_ceiling(one, 3)["pearson_pooled"].value, 4)  # √(1.5/2)
      0.866
    """
    if isinstance(num_runs, bool) or not isinstance(num_runs, int | np.integer) or num_runs < 1:
        raise ValueError(f"num_runs must be an integer >= 1, got {num_runs!r}")
    out = {}
    for name, iv in agreement.items():
        base = name.rsplit("_", 1)[0]
        if base in _LINKS and name.rsplit("_", 1)[1] in ("pooled", "within"):
            link, back = _LINKS[base]
            out[name] = Interval(*(_ceiling_one(float(v), link, back, int(num_runs)) for v in iv))
    return out
