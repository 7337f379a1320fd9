"""Scores of one pair whose samples are split over a named mesh axis: statistics, ``psum``, finalize.

Each device holds a slice of the n samples. It accumulates the estimator's
sufficient statistics on its slice (:mod:`jaxtransfer.streaming`: Gram
matrices, cross products, class sums, joint counts), the statistics are
merged over the axis with :func:`~jaxtransfer.streaming.all_reduce` (one
``psum`` of n·shift, then of every additive field), and every device
finalises the same merged statistics. Nothing of size n leaves a device.

The accuracy is the streamed statistics' (``jaxtransfer/estimators/_streaming.py``,
"Precision"): the same as the whole-array estimator to about 1e-6 relative
in float32 on well-conditioned features, and exact for counts; the closed
forms work on Gram matrices, so ill-conditioned float32 features lose the
directions below about eps·λ_max that the whole-array SVD route keeps
(LogME, H-score and TransRate most; use float64 there, or split sources
instead of samples).

Estimators that cannot split their samples, and why:

* ``nleep``: its Gaussian mixture is fitted by EM, which needs every
  sample's responsibilities at each iteration (a ``psum`` per EM step would
  do; not built);
* ``soft_nce``: its soft joint counts add, but no streamed form exists yet;
* ``heldout_linear_mse``, ``heldout_label_mse``: the leave-one-out
  residuals r_i/(1 − h_ii) need each sample's leverage after the statistics
  are merged, a second pass (not built);
* ``transrate`` with ``task="regression"``: the targets are binned at their
  quantiles, a statistic of all samples that does not add.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax.numpy as jnp

from ._streaming import (
    _class_gram_init,
    _class_init,
    _count_init,
    _gbc_finalize,
    _hardness_init,
    _leep_init,
    _linear_init,
    _linear_mse_finalize,
    _logme_finalize,
    _transrate_finalize,
    all_reduce,
    stream_conditional_entropy,
    stream_hardness,
    stream_hscore,
    stream_leep,
    stream_linear_mse,
    stream_nce,
    stream_shrinkage_hscore,
)

__all__ = ["CANNOT_SPLIT", "check_can_split", "split_pair"]

CANNOT_SPLIT = {
    "nleep": "its Gaussian mixture is fitted by EM over every sample's responsibilities",
    "soft_nce": "no streamed form of its soft joint counts exists yet",
    "heldout_linear_mse": "its leave-one-out residuals need a second pass over the samples (not built)",
    "heldout_label_mse": "its leave-one-out residuals need a second pass over the samples (not built)",
}


def _linear_stats(s, t, m, axis, num_target_classes=None):
    """Merged :class:`LinearStats` of features [n, d] and targets [n, k] (or labels [n] with classes)."""
    if num_target_classes is None:
        stats = _linear_init(s.shape[-1], t.shape[-1], dtype=s.dtype)
    else:
        stats = _linear_init(s.shape[-1], num_target_classes=num_target_classes, dtype=s.dtype)
    return all_reduce(stream_linear_mse.update(stats, s, t, m), axis)


def _mse(s, t, m, axis, opts):
    stats = _linear_stats(s, t, m, axis)
    l2 = opts["l2"]
    if opts.get("relative"):  # l2_relative: times the total variance tr cov(F) = tr(C)/n
        f = stats.features
        n = jnp.maximum(f.count, 1)
        l2 = l2 * (jnp.trace(f.gram) - jnp.sum(f.total * f.total) / n) / n
    return _linear_mse_finalize(stats, l2)


def _logme(s, t, m, axis, opts):
    classes = opts["num_target_classes"] if opts["task"] == "classification" else None
    stats = _linear_stats(s, t, m, axis, classes)
    return _logme_finalize(stats, opts["tol"], opts["max_iter"]).score


def _class_stats(init, s, t, m, axis, opts):
    stats = init(s.shape[-1], opts["num_target_classes"], dtype=s.dtype)
    return all_reduce(stream_hscore.update(stats, s, t, m), axis)


def _hscore(s, t, m, axis, opts):
    _no_feature_mask(opts)
    return stream_hscore.finalize(_class_stats(_class_init, s, t, m, axis, opts))


def _shrinkage(s, t, m, axis, opts):
    _no_feature_mask(opts)
    return stream_shrinkage_hscore.finalize(_class_stats(_class_init, s, t, m, axis, opts))


def _no_feature_mask(opts):
    if opts.get("feature_mask") is not None:
        raise ValueError(
            "feature_mask is not supported when the samples are split over devices; "
            "select the feature columns before scoring"
        )


def _transrate(s, t, m, axis, opts):
    if opts["task"] != "classification":
        raise ValueError(
            "transrate with task='regression' cannot split its samples over devices: the targets are "
            "binned at quantiles of all samples; split the sources instead (source_axis=)"
        )
    stats = _class_stats(_class_gram_init, s, t, m, axis, opts)
    return _transrate_finalize(stats, opts["coef"], opts["weighting"])


def _gbc(s, t, m, axis, opts):
    stats = _class_stats(_class_gram_init, s, t, m, axis, opts)
    return _gbc_finalize(stats, opts["explained_variance"], opts["num_components"])


def _counts(stream, s, t, m, axis, opts):
    stats = stream.update(_count_init(opts["num_source_classes"], opts["num_target_classes"]), s, t, m)
    return stream.finalize(all_reduce(stats, axis))


def _hardness(s, t, m, axis, opts):
    stats = stream_hardness.update(_hardness_init(opts["num_target_classes"]), t, m)
    return stream_hardness.finalize(all_reduce(stats, axis))


def _leep(s, t, m, axis, opts):
    stats = _leep_init(s.shape[-1], opts["num_target_classes"], logits=opts["logits"], dtype=s.dtype)
    first = all_reduce(stream_leep.update(stats, s, t, m), axis)
    second = all_reduce(stream_leep.update(stream_leep.second_pass(first), s, t, m), axis)
    return stream_leep.finalize(second)


_SPLIT: dict[str, Callable] = {
    "linear_mse": _mse,
    "label_mse": _mse,
    "logme": _logme,
    "hscore": _hscore,
    "shrinkage_hscore": _shrinkage,
    "transrate": _transrate,
    "gbc": _gbc,
    "nce": partial(_counts, stream_nce),
    "conditional_entropy": partial(_counts, stream_conditional_entropy),
    "hardness": _hardness,
    "leep": _leep,
}


def check_can_split(name: str, static: dict) -> None:
    """Raise ``ValueError`` when estimator ``name`` cannot split its samples over devices (module notes)."""
    if name not in _SPLIT:
        why = CANNOT_SPLIT.get(name, "it has no streamed statistics")
        raise ValueError(
            f"{name} cannot split its samples over devices (sample_axis=): {why}; "
            "split the sources instead (source_axis=)"
        )
    if name == "transrate" and static.get("task") != "classification":
        _transrate(None, None, None, None, static)


def split_pair(name: str, source, target, mask, axis: str, opts: dict) -> jnp.ndarray:
    """One pair's score from this device's samples, merged over ``axis`` (traced, in ``shard_map``)."""
    return _SPLIT[name](source, target, mask, axis, opts)
