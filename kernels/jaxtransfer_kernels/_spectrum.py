"""The singular spectrum of a feature matrix, accurate in float32.

Most estimators depend on the features F ∈ ℝ^{n×d} only through the thin SVD
of the (centred) features, A = U diag(σ) Vᵀ: ridge fits and LogME project
targets on U, the H-scores sum rows of U, PCA scores are U diag(σ). This module
computes U and σ once per source, with three precautions that keep float32
within about 1e-3 of float64 on the features real backbones produce:

* **Scale.** The features are brought to unit scale by a power of two (exact:
  no digit changes) before anything is summed or multiplied, so features of
  1e-30 or 1e18 neither underflow nor overflow. ``scale`` says by how much.
* **Mean.** Centring is done on the samples, in two passes, before any
  product is formed; FᵀF = F_cᵀF_c + n·μμᵀ would hide the spread under the
  mean (post-ReLU features all have positive means). Uncentred spectra
  (LogME) factorise F itself, never FᵀF, for the same reason.
* **Squaring.** The fast route eigendecomposes the Gram matrix AᵀA (or the
  n×n kernel AAᵀ when n < d). That squares the condition number: eigenvalues
  below about eps·λ_max are rounding noise, so directions with
  σ/σ_max ≲ √eps (3e-4 in float32) are lost, and those up to 100× above it
  lose most of their digits. The accurate route takes the SVD of A itself,
  whose singular values carry an absolute error of about eps·σ_max.

Gradients: both routes differentiate with the rank held fixed
(:func:`jaxtransfer_kernels.safe_eigh`, :func:`jaxtransfer_kernels.safe_svd`),
so dead units, duplicated or constant columns and n < d — repeated zero
eigenvalues — give finite derivatives of U and σ on the kept directions.

Route choice (``method="auto"``), per source and from the data, never per
element: the Gram route is kept when its eigenvalues are all either above
``GRAM_RESOLUTION``·λ_max (resolved to ~eps/1e-3 relative) or provably zero —
as many small eigenvalues as the structural rank deficit (the centring's one,
masked rows, all-zero columns). Otherwise the SVD route runs (2–5× the cost on
a CPU). Under ``vmap`` the choice would be a select, so both routes would
run; :func:`~jaxtransfer_kernels.branch` keeps it a real branch per batch of
sources inside :func:`~jaxtransfer_kernels.uniform_batch` (one route when the
batch agrees), and one source per step (``lax.map``) keeps it a branch too.

Rank rule: a singular value at or below ``sqrt(max(n, d))·eps·σ_max`` counts
as zero (exactly rank-deficient float32 matrices show spurious singular values
of 1–3·eps·σ_max). Directions between ``8·eps`` and ``100·eps`` of σ_max
(condition numbers from about 8e4 to 1e6 in float32) are *unresolved*: their
singular values carry more than 1% relative error, or they are dropped where
float64 would keep them. ``band`` marks such directions so that callers can warn.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._branch import branch
from ._linalg import safe_eigh, safe_svd

__all__ = [
    "GRAM_RESOLUTION",
    "Scaled",
    "Spectrum",
    "centre_and_scale",
    "gram",
    "half_logdet_identity_plus",
    "matmul",
    "power_of_two_scale",
    "sample_weights",
    "spectrum",
    "unresolved_band",
]

GRAM_RESOLUTION = 1e-3
"""The Gram route is trusted when every non-zero eigenvalue is above this fraction of the largest."""

_HI = lax.Precision.HIGHEST
_METHODS = ("auto", "gram", "svd")


def matmul(a, b):
    """``a @ b`` at full float32 precision on every platform (GPUs default to TF32)."""
    return jnp.matmul(a, b, precision=_HI)


def sample_weights(n: int, mask, dtype) -> jax.Array:
    """Per-sample weights [n]: 1 for kept samples, 0 for masked ones (all 1 without a mask)."""
    if mask is None:
        return jnp.ones((n,), dtype)
    return jnp.asarray(mask).astype(dtype)


def power_of_two_scale(max_abs) -> jax.Array:
    """2^k with ``max_abs``·2^k in [1, 2): an exact rescaling to unit size (1 when ``max_abs`` is 0)."""
    max_abs = jnp.asarray(max_abs)
    _, exponent = jnp.frexp(max_abs)  # max_abs = m·2^e, m in [0.5, 1)
    ok = jnp.isfinite(max_abs) & (max_abs > 0)
    return jnp.where(ok, jnp.ldexp(jnp.ones((), max_abs.dtype), 1 - exponent), 1).astype(max_abs.dtype)


class Scaled(NamedTuple):
    """Features centred on the kept samples and brought to unit scale.

    ``features`` = ``scale``·(F − ``mean``), masked rows zero, largest entry
    in [1, 2) (unless all are zero); ``scale`` is a power of two.
    """

    count: jax.Array  # [] kept samples
    mean: jax.Array  # [d] in the input's units (zero when not centred)
    scale: jax.Array  # [] power of two
    features: jax.Array  # [n, d]


def centre_and_scale(features, mask=None, *, center: bool = True) -> Scaled:
    """Centre (two passes) and rescale by powers of two, exactly; see :class:`Scaled`.

    Args:
      features: float [n, d].
      mask: optional bool [n]; masked rows are left out and zeroed.
      center: static; ``False`` keeps the features uncentred (``mean`` = 0).
    """
    f = jnp.asarray(features)
    n, d = f.shape
    w = sample_weights(n, mask, f.dtype)[:, None]
    count = jnp.sum(w)
    safe = jnp.maximum(count, 1)
    s0 = power_of_two_scale(jnp.max(jnp.abs(f) * w))
    a = f * s0 * w
    mean = jnp.zeros((d,), f.dtype)
    if center:
        mu = jnp.sum(a, axis=0, keepdims=True) / safe
        a = (a - mu) * w
        correction = jnp.sum(a, axis=0, keepdims=True) / safe  # the rounding left by the first pass
        a = (a - correction) * w
        mean = (mu + correction)[0] / s0
    s1 = power_of_two_scale(jnp.max(jnp.abs(a)))
    return Scaled(count, mean, s0 * s1, a * s1)


def gram(a) -> jax.Array:
    """AᵀA when n ≥ d, else the n×n kernel AAᵀ (the smaller side, chosen from static shapes)."""
    n, d = a.shape
    return matmul(a, a.T) if n < d else matmul(a.T, a)


class Spectrum(NamedTuple):
    """The thin SVD of scaled (centred) features A = U diag(σ) Vᵀ, m = min(n, d).

    Attributes:
      count, mean, scale, features: the :class:`Scaled` input A.
      basis: [n, m] U, orthonormal columns for the kept directions, zero
        columns for dropped ones.
      singular: [m] σ of A (of the *scaled* features), descending; 0 where
        dropped.
      keep: [m] bool, the direction is counted in the rank.
      rank_bound: [] int32, the structural rank min(count − centred, non-zero
        columns, m).
      svd: [] bool, the accurate route (SVD of A) was taken.
      band: [m] bool, the direction lies between 8·eps and 100·eps of σ_max
        (module notes): the working precision cannot resolve it (all False on
        the Gram route, which is taken only when nothing lies there).
    """

    count: jax.Array
    mean: jax.Array
    scale: jax.Array
    features: jax.Array
    basis: jax.Array
    singular: jax.Array
    keep: jax.Array
    rank_bound: jax.Array
    svd: jax.Array
    band: jax.Array

    @property
    def unresolved(self) -> jax.Array:
        """[] bool: some direction lies in the unresolved band."""
        return jnp.any(self.band)


def _rank_bound(scaled: Scaled, center: bool) -> jax.Array:
    a = scaled.features
    n, d = a.shape
    nonzero_cols = jnp.sum(jnp.any(a != 0, axis=0), dtype=jnp.int32)
    samples = scaled.count.astype(jnp.int32) - (1 if center else 0)
    return jnp.minimum(jnp.minimum(samples, nonzero_cols), min(n, d)).astype(jnp.int32)


def _eigen(g):
    """Eigenvalues (clipped at 0) and eigenvectors of a Gram matrix, descending."""
    e, vecs = safe_eigh(g)  # finite derivatives on repeated (zero) eigenvalues: see _linalg
    return jnp.maximum(e[::-1], 0), vecs[:, ::-1]


def _by_gram(a, e, vecs, bound, cutoff_fraction):
    """U and σ from the eigenpairs (descending) of the Gram matrix or kernel of ``a``."""
    n, d = a.shape
    keep = (e > cutoff_fraction * e[0]) & (jnp.arange(e.shape[0]) < bound)
    sigma = jnp.where(keep, jnp.sqrt(jnp.where(keep, e, 1)), 0)  # no sqrt'(0) = inf in a gradient
    if n < d:
        basis = vecs * keep[None, :]
    else:
        inv = jnp.where(keep, 1 / jnp.where(keep, sigma, 1), 0)
        basis = matmul(a, vecs) * inv[None, :]
    return basis, sigma, keep


def _by_svd(a, bound):
    n, d = a.shape
    u, s, _ = safe_svd(a)
    eps = jnp.finfo(a.dtype).eps
    index = jnp.arange(s.shape[0])
    keep = (s > eps * max(n, d) ** 0.5 * s[0]) & (index < bound)
    # a zero row of A (a masked sample) has a zero row of U: make it exact, not rounding noise
    rows = jnp.any(a != 0, axis=1)
    basis = u * keep[None, :] * rows[:, None]
    return basis, jnp.where(keep, s, 0), keep, unresolved_band(s, bound)


def unresolved_band(sigma, rank_bound=None) -> jax.Array:
    """[m] bool: singular values (descending) between 8·eps and 100·eps of the largest.

    Their relative error exceeds 1%, and the rank rule may drop them where a
    wider precision would keep them; below 8·eps they are indistinguishable
    from the rounding noise of an exactly rank-deficient matrix. Indices from
    ``rank_bound`` on are structural zeros and never count.
    """
    eps = jnp.finfo(sigma.dtype).eps
    ratio = sigma / jnp.where(sigma[0] > 0, sigma[0], 1)
    band = (ratio > 8 * eps) & (ratio < 100 * eps)
    if rank_bound is not None:
        band = band & (jnp.arange(sigma.shape[0]) < rank_bound)
    return band


def spectrum(features, mask=None, *, center: bool = True, method: str = "auto", gram_matrix=None) -> Spectrum:
    """Thin SVD of the centred (or raw) features, accurate in the working precision.

    Args:
      features: float [n, d], or a :class:`Scaled` from :func:`centre_and_scale`.
      mask: optional bool [n] (ignored for a :class:`Scaled` input, which is
        already masked).
      center: static; subtract the kept samples' mean first.
      method: static; ``"auto"`` (module notes), ``"gram"`` (always the
        eigendecomposition of AᵀA or AAᵀ, with the rank cut-off eps·max(n, d)
        on eigenvalues) or ``"svd"`` (always the SVD of A).
      gram_matrix: optional precomputed :func:`gram` of the scaled features.

    Returns:
      :class:`Spectrum`.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    scaled = features if isinstance(features, Scaled) else centre_and_scale(features, mask, center=center)
    a = scaled.features
    n, d = a.shape
    eps = jnp.finfo(a.dtype).eps
    bound = _rank_bound(scaled, center)

    def svd_route(_):
        basis, sigma, keep, band = _by_svd(a, bound)
        return basis, sigma, keep, jnp.array(True), band

    if method == "svd":
        basis, sigma, keep, used_svd, band = svd_route(None)
        return Spectrum(*scaled, basis, sigma, keep, bound, used_svd, band)
    e, vecs = _eigen(gram(a) if gram_matrix is None else gram_matrix)
    if method == "gram":
        basis, sigma, keep = _by_gram(a, e, vecs, bound, eps * max(n, d))
        band = ~keep & (jnp.arange(keep.shape[0]) < bound)  # dropped beyond the structural zeros
        return Spectrum(*scaled, basis, sigma, keep, bound, jnp.array(False), band)
    small = jnp.sum(e <= GRAM_RESOLUTION * e[0], dtype=jnp.int32)

    def gram_route(_):
        basis, sigma, keep = _by_gram(a, e, vecs, bound, GRAM_RESOLUTION)
        return basis, sigma, keep, jnp.array(False), jnp.zeros_like(keep)

    route = branch(small == min(n, d) - bound, gram_route, svd_route, None)
    basis, sigma, keep, used_svd, band = route
    return Spectrum(*scaled, basis, sigma, keep, bound, used_svd, band)


