"""Spectral ridge regression: the minimum of the regularised least-squares objective.

For features F ∈ ℝ^{n×d}, targets Y ∈ ℝ^{n×k} and penalty λ ≥ 0 this computes,
per output column j,

    J_j(λ) = min_{a, b} (1/n) Σᵢ (y_ij − aᵀfᵢ − b)² + λ‖a‖²,

the bias unpenalised. Centring F and Y removes b; what is left is ridge on
centred data with penalty p = nλ on the sum of squares. With the centred Gram
matrix C = F_cᵀF_c = V diag(e) Vᵀ and G = F_cᵀY_c,

    n·J(λ) = ‖Y_c‖² − Σ_j (V_jᵀG)² / (e_j + p),

for every target and every λ from one eigendecomposition.

Two routes:

* **Statistics** (:class:`SourceStats`, :class:`CrossStats`): sums that add
  across batches and devices, finalised by :func:`ridge_objective_from_stats`
  with the closed form above. It loses digits when the fit is nearly exact
  (the residual is a difference of two large numbers) and, forming C, when
  the features are ill-conditioned; eigenvalues of C below
  ``eps·max(n, d)·max(e)`` count as zero.
* **Factor + second pass** (:func:`ridge_factor`, :func:`ridge_objective`): the
  source is factorised once — its singular spectrum (:func:`spectrum`: the
  eigendecomposition of C, or of the n×n kernel when n < d, where that is
  accurate, else the SVD of the centred features), or a Cholesky factor when a
  single λ > 0 makes C + nλI well conditioned — and each target's residual
  Y_c − F_cA is computed directly. λ = 0 is least squares, minimum-norm when
  the features are rank-deficient, with the rank rule of :func:`spectrum`
  (σ ≤ √max(n, d)·eps·σ_max counts as zero); float32 stays within about 1e-3
  of float64 for condition numbers up to about 1e4, for any mean offset and
  for feature scales from 1e-30 to 1e30.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from ._branch import branch
from ._spectrum import Spectrum, centre_and_scale, gram, matmul, power_of_two_scale, sample_weights, spectrum

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
    w = sample_weights(f.shape[0], mask, f.dtype)
    count = jnp.sum(w)
    if shift is None:
        shift = jnp.sum(f * w[:, None], axis=0) / jnp.maximum(count, 1)
    fc = (f - shift[None, :]) * w[:, None]
    return SourceStats(count, jnp.asarray(shift, f.dtype), jnp.sum(fc, axis=0), matmul(fc.T, fc))


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
    w = sample_weights(f.shape[0], mask, f.dtype)
    if target_shift is None:
        target_shift = jnp.sum(y * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1)
    target_shift = jnp.asarray(target_shift, y.dtype)
    yc = (y - target_shift[None, :]) * w[:, None]
    fc = (f - jnp.asarray(feature_shift)[None, :]) * w[:, None]
    return CrossStats(target_shift, jnp.sum(yc, axis=0), matmul(fc.T, yc), jnp.sum(yc * yc, axis=0))


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
    proj2 = matmul(v.T, g) ** 2  # [d, k]
    size = jnp.maximum(n, c.shape[0])

    def one(lam):
        w = _spectral_weights(e, n * lam, size)
        return jnp.maximum(yy - w @ proj2, 0) / safe_n

    l2 = jnp.asarray(l2, c.dtype)
    return jax.vmap(one)(l2.reshape(-1)).reshape(*l2.shape, -1)


class RidgeFactor(NamedTuple):
    """A source factorised once for :func:`ridge_objective`.

    Either the spectrum (any number of λ), or, when ``cholesky`` is true, the
    lower Cholesky factor of c·G + I for one λ, with G the Gram matrix AᵀA
    (n ≥ d) or the kernel AAᵀ (n < d) of the scaled centred features A and
    c = 1/(nλ·scale²) (``inv_penalty``). The unused half is zeros.
    """

    spectrum: Spectrum
    cholesky: jax.Array  # [] bool
    factor: jax.Array  # [m, m], m = d (n ≥ d) or n (n < d)
    inv_penalty: jax.Array  # [] c


def _scaled_penalty(count, l2, scale):
    """√(nλ)·scale: the penalty nλ in the units of the scaled features is its square."""
    return jnp.sqrt(count * l2) * scale


def ridge_factor(features, mask=None, *, l2=None, method: str = "auto") -> RidgeFactor:
    """Factorise a source once for any number of targets.

    The features are centred and rescaled exactly (:func:`centre_and_scale`)
    and factorised by :func:`spectrum`, which keeps float32 accurate on
    ill-conditioned features and large means.

    Args:
      features: float [n, d].
      mask: optional bool [n]; masked rows are left out of everything.
      l2: optional scalar λ. When given, and nλ ≥ √eps·tr(C) so that
        C + nλI is well conditioned, a Cholesky factor of it replaces the
        spectrum (several times cheaper, and accurate: the penalty dominates
        the rounding of C); the factor then serves that λ only. ``None``
        always uses the spectrum, which serves any λ.
      method: static, the spectrum's route (:func:`spectrum`).

    Returns:
      :class:`RidgeFactor`.
    """
    scaled = centre_and_scale(features, mask)
    a = scaled.features
    g = gram(a)
    dim = g.shape[0]
    dtype = a.dtype

    def spectral(_):
        spec = spectrum(scaled, method=method, gram_matrix=g)
        return RidgeFactor(spec, jnp.array(False), jnp.zeros_like(g), jnp.zeros((), dtype))

    if l2 is None:
        return spectral(None)
    penalty = _scaled_penalty(scaled.count, jnp.asarray(l2, dtype), scaled.scale) ** 2
    use_chol = (penalty > 0) & (penalty >= jnp.sqrt(jnp.finfo(dtype).eps) * jnp.trace(g))

    def chol(_):
        c = 1 / penalty  # 0 when the penalty overflows: the features then explain nothing
        factor = jnp.linalg.cholesky(c * g + jnp.eye(dim, dtype=dtype))
        m = min(a.shape)
        n = a.shape[0]
        spec = Spectrum(
            *scaled,
            jnp.zeros((n, m), dtype),
            jnp.zeros((m,), dtype),
            jnp.zeros((m,), bool),
            jnp.zeros((), jnp.int32),
            jnp.array(False),
            jnp.zeros((m,), bool),
        )
        return RidgeFactor(spec, jnp.array(True), factor, c)

    return branch(use_chol, chol, spectral, None)


def ridge_objective(factor: RidgeFactor, targets, l2, mask=None) -> jax.Array:
    """Ridge objective J(λ) per output, residuals computed directly.

    With z = Uᵀy_c and, per direction, r = nλ/σ² (in the scaled units), the
    fit shrinks z by g = 1/(1 + r) and the penalty adds g·h·z² with
    h = 1 − g = r/(1 + r) (formed directly: for r ≪ 1, 1 − g would round to 0), so

        n·J(λ) = ‖y_c − U(g ⊙ z)‖² + Σ g h z²,

    the first term formed from the residual vector itself (a second pass
    over the samples), never as ‖y_c‖² − Σ(…)², which cancels in float32 when
    the fit is nearly exact. r may be 0 or +inf (λ = 0; a penalty beyond the
    working range) without NaN.

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
    spec = factor.spectrum
    a = spec.features
    n, d = a.shape
    count = jnp.maximum(spec.count, 1)
    dtype = a.dtype
    y = jnp.asarray(targets, dtype)
    w = sample_weights(n, mask, dtype)[:, None]
    # the targets at unit scale too (an exact power of two), so that squares cannot overflow
    mean_y = jnp.sum(y * w, axis=0, keepdims=True) / count
    yc = (y - mean_y) * w
    sy = power_of_two_scale(jnp.max(jnp.abs(yc)))
    yc = yc * sy
    z = matmul(spec.basis.T, yc)  # [m, k]

    def by_spectrum(lam):
        q = _scaled_penalty(spec.count, lam, spec.scale)
        # r = (√(nλ)/σ)², capped where it would overflow (the direction is then shrunk to nothing
        # anyway); dropped directions get a stand-in 1 so that no inf or NaN reaches a gradient
        cap = jnp.sqrt(jnp.finfo(dtype).max) / 2
        r = jnp.minimum(q / jnp.where(spec.keep, spec.singular, 1), cap) ** 2
        g = jnp.where(spec.keep, 1 / (1 + r), 0)[:, None]
        h = jnp.where(spec.keep, r / (1 + r), 1)[:, None]  # 1 − g, formed directly (r ≪ 1: g rounds to 1)
        resid = yc - matmul(spec.basis, g * z)
        return jnp.sum(resid * resid, axis=0) + jnp.sum(g * h * z * z, axis=0)

    def by_cholesky(lam):
        c = factor.inv_penalty
        if n < d:  # (cK + I) x = y_c; coefficients c·Aᵀx
            x = cho_solve((factor.factor, True), yc)
            coef = matmul(a.T, x)
        else:  # (cG + I) x = Aᵀy_c; coefficients c·x
            coef = cho_solve((factor.factor, True), matmul(a.T, yc))
        resid = yc - c * matmul(a, coef)
        return jnp.sum(resid * resid, axis=0) + c * jnp.sum(coef * coef, axis=0)

    def objective(lam):
        total = branch(factor.cholesky, by_cholesky, by_spectrum, lam)
        return total / count / (sy * sy)

    l2 = jnp.asarray(l2, dtype)
    if l2.ndim == 0:
        return objective(l2)
    out = jax.vmap(by_spectrum)(l2.reshape(-1)) / count / (sy * sy)
    # a Cholesky factor serves one λ only: several λ get NaN, not wrong numbers
    return jnp.where(factor.cholesky, jnp.nan, out.reshape(*l2.shape, -1))
