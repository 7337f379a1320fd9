"""GBC, the Gaussian Bhattacharyya coefficient (Pándy et al., CVPR 2022)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtransfer_kernels import label_counts, soft_joint_histogram

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import as_features, as_labels, check_cells, check_same_samples, take_options
from ._pca import explained_variance_arg, num_components_arg, pca

__all__ = ["gbc"]

_REFERENCE = (
    "M. Pándy, A. Agostinelli, J. Uijlings, V. Ferrari, T. Mensink. Transferability Estimation "
    "using Bhattacharyya Class Separability. CVPR 2022."
)
_DEFAULTS = {"num_components": None, "explained_variance": None, "num_target_classes": None}


def _check(source, target, options, lead) -> Checked:
    opts = take_options("gbc", options, _DEFAULTS)
    f = as_features("features", source, lead=lead)
    y, cy = as_labels(
        "targets", target, num_classes=opts["num_target_classes"], class_arg="num_target_classes", lead=lead
    )
    check_same_samples("features", f.shape[-2], "targets", y.shape[-1])
    k = num_components_arg(opts["num_components"], f.shape[-1])
    q = explained_variance_arg(opts["explained_variance"], f.dtype)
    check_cells(f"gbc's class-pair table ({cy} × {cy} classes × {k} components)", cy * cy * k)
    static = {"num_components": k, "num_target_classes": cy}
    return Checked(f, y, y.shape[-1], static, {"explained_variance": q})


def _prepare(features, mask, *, num_components, explained_variance, **_):
    """Source-only work: the PCA scores and the variance floor (:class:`PCA`)."""
    return pca(features, mask, num_components=num_components, explained_variance=explained_variance)


def _class_moments(z, y, mask, num_classes):
    """Per-class counts [C], means [C, k] and population variances [C, k] (two passes)."""
    counts = label_counts(y, num_classes=num_classes, mask=mask)
    present = counts > 0
    safe = jnp.where(present, counts, 1).astype(z.dtype)[:, None]
    means = soft_joint_histogram(z, y, num_y=num_classes, mask=mask).T / safe  # [C, k]
    dev = z - jnp.take(means, y, axis=0)  # masked rows: weight 0 below
    var = soft_joint_histogram(dev * dev, y, num_y=num_classes, mask=mask).T / safe
    return present, means, var


def _finish(state, y, mask, *, num_target_classes, **_):
    present, means, var = _class_moments(state.scores, y, mask, num_target_classes)
    return gbc_from_moments(present, means, var, state.floor)


def gbc_from_moments(present, means, var, floor) -> jax.Array:
    """GBC from per-class presence [C], means [C, k] and variances [C, k] in PCA space (traceable).

    Variances are floored at ``floor``; shared with the streamed route (:mod:`jaxtransfer.streaming`).
    """
    v = jnp.maximum(var, floor)  # [C, k]
    log_v = jnp.log(v)
    avg = 0.5 * (v[:, None, :] + v[None, :, :])  # Σ = (Σ_i + Σ_j)/2, [C, C, k]
    diff = means[:, None, :] - means[None, :, :]
    mahalanobis = jnp.sum(diff * diff / avg, axis=-1)
    log_det_ratio = jnp.sum(jnp.log(avg) - 0.5 * (log_v[:, None, :] + log_v[None, :, :]), axis=-1)
    distance = 0.125 * mahalanobis + 0.5 * log_det_ratio  # D_B, [C, C]
    c = present.shape[0]
    pairs = present[:, None] & present[None, :] & ~jnp.eye(c, dtype=bool)
    return -jnp.sum(jnp.where(pairs, jnp.exp(-distance), 0))


@register(
    EstimatorInfo(
        name="gbc",
        task="classification",
        source="features",
        target="labels",
        orientation="higher_is_better",
        reference=_REFERENCE,
        check=_check,
        prepare=_prepare,
        finish=_finish,
        default_batch=one_source_per_step,
    )
)
def gbc(
    features,
    targets,
    *,
    num_components=None,
    explained_variance=None,
    num_target_classes=None,
    mask=None,
) -> jax.Array:
    """GBC: minus the summed Bhattacharyya coefficients between per-class Gaussians.

    The features are projected on their leading principal components; class c
    is modelled by N(μ_c, diag(σ_c²)) (the class mean and the population
    variance, ddof = 0, per component). For classes i ≠ j, with the diagonal
    Σ = (Σ_i + Σ_j)/2,

    .. math::
        D_B(i, j) = \\tfrac18 (\\mu_i-\\mu_j)^\\top \\Sigma^{-1} (\\mu_i-\\mu_j)
          + \\tfrac12 \\ln \\frac{\\det\\Sigma}{\\sqrt{\\det\\Sigma_i \\det\\Sigma_j}}, \\qquad
        \\mathrm{GBC} = -\\sum_{i \\ne j} e^{-D_B(i, j)},

    the sum over ordered pairs (each unordered pair counted twice), as in the
    paper and its reference code. GBC ∈ [−C(C−1), 0]; higher (closer to 0,
    better separated classes) is better.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      targets: int [n], target labels in ``[0, num_target_classes)``.
      num_components: static number k of principal components; default
        min(d, 64) (the paper's 64); values above d mean d.
      explained_variance: optional fraction q in (0, 1]: keep only the leading
        components (at most k) explaining a fraction q of the variance; the
        rest become zero columns, which change nothing. Default: all k.
      num_target_classes: static class count; inferred on eager calls.
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar GBC in the dtype of ``features``.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite features,
        labels out of range, mismatched sample counts, num_components < 1,
        explained_variance outside (0, 1].
      TypeError: non-numeric features, non-integer labels, a non-int
        num_components, unknown options.

    Example:
      >>> import numpy as np
      >>> from jaxtransfer import gbc
      >>> f = np.array([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [9.0, 9.0], [9.5, 9.0]])
      >>> float(gbc(f[:4], np.array([0, 0, 1, 1])))  # same distribution: BC = 1 per ordered pair
      -2.0
      >>> round(float(gbc(f, np.array([0, 0, 1, 1, 2, 2]))), 6)  # class 2 far away: BC ≈ 0
      -2.0

    References:
      Pándy, Agostinelli, Uijlings, Ferrari, Mensink, "Transferability
      Estimation using Bhattacharyya Class Separability", CVPR 2022. Their
      code's default is a spherical covariance; this is the diagonal variant.

    Notes:
      Variances are floored at 1e-6 times the largest principal variance
      (the reference code uses an absolute 1e-4, which is not scale
      invariant), so GBC is unchanged by rescaling, translating or rotating
      the features and by zero-padded feature columns. A class with a single
      sample has variance 0, hence the floor, and looks well separated.
      Classes absent from the sample (or masked out) are left out of the sum;
      with fewer than two classes present GBC is 0. All pairs are one
      [C, C, k] array operation (memory C²·k per target). The PCA (the
      spectrum of the centred features, :func:`jaxtransfer_kernels.spectrum`,
      accurate in float32 for small principal variances) is done once per
      source in ``score_matrix``.
    """
    opts = {
        "num_components": num_components,
        "explained_variance": explained_variance,
        "num_target_classes": num_target_classes,
    }
    return run_pair(gbc.info, features, targets, mask, opts)
