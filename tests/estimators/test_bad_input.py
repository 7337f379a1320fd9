"""Bad input to the library gets a ValueError/TypeError naming the argument, before any work.

(The command line's bad input is in test_bad_input_cli.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer.estimators import MAX_INFERRED_CLASSES, MAX_TABLE_CELLS


@pytest.fixture
def data(rng):
    f = rng.normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 3
    return f, y


@pytest.mark.parametrize("estimator", ["gbc", "hscore", "logme", "transrate", "nleep"])
def test_a_stray_huge_label_is_refused_before_allocating(data, estimator):
    # one label of 10⁶ asked GBC for 4 TB inside XLA
    f, y = data
    y = y.copy()
    y[7] = 10**6
    opts = {"key": jax.random.key(0)} if estimator == "nleep" else {}
    with pytest.raises(
        ValueError,
        match=r"targets contains the label 1000000 \(at index \(7,\)\).*limited to 65,536",
    ):
        jt.get_estimator(estimator)(f, y, **opts)


def test_inferred_class_limit_and_explicit_counts(data):
    f, y = data
    z = y.copy()
    z[0] = MAX_INFERRED_CLASSES - 1  # at the limit: inferred
    assert np.isfinite(float(jt.nce(z, y)))
    z[0] = MAX_INFERRED_CLASSES
    with pytest.raises(ValueError, match=f"pass num_source_classes={MAX_INFERRED_CLASSES + 1}"):
        jt.nce(z, y)
    # an explicit count is trusted, up to the table limit
    assert np.isfinite(float(jt.nce(z, y, num_source_classes=MAX_INFERRED_CLASSES + 1)))
    with pytest.raises(
        ValueError, match=r"gbc's class-pair table \(100000 × 100000 classes × 4 components\)"
    ):
        jt.gbc(f, y, num_target_classes=100_000)
    with pytest.raises(ValueError, match=f"more than the limit of {MAX_TABLE_CELLS:,}"):
        jt.nce(z, y, num_source_classes=2**20, num_target_classes=2**12)
    with pytest.raises(ValueError, match="leep's joint table"):
        jt.leep(np.full((40, 2**16), 2.0**-16, np.float32), y, num_target_classes=2**16)


@pytest.mark.parametrize("empty", ["sources", "targets"])
def test_score_matrix_with_nothing_to_score(data, empty):
    f, y = data
    sources = np.zeros((0, 40, 4), np.float32) if empty == "sources" else f[None]
    targets = np.zeros((0, 40), int) if empty == "targets" else y[None]
    with pytest.raises(ValueError, match=f"{empty} is empty .*at least one source and one target"):
        jt.score_matrix("hscore", sources, targets)
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        jt.score_matrix("nce", np.zeros((0, 40), int) if empty == "sources" else y[None], targets)


@pytest.mark.parametrize(
    ("eps", "words"),
    [
        (1e-300, r"eps=1e-300 makes the coefficient d/eps² = .* use eps >= "),
        (1e-30, r"beyond what float32 can carry"),
    ],
)
def test_transrate_tiny_eps(data, eps, words):
    # 1e-300 raised ZeroDivisionError, 1e-30 gave NaN
    f, y = data
    with pytest.raises(ValueError, match=words):
        jt.transrate(f, y, eps=eps)
    assert np.isfinite(float(jt.transrate(f, y, eps=1e-8)))  # κ = 4e16: large, but carried


def test_transrate_eps_is_checked_as_an_array_too(data):
    f, y = data
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        jt.transrate(f, y, eps=np.float32(0.0))
    with pytest.raises(ValueError, match="beyond what float32 can carry"):
        jt.transrate(f, y, eps=jnp.asarray(1e-30))
    # traced: no value checks, and no error
    fn = jax.jit(lambda e: jt.transrate(f, y, eps=e, num_target_classes=3))
    assert np.isfinite(float(fn(0.5)))
