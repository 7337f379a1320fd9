"""LEEP, the log expected empirical prediction (Nguyen et al., ICML 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtransfer_kernels import matmul, sample_weights, soft_joint_histogram

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

__all__ = ["leep", "leep_from_probabilities"]

_REFERENCE = (
    "C. V. Nguyen, T. Hassner, M. Seeger, C. Archambeau. LEEP: A New Measure to Evaluate "
    "Transferability of Learned Representations. ICML 2020."
)
_DEFAULTS = {"logits": False, "num_target_classes": None}


def _check(source, target, options, lead) -> Checked:
    opts = take_options("leep", options, _DEFAULTS)
    if not isinstance(opts["logits"], bool):
        raise TypeError(f"logits must be True or False, got {opts['logits']!r}")
    theta = as_features("source_probs", source, lead=lead, what="Cz")
    y, cy = as_labels(
        "targets",
        target,
        num_classes=opts["num_target_classes"],
        class_arg="num_target_classes",
        lead=lead,
    )
    check_same_samples("source_probs", theta.shape[-2], "targets", y.shape[-1])
    check_cells(f"leep's joint table ({theta.shape[-1]} source × {cy} target classes)", theta.shape[-1] * cy)
    if not opts["logits"] and is_concrete(theta):
        check_probability_rows("source_probs", theta, "; if these are logits, pass logits=True")
    return Checked(theta, y, y.shape[-1], {"logits": opts["logits"], "num_target_classes": cy}, {})


def _prepare(source, mask, *, logits, **_):
    """Source-only work: the probabilities θ (a log-domain softmax of logits)."""
    return jnp.exp(jax.nn.log_softmax(source, axis=-1)) if logits else source


def leep_from_probabilities(theta, y, mask, *, num_target_classes, **_):
    """LEEP of source probabilities θ [n, Cz] for target labels y [n] (the traceable core).

    Shared with :func:`jaxtransfer.nleep`, whose θ are a mixture's posteriors.
    """
    n = y.shape[0]
    w = sample_weights(n, mask, theta.dtype)
    joint = soft_joint_histogram(theta, y, num_y=num_target_classes, mask=mask)  # [Cz, Cy], n·P̂(z, y)
    return jnp.sum(leep_log_terms(theta, y, leep_conditional(joint), w)) / jnp.sum(w)


def leep_conditional(joint) -> jax.Array:
    """P̂(y | z) [Cz, Cy] from the soft joint counts n·P̂(z, y); 0 for a source class with no mass."""
    marginal = jnp.sum(joint, axis=1, keepdims=True)  # n·P̂(z)
    has_mass = marginal > 0
    return jnp.where(has_mass, joint / jnp.where(has_mass, marginal, 1), 0)


def leep_log_terms(theta, y, conditional, w) -> jax.Array:
    """wᵢ·log Σ_z P̂(yᵢ|z) θ_z(xᵢ) per sample [n] (0 for masked samples and zero likelihoods)."""
    expected = matmul(theta, conditional)  # [n, Cy]
    # Σ_z P̂(y|z)θ_z(x) is a probability: at most 1, whatever the rounding (LEEP ≤ 0 exactly)
    picked = jnp.minimum(jnp.take_along_axis(expected, y[:, None], axis=1)[:, 0], 1)
    keep = (w > 0) & (picked > 0)
    return w * jnp.where(keep, jnp.log(jnp.where(keep, picked, 1)), 0)


@register(
    EstimatorInfo(
        name="leep",
        task="classification",
        source="probabilities",
        target="labels",
        orientation="higher_is_better",
        reference=_REFERENCE,
        check=_check,
        prepare=_prepare,
        finish=leep_from_probabilities,
    )
)
def leep(source_probs, targets, *, logits=False, num_target_classes=None, mask=None) -> jax.Array:
    """LEEP: the average log-likelihood of the expected empirical predictor.

    .. math::
        \\hat P(y, z) = \\frac1n \\sum_{i: y_i = y} \\theta_z(x_i), \\quad
        \\hat P(y|z) = \\frac{\\hat P(y,z)}{\\hat P(z)}, \\quad
        \\mathrm{LEEP} = \\frac1n \\sum_i \\log \\sum_z \\hat P(y_i|z)\\, \\theta_z(x_i).

    θ(xᵢ) is the source model's softmax output on target input xᵢ. LEEP ≤ 0;
    higher is better.

    Args:
      source_probs: float [n, Cz] rows of source-class probabilities, or logits
        with ``logits=True`` (a softmax is then applied, in the log domain).
      targets: int [n] target labels in ``[0, num_target_classes)``.
      logits: treat ``source_probs`` as logits; static.
      num_target_classes: static class count; inferred on eager calls.
      mask: optional bool [n]; False leaves a sample out.

    Returns:
      Scalar LEEP score in the dtype of ``source_probs``.

    Raises:
      ValueError: rows that are negative or don't sum to 1 (the message
        points to ``logits=True``), wrong shapes, non-finite values,
        labels out of range, mismatched sample counts.
      TypeError: non-numeric input, non-integer labels.

    Example:
      >>> import jaxtransfer as jt
      >>> round(float(jt.leep([[1.0, 0.0], [0.0, 1.0]], [1, 0])), 6)  # z determines y
      0.0

    References:
      Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
      Transferability of Learned Representations", ICML 2020.

    Notes:
      A source class that gets no probability mass on the target has no
      P̂(y|z); it contributes nothing (its θ is zero on every sample), with no
      0/0. Gradients with respect to the probabilities or logits are finite.
    """
    opts = {"logits": logits, "num_target_classes": num_target_classes}
    return run_pair(leep.info, source_probs, targets, mask, opts)
