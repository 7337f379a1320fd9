"""TransRate (Huang et al., ICML 2022): coding rate of the features minus the class-conditional rate.

With Z the centred features (n kept rows, d columns), Z_c its rows of class c
(n_c of them, not re-centred) and a coefficient κ = d/ε²,

    R(Z, ε)   = ½ log det(I + κ/n · ZᵀZ),
    R(Z_c, ε) = ½ log det(I + κ/n_c · Z_cᵀZ_c),
    TransRate = R(Z, ε) − Σ_c w_c R(Z_c, ε),

with w_c = n_c/n (``weighting="proportional"``, the paper's formula) or
w_c = 1/C over the C classes present (``"uniform"``, the authors' released code).
With proportional weights the score is never negative: I + κ/n·ZᵀZ is the
n_c/n-weighted mean of the matrices I + κ/n_c·Z_cᵀZ_c, and log det is concave.

Every log det is ½ Σ log(1 + κ/n·σ²) over the singular values σ of Z (or of
Z_c with n_c), taken from the SVD of the features themselves
(:func:`jaxtransfer_kernels.half_logdet_identity_plus`), never from ZᵀZ: a
float32 Gram matrix loses every eigenvalue below eps·λ_max, and with κ = 10⁴
those small directions still carry log terms of order 1. The source's rate
is computed once per source (``prepare``); each target costs the singular
values of one masked block per class (``finish``).
"""

from __future__ import annotations

from functools import partial
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import (
    Scaled,
    centre_and_scale,
    half_logdet_identity_plus,
    label_counts,
    sample_weights,
    unresolved_band,
)

from ._base import Checked, EstimatorInfo, one_source_per_step, register, run_pair
from ._checks import (
    as_features,
    as_labels,
    check_same_samples,
    choice,
    concrete,
    host_copy,
    is_concrete,
    static_int,
    take_options,
)

__all__ = ["transrate"]

_REFERENCE = (
    "L.-K. Huang, J. Huang, Y. Rong, Q. Yang, Y. Wei. Frustratingly Easy Transferability Estimation. "
    "ICML 2022. Regression form and label-space use: C. V. Nguyen et al. Simple Transferability "
    "Estimation for Regression Tasks. UAI 2023."
)
_DEFAULTS = {
    "eps": None,
    "weighting": "proportional",
    "task": "classification",
    "bins": None,
    "num_target_classes": None,
}
#: κ = 1/10⁻⁴, the coefficient of the authors' released code (``eps=None``)
RELEASED_CODE_COEFFICIENT = 1e4
# elements of the per-class feature blocks held at once (batched singular values)
_CLASS_BLOCK_ELEMENTS = 2**22


# ----------------------------------------------------------------------------- validation


def _coefficient(eps, d: int, dtype) -> jax.Array:
    """κ = d/ε² from ``eps`` (``None``: the released code's 10⁴), finite in ``dtype``."""
    if eps is None:
        return jnp.asarray(RELEASED_CODE_COEFFICIENT, dtype)
    if isinstance(eps, (str, bytes, bool)):
        raise TypeError(f"eps must be a positive number or None, got {eps!r}")
    if not isinstance(eps, Real):
        arr = jnp.asarray(eps)
        if arr.ndim != 0 or not (
            jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
        ):
            raise TypeError(
                f"eps must be a positive scalar or None, got {type(eps).__name__} of shape {arr.shape}"
            )
        if not is_concrete(arr):  # traced: no value checks
            return (d / arr.astype(dtype) ** 2).astype(dtype)
        eps = float(arr)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    # κ = d/ε² in float64 on the host, without overflow (ε² alone underflows below 1e-154)
    log_kappa = np.log(d) - 2 * np.log(eps)
    limit = np.sqrt(float(jnp.finfo(dtype).max))
    if log_kappa > np.log(limit):
        smallest = np.sqrt(d / limit)
        raise ValueError(
            f"eps={eps!r} makes the coefficient d/eps² = {np.exp(min(log_kappa, 700.0)):.3g} (d = {d}), "
            f"beyond what {np.dtype(dtype).name} can carry (at most {limit:.3g}); use eps >= {smallest:.3g}"
            + ("" if np.dtype(dtype) == np.float64 else ", or enable float64 (jax_enable_x64)")
        )
    return jnp.asarray(np.exp(log_kappa), dtype)


