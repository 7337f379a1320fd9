"""H-score (Bao et al., ICIP 2019) and shrinkage H-score (Ibrahim et al., ECML-PKDD 2022).

Both scores are traces of the form ``tr(Σ⁻¹ B)`` with the feature covariance
Σ and the between-class covariance B = cov(E[f|y]) = Σ_c (n_c/n)(μ_c − μ)(μ_c − μ)ᵀ.
With the centred (masked) features F_c, the class sums s_c = Σ_{i: yᵢ=c} F_c[i]
and the thin SVD F_c = U diag(σ) Vᵀ (λ = σ², the eigenvalues of the centred
Gram matrix C = F_cᵀF_c; :func:`jaxtransfer_kernels.spectrum`, which keeps
float32 accurate on ill-conditioned features),

    B = Σ_c s_c s_cᵀ / (n n_c),   U = F_c V diag(λ)^{-1/2},

so that both scores become

    score = Σ_c Σ_j g_j (Σ_{i: yᵢ=c} U[i, j])² / n_c,

with a spectral weight g_j ∈ [0, 1] per eigen-direction: g_j = 1 on the kept
directions for the H-score (pseudo-inverse), and
g_j = (1−α)λ_j / ((1−α)λ_j + α·m·n) for the shrinkage H-score. The score is a
sum of squares with non-negative weights, so it is never negative, in any
precision. U and g depend on the source alone and are built once per source
(``prepare``); a target costs one one-hot matrix product (``finish``).

Gradients: U comes from the spectrum's rank-fixed factorisation
(:func:`jaxtransfer_kernels.safe_eigh`/``safe_svd``), and g multiplies the
squared class sums (no √g, whose derivative is infinite at g = 0: a dropped
direction, or α = 1), so ``jax.grad`` is finite for dead units, duplicated
or constant columns and n < d. At a rank change (a column leaving zero) the
exact derivative of the pseudo-inverse does not exist; the gradient is that
of the score with the rank held fixed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtransfer_kernels import Spectrum, label_counts, matmul, sample_weights, spectrum

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import (
    as_features,
    as_labels,
    check_cells,
    check_same_samples,
    is_concrete,
    take_options,
    to_array,
)

__all__ = ["hscore", "shrinkage_hscore"]

_HSCORE_REFERENCE = (
    "Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas. An Information-Theoretic "
    "Approach to Transferability in Task Transfer Learning. ICIP 2019."
)
_SHRINKAGE_REFERENCE = (
    "S. Ibrahim, N. Ponomareva, R. Mazumder. Newer is not always better: Rethinking transferability "
    "metrics, their peculiarities, stability and performance. ECML-PKDD 2022."
)
_DEFAULTS = {"num_target_classes": None, "feature_mask": None}


# ----------------------------------------------------------------------------- validation


def _feature_mask(value, d: int):
    """An optional bool [d] feature mask (True keeps a column); at least one kept."""
    if value is None:
        return None
    arr = to_array("feature_mask", value)
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
            "targets",
            target,
            num_classes=opts["num_target_classes"],
            class_arg="num_target_classes",
            lead=lead,
        )
        check_same_samples("features", f.shape[-2], "targets", y.shape[-1])
        check_cells(
            f"{name}'s class indicators ({y.shape[-1]} samples × {classes} classes)", y.shape[-1] * classes
        )
        fmask = _feature_mask(opts["feature_mask"], f.shape[-1])
        return Checked(f, y, y.shape[-1], {"num_target_classes": classes}, {"feature_mask": fmask})

    return check


# ----------------------------------------------------------------------------- the shared spectrum


class _Source(NamedTuple):
    """The centred kept columns, factorised once (:func:`jaxtransfer_kernels.spectrum`).

    All sums are in the units of the scaled features (both scores are
    invariant to the features' scale).
    """

    spectrum: Spectrum
    dims: jax.Array  # [] kept feature columns p
    fourth: jax.Array  # [] Σᵢ ‖xᵢ‖⁴ of the centred kept samples


def _source(features, mask=None, feature_mask=None) -> _Source:
    """Centre the kept samples and columns, and factorise them (pure, traceable).

    Masked-out columns are zeroed: they are all-zero columns of the centred
    features, which the spectrum counts as structural zeros, so they add
    nothing to either score.
    """
    f = jnp.asarray(features)
    d = f.shape[1]
    keep_cols = jnp.ones((d,), f.dtype) if feature_mask is None else jnp.asarray(feature_mask).astype(f.dtype)
    spec = spectrum(f * keep_cols[None, :], mask)
    row_sq = jnp.sum(spec.features * spec.features, axis=1)
    return _Source(spec, jnp.sum(keep_cols), jnp.sum(row_sq * row_sq))


def ledoit_wolf_shrinkage(source: _Source) -> jax.Array:
    """The Ledoit–Wolf shrinkage α of scikit-learn's ``ledoit_wolf_shrinkage``, from a spectrum.

    See :func:`ledoit_wolf_from_moments`, which this calls with the spectrum's
    σ², its rank, tr C = ‖F_c‖²_F and Σᵢ ‖xᵢ‖⁴.
    """
    spec = source.spectrum
    e = spec.singular * spec.singular
    trace = jnp.sum(spec.features * spec.features)
    return ledoit_wolf_from_moments(e, spec.keep, trace, source.fourth, spec.count, source.dims)


def ledoit_wolf_from_moments(eigvals, keep, trace, fourth, count, dims) -> jax.Array:
    """Ledoit–Wolf α from the centred Gram matrix's eigenvalues and the fourth moment (traceable).

    With the centred samples xᵢ, S = (1/n) Σ xᵢxᵢᵀ, m = tr(S)/p:

        δ = ‖S − m·I‖²_F / p,   β = (Σᵢ ‖xᵢ‖⁴ / n − ‖S‖²_F) / (p·n),
        α = min(β, δ) / δ   (0 when δ = 0 or p = 1).

    β uses ‖xᵢxᵢᵀ‖²_F = ‖xᵢ‖⁴ and Σᵢ tr(xᵢxᵢᵀS) = n‖S‖²_F, so no n×p×p array
    is formed. δ is summed over the eigenvalues λ_j = σ_j²/n of S,
    Σ_j (λ_j − m)² = Σ_j ((λ_j − m)² − m²) + p·m² (the p − rank zero
    eigenvalues each add m²), which keeps its digits when S is nearly
    isotropic (the expanded form ‖S‖² − p·m² does not).

    Args:
      eigvals: [m] eigenvalues σ_j² of C = F_cᵀF_c (not divided by n).
      keep: [m] bool, the direction counts in the rank.
      trace: [] tr C.
      fourth: [] Σᵢ ‖xᵢ‖⁴ over the centred samples (in the units of ``eigvals``' square root).
      count: [] n.
      dims: [] p, the number of feature columns.
    """
    n = jnp.maximum(count, 1)
    p = dims
    e = eigvals / n
    m = trace / n / jnp.maximum(p, 1)
    delta = (jnp.sum(jnp.where(keep, (e - m) ** 2 - m * m, 0)) + p * m * m) / jnp.maximum(p, 1)
    frobenius = jnp.sum(e * e)
    beta = (fourth / n - frobenius) / (p * n)
    beta = jnp.clip(beta, 0, jnp.maximum(delta, 0))
    ok = (delta > 0) & (p > 1)
    return jnp.where(ok, beta / jnp.where(ok, delta, 1), 0)


def shrinkage_weights(eigvals, alpha, trace, dims) -> jax.Array:
    """The spectral weights g_j = (1−α)λ_j / ((1−α)λ_j + α·tr(C)/p) of the shrinkage H-score.

    ``eigvals`` are the eigenvalues λ_j of C = F_cᵀF_c (0 for dropped directions).
    """
    num = (1 - alpha) * eigvals
    den = num + alpha * trace / jnp.maximum(dims, 1)  # α·m·n
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def _class_energy(basis, weights, labels, mask, num_classes):
    """Σ_c Σ_j g_j (Σ_{i: yᵢ=c} U[i, j])² / n_c over the kept samples (empty classes add 0)."""
    n = labels.shape[0]
    w = sample_weights(n, mask, basis.dtype)
    classes = jnp.arange(num_classes, dtype=jnp.int32)
    onehot = (labels.astype(jnp.int32)[:, None] == classes[None, :]).astype(basis.dtype) * w[:, None]
    sums = matmul(onehot.T, basis)  # [C, m]
    counts = label_counts(labels, num_classes=num_classes, mask=mask)
    has = counts > 0
    per_class = jnp.sum(sums * sums * weights[None, :], axis=1) / jnp.where(has, counts, 1).astype(
        basis.dtype
    )
    return jnp.sum(jnp.where(has, per_class, 0))


class _Prepared(NamedTuple):
    basis: jax.Array  # [n, m] U (zero columns for dropped directions)
    weights: jax.Array  # [m] the spectral weights g
    unresolved: jax.Array  # [] bool, the spectrum has directions the working precision cannot resolve


def _finish(state, labels, mask, *, num_target_classes, **_):
    return _class_energy(state.basis, state.weights, labels, mask, num_target_classes)


# ----------------------------------------------------------------------------- H-score


def _prepare_hscore(features, mask, *, feature_mask, **_):
    spec = _source(features, mask, feature_mask).spectrum
    weights = spec.keep.astype(spec.basis.dtype)  # g = 1 on every kept direction: the pseudo-inverse
    return _Prepared(spec.basis, weights, spec.unresolved)


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
        unresolved=lambda state, **_: state.unresolved,
    )
)
def hscore(features, targets, *, num_target_classes=None, feature_mask=None, mask=None) -> jax.Array:
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
      targets: int [n] target labels in ``[0, num_target_classes)``.
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
      >>> from jaxtransfer import hscore
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
      negative or meaningless values). U comes from
      :func:`jaxtransfer_kernels.spectrum` (the SVD of the centred features
      where the Gram matrix would lose digits), so float32 stays within 1e-3
      of float64 for condition numbers up to 1e4, large means and any scale;
      singular values below √max(n, d)·eps·σ_max count as null, and features
      beyond float32's reach make an eager call warn
      (:class:`jaxtransfer.PrecisionWarning`): the pseudo-inverse weighs every
      direction alike. When n ≲ d the score saturates near C − 1 whatever the
      features: prefer :func:`shrinkage_hscore` there.
    """
    opts = {"num_target_classes": num_target_classes, "feature_mask": feature_mask}
    return run_pair(hscore.info, features, targets, mask, opts)


# ----------------------------------------------------------------------------- shrinkage H-score


def _prepare_shrinkage(features, mask, *, feature_mask, **_):
    source = _source(features, mask, feature_mask)
    spec = source.spectrum
    alpha = ledoit_wolf_shrinkage(source)
    lam = spec.singular * spec.singular
    g = shrinkage_weights(lam, alpha, jnp.sum(spec.features * spec.features), source.dims)
    # unresolved directions (σ² below 1e-8·σ_max²) are shrunk away unless α is about as small
    return _Prepared(spec.basis, g, spec.unresolved & (alpha < 1e-6))


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
        unresolved=lambda state, **_: state.unresolved,
    )
)
def shrinkage_hscore(
    features, targets, *, num_target_classes=None, feature_mask=None, mask=None
) -> jax.Array:
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
      targets: int [n] target labels in ``[0, num_target_classes)``.
      num_target_classes: static class count; inferred on eager calls.
      feature_mask: optional bool [d]; False columns are left out exactly (d
        becomes the number of kept columns in tr S/d and in α).
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar shrinkage H-score in the dtype of ``features``.

    Raises:
      ValueError, TypeError: as :func:`hscore`.

    Example:
      >>> from jaxtransfer import shrinkage_hscore
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
      (no n×d×d array). One factorisation per source (the spectrum of the
      centred features, as for :func:`hscore`) serves every target.
    """
    opts = {"num_target_classes": num_target_classes, "feature_mask": feature_mask}
    return run_pair(shrinkage_hscore.info, features, targets, mask, opts)
