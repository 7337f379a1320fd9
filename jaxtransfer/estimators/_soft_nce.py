"""Soft NCE: the negative conditional entropy from source probabilities, differentiable in them."""

from __future__ import annotations

import jax
from jaxtransfer_kernels import conditional_entropy_from_counts, soft_joint_histogram

from ._base import Checked, EstimatorInfo, register, run_pair
from ._checks import (
    as_features,
    as_labels,
    check_cells,
    check_probability_rows,
    check_same_samples,
    is_concrete,
    take_options,
)

__all__ = ["soft_nce"]

_REFERENCE = (
    "A. T. Tran, C. V. Nguyen, T. Hassner. Transferability and Hardness of Supervised "
    "Classification Tasks. ICCV 2019 (NCE; here with the soft joint of LEEP, Nguyen et al., ICML 2020)."
)
_DEFAULTS = {"num_target_classes": None}


def _check(source, target, options, lead) -> Checked:
    opts = take_options("soft_nce", options, _DEFAULTS)
    theta = as_features("source_probs", source, lead=lead, what="Cz")
    y, cy = as_labels(
        "targets",
        target,
        num_classes=opts["num_target_classes"],
        class_arg="num_target_classes",
        lead=lead,
    )
    check_same_samples("source_probs", theta.shape[-2], "targets", y.shape[-1])
    cells = theta.shape[-1] * cy
    check_cells(f"soft_nce's joint table ({theta.shape[-1]} source × {cy} target classes)", cells)
    if is_concrete(theta):
        check_probability_rows("source_probs", theta)
    return Checked(theta, y, y.shape[-1], {"num_target_classes": cy}, {})


def _prepare(source, mask, **_):
    return source


def _finish(theta, y, mask, *, num_target_classes):
    joint = soft_joint_histogram(theta, y, num_y=num_target_classes, mask=mask)  # [Cz, Cy], n·P̂(z, y)
    return -conditional_entropy_from_counts(joint)


@register(
    EstimatorInfo(
        name="soft_nce",
        task="classification",
        source="probabilities",
        target="labels",
        orientation="higher_is_better",
        reference=_REFERENCE,
        check=_check,
        prepare=_prepare,
        finish=_finish,
    )
)
def soft_nce(source_probs, targets, *, num_target_classes=None, mask=None) -> jax.Array:
    """Soft NCE: −H(Y|Z) with the source label Z drawn from the source model's probabilities.

    .. math::
        \\hat P(z, y) = \\frac1n \\sum_{i: y_i = y} p_i(z), \\quad
        \\hat P(z) = \\sum_y \\hat P(z, y), \\quad
        \\mathrm{softNCE} = \\sum_{z, y} \\hat P(z, y) \\log \\frac{\\hat P(z, y)}{\\hat P(z)} ,

    the conditional entropy of NCE (:func:`jaxtransfer.nce`) with the hard
    joint counts replaced by LEEP's soft joint (:func:`jaxtransfer.leep`).
    With one-hot rows pᵢ = e_{zᵢ} it equals ``nce(z, targets)``; unlike NCE it
    is differentiable in the probabilities, so it can be a training signal.
    ≤ 0; higher is better.

    Args:
      source_probs: float [n, Cz] rows of source-class probabilities (rows
        sum to 1; apply a softmax to logits first).
      targets: int [n] target labels in ``[0, num_target_classes)``.
      num_target_classes: static class count; inferred on eager calls.
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar soft NCE in the dtype of ``source_probs``.

    Raises:
      ValueError: rows that are negative or do not sum to 1, wrong shapes,
        non-finite values, labels out of range, mismatched sample counts.
      TypeError: non-numeric input, non-integer labels, unknown options.

    Example:
      >>> import jaxtransfer as jt
      >>> p = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]]
      >>> bool(jt.soft_nce(p, [0, 1, 0, 1]) > jt.soft_nce(p, [0, 0, 1, 1]))  # p predicts the first
      True

    References:
      Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
      Classification Tasks", ICCV 2019; Nguyen, Hassner, Seeger, Archambeau,
      "LEEP", ICML 2020.

    Notes:
      ∂(−H)/∂pᵢ(z) = (1/n) log P̂(z, yᵢ)/P̂(z): exact wherever the joint cells
      of the kept samples are positive (strictly positive probabilities, e.g.
      softmax outputs, make them all positive). A cell that is exactly 0 has
      an infinite derivative; by documented choice it contributes 0 (the
      support of the joint is held fixed, the double-where of
      :func:`jaxtransfer_kernels.conditional_entropy_from_counts`), so the
      gradient is finite for any input, one-hot rows included.
    """
    opts = {"num_target_classes": num_target_classes}
    return run_pair(soft_nce.info, source_probs, targets, mask, opts)
