"""Principal components from the features' singular spectrum (shared by GBC and NLEEP).

The thin SVD of the centred features F_c = U diag(σ) Vᵀ comes from
:func:`jaxtransfer_kernels.spectrum` (the factorisation the ridge estimators
use); the principal variances are σ²/n. The number of components k is static
(it shapes arrays); two rules can drop components inside those k without
changing any shape — a dropped component's column of scores is exactly zero:

* numerical rank: the spectrum's rank rule (singular values at or below
  √max(n, d)·eps·σ_max are rounding noise: zero-padded feature columns,
  n ≤ d, collinear features);
* ``explained_variance=q``: only the leading components whose preceding
  cumulative variance is below q·tr(C) are kept (the smallest m with
  Σ_{j≤m} σ_j² ≥ q·tr(C); scikit-learn's ``PCA(n_components=q)`` rule, up to
  ties).

An all-zero column is harmless downstream: every class (GBC) or mixture
component (NLEEP) has mean 0 and the floored variance there, so it adds the
same amount to every likelihood and nothing to a Bhattacharyya distance. That
is why zero-padded feature columns leave both scores unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtransfer_kernels import spectrum

from ._checks import is_concrete, static_int

__all__ = [
    "DEFAULT_COMPONENTS",
    "PCA",
    "VARIANCE_FLOOR",
    "explained_variance_arg",
    "num_components_arg",
    "pca",
]

DEFAULT_COMPONENTS = 64
"""Default cap on the number of principal components (Pándy et al. reduce to 64)."""

VARIANCE_FLOOR = 1e-6
"""Per-dimension variances are floored at this fraction of the largest principal variance."""


class PCA(NamedTuple):
    """Principal-component scores of one (masked) sample.

    Attributes:
      scores: [n, k] centred features projected on the components, in the
        units of the exactly rescaled features (a power of two times the
        input's; GBC and NLEEP do not depend on the scale); masked rows and
        dropped components are exactly 0.
      variances: [k] principal variances σ_j²/n_kept in the same units, in
        descending order; 0 for dropped components.
      count: [] number of kept samples (float).
      floor: [] the variance floor ``VARIANCE_FLOOR · variances[0]`` (1 when
        every feature is constant, where any positive floor gives the same
        scores).

    Components in the spectrum's unresolved band (σ below 100·eps·σ_max) have
    variances under 1e-10 of the largest, below the variance floor, so they
    cannot change GBC or NLEEP.
    """

    scores: jax.Array
    variances: jax.Array
    count: jax.Array
    floor: jax.Array


def num_components_arg(value, d: int) -> int:
    """Resolve the static component count: ``None`` → min(d, 64); larger than d → d."""
    if value is None:
        return min(d, DEFAULT_COMPONENTS)
    return min(static_int("num_components", value, 1), d)


def explained_variance_arg(value, dtype):
    """``None``, or a fraction q in (0, 1] as a scalar array of ``dtype``."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)) or jnp.ndim(value) != 0:
        raise TypeError(f"explained_variance must be None or a number in (0, 1], got {value!r}")
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.number) or jnp.iscomplexobj(arr):
        raise TypeError(f"explained_variance must be a real number, got dtype {arr.dtype}")
    if is_concrete(arr) and not 0 < float(arr) <= 1:
        raise ValueError(f"explained_variance must lie in (0, 1], got {float(arr)}")
    return arr.astype(dtype)


def pca(features, mask=None, *, num_components: int, explained_variance=None) -> PCA:
    """Project features on their leading principal components.

    Args:
      features: float [n, d].
      mask: optional bool [n]; masked rows are left out of the mean and the
        covariance, and their scores are 0.
      num_components: static k ≤ d.
      explained_variance: optional fraction q in (0, 1] (may be traced): keep
        the leading components explaining a fraction q of the total variance,
        at most k; the others become zero columns.

    Returns:
      :class:`PCA`.

    Notes:
      The scores are U_k diag(σ_k) from :func:`jaxtransfer_kernels.spectrum`
      (the eigendecomposition of the centred Gram matrix where that is
      accurate, else the SVD of the centred features), so small principal
      variances keep their digits in float32. Cost O(n·d·min(n, d)) once per
      source. Component signs are arbitrary; GBC and the diagonal mixture of
      NLEEP do not depend on them.
    """
    spec = spectrum(features, mask)
    k = num_components
    pad = max(0, k - spec.singular.shape[0])  # n < k: the components past the n-th are zero columns
    if pad:
        spec = spec._replace(
            basis=jnp.pad(spec.basis, ((0, 0), (0, pad))),
            singular=jnp.pad(spec.singular, (0, pad)),
            keep=jnp.pad(spec.keep, (0, pad)),
        )
    sigma = spec.singular[:k]
    keep = spec.keep[:k]
    if explained_variance is not None:
        e = sigma * sigma
        before = jnp.cumsum(e) - e
        keep = keep & (before < explained_variance * jnp.sum(spec.features * spec.features))
    sigma = jnp.where(keep, sigma, 0)
    scores = spec.basis[:, :k] * sigma[None, :]
    variances = sigma * sigma / jnp.maximum(spec.count, 1)
    top = variances[0]
    floor = jnp.where(top > 0, VARIANCE_FLOOR * top, 1).astype(variances.dtype)
    return PCA(scores, variances, spec.count, floor)
