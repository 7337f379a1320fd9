"""Conditional entropy, NCE and task hardness (Tran, Nguyen & Hassner, ICCV 2019)."""

from __future__ import annotations

import jax
import numpy as np
from jaxtransfer_kernels import (
    conditional_entropy_from_counts,
    entropy_from_counts,
    joint_histogram,
    joint_histograms,
    label_counts,
)

from ._base import Checked, EstimatorInfo, register, run_pair
from ._checks import as_labels, as_mask, check_cells, check_same_samples, choice, take_options

__all__ = ["conditional_entropy", "hardness", "nce"]

_REFERENCE = (
    "A. T. Tran, C. V. Nguyen, T. Hassner. Transferability and Hardness of Supervised "
    "Classification Tasks. ICCV 2019."
)
_DEFAULTS = {"num_source_classes": None, "num_target_classes": None, "method": "auto"}


def _check(name):
    def check(source, target, options, lead) -> Checked:
        opts = take_options(name, options, _DEFAULTS)
        z, cz = as_labels(
            "source_labels",
            source,
            num_classes=opts["num_source_classes"],
            class_arg="num_source_classes",
            lead=lead,
        )
        y, cy = as_labels(
            "targets",
            target,
            num_classes=opts["num_target_classes"],
            class_arg="num_target_classes",
            lead=lead,
        )
        check_same_samples("source_labels", z.shape[-1], "targets", y.shape[-1])
        check_cells(f"{name}'s joint count table ({cz} × {cy} classes)", cz * cy)
        method = choice("method", opts["method"], ("auto", "onehot", "scatter"))
        static = {"num_source_classes": cz, "num_target_classes": cy, "method": method}
        return Checked(z, y, z.shape[-1], static, {})

    return check


def _prepare(z, mask, **_):
    return z


def _finish(z, y, mask, *, num_source_classes, num_target_classes, method, sign):
    counts = joint_histogram(
        z, y, num_z=num_source_classes, num_y=num_target_classes, mask=mask, method=method
    )
    return sign * conditional_entropy_from_counts(counts)


def _matrix(zs, ys, source_mask, target_mask, *, num_source_classes, num_target_classes, method, sign):
    counts = joint_histograms(
        zs,
        ys,
        num_z=num_source_classes,
        num_y=num_target_classes,
        source_mask=source_mask,
        target_mask=target_mask,
        method=method,
    )
    return sign * conditional_entropy_from_counts(counts)