def _bins(value) -> int:
    if value is None:
        raise ValueError("task='regression' needs bins=<int >= 2>, the number of quantile bins per output")
    return static_int("bins", value, 2, "a static bin count")


def _check(source, target, options, lead) -> Checked:
    opts = take_options("transrate", options, _DEFAULTS)
    task = choice("task", opts["task"], ("classification", "regression"))
    weighting = choice("weighting", opts["weighting"], ("proportional", "uniform"))
    f = as_features("features", source, lead=lead)
    if task == "classification":
        if opts["bins"] is not None:
            raise ValueError(
                "bins applies to task='regression' (targets cut into quantile bins), "
                f"got bins={opts['bins']!r} with task='classification'"
            )
        y, classes = as_labels(
            "targets",
            target,
            num_classes=opts["num_target_classes"],
            class_arg="num_target_classes",
            lead=lead,
        )
        n_y, bins = y.shape[-1], None
    else:
        if opts["num_target_classes"] is not None:
            raise ValueError(
                "num_target_classes applies to task='classification'; with task='regression' "
                "the class count is bins"
            )
        bins = _bins(opts["bins"])
        y = as_features("targets", target, lead=lead, allow_vector=True, what="k")
        n_y, classes = y.shape[-2], None
    check_same_samples("features", f.shape[-2], "targets", n_y)
    rows = _class_rows(y, n_y, task, bins, classes)
    static = {
        "weighting": weighting,
        "task": task,
        "bins": bins,
        "num_target_classes": classes,
        "class_rows": rows,
    }
    return Checked(f, y, n_y, static, {"coef": _coefficient(opts["eps"], f.shape[-1], f.dtype)})


@partial(jax.jit, static_argnums=(1, 2))
def _largest_class(y, n: int, classes: int):
    return jnp.max(jax.vmap(lambda r: jnp.bincount(r, length=classes))(y.reshape(-1, n)))


