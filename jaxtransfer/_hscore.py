"""H-score (Bao et al., ICIP 2019) and shrinkage H-score (Ibrahim et al., ECML-PKDD 2022).

Both scores are traces of the form ``tr(Σ⁻¹ B)`` with the feature covariance
Σ and the between-class covariance B = cov(E[f|y]) = Σ_c (n_c/n)(μ_c − μ)(μ_c − μ)ᵀ.
With the centred (masked) features F_c, the class sums s_c = Σ_{i: yᵢ=c} F_c[i]
and the eigendecomposition of the centred Gram matrix C = F_cᵀF_c = V diag(λ) Vᵀ
(or of the kernel K = F_cF_cᵀ = U diag(λ) Uᵀ when n < d),

    B = Σ_c s_c s_cᵀ / (n n_c),   U = F_c V diag(λ)^{-1/2},

so that both scores become

    score = Σ_c ‖Σ_{i: yᵢ=c} Q[i]‖² / n_c,   Q = U diag(√g),

with a spectral weight g_j ∈ [0, 1] per eigen-direction: g_j = 1 on the kept
directions for the H-score (pseudo-inverse), and
g_j = (1−α)λ_j / ((1−α)λ_j + α·m·n) for the shrinkage H-score. The score is a
sum of squares with non-negative weights, so it is never negative, in any
precision. Q depends on the source alone and is built once per source
(``prepare``); a target costs one one-hot matrix product (``finish``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import label_counts, source_stats

from ._estimator import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._options import take_options
from ._validation import _to_array, as_features, as_labels, check_same_samples, is_concrete

__all__ = ["hscore", "shrinkage_hscore"]

_HI = lax.Precision.HIGHEST
_HSCORE_REFERENCE = (
    "Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas. An Information-Theoretic "
    "Approach to Transferability in Task Transfer Learning. ICIP 2019."
)
_SHRINKAGE_REFERENCE = (
    "S. Ibrahim, N. Ponomareva, R. Mazumder. Newer is not always better: Rethinking transferability "
    "metrics, their peculiarities, stability and performance. ECML-PKDD 2022."
)
_DEFAULTS = {"num_target_classes": None, "feature_mask": None}


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HI)


# ----------------------------------------------------------------------------- validation


def _feature_mask(value, d: int):
    """An optional bool [d] feature mask (True keeps a column); at least one kept."""
    if value is None:
        return None
    arr = _to_array("feature_mask", value)
    if not (arr.dtype == bool or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"feature_mask must be a boolean array (True keeps a column), got dtype {arr.dtype}")
    if tuple(arr.shape) != (d,):
        raise ValueError(
            f"feature_mask must have shape [{d}] (one entry per feature column), got shape {list(arr.shape)}"
        )
    if is_concrete(arr):
        host = np.asarray(arr)
        if arr.dtype != bool and not np.isin(host, (0, 1)).all():
            raise ValueError("feature_mask must hold only 0/1 or True/False values")
        if not host.astype(bool).any():
            raise ValueError("feature_mask keeps no feature column; at least one is needed")
        return jnp.asarray(host.astype(bool))
    return arr.astype(bool)


def _checker(name: str):
    def check(source, target, options, lead) -> Checked:
        opts = take_options(name, options, _DEFAULTS)
        f = as_features("features", source, lead=lead)
        y, classes = as_labels(
            "labels",
            target,
            num_classes=opts["num_target_classes"],
            class_arg="num_target_classes",
            lead=lead,
        )
        check_same_samples("features", f.shape[-2], "labels", y.shape[-1])
        fmask = _feature_mask(opts["feature_mask"], f.shape[-1])
        return Checked(f, y, y.shape[-1], {"num_target_classes": classes}, {"feature_mask": fmask})

    return check


# ----------------------------------------------------------------------------- the shared spectrum


class Spectrum(NamedTuple):
    """The centred source, factorised once.

    ``basis`` U is [n, m] with orthonormal columns spanning the centred
    features' column space (m = d, or m = n when n < d); column j has
    eigenvalue ``eigvals[j]`` of C = F_cᵀF_c (or K = F_cF_cᵀ), eigenvalues
    below the rank cut-off set to exactly 0 and their columns to 0.
    """

    count: jax.Array  # [] kept samples n
    dims: jax.Array  # [] kept feature columns p
    trace: jax.Array  # [] tr(S), S = C / n the (1/n) covariance of the kept columns
    fourth: jax.Array  # [] Σᵢ ‖xᵢ‖⁴ of the centred kept samples
    frobenius: jax.Array  # [] ‖S‖²_F
    eigvals: jax.Array  # [m] ≥ 0
    basis: jax.Array  # [n, m]
    padded: jax.Array  # [] how many of the m eigenvalues belong to masked-out columns (primal form)


def spectrum(features, mask=None, feature_mask=None) -> Spectrum:
    """Centre the kept samples and columns and factorise them (pure, traceable).

    Masked-out columns are zeroed, so their rows and columns of C are exactly
    zero; in the primal form that block is replaced by m·n·I (m the mean kept
    variance) before the eigendecomposition. The block stays decoupled, its
    eigenvectors meet no data (F_c v = 0 there), and its eigenvalues equal
    the shrinkage target, so it adds exactly nothing to either score or to the
    Ledoit–Wolf dispersion. The rank cut-off ``eps·max(n, p)·max(λ)`` is
    taken relative to the data's scale.
    """
    f = jnp.asarray(features)
    n_rows, d = f.shape
    dtype = f.dtype
    keep_cols = jnp.ones((d,), dtype) if feature_mask is None else jnp.asarray(feature_mask).astype(dtype)
    f = f * keep_cols[None, :]
    stats = source_stats(f, mask)
    w = jnp.ones((n_rows,), dtype) if mask is None else jnp.asarray(mask).astype(dtype)
    count = stats.count
    safe_n = jnp.maximum(count, 1)
    dims = jnp.sum(keep_cols)
    fc = (f - stats.shift[None, :]) * w[:, None]
    row_sq = jnp.sum(fc * fc, axis=1)
    trace = jnp.sum(row_sq) / safe_n
    fourth = jnp.sum(row_sq * row_sq)
    mean_var = trace / jnp.maximum(dims, 1)
    eps = jnp.finfo(dtype).eps
    size = jnp.maximum(count, dims)
    if n_rows < d:  # dual: the n×n kernel has the same non-zero eigenvalues as C
        lam, u = jnp.linalg.eigh(_mm(fc, fc.T))
        lam = jnp.maximum(lam, 0)
        frobenius = jnp.sum((lam / safe_n) ** 2)
        keep = lam > eps * size * jnp.max(lam)
        lam = jnp.where(keep, lam, 0)
        basis = u * keep.astype(dtype)[None, :]
        padded = jnp.zeros((), dtype)
    else:
        gram = stats.gram - jnp.outer(stats.total, stats.total) / safe_n
        frobenius = jnp.sum((gram / safe_n) ** 2)
        gram = gram + jnp.diag((1 - keep_cols) * mean_var * count)
        lam, v = jnp.linalg.eigh(gram)
        lam = jnp.maximum(lam, 0)
        keep = lam > eps * size * jnp.max(lam)
        lam = jnp.where(keep, lam, 0)
        inv_sqrt = jnp.where(keep, lax.rsqrt(jnp.where(keep, lam, 1)), 0)
        basis = _mm(fc, v) * inv_sqrt[None, :]
        padded = d - dims
    return Spectrum(count, dims, trace, fourth, frobenius, lam, basis, padded)


def ledoit_wolf_shrinkage(spec: Spectrum) -> jax.Array:
    """The Ledoit–Wolf shrinkage α of scikit-learn's ``ledoit_wolf_shrinkage``, from a spectrum.

    With the centred samples xᵢ, S = (1/n) Σ xᵢxᵢᵀ, m = tr(S)/p:

        δ = ‖S − m·I‖²_F / p,   β = (Σᵢ ‖xᵢ‖⁴ / n − ‖S‖²_F) / (p·n),
        α = min(β, δ) / δ   (0 when δ = 0 or p = 1).

    β uses ‖xᵢxᵢᵀ‖²_F = ‖xᵢ‖⁴ and Σᵢ tr(xᵢxᵢᵀS) = n‖S‖²_F, so no n×p×p array
    is formed. δ is summed over eigenvalues, (λ_j/n − m)², which keeps its
    digits when S is nearly isotropic (the expanded form ‖S‖² − p·m² does
    not); in the dual form the p − n eigenvalues missing from the kernel are
    zeros of S and add (p − n)·m².
    """
    n = jnp.maximum(spec.count, 1)
    p = spec.dims
    m = spec.trace / jnp.maximum(p, 1)
    e = spec.eigvals / n
    # primal: the masked block's eigenvalues equal m and add nothing; dual: add the missing zeros
    missing = p - e.shape[0] + spec.padded
    delta = (jnp.sum((e - m) ** 2) + missing * m * m) / jnp.maximum(p, 1)
    beta = (spec.fourth / n - spec.frobenius) / (p * n)
    beta = jnp.clip(beta, 0, jnp.maximum(delta, 0))
    ok = (delta > 0) & (p > 1)
    return jnp.where(ok, beta / jnp.where(ok, delta, 1), 0)


def _class_energy(q, labels, mask, num_classes):
    """Σ_c ‖Σ_{i: yᵢ=c} Q[i]‖² / n_c over the kept samples (empty classes add 0)."""
    n = labels.shape[0]
    w = jnp.ones((n,), q.dtype) if mask is None else jnp.asarray(mask).astype(q.dtype)
    classes = jnp.arange(num_classes, dtype=jnp.int32)
    onehot = (labels.astype(jnp.int32)[:, None] == classes[None, :]).astype(q.dtype) * w[:, None]
    sums = _mm(onehot.T, q)  # [C, m]
    counts = label_counts(labels, num_classes=num_classes, mask=mask)
    has = counts > 0
    per_class = jnp.sum(sums * sums, axis=1) / jnp.where(has, counts, 1).astype(q.dtype)
    return jnp.sum(jnp.where(has, per_class, 0))


def _finish(q, labels, mask, *, num_target_classes, **_):
    return _class_energy(q, labels, mask, num_target_classes)


# ----------------------------------------------------------------------------- H-score


def _prepare_hscore(features, mask, *, feature_mask, **_):
    spec = spectrum(features, mask, feature_mask)
    return spec.basis  # g = 1 on every kept direction: the pseudo-inverse


@register(
    EstimatorInfo(
        name="hscore",
        task="classification",
        source="features",
        target="labels",
        orientation="higher_is_better",
        reference=_HSCORE_REFERENCE,
        check=_checker("hscore"),
        prepare=_prepare_hscore,
        finish=_finish,
        default_batch=one_source_per_step,
    )
)
def hscore(features, labels, *, num_target_classes=None, feature_mask=None, mask=None) -> jax.Array:
    """H-score: how much of the feature covariance the class means explain.

    .. math::
        H = \\operatorname{tr}\\big(\\operatorname{cov}(f)^{+}\\,
            \\operatorname{cov}(\\mathbb{E}[f \\mid y])\\big), \\qquad
        \\operatorname{cov}(\\mathbb{E}[f \\mid y]) = \\sum_c \\frac{n_c}{n}
            (\\mu_c - \\mu)(\\mu_c - \\mu)^\\top ,

    both covariances with the 1/n normalisation (the ratio makes the choice
    immaterial as long as both use the same one), ⁺ the pseudo-inverse.
    0 ≤ H ≤ min(C − 1, rank); higher is better.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      labels: int [n] in ``[0, num_target_classes)``.
      num_target_classes: static class count; inferred on eager calls.
      feature_mask: optional bool [d]; False columns (zero padding, so that
        sources of different widths share one batched call) are left out
        exactly, as if the columns were dropped.
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar H-score in the dtype of ``features``.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite values,
        labels out of range, mismatched sample counts, a feature mask that
        keeps nothing.
      TypeError: non-numeric features, non-integer labels, unknown options.

    Example:
      >>> from jaxtransfer._hscore import hscore
      >>> f = [[-1.0, 0.0], [-1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
      >>> round(float(hscore(f, [0, 0, 1, 1])), 5)  # column 0 separates the classes
      1.0

    References:
      Bao et al., "An Information-Theoretic Approach to Transferability in Task
      Transfer Learning", ICIP 2019.

    Notes:
      Computed as Σ_c ‖Σ_{i∈c} U_i‖²/n_c with U the orthonormal left singular
      vectors of the centred features (module docstring): a sum of squares,
      never negative (a pseudo-inverse in float32, and the element-wise
      product some implementations use in place of the matrix product, give
      negative or meaningless values). Directions with eigenvalue below
      ``eps·max(n, d)·max(λ)`` of the centred Gram matrix count as null. When
      n ≲ d the score saturates near C − 1 whatever the features: prefer
      :func:`shrinkage_hscore` there.
    """
    opts = {"num_target_classes": num_target_classes, "feature_mask": feature_mask}
    return run_pair(hscore.info, features, labels, mask, opts)


# ----------------------------------------------------------------------------- shrinkage H-score


def _prepare_shrinkage(features, mask, *, feature_mask, **_):
    spec = spectrum(features, mask, feature_mask)
    alpha = ledoit_wolf_shrinkage(spec)
    lam = spec.eigvals
    target = spec.trace / jnp.maximum(spec.dims, 1) * spec.count  # m·n
    num = (1 - alpha) * lam
    den = num + alpha * target
    ok = den > 0
    g = jnp.where(ok, num / jnp.where(ok, den, 1), 0)
    return spec.basis * jnp.sqrt(g)[None, :]


@register(
    EstimatorInfo(
        name="shrinkage_hscore",
        task="classification",
        source="features",
        target="labels",
        orientation="higher_is_better",
        reference=_SHRINKAGE_REFERENCE,
        check=_checker("shrinkage_hscore"),
        prepare=_prepare_shrinkage,
        finish=_finish,
        default_batch=one_source_per_step,
    )
)
def shrinkage_hscore(features, labels, *, num_target_classes=None, feature_mask=None, mask=None) -> jax.Array:
    """Shrinkage H-score: the H-score with a Ledoit–Wolf covariance.

    .. math::
        H_\\alpha = \\operatorname{tr}\\big(\\Sigma_\\alpha^{-1}\\,(1-\\alpha)\\,
            \\operatorname{cov}(\\mathbb{E}[f \\mid y])\\big), \\qquad
        \\Sigma_\\alpha = (1-\\alpha)\\,S + \\alpha\\,\\frac{\\operatorname{tr} S}{d}\\,I ,

    S the 1/n (maximum-likelihood) covariance of the centred features, α the
    Ledoit–Wolf shrinkage in closed form (exactly scikit-learn's
    ``ledoit_wolf_shrinkage``, computed in JAX), cov(E[f|y]) =
    Σ_c (n_c/n)(μ_c − μ)(μ_c − μ)ᵀ. Higher is better.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      labels: int [n] in ``[0, num_target_classes)``.
      num_target_classes: static class count; inferred on eager calls.
      feature_mask: optional bool [d]; False columns are left out exactly (d
        becomes the number of kept columns in tr S/d and in α).
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar shrinkage H-score in the dtype of ``features``.

    Raises:
      ValueError, TypeError: as :func:`hscore`.

    Example:
      >>> from jaxtransfer._hscore import shrinkage_hscore
      >>> f = [[-1.0, 0.0], [-1.1, 1.0], [1.0, 0.1], [1.2, 1.0], [0.9, 0.4], [-0.8, 0.6]]
      >>> round(float(shrinkage_hscore(f, [0, 0, 1, 1, 1, 0])), 4)
      0.8647

    References:
      Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking
      transferability metrics, their peculiarities, stability and
      performance", ECML-PKDD 2022. Ledoit & Wolf, "A well-conditioned
      estimator for large-dimensional covariance matrices", J. Multivariate
      Analysis 2004.

    Notes:
      Unlike the H-score it does not saturate when n ≲ d: on noise features
      α grows towards 1 and the score stays near 0. Some implementations
      (e.g. transformer-ranker's, whose iris test value is 1.177842480406727)
      normalise cov(E[f|y]) by 1/(n − 1) while S uses 1/n; their value is this
      one times n/(n − 1). The Σᵢ‖xᵢ‖⁴ term of α is a sum of squared row norms
      (no n×d×d array). One eigendecomposition of the centred d×d Gram matrix
      (or the n×n kernel when n < d) per source serves every target.
    """
    opts = {"num_target_classes": num_target_classes, "feature_mask": feature_mask}
    return run_pair(shrinkage_hscore.info, features, labels, mask, opts)