def _batch(s, t, static):
    """Sources per step: keep one step's count tables near 2**26 cells (256 MB)."""
    cells = static["num_source_classes"] * static["num_target_classes"]
    return max(1, (1 << 26) // max(1, t * cells))


def _info(name, sign, orientation):
    def finish(state, y, mask, **kw):
        return _finish(state, y, mask, sign=sign, **kw)

    def matrix(zs, ys, sm, tm, **kw):
        return _matrix(zs, ys, sm, tm, sign=sign, **kw)

    return EstimatorInfo(
        name=name,
        task="classification",
        source="labels",
        target="labels",
        orientation=orientation,
        reference=_REFERENCE,
        check=_check(name),
        prepare=_prepare,
        finish=finish,
        matrix=matrix,
        default_batch=_batch,
    )


@register(_info("conditional_entropy", 1.0, "lower_is_better"))
def conditional_entropy(
    source_labels,
    targets,
    *,
    num_source_classes=None,
    num_target_classes=None,
    mask=None,
    method="auto",
) -> jax.Array:
    """Empirical conditional entropy H(Y|Z) of target labels given source labels, in nats.

    .. math::
        H(Y|Z) = -\\sum_{y,z} \\hat P(y,z) \\log \\frac{\\hat P(y,z)}{\\hat P(z)},
        \\qquad \\hat P(y,z) = \\frac{1}{n} \\#\\{i : y_i = y, z_i = z\\}.

    Both labelings describe the same n inputs: the ground-truth labels of two
    tasks, or a source model's argmax predictions on the target inputs. Lower
    means more transferable; :func:`nce` is its negative (higher is better).

    Args:
      source_labels: int [n], source classes in ``[0, num_source_classes)``.
      targets: int [n], target classes in ``[0, num_target_classes)``.
      num_source_classes, num_target_classes: class counts; static (changing
        them recompiles). Inferred as ``max + 1`` on eager calls; required
        under ``jit``/``vmap``.
      mask: optional bool [n]; False leaves a sample out.
      method: ``"auto"``, ``"onehot"`` or ``"scatter"``: how the joint counts
        are made (:mod:`jaxtransfer_kernels`); static.

    Returns:
      Scalar H(Y|Z) ≥ 0 in the default float dtype.

    Raises:
      TypeError: non-integer labels; traced labels without class counts.
      ValueError: wrong shapes, fewer than 2 samples, labels out of range,
        different sample counts.

    Example:
      >>> import jaxtransfer as jt
      >>> round(float(jt.conditional_entropy([0, 0, 1, 1], [0, 1, 1, 1])), 4)
      0.3466

    References:
      Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
      Classification Tasks", ICCV 2019.

    Notes:
      Every term of the sum is non-negative, so no digits are lost to
      cancellation; counts are exact integers.
    """
    opts = dict(num_source_classes=num_source_classes, num_target_classes=num_target_classes, method=method)
    return run_pair(conditional_entropy.info, source_labels, targets, mask, opts)


@register(_info("nce", -1.0, "higher_is_better"))
def nce(
    source_labels,
    targets,
    *,
    num_source_classes=None,
    num_target_classes=None,
    mask=None,
    method="auto",
) -> jax.Array:
    """Negative conditional entropy NCE = −H(Y|Z) (Tran et al., ICCV 2019); higher is better.

    The transferred model's expected log-likelihood on the target is bounded
    below by the source model's minus H(Y|Z), so a larger NCE predicts better
    transfer. Arguments as :func:`conditional_entropy`.

    Example:
      >>> import jaxtransfer as jt
      >>> float(jt.nce([0, 1, 0, 1], [1, 0, 1, 0]))  # target determined by source
      -0.0

    References:
      Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised
      Classification Tasks", ICCV 2019.
    """
    opts = dict(num_source_classes=num_source_classes, num_target_classes=num_target_classes, method=method)
    return run_pair(nce.info, source_labels, targets, mask, opts)


_hardness = jax.jit(
    lambda y, mask, *, num_classes: entropy_from_counts(label_counts(y, num_classes=num_classes, mask=mask)),
    static_argnames=("num_classes",),
)


def hardness(targets, *, num_target_classes=None, mask=None) -> jax.Array:
    """Task hardness H(Y) (Tran et al., ICCV 2019): the target label entropy, in nats.

    It is the conditional entropy H(Y|Z) from a trivial source whose labels are
    all equal. Not a transferability score: **higher means harder**.

    Args:
      targets: int [n] target labels in ``[0, num_target_classes)``, or [T, n] for T
        tasks at once (returns [T]).
      num_target_classes: static class count; inferred on eager calls.
      mask: optional bool with the shape of ``targets``.

    Returns:
      Scalar (or [T]) entropy ≥ 0.

    Example:
      >>> import jaxtransfer as jt
      >>> round(float(jt.hardness([0, 1, 2, 3])), 4)  # log 4
      1.3863
    """
    lead = max(0, min(1, np.ndim(targets) - 1))
    y, cy = as_labels(
        "targets",
        targets,
        num_classes=num_target_classes,
        class_arg="num_target_classes",
        lead=lead,
    )
    m = as_mask("mask", mask, tuple(y.shape))
    return _hardness(y, m, num_classes=cy)


def _hardness_finish(state, y, mask, *, num_target_classes, **_):
    return entropy_from_counts(label_counts(y, num_classes=num_target_classes, mask=mask))


# Registered so that ``score_matrix(hardness, sources, targets)`` gives the
# "target only" baseline: every source scored by its target's H(Y).
register(
    EstimatorInfo(
        name="hardness",
        task="classification",
        source="none",
        target="labels",
        orientation="higher_is_harder",
        reference=_REFERENCE,
        check=_check("hardness"),
        prepare=_prepare,
        finish=_hardness_finish,
    )
)(hardness)
