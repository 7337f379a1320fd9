"""Inputs shared by the multi-device and multi-process tests: every estimator, small, from one seed."""

import numpy as np

from jaxtransfer.estimators._base import get_estimator

ESTIMATORS = ("linear_mse", "logme", "nce", "leep", "hscore")


def inputs(name: str, s: int = 8, t: int = 3, n: int = 64, d: int = 6):
    """(sources [s, n, ...], targets [t, n, ...], options) for estimator ``name``, float32."""
    rng = np.random.default_rng(0)
    info = get_estimator(name).info
    features = (rng.normal(size=(s, n, d)) + 1).astype(np.float32)
    sources = {
        "features": features,
        "predictions": features[..., :2],
        "probabilities": rng.dirichlet(np.ones(4), size=(s, n)).astype(np.float32),
        "labels": rng.integers(0, 4, (s, n)),
        "none": rng.integers(0, 4, (s, n)),
    }[info.source]
    if info.target == "labels":
        targets = rng.integers(0, 3, (t, n))
    else:
        targets = rng.normal(size=(t, n, 2)).astype(np.float32)
    return sources, targets, info.caller_options(num_source_classes=4)