def _class_rows(y, n: int, task: str, bins: int | None, classes: int = 1) -> int:
    """A static bound on the rows of any one class (or bin): the size of the block whose singular
    values each class costs. ``n`` when the targets are traced.

    Classification: the largest class count over all targets, masks ignored (a mask only removes
    rows). Regression: a bin of m kept values holds the samples whose minimum rank r lies in
    [b·m/bins, (b+1)·m/bins), at most ⌈m/bins⌉ − 1 distinct ranks plus the largest group of tied
    values g, so ⌈n/bins⌉ + g − 1. Rounded up to a multiple of ⌈n/16⌉, so that subsamples of
    similar make-up share one compiled program.
    """
    if not is_concrete(y) or n == 0:
        return n
    if task == "classification":  # where the labels live (a jitted count), one scalar fetched
        largest = int(concrete(_largest_class, y, n, classes)) if y.size else 0
    else:
        values = host_copy(y)
        columns = np.moveaxis(values.reshape(-1, n, values.shape[-1]), 1, -1)  # [.., k, n]
        ties = max(int(np.unique(c, return_counts=True)[1].max()) for c in columns.reshape(-1, n))
        largest = -(-n // bins) + ties - 1
    step = -(-n // 16)
    return int(min(n, -(-max(largest, 1) // step) * step))


# ----------------------------------------------------------------------------- maths


class _Source(NamedTuple):
    scaled: Scaled  # the centred features at unit scale
    rate: jax.Array  # [] R(Z, ε)
    unresolved: jax.Array  # [] bool, singular values the working precision cannot resolve


def _prepare(features, mask, *, coef, **_):
    """Source-only work: the centred features at unit scale and R(Z, ε)."""
    scaled = centre_and_scale(features, mask)
    bound = scaled.count.astype(jnp.int32) - 1  # centred: rank at most n − 1
    sigma = jnp.linalg.svd(scaled.features, compute_uv=False)
    root = _root(coef, scaled.count, scaled.scale)
    rate = half_logdet_identity_plus(scaled.features, root, bound, singular=sigma)
    # an unresolved direction matters where its term log(1 + κσ²/n) is not negligible
    return _Source(scaled, rate, jnp.any(unresolved_band(sigma, bound) & (root * sigma > 0.03)))


def _root(coef, count, scale):
    """√(κ/n) in the units of the scaled features A = scale·Z, so that κ/n·ZᵀZ = root²·AᵀA."""
    return jnp.sqrt(coef / jnp.maximum(count, 1)) / scale


def _conditional_rate(state, labels, mask, coef, num_classes, weighting, class_rows):
    """Σ_c w_c R(Z_c, ε) for integer labels [n].

    The kept rows are sorted by class, so class c occupies rows
    [start_c, start_c + n_c); each class's singular values come from a block of
    ``class_rows`` ≥ n_c rows cut there (rows past n_c zeroed), not from all n
    rows with the others zeroed: C blocks of n/C rows instead of C blocks of n.
    """
    scaled = state.scaled
    a = scaled.features  # masked rows are zero
    n_rows, d = a.shape
    dtype = a.dtype
    kept = sample_weights(n_rows, mask, dtype) > 0
    counts = label_counts(labels, num_classes=num_classes, mask=mask)
    key = jnp.where(kept, labels.astype(jnp.int32), num_classes)  # masked rows last
    order = jnp.argsort(key, stable=True)
    padded = jnp.concatenate([a[order], jnp.zeros((class_rows, d), dtype)])
    starts = jnp.cumsum(counts) - counts
    within = jnp.arange(class_rows)

    def rate(c):
        block = lax.dynamic_slice_in_dim(padded, starts[c], class_rows, axis=0)
        block = jnp.where((within < counts[c])[:, None], block, 0)
        root = _root(coef, counts[c].astype(dtype), scaled.scale)
        return half_logdet_identity_plus(block, root, counts[c])  # Z_c has n_c rows (not re-centred)

    batch = max(1, min(num_classes, _CLASS_BLOCK_ELEMENTS // max(class_rows * d, 1)))
    rates = lax.map(rate, jnp.arange(num_classes, dtype=jnp.int32), batch_size=batch)
    counts = counts.astype(dtype)
    present = counts > 0
    if weighting == "proportional":
        weights = counts / jnp.maximum(scaled.count, 1)
    else:
        weights = present.astype(dtype) / jnp.maximum(jnp.sum(present), 1).astype(dtype)
    return jnp.sum(jnp.where(present, weights * rates, 0))


def quantile_bins(values, mask, bins: int) -> jax.Array:
    """Equal-count bins of one target dimension: label = ⌊bins · r / n⌋.

    r is the number of kept samples with a strictly smaller value (the minimum
    rank), n the number of kept samples. Bins hold ⌊n/bins⌋ or ⌈n/bins⌉ samples
    when the values are distinct; tied values share a bin. Masked samples get
    a label too, which is never used. The int32 product bins·r is exact for
    n·bins < 2³¹.

    Args:
      values: float [n].
      mask: optional bool [n].
      bins: static bin count.

    Returns:
      int32 [n] in ``[0, bins)``.
    """
    values = jnp.asarray(values)
    n = values.shape[0]
    keep = sample_weights(n, mask, bool)
    count = jnp.maximum(jnp.sum(keep.astype(jnp.int32)), 1)
    ordered = jnp.sort(jnp.where(keep, values, jnp.inf))
    rank = jnp.searchsorted(ordered, values, side="left").astype(jnp.int32)
    return jnp.minimum((bins * rank) // count, bins - 1).astype(jnp.int32)


def _finish(state, target, mask, *, coef, weighting, task, bins, num_target_classes, class_rows):
    rate = state.rate
    if task == "classification":
        return rate - _conditional_rate(state, target, mask, coef, num_target_classes, weighting, class_rows)

    def per_output(values):
        labels = quantile_bins(values, mask, bins)
        return rate - _conditional_rate(state, labels, mask, coef, bins, weighting, class_rows)

    return jnp.mean(jax.vmap(per_output, in_axes=1)(target))


@register(
    EstimatorInfo(
        name="transrate",
        task="classification",
        source="features",
        target="labels",
        orientation="higher_is_better",
        reference=_REFERENCE,
        check=_check,
        prepare=_prepare,
        finish=_finish,
        default_batch=one_source_per_step,
        unresolved=lambda source, **_: source.unresolved,
    )
)
def transrate(
    features,
    targets,
    *,
    eps=None,
    weighting="proportional",
    task="classification",
    bins=None,
    num_target_classes=None,
    mask=None,
) -> jax.Array:
    """TransRate: the coding-rate estimate of the mutual information between features and labels.

    .. math::
        R(Z, \\varepsilon) = \\tfrac12 \\log\\det\\Big(I + \\frac{d}{n\\varepsilon^2} Z^\\top Z\\Big),
        \\qquad
        \\mathrm{TransRate} = R(Z, \\varepsilon) - \\sum_c w_c\\,
            \\tfrac12 \\log\\det\\Big(I + \\frac{d}{n_c\\varepsilon^2} Z_c^\\top Z_c\\Big),

    Z the centred features, Z_c its rows of class c (centred with the overall
    mean, as in the paper and its code), w_c = n_c/n by default. Higher is
    better.

    Args:
      features: float [n, d], the source model's features on the target inputs
        (or its predictions, see below).
      targets: int [n] class labels in ``[0, num_target_classes)``; with
        ``task="regression"`` float [n] or [n, k] target values.
      eps: the distortion ε > 0 of the formula, so κ = d/ε² multiplies the
        covariance. Default ``None``: κ = 10⁴, the coefficient
        ``1/(n·eps)`` with ``eps = 1e-4`` of the authors' released code
        (equivalently ε² = 10⁻⁴·d). The score depends on the features' scale
        through κ·cov(Z); ε must be chosen with that scale in mind.
      weighting: ``"proportional"`` (w_c = n_c/n, the paper's formula; the
        score is then ≥ 0) or ``"uniform"`` (w_c = 1/C over the classes
        present, the released code). On imbalanced classes they can differ
        by an order of magnitude. Static.
      task: ``"classification"`` or ``"regression"``. Static.
      bins: with ``task="regression"``, the number b ≥ 2 of equal-count bins
        each output dimension is cut into (:func:`quantile_bins`); static.
        TransRate is computed against each dimension's bin labels and the k
        values are averaged: (1/k) Σ_j TransRate(Z, bins(y_{:, j})).
      num_target_classes: static class count (classification); inferred on
        eager calls.
      mask: optional bool [n]; False leaves a sample out (also of the bins).

    Returns:
      Scalar TransRate in the dtype of ``features`` (nats).

    Raises:
      ValueError: an unknown weighting or task, bins < 2 or missing for
        regression, bins with classification, eps ≤ 0, wrong shapes,
        non-finite values, labels out of range, mismatched sample counts.
      TypeError: non-numeric input, non-integer labels or bins, unknown options.

    Example:
      >>> from jaxtransfer import transrate
      >>> f = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] * 2
      >>> round(float(transrate(f, [0, 1, 2, 0, 1, 2], eps=1.0)), 5)  # log 2 − ½ log 3
      0.14384

    Label-space TransRate (Nguyen et al., UAI 2023): pass the source model's
    predictions on the target inputs as ``features``, e.g. its predicted
    keypoints [n, 2] or class probabilities [n, Cz], and the target values
    with ``task="regression", bins=b`` (or the target labels). The source
    model is then judged by how much of the target its outputs alone carry,
    with no access to its features.

    References:
      Huang, Huang, Rong, Yang, Wei, "Frustratingly Easy Transferability
      Estimation", ICML 2022 (formula; released code: κ = 10⁴, uniform
      weights). Nguyen et al., "Simple Transferability Estimation for
      Regression Tasks", UAI 2023 (binned regression targets, predictions as
      features).

    Notes:
      Log determinants come from singular values of the centred features (the
      whole set, and each class's rows), never from Gram matrices, whose
      float32 eigenvalues lose everything below eps·λ_max: a class with
      n_c ≈ d has genuine directions far below that, and with κ = 10⁴ their
      log terms are of order 1 (21.90 against 21.62 at n = 128, d = 64, two
      classes of 64, before this). Singular values below √max(n, d)·eps·σ_max
      count as zero and a class has rank at most n_c, so rounding noise in a
      rank-deficient block adds nothing even when κ is large. The features
      are centred first and rescaled by an exact power of two, so float32
      stays within 1e-3 of float64 for condition numbers up to 1e4, large
      means and feature scales from 1e-20 to 1e18; features beyond that
      make an eager call warn (:class:`jaxtransfer.PrecisionWarning`) where
      those directions carry weight. ``eps`` must leave κ = d/ε² finite in
      the working precision (at most √max of the dtype), else a ValueError
      names the smallest usable ε. Cost per target: C singular-value
      decompositions of the masked n×d block (O(C·n·d·min(n, d))), run in
      batches that bound memory; the score is not shared between targets
      beyond R(Z), so a target costs about as much as a one-pair call.
    """
    opts = {
        "eps": eps,
        "weighting": weighting,
        "task": task,
        "bins": bins,
        "num_target_classes": num_target_classes,
    }
    return run_pair(transrate.info, features, targets, mask, opts)
