"""Linear MSE and Label MSE (Nguyen et al., UAI 2023): negative regularised ridge error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtransfer_kernels import centre_and_scale, ridge_factor, ridge_objective

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import as_features, check_same_samples, nonnegative_values, take_options

__all__ = ["label_mse", "linear_mse", "ridge_info", "ridge_inputs"]

_REFERENCE = (
    "C. V. Nguyen, H. M. Do, T. Hassner et al. Simple Transferability Estimation for Regression "
    "Tasks. UAI 2023."
)


def ridge_inputs(source_name: str, source, target, lead: int, source_vector: bool):
    """A ridge estimator's checked inputs ``(f, y)``: float [*lead, n, d] and [*lead, n, k], the same n.

    ``source`` is features, or predictions that may be a vector [*lead, n]
    when ``source_vector``; ``target`` is real values [*lead, n] or
    [*lead, n, k]; a vector becomes one column. Errors name ``source_name``
    and ``targets`` (``as_features``, ``check_same_samples``).
    """
    f = as_features(source_name, source, lead=lead, allow_vector=source_vector, what="d")
    y = as_features("targets", target, lead=lead, allow_vector=True, what="k")
    check_same_samples(source_name, f.shape[-2], "targets", y.shape[-2])
    return f, y


def _checker(name: str, source_name: str, source_vector: bool):
    def check(source, target, options, lead) -> Checked:
        opts = take_options(name, options, {"l2": None, "l2_relative": None})
        relative = opts["l2_relative"] is not None
        if relative and opts["l2"] is not None:
            raise TypeError(
                f"{name} takes l2 (absolute) or l2_relative (times the features' total variance), "
                f"not both; got l2={opts['l2']!r} and l2_relative={opts['l2_relative']!r}"
            )
        f, y = ridge_inputs(source_name, source, target, lead, source_vector)
        if relative:
            l2 = nonnegative_values("l2_relative", opts["l2_relative"], f.dtype)
        else:
            l2 = nonnegative_values("l2", 1.0 if opts["l2"] is None else opts["l2"], f.dtype)
        return Checked(f, y, f.shape[-2], {"relative": relative}, {"l2": l2})

    return check


def total_variance(features, mask=None) -> jax.Array:
    """tr cov(F) = (1/n)‖F − F̄‖²_F over the kept samples: the scale ``l2_relative`` is relative to.

    Computed from the centred features rescaled by a power of two (exact), so
    it neither overflows nor cancels.
    """
    scaled = centre_and_scale(features, mask)
    norm = jnp.sqrt(jnp.sum(scaled.features * scaled.features)) / scaled.scale
    return norm * norm / jnp.maximum(scaled.count, 1)


def _prepare(features, mask, *, l2, relative):
    """The factor and the absolute penalties (``l2`` times the total variance when ``relative``)."""
    if relative:
        l2 = l2 * total_variance(features, mask)
    # A single penalty may use a Cholesky factor; several need the eigendecomposition.
    return ridge_factor(features, mask, l2=l2 if jnp.ndim(l2) == 0 else None), l2


def _finish(state, targets, mask, *, l2, relative):
    factor, absolute = state
    return -jnp.sum(ridge_objective(factor, targets, absolute, mask), axis=-1)


def _unresolved(state, *, l2, relative):
    """Unresolved directions matter unless the smallest penalty shrinks them away (σ² ≪ nλ)."""
    factor, l2 = state
    spec = factor.spectrum
    eps = jnp.finfo(spec.features.dtype).eps
    penalty_root = jnp.sqrt(spec.count * jnp.min(l2)) * spec.scale  # √(nλ) in the scaled units
    return spec.unresolved & ~factor.cholesky & (penalty_root < 1e3 * eps * spec.singular[0])


def ridge_info(name, source, check, *, reference, prepare, finish, unresolved) -> EstimatorInfo:
    """The metadata of a ridge estimator (Linear/Label MSE and their held-out forms).

    Real-valued targets, higher is better, one source per ``score_matrix``
    step. ``source`` is ``"features"`` or ``"predictions"``; the other
    arguments are the :class:`EstimatorInfo` fields of the same names.
    """
    return EstimatorInfo(
        name=name,
        task="regression",
        source=source,
        target="values",
        orientation="higher_is_better",
        reference=reference,
        check=check,
        prepare=prepare,
        finish=finish,
        default_batch=one_source_per_step,
        unresolved=unresolved,
    )


def _info(name, source, source_name, source_vector):
    check = _checker(name, source_name, source_vector)
    return ridge_info(
        name, source, check, reference=_REFERENCE, prepare=_prepare, finish=_finish, unresolved=_unresolved
    )


@register(_info("linear_mse", "features", "features", False))
def linear_mse(features, targets, *, l2=None, l2_relative=None, mask=None) -> jax.Array:
    """Linear MSE: the negative regularised mean squared error of a linear map from features.

    .. math::
        \\mathrm{LinearMSE}(\\lambda) = -\\min_{A, b}\\; \\frac1n \\sum_{i=1}^n
        \\lVert y_i - A f_i - b \\rVert^2 + \\lambda \\lVert A \\rVert_F^2 ,

    the bias b unpenalised and the squared error summed over the k outputs.
    Higher (closer to 0) is better.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      targets: float [n] or [n, k], the target task's regression values.
      l2: λ ≥ 0, a scalar or a 1-D array of values (default 1.0, the paper's
        absolute penalty, when neither ``l2`` nor ``l2_relative`` is given).
        λ = 0 is least squares, minimum-norm when the features are
        collinear. An array gives one score per value from the same
        factorisation.
      l2_relative: ρ ≥ 0, a scalar or a 1-D array, instead of ``l2``: the
        penalty relative to the features' scale,
        λ = ρ·tr cov(F) = ρ·(1/n)‖F − F̄‖²_F, the total variance of the
        features over the kept samples (the trace of the centred Gram matrix
        over n). Multiplying the features by a constant, or padding them with
        zero columns, then leaves the score unchanged, so one ρ means the same
        amount of shrinkage on any backbone's features; with an absolute λ
        the same value is negligible for features of scale 100 and crushing
        for features of scale 0.01. Give ``l2`` or ``l2_relative``, not both.
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      A scalar, or [L] for L penalties, in the dtype of ``features``.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite values,
        negative or non-finite l2 or l2_relative, mismatched sample counts.
      TypeError: non-numeric input; both l2 and l2_relative given.

    Example:
      >>> import jaxtransfer as jt
      >>> round(float(jt.linear_mse([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0], l2=0.0)), 6)
      -0.0
      >>> f, y = [[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0]  # tr cov(F) = 2/3
      >>> a, b = jt.linear_mse(f, y, l2_relative=0.3), jt.linear_mse(f, y, l2=0.2)
      >>> bool(abs(a - b) < 1e-6)
      True

    References:
      Nguyen et al., "Simple Transferability Estimation for Regression Tasks",
      UAI 2023. The paper's released code leaves the penalty out of the score
      and averages over output dimensions; this follows the paper's formula.

    Notes:
      Centring removes b; what remains is ridge with penalty nλ. One
      factorisation of the source, its singular spectrum
      (:func:`jaxtransfer_kernels.spectrum`: the eigendecomposition of the
      centred Gram matrix, or of the n×n kernel when n < d, where that is
      accurate, else the SVD of the centred features), serves every target
      and every λ; a single λ > 0 with a well-conditioned C + nλI uses a
      Cholesky factor instead. The features are centred before any product
      and rescaled exactly by a power of two, and the residual is computed
      directly (a second pass over the samples), so float32 stays within 1e-3
      of float64 for condition numbers up to 1e4, any mean offset, feature
      scales from 1e-20 to 1e18, and nearly exact fits. Beyond that, at
      λ ≈ 0, an eager call warns (:class:`jaxtransfer.PrecisionWarning`).
      Gradients (``jax.grad`` in the features and targets) are finite at
      every λ ≥ 0, rank-deficient features included (dead units, duplicated
      or constant columns, n < d): the spectrum differentiates with the rank
      held fixed (:func:`jaxtransfer_kernels.safe_eigh`/``safe_svd``). For
      λ > 0 the objective is smooth and that is its exact derivative; at
      λ = 0 the pseudo-inverse is not differentiable where the rank changes
      (a zero column leaving zero), and the gradient is the derivative with
      the null space held fixed. Which factorisation runs (Cholesky when
      nλ ≥ √eps·tr(C), else the spectrum; chosen at run time) changes
      neither the value nor the gradient: both compute the same smooth
      function of the features (tested to 1e-9 in float64).
    """
    return run_pair(linear_mse.info, features, targets, mask, {"l2": l2, "l2_relative": l2_relative})


@register(_info("label_mse", "predictions", "source_predictions", True))
def label_mse(source_predictions, targets, *, l2=None, l2_relative=None, mask=None) -> jax.Array:
    """Label MSE: Linear MSE on the source model's predicted labels (Nguyen et al., UAI 2023).

    The same objective as :func:`linear_mse` with the source model's
    predictions on the target inputs (for keypoint regression, a predicted
    2-D point) in place of its features. Higher is better.

    Args:
      source_predictions: float [n] or [n, k'], the source model's outputs.
      targets: float [n] or [n, k].
      l2: λ ≥ 0, scalar or 1-D array (default 1.0 when neither ``l2`` nor
        ``l2_relative`` is given).
      l2_relative: ρ ≥ 0 instead of ``l2``: λ = ρ·tr cov of the predictions
        (see :func:`linear_mse`).
      mask: optional bool [n].

    Returns:
      A scalar, or [L] for L penalties.

    Example:
      >>> import jaxtransfer as jt
      >>> round(float(jt.label_mse([0.0, 1.0, 2.0, 3.0], [0.0, 2.0, 4.0, 6.0], l2=0.0)), 6)
      -0.0

    References:
      Nguyen et al., "Simple Transferability Estimation for Regression Tasks", UAI 2023.
    """
    opts = {"l2": l2, "l2_relative": l2_relative}
    return run_pair(label_mse.info, source_predictions, targets, mask, opts)
