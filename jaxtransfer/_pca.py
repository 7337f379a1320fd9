"""Principal components from the ridge kernel's centred Gram matrix (shared by GBC and NLEEP).

The centred scatter matrix C = Σᵢ wᵢ (fᵢ − f̄)(fᵢ − f̄)ᵀ comes from
:func:`jaxtransfer_kernels.source_stats` (the same statistics the ridge
estimators use), its eigendecomposition from ``jnp.linalg.eigh``. The number
of components k is static (it shapes arrays); two rules can drop components
inside those k without changing any shape — a dropped component's column of
scores is exactly zero:

* numerical rank: eigenvalues at or below ``eps·max(n, d)·e_max`` are rounding
  noise (zero-padded feature columns, n ≤ d, collinear features);
* ``explained_variance=q``: only the leading components whose preceding
  cumulative variance is below q·tr(C) are kept (the smallest m with
  Σ_{j≤m} e_j ≥ q·tr(C); scikit-learn's ``PCA(n_components=q)`` rule, up to
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
from jax import lax
from jaxtransfer_kernels import source_stats

from ._validation import is_concrete

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
      scores: [n, k] centred features projected on the components; masked rows
        and dropped components are exactly 0.
      variances: [k] principal variances e_j / n_kept in descending order; 0
        for dropped components.
      components: [d, k] orthonormal columns (0 for dropped components).
      count: [] number of kept samples (float).
      floor: [] the variance floor ``VARIANCE_FLOOR · variances[0]`` (1 when
        every feature is constant, where any positive floor gives the same
        scores).
    """

    scores: jax.Array
    variances: jax.Array
    components: jax.Array
    count: jax.Array
    floor: jax.Array


def num_components_arg(value, d: int) -> int:
    """Resolve the static component count: ``None`` → min(d, 64); larger than d → d."""
    if value is None:
        return min(d, DEFAULT_COMPONENTS)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"num_components must be a Python int (static), got {value!r}")
    if value < 1:
        raise ValueError(f"num_components must be at least 1, got {value}")
    return min(value, d)


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
      Cost O(n·d² + d³) (one d×d ``eigh``), once per source. Eigenvector signs
      are arbitrary; GBC and the diagonal mixture of NLEEP do not depend on them.
    """
    f = jnp.asarray(features)
    n, d = f.shape
    k = num_components
    stats = source_stats(f, mask)  # shift = masked mean; gram = Σ w (f − shift)(f − shift)ᵀ
    safe_n = jnp.maximum(stats.count, 1)
    # ``total`` is Σ w (f − shift), zero up to rounding: remove it so C is exactly centred
    mean = stats.shift + stats.total / safe_n
    scatter = stats.gram - jnp.outer(stats.total, stats.total) / safe_n
    e, v = jnp.linalg.eigh(scatter)
    e, v = e[::-1], v[:, ::-1]  # descending
    e = jnp.maximum(e, 0)
    keep = e[:k] > jnp.finfo(f.dtype).eps * max(n, d) * e[0]
    if explained_variance is not None:
        before = jnp.cumsum(e[:k]) - e[:k]
        keep = keep & (before < explained_variance * jnp.sum(e))
    components = jnp.where(keep[None, :], v[:, :k], 0)
    variances = jnp.where(keep, e[:k], 0) / safe_n
    w = jnp.ones((n,), f.dtype) if mask is None else jnp.asarray(mask).astype(f.dtype)
    centred = (f - mean[None, :]) * w[:, None]
    scores = jnp.matmul(centred, components, precision=lax.Precision.HIGHEST)
    top = variances[0]
    floor = jnp.where(top > 0, VARIANCE_FLOOR * top, 1).astype(f.dtype)
    return PCA(scores, variances, components, stats.count, floor)
