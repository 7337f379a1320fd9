"""Spectral ridge regression: the minimum of the regularised least-squares objective.

For features F ∈ ℝ^{n×d}, targets Y ∈ ℝ^{n×k} and penalty λ ≥ 0 this computes,
per output column j,

    J_j(λ) = min_{a, b} (1/n) Σᵢ (y_ij − aᵀfᵢ − b)² + λ‖a‖²,

the bias unpenalised. Centring F and Y removes b; what is left is ridge on
centred data with penalty p = nλ on the sum of squares. With the centred Gram
matrix C = F_cᵀF_c = V diag(e) Vᵀ and G = F_cᵀY_c,

    n·J(λ) = ‖Y_c‖² − Σ_j (V_jᵀG)² / (e_j + p),

for every target and every λ from one eigendecomposition. λ = 0 is least
squares, minimum-norm when C is singular: eigenvalues of C below
``eps·max(n, d)·max(e)`` are treated as zero. Because C squares the singular
values σ of F_c, this drops directions with σ/σ_max below
``sqrt(eps·max(n, d))`` — about 2e-3 in float32 at n = 40, where
``numpy.linalg.lstsq`` on F itself keeps directions down to
``eps·max(n, d)``. For least squares on ill-conditioned features, enable
float64 (``jax_enable_x64``), where the same rule reaches σ/σ_max ≈ 1e-7.

Two routes:

* **Statistics** (:class:`SourceStats`, :class:`CrossStats`): sums that add
  across batches and devices, finalised by :func:`ridge_objective_from_stats`
  with the closed form above. It loses digits when the fit is nearly exact,
  because the residual is a difference of two large numbers.
* **Factor + second pass** (:func:`ridge_factor`, :func:`ridge_objective`): the
  source is factorised once (an eigendecomposition, or a Cholesky factor when a
  single λ > 0 makes C + nλI well conditioned), and each target's residual
  Y_c − F_cA is computed directly. When n < d the n×n kernel K = F_cF_cᵀ is
  factorised instead, so the cost is O(n·d·min(n, d)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import cho_solve

__all__ = [
    "CrossStats",
    "RidgeFactor",
    "SourceStats",
    "add_stats",
    "cross_stats",
    "ridge_factor",
    "ridge_objective",
    "ridge_objective_from_stats",
    "source_stats",
]

_HI = lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HI)


class SourceStats(NamedTuple):
    """Source-only sums about a fixed shift s: n, Σ(f−s), Σ(f−s)(f−s)ᵀ."""

    count: jax.Array  # [] float
    shift: jax.Array  # [d]
    total: jax.Array  # [d]
    gram: jax.Array  # [d, d]


class CrossStats(NamedTuple):
    """Target sums about a fixed shift t: Σ(y−t), Σ(f−s)(y−t)ᵀ, Σ(y−t)²."""

    shift: jax.Array  # [k]
    total: jax.Array  # [k]
    cross: jax.Array  # [d, k]
    squares: jax.Array  # [k]


def _weights(n, mask, dtype):
    if mask is None:
        return jnp.ones((n,), dtype)
    return jnp.asarray(mask).astype(dtype)


def source_stats(features, mask=None, *, shift=None) -> SourceStats:
    """Accumulate one batch of source statistics.

    Statistics of batches with the same ``shift`` add (:func:`add_stats`,
    or ``jax.lax.psum`` across devices). Choose ``shift`` near the feature
    mean (the first batch's mean, say): the sums are then small and float32
    keeps its digits. ``shift=None`` uses this batch's own (masked) mean.

    Args:
      features: float [n, d].
      mask: optional bool [n].
      shift: optional [d].

    Returns:
      :class:`SourceStats`.
    """
    f = jnp.asarray(features)
    w = _weights(f.shape[0], mask, f.dtype)
    count = jnp.sum(w)
    if shift is None:
        shift = jnp.sum(f * w[:, None], axis=0) / jnp.maximum(count, 1)
    fc = (f - shift[None, :]) * w[:, None]
    return SourceStats(count, jnp.asarray(shift, f.dtype), jnp.sum(fc, axis=0), _mm(fc.T, fc))


def cross_stats(features, targets, mask=None, *, feature_shift, target_shift=None) -> CrossStats:
    """Accumulate one batch of feature–target cross statistics.

    Args:
      features: float [n, d]; targets: float [n, k].
      mask: optional bool [n].
      feature_shift: [d], the shift of the matching :class:`SourceStats`.
      target_shift: optional [k]; ``None`` uses this batch's masked mean.

    Returns:
      :class:`CrossStats`.
    """
    f = jnp.asarray(features)
    y = jnp.asarray(targets)
    w = _weights(f.shape[0], mask, f.dtype)
    if target_shift is None:
        target_shift = jnp.sum(y * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1)
    target_shift = jnp.asarray(target_shift, y.dtype)
    yc = (y - target_shift[None, :]) * w[:, None]
    fc = (f - jnp.asarray(feature_shift)[None, :]) * w[:, None]
    return CrossStats(target_shift, jnp.sum(yc, axis=0), _mm(fc.T, yc), jnp.sum(yc * yc, axis=0))


def add_stats(a, b):
    """Sum two batches' statistics taken about the same shift (either stats type)."""
    return a._replace(**{k: getattr(a, k) + getattr(b, k) for k in a._fields if k != "shift"})


def _spectral_weights(eigvals, penalty, size):
    """1/(e + p) with eigenvalues below eps·size·max(e) set to 0 and 1/0 → 0."""
    eps = jnp.finfo(eigvals.dtype).eps
    e = jnp.maximum(eigvals, 0)
    e = jnp.where(e > eps * size * jnp.max(e), e, 0)
    denom = e + penalty
    ok = denom > 0
    return jnp.where(ok, 1 / jnp.where(ok, denom, 1), 0)


def ridge_objective_from_stats(source: SourceStats, cross: CrossStats, l2) -> jax.Array:
    """Finalise streamed statistics into the ridge objective J(λ) per output.

    Args:
      source: :class:`SourceStats` summed over all batches.
      cross: :class:`CrossStats` summed over all batches (same feature shift).
      l2: λ ≥ 0, a scalar or an array of values.

    Returns:
      [*l2.shape, k] objective values (closed form; see the module notes on
      precision when the fit is nearly exact).
    """
    n = source.count
    safe_n = jnp.maximum(n, 1)
    c = source.gram - jnp.outer(source.total, source.total) / safe_n
    g = cross.cross - jnp.outer(source.total, cross.total) / safe_n
    yy = cross.squares - cross.total**2 / safe_n
    e, v = jnp.linalg.eigh(c)
    proj2 = _mm(v.T, g) ** 2  # [d, k]
    size = jnp.maximum(n, c.shape[0])

    def one(lam):
        w = _spectral_weights(e, n * lam, size)
        return jnp.maximum(yy - w @ proj2, 0) / safe_n

    l2 = jnp.asarray(l2, c.dtype)
    return jax.vmap(one)(l2.reshape(-1)).reshape(*l2.shape, -1)


class RidgeFactor(NamedTuple):
    """A source factorised once for :func:`ridge_objective`.

    ``basis`` is [m, m] with m = d (primal form, n ≥ d) or m = n (dual form,
    n < d): the eigenvectors of C or K, or, when ``cholesky`` is true, the lower
    Cholesky factor of C + ``penalty``·I (then ``eigvals`` is unused).
    """

    count: jax.Array  # []
    mean: jax.Array  # [d] (zero when built with center=False)
    centred: jax.Array  # [n, d], masked rows zero (uncentred when built with center=False)
    basis: jax.Array  # [m, m]
    eigvals: jax.Array  # [m]
    penalty: jax.Array  # [] the n·λ the Cholesky factor includes
    cholesky: jax.Array  # [] bool


def _is_dual(n: int, d: int) -> bool:
    return n < d


def ridge_factor(features, mask=None, *, l2=None, center: bool = True) -> RidgeFactor:
    """Factorise a source once for any number of targets.

    Args:
      features: float [n, d].
      mask: optional bool [n]; masked rows are left out of everything.
      l2: optional scalar λ. When given, and n·λ ≥ √eps·tr(C) so that
        C + nλI is well conditioned, a Cholesky factor of it replaces the
        eigendecomposition (several times cheaper); the factor then serves that
        λ only. ``None`` always uses the eigendecomposition, which serves any λ.
      center: static. ``True`` (the default) factorises the centred features,
        as :func:`ridge_objective` needs. ``False`` factorises the features as
        they are (masked rows zeroed; ``mean`` is then zero and ``centred``
        holds the uncentred features), for models without a bias such as
        LogME; :func:`ridge_objective` must not be given such a factor.

    Returns:
      :class:`RidgeFactor`. The form (primal d×d or dual n×n) is static: dual
      when n < d.
    """
    f = jnp.asarray(features)
    n, d = f.shape
    stats = source_stats(f, mask, shift=None if center else jnp.zeros((d,), f.dtype))
    fc = (f - stats.shift[None, :]) * _weights(n, mask, f.dtype)[:, None]
    m = _mm(fc, fc.T) if _is_dual(n, d) else stats.gram
    dim = m.shape[0]
    if l2 is None:
        e, v = jnp.linalg.eigh(m)
        return RidgeFactor(stats.count, stats.shift, fc, v, e, jnp.zeros((), f.dtype), jnp.array(False))
    penalty = stats.count * jnp.asarray(l2, f.dtype)
    use_chol = (penalty > 0) & (penalty >= jnp.sqrt(jnp.finfo(f.dtype).eps) * jnp.trace(m))

    def chol(m):
        return jnp.linalg.cholesky(m + penalty * jnp.eye(dim, dtype=m.dtype)), jnp.zeros((dim,), m.dtype)

    def eig(m):
        e, v = jnp.linalg.eigh(m)
        return v, e

    basis, e = lax.cond(use_chol, chol, eig, m)
    return RidgeFactor(stats.count, stats.shift, fc, basis, e, penalty, use_chol)


def ridge_objective(factor: RidgeFactor, targets, l2, mask=None) -> jax.Array:
    """Ridge objective J(λ) per output, residuals computed directly.

    Args:
      factor: from :func:`ridge_factor` on the same samples and mask. If it was
        built with ``l2``, pass that same scalar here.
      targets: float [n, k].
      l2: λ ≥ 0, a scalar or an array of values (arrays need a factor built
        with ``l2=None``; with a Cholesky factor they give NaN).
      mask: the mask the factor was built with.

    Returns:
      [*l2.shape, k] objective values (1/n)(‖y − ŷ‖² + nλ‖a‖²).
    """
    fc = factor.centred
    n, d = fc.shape
    y = jnp.asarray(targets, fc.dtype)
    w = _weights(n, mask, fc.dtype)
    count = factor.count
    mean_y = jnp.sum(y * w[:, None], axis=0) / jnp.maximum(count, 1)
    yc = (y - mean_y[None, :]) * w[:, None]
    dual = _is_dual(n, d)
    rhs = yc if dual else _mm(fc.T, yc)
    size = max(n, d)

    def objective(x, penalty):
        coef = _mm(fc.T, x) if dual else x
        resid = yc - _mm(fc, coef)
        total = jnp.sum(resid * resid, axis=0) + penalty * jnp.sum(coef * coef, axis=0)
        return total / jnp.maximum(count, 1)

    def by_eig(lam):
        penalty = count * lam
        wts = _spectral_weights(factor.eigvals, penalty, size)
        x = _mm(factor.basis, wts[:, None] * _mm(factor.basis.T, rhs))
        return objective(x, penalty)

    def by_chol(lam):
        return objective(cho_solve((factor.basis, True), rhs), factor.penalty)

    l2 = jnp.asarray(l2, fc.dtype)
    if l2.ndim == 0:
        return lax.cond(factor.cholesky, by_chol, by_eig, l2)
    out = jax.vmap(by_eig)(l2.reshape(-1)).reshape(*l2.shape, -1)
    # a Cholesky factor serves one λ only: several λ get NaN, not wrong numbers
    return jnp.where(factor.cholesky, jnp.nan, out)
