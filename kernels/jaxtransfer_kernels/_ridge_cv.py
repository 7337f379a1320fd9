"""Held-out ridge error in closed form: leave-one-out and generalised cross-validation.

For features F ∈ ℝ^{n×d}, targets Y ∈ ℝ^{n×k} and a fixed penalty p ≥ 0 on the
sum of squares, ridge with an unpenalised intercept fits

    min_{A, b} Σᵢ ‖yᵢ − A fᵢ − b‖² + p‖A‖²_F.

Its predictions are linear in Y, Ŷ = H Y, with the hat matrix of the augmented
design X = [1, F] and penalty diag(0, p·I). Because the intercept is not
penalised, H splits into the mean and the ridge fit of the centred features
F_c = U diag(σ) Vᵀ (the thin SVD, :func:`spectrum`):

    H = (1/n)·11ᵀ + U diag(g) Uᵀ,   g_j = σ_j² / (σ_j² + p).

**Leave-one-out (LOO).** Refitting with sample i left out (the same p, the
intercept and the centring refitted on the other n − 1 samples) and
predicting sample i leaves the residual (Allen 1974; Hastie, Tibshirani and
Friedman 2009, eq. 7.52, which holds for any penalised least-squares fit with
a fixed penalty matrix, here diag(0, p·I))

    eᵢ = rᵢ / (1 − H_ii),   r = Y_c − U diag(g) UᵀY_c,

so that the LOO mean squared error, MSE_LOO = (1/n) Σᵢ ‖eᵢ‖², needs one fit
on all n samples. **GCV** (Golub, Heath and Wahba 1979) replaces every H_ii by
their mean tr(H)/n = (1 + Σ_j g_j)/n:

    MSE_GCV = (1/n) ‖r‖² / (1 − tr(H)/n)².

Every p of a grid costs O(n·m·k) (LOO) or O(m·k) (GCV) after one O(n·d·m)
factorisation, m = min(n, d).

Float32 care. Nothing here is a difference of two large numbers:

* with h_j = 1 − g_j = p/(σ_j² + p), formed directly, the residual is
  r = y_⊥ + U(h ⊙ z), z = UᵀY_c, where y_⊥ = Y_c − Uz is computed directly
  (a pass over the samples), never as ‖y‖² − ‖z‖²;
* 1 − H_ii = c_i + Σ_j U_ij² h_j, a sum of non-negative terms, where
  c_i = 1 − 1/n − ‖U_i‖² ≥ 0 is the diagonal of the projector on the
  complement of [1, U] (exactly 0 when the rank is n − 1, e.g. n ≤ d: then it
  is set to 0 rather than left as rounding noise that would swamp a small h,
  and so is y_⊥);
* 1 − tr(H)/n = ((n − 1 − K) + Σ_j h_j)/n with K the kept rank (an integer);
* ‖r‖² = ‖y_⊥‖² + Σ_j h_j² z_j² (y_⊥ ⟂ U).

The features and targets are rescaled by exact powers of two, so scales from
1e-30 to 1e30 neither overflow nor underflow.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._spectrum import Spectrum, centre_and_scale, matmul, power_of_two_scale, sample_weights, spectrum

__all__ = ["CV_METHODS", "RidgeCV", "ridge_cv_curve", "ridge_cv_factor"]

CV_METHODS = ("loo", "gcv")
"""Held-out error estimates: exact leave-one-out, generalised cross-validation."""

_HI = lax.Precision.HIGHEST
_CHUNK_ELEMENTS = 2**22  # residual elements [λ, n, k] formed at a time by the LOO curve


class RidgeCV(NamedTuple):
    """A source factorised once for held-out errors over a grid of penalties.

    Attributes:
      spectrum: :class:`Spectrum` of the centred, scaled features A.
      total: [] ‖A‖²_F = Σ σ_j² over every direction (the trace of the
        centred Gram matrix, in the scaled units).
      penalty: [L] p = ρ·‖A‖²_F in the scaled units, ρ the relative grid.
      shrink: [L, m] h_j = p/(σ_j² + p) on kept directions, 0 elsewhere.
      denominator: [L, n] 1 − H_ii (``"loo"``; 1 on masked samples) or
        [L, 1] 1 − tr(H)/n (``"gcv"``).
    """

    spectrum: Spectrum
    total: jax.Array
    penalty: jax.Array
    shrink: jax.Array
    denominator: jax.Array


def ridge_cv_factor(features, mask=None, *, l2_relative, method: str = "loo") -> RidgeCV:
    """Factorise a source once, for held-out errors of any number of targets.

    Args:
      features: float [n, d].
      mask: optional bool [n]; masked samples are left out of everything
        (n is then the number of kept samples).
      l2_relative: [L] ρ ≥ 0: the penalty on the sum of squares is
        p = ρ·tr(F_cᵀF_c) (the trace of the centred Gram matrix, n times the
        features' total variance), so that rescaling the features changes
        nothing.
      method: static, ``"loo"`` or ``"gcv"``.

    Returns:
      :class:`RidgeCV`.
    """
    if method not in CV_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, CV_METHODS))}, got {method!r}")
    scaled = centre_and_scale(features, mask)
    spec = spectrum(scaled)
    a = scaled.features
    n = a.shape[0]
    dtype = a.dtype
    total = jnp.sum(a * a)
    rho = jnp.asarray(l2_relative, dtype).reshape(-1)
    penalty = rho * total  # [L]
    sigma2 = jnp.where(spec.keep, spec.singular, 0) ** 2
    denom = sigma2[None, :] + penalty[:, None]
    ok = spec.keep[None, :] & (denom > 0)
    shrink = jnp.where(ok, penalty[:, None] / jnp.where(ok, denom, 1), 0)  # [L, m]
    count = jnp.maximum(spec.count, 1)
    kept = jnp.sum(spec.keep, dtype=jnp.int32)
    if method == "gcv":
        free = jnp.maximum(count - 1 - kept.astype(dtype), 0)
        denominator = ((free + jnp.sum(shrink, axis=1)) / count)[:, None]  # [L, 1]
        return RidgeCV(spec, total, penalty, shrink, denominator)
    u2 = spec.basis * spec.basis  # [n, m]
    w = sample_weights(n, mask, dtype)
    complement = jnp.maximum(1 - 1 / count - jnp.sum(u2, axis=1), 0)
    complement = jnp.where(kept.astype(dtype) >= count - 1, 0, complement)  # structurally 0
    lev = complement[None, :] + matmul(shrink, u2.T)  # [L, n]
    denominator = jnp.where(w[None, :] > 0, lev, 1)
    return RidgeCV(spec, total, penalty, shrink, denominator)


def _chunk(total: int, per: int) -> int:
    """Grid values per step so that a step forms at most ``_CHUNK_ELEMENTS`` residual entries."""
    return max(1, min(total, _CHUNK_ELEMENTS // max(per, 1)))


def ridge_cv_curve(cv: RidgeCV, targets, mask=None, *, method: str = "loo") -> jax.Array:
    """Estimated held-out mean squared error per penalty of the grid and per output.

    Args:
      cv: from :func:`ridge_cv_factor` on the same samples, mask and ``method``.
      targets: float [n, k].
      mask: the mask ``cv`` was built with.
      method: static, the ``method`` ``cv`` was built with.

    Returns:
      [L, k]: (1/n) Σᵢ eᵢ² per output (LOO), or the GCV estimate. +inf where
      a kept sample has H_ii = 1 (an interpolating fit, p = 0 with n ≤ d):
      its leave-one-out prediction is undefined.
    """
    if method not in CV_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, CV_METHODS))}, got {method!r}")
    spec = cv.spectrum
    n = spec.features.shape[0]
    dtype = spec.features.dtype
    count = jnp.maximum(spec.count, 1)
    y = jnp.asarray(targets, dtype)
    w = sample_weights(n, mask, dtype)[:, None]
    mean_y = jnp.sum(y * w, axis=0, keepdims=True) / count
    yc = (y - mean_y) * w
    yc = (yc - jnp.sum(yc, axis=0, keepdims=True) / count) * w  # the rounding of the first mean
    sy = power_of_two_scale(jnp.max(jnp.abs(yc)))  # exact: squares cannot overflow
    yc = yc * sy
    z = matmul(spec.basis.T, yc)  # [m, k]
    perp = (yc - matmul(spec.basis, z)) * w  # [n, k], computed directly
    # rank n − 1 (n ≤ d): [1, U] spans every sample, y_⊥ is structurally 0, not rounding noise
    full = jnp.sum(spec.keep, dtype=jnp.int32).astype(dtype) >= count - 1
    perp = jnp.where(full, 0, perp)
    unit = count * sy * sy

    def inf_where_zero(num, den):
        ok = den > 0
        return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.inf)

    if method == "gcv":
        resid2 = jnp.sum(perp * perp, axis=0)[None, :] + matmul(cv.shrink**2, z * z)  # [L, k]
        den = cv.denominator  # [L, 1]
        return inf_where_zero(resid2, den * den) / unit

    def block(args):
        shrink, den = args  # [c, m], [c, n]
        r = perp[None] + jnp.einsum("nm,cmk->cnk", spec.basis, shrink[:, :, None] * z[None], precision=_HI)
        r = r * w[None]
        d2 = (den * den)[:, :, None]
        e2 = inf_where_zero(r * r, d2)  # masked samples: r = 0, 1 − H_ii set to 1
        return jnp.sum(e2, axis=1)  # [c, k]

    size = cv.shrink.shape[0]
    chunk = _chunk(size, n * y.shape[1])
    if chunk >= size:
        out = block((cv.shrink, cv.denominator))
    else:
        out = lax.map(block, (cv.shrink, cv.denominator), batch_size=chunk)
    return out / unit