def half_logdet_identity_plus(b, coef, rank_bound=None, *, singular=None) -> jax.Array:
    """½ log det(I + coef²·BᵀB) = ½ Σ log(1 + coef²σ_j²) for B [p, q], from its singular values.

    The singular values σ of B come from its SVD, never from BᵀB, so they keep
    their digits whatever B's conditioning. Those at or below
    √max(p, q)·eps·σ_max, and all from index ``rank_bound`` on, count as
    exactly zero: a large ``coef`` would otherwise turn rounding noise in B's
    null space into log terms of order log(coef·eps·σ_max). Each term is
    log1p(x²) with x = coef·σ, or 2·log x + log1p(1/x²) when x > 1, so
    neither x² nor its logarithm overflows.

    Args:
      b: float [p, q].
      coef: scalar ≥ 0.
      rank_bound: optional int: B's rank is at most this (structural zeros).
      singular: optional precomputed singular values of B (descending).

    Returns:
      Scalar.
    """
    p, q = b.shape
    sigma = jnp.linalg.svd(b, compute_uv=False) if singular is None else singular
    eps = jnp.finfo(b.dtype).eps
    keep = sigma > eps * max(p, q) ** 0.5 * sigma[0]
    if rank_bound is not None:
        keep = keep & (jnp.arange(sigma.shape[0]) < rank_bound)
    x = coef * jnp.where(keep, sigma, 0)
    big = x > 1
    safe = jnp.where(big, x, 1)
    terms = jnp.where(big, 2 * jnp.log(safe) + jnp.log1p(1 / (safe * safe)), jnp.log1p(x * x))
    return 0.5 * jnp.sum(terms)
