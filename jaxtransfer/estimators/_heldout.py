"""Held-out Linear MSE and Label MSE: ridge error on samples the fit has not seen, λ chosen by it."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtransfer_kernels import CV_METHODS, ridge_cv_curve, ridge_cv_factor

from ._base import Checked, register, run_pair
from ._checks import choice, nonnegative_values, take_options
from ._linear_mse import ridge_info, ridge_inputs

__all__ = ["HeldoutDetails", "heldout_label_mse", "heldout_linear_mse", "heldout_linear_mse_details"]

_REFERENCE = (
    "D. M. Allen. The Relationship between Variable Selection and Data Augmentation and a Method for "
    "Prediction. Technometrics 1974 (leave-one-out); G. H. Golub, M. Heath, G. Wahba. Generalized "
    "Cross-Validation as a Method for Choosing a Good Ridge Parameter. Technometrics 1979 (GCV); "
    "on the Linear/Label MSE of C. V. Nguyen et al., UAI 2023."
)

L2_GRID = np.logspace(-6, 2, 25)
"""The default relative penalties ρ: 1e-6 to 1e2, three per decade (λ = ρ·the features' total variance)."""


class HeldoutDetails(NamedTuple):
    """Held-out Linear MSE of one pair, with the chosen penalty and the whole curve.

    Attributes:
      score: [] −min over the grid of ``mse`` (what :func:`heldout_linear_mse` returns).
      l2: [] the chosen λ in the units of :func:`jaxtransfer.linear_mse`
        (``l2_relative`` times the features' total variance).
      l2_relative: [] the chosen ρ, an entry of the grid.
      index: [] int32, its position in the grid (the first minimum).
      mse: [L] the estimated held-out mean squared error (summed over outputs) at every ρ.
      l2_grid: [L] the grid in absolute λ.
      total_variance: [] the features' total variance tr(cov F) (1/n covariance of the kept samples).
    """

    score: jax.Array
    l2: jax.Array
    l2_relative: jax.Array
    index: jax.Array
    mse: jax.Array
    l2_grid: jax.Array
    total_variance: jax.Array


def _grid(value, dtype) -> jax.Array:
    if value is None:
        return jnp.asarray(L2_GRID, dtype)
    grid = nonnegative_values("l2_grid", value, dtype)
    return grid.reshape(-1)


def _checker(name: str, source_name: str, source_vector: bool):
    def check(source, target, options, lead) -> Checked:
        opts = take_options(name, options, {"method": "loo", "l2_grid": None})
        method = choice("method", opts["method"], CV_METHODS)
        f, y = ridge_inputs(source_name, source, target, lead, source_vector)
        return Checked(f, y, f.shape[-2], {"method": method}, {"l2_grid": _grid(opts["l2_grid"], f.dtype)})

    return check


def _prepare(features, mask, *, method, l2_grid):
    return ridge_cv_factor(features, mask, l2_relative=l2_grid, method=method)


def _details(cv, targets, mask, *, method, l2_grid) -> HeldoutDetails:
    mse = jnp.sum(ridge_cv_curve(cv, targets, mask, method=method), axis=-1)  # [L]
    index = jnp.argmin(mse).astype(jnp.int32)
    spec = cv.spectrum
    count = jnp.maximum(spec.count, 1)
    norm = jnp.sqrt(cv.total) / spec.scale  # ‖F_c‖_F in the input's units
    variance = norm * norm / count
    grid = jnp.asarray(l2_grid, mse.dtype).reshape(-1)
    return HeldoutDetails(
        -mse[index], grid[index] * variance, grid[index], index, mse, grid * variance, variance
    )


def _finish(cv, targets, mask, *, method, l2_grid):
    return -jnp.min(jnp.sum(ridge_cv_curve(cv, targets, mask, method=method), axis=-1))


def _unresolved(cv, *, method, l2_grid):
    """Unresolved directions matter unless the smallest penalty shrinks them away (σ² ≪ p)."""
    spec = cv.spectrum
    eps = jnp.finfo(spec.features.dtype).eps
    return spec.unresolved & (jnp.sqrt(jnp.min(cv.penalty)) < 1e3 * eps * spec.singular[0])


def _info(name, source, source_name, source_vector):
    check = _checker(name, source_name, source_vector)
    return ridge_info(
        name, source, check, reference=_REFERENCE, prepare=_prepare, finish=_finish, unresolved=_unresolved
    )


@register(_info("heldout_linear_mse", "features", "features", False))
def heldout_linear_mse(features, targets, *, method="loo", l2_grid=None, mask=None) -> jax.Array:
    """Held-out Linear MSE: minus the ridge error on unseen samples, at the penalty that minimises it.

    For each relative penalty ρ of a grid, ridge with an unpenalised bias,

    .. math::
        \\min_{A, b}\\; \\sum_{i=1}^n \\lVert y_i - A f_i - b \\rVert^2 + n\\lambda \\lVert A \\rVert_F^2,
        \\qquad \\lambda = \\rho \\cdot \\operatorname{tr}\\operatorname{cov}(F),

    is fitted, and its mean squared error on held-out samples is estimated in
    closed form (:mod:`jaxtransfer_kernels._ridge_cv`):

    * ``"loo"`` (default), exact leave-one-out: sample i's error when the fit
      (bias and centring included) is refitted on the other n − 1 samples
      with the same penalty nλ on the sum of squares,
      e_i = r_i / (1 − H_ii), H the hat matrix of the design [1, F];
    * ``"gcv"``, generalised cross-validation: H_ii replaced by tr(H)/n.

    .. math::
        \\mathrm{HeldoutMSE} = -\\min_{\\rho}\\; \\frac1n \\sum_{i=1}^n \\lVert e_i(\\rho) \\rVert^2 ,

    the squared error summed over the k outputs. Higher (closer to 0) is
    better. Unlike :func:`jaxtransfer.linear_mse`, which scores the fit on the
    samples it was fitted to (and always improves as λ → 0), this estimates
    the error on new samples, and chooses λ by it per target.

    λ is relative to the features' total variance tr cov(F) = (1/n)‖F_c‖²_F
    (the trace of the centred Gram matrix — the sum of its spectrum — over
    n), so multiplying the features by a constant changes
    nothing, and zero-padded feature columns change nothing either.
    Classification targets are one-hot [n, C] (``info.targets_from_labels``),
    their squared errors summed over the classes.

    Args:
      features: float [n, d], the source model's features on the target inputs.
      targets: float [n] or [n, k] (one-hot [n, C] for classification).
      method: static, ``"loo"`` or ``"gcv"``.
      l2_grid: the relative penalties ρ ≥ 0, a scalar or 1-D array
        (default :data:`L2_GRID`: 25 values from 1e-6 to 1e2, three per
        decade). ρ = 0 (least squares) gives +inf under ``"loo"`` when the
        fit interpolates a sample (n ≤ d + 1): its leave-one-out formula is
        undefined there.
      mask: optional bool [n]; False leaves a sample out (n counts the kept ones).

    Returns:
      A scalar in the dtype of ``features``.

    Raises:
      ValueError: wrong shapes, fewer than 2 samples, non-finite values,
        negative or non-finite ``l2_grid``, an unknown ``method``,
        mismatched sample counts.
      TypeError: non-numeric input.

    Example:
      >>> import jaxtransfer as jt
      >>> f = [[0.0], [1.0], [2.0], [3.0]]
      >>> round(float(jt.heldout_linear_mse(f, [1.0, 3.0, 5.0, 7.0], l2_grid=1e-8)), 6)
      -0.0

    References:
      D. M. Allen, Technometrics 16, 1974 (the leave-one-out residual
      r_i/(1 − H_ii)); G. H. Golub, M. Heath, G. Wahba, Technometrics 21,
      1979 (GCV); T. Hastie, R. Tibshirani, J. Friedman, *The Elements of
      Statistical Learning*, 2nd ed., 2009, §7.10; the objective of
      C. V. Nguyen et al., *Simple Transferability Estimation for Regression
      Tasks*, UAI 2023.

    Notes:
      One factorisation per source (the singular spectrum of the centred
      features, :func:`jaxtransfer_kernels.spectrum`: the d×d Gram matrix or
      the n×n kernel, whichever is smaller, or the SVD where float32 needs
      it) serves every target and every ρ; in :func:`jaxtransfer.score_matrix`
      it is computed once per source. Each target then costs O(n·min(n, d)·k)
      per ρ for ``"loo"`` and O(min(n, d)·k) per ρ for ``"gcv"``. The
      residuals and the leverage complements 1 − H_ii are formed directly as
      sums of non-negative terms, never as differences of large sums, so
      float32 keeps its digits when the fit is nearly exact. The score is a
      minimum over the grid: its gradient is that of the chosen ρ.
    """
    return run_pair(heldout_linear_mse.info, features, targets, mask, {"method": method, "l2_grid": l2_grid})


def heldout_linear_mse_details(features, targets, *, method="loo", l2_grid=None, mask=None) -> HeldoutDetails:
    """Held-out Linear MSE of one pair with the chosen λ and the estimated error over the whole grid.

    Takes the arguments of :func:`heldout_linear_mse`; ``result.score`` equals
    its value. ``features`` may be a vector (label-space inputs, as
    :func:`heldout_label_mse` takes them).

    Returns:
      :class:`HeldoutDetails`.

    Example:
      >>> import numpy as np
      >>> from jaxtransfer import heldout_linear_mse_details
      >>> rng = np.random.default_rng(0)
      >>> f = rng.normal(size=(50, 3))
      >>> out = heldout_linear_mse_details(f, f @ [1.0, 2.0, 0.0] + rng.normal(size=50))
      >>> out.mse.shape, bool(out.l2 == out.l2_relative * out.total_variance)
      ((25,), True)
    """
    opts = {"method": method, "l2_grid": l2_grid}
    return run_pair(_DETAILS_INFO, features, targets, mask, opts, finish=_details)


# the details take features or a vector of predictions, and name the argument ``features``
_DETAILS_INFO = dataclasses.replace(
    heldout_linear_mse.info, check=_checker("heldout_linear_mse_details", "features", True)
)


@register(_info("heldout_label_mse", "predictions", "source_predictions", True))
def heldout_label_mse(source_predictions, targets, *, method="loo", l2_grid=None, mask=None) -> jax.Array:
    """Held-out Label MSE: :func:`heldout_linear_mse` on the source model's predicted labels.

    The same estimate with the source model's predictions on the target
    inputs (for keypoint regression, a predicted 2-D point) in place of its
    features. Higher is better.

    Args:
      source_predictions: float [n] or [n, k'], the source model's outputs.
      targets: float [n] or [n, k].
      method: static, ``"loo"`` (default) or ``"gcv"``.
      l2_grid: relative penalties ρ ≥ 0 (default :data:`L2_GRID`).
      mask: optional bool [n].

    Returns:
      A scalar.

    Example:
      >>> import jaxtransfer as jt
      >>> p = [0.0, 1.0, 2.0, 3.0, 4.0]
      >>> round(float(jt.heldout_label_mse(p, [0.0, 2.0, 4.0, 6.0, 8.0], method="gcv", l2_grid=1e-8)), 6)
      -0.0

    References:
      As :func:`heldout_linear_mse`.
    """
    return run_pair(
        heldout_label_mse.info, source_predictions, targets, mask, {"method": method, "l2_grid": l2_grid}
    )
