"""LEEP against a direct float64 NumPy implementation of its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads
from x64util import x64

import jaxtransfer as jt

TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}
N, CZ, CY = 40, 6, 4


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def leep_ref(theta, y, mask=None):
    """LEEP from the formula: P(y,z) = (1/n)Σ_{i:y_i=y} θ_iz, P(y|z) = P(y,z)/P(z),
    mean_i log Σ_z P(y_i|z) θ_iz, in float64, with a plain loop over classes."""
    theta = np.asarray(theta, np.float64)
    y = np.asarray(y)
    if mask is not None:
        theta, y = theta[mask], y[mask]
    n = theta.shape[0]
    labels = np.unique(y)
    p_yz = {c: theta[y == c].sum(axis=0) / n for c in labels}  # each [Cz]
    p_z = sum(p_yz.values())
    eep = np.array([np.sum(p_yz[y[i]] / p_z * theta[i]) for i in range(n)])
    return float(np.mean(np.log(eep)))


def random_probs(rng, n=N, cz=CZ, sharp=2.0):
    return scipy.special.softmax(sharp * rng.normal(size=(n, cz)), axis=1)


def leep(theta, y, **kw):
    return jt.leep(theta, y, **{"num_target_classes": CY, **kw})


def test_matches_reference(rng):
    for sharp in (0.5, 2.0, 6.0):
        theta = random_probs(rng, sharp=sharp)
        y = rng.integers(0, CY, N)
        close(leep(theta, y), leep_ref(theta, y))


def test_inferred_class_count(rng):
    theta = random_probs(rng, n=30, cz=3)
    y = rng.integers(0, 5, 30)
    y[0] = 4
    close(jt.leep(theta, y), leep_ref(theta, y))


def test_float64(rng):
    theta = random_probs(rng)
    y = rng.integers(0, CY, N)
    with x64():
        got = leep(theta, y)
        assert got.dtype == np.float64
        close(got, leep_ref(theta, y), np.float64)


def test_hand_worked_cases():
    # z determines y: the expected empirical predictor is exact, LEEP = 0.
    close(jt.leep(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 0])), 0.0)
    # A constant source output carries no information: LEEP = -H(Y).
    y = np.array([0, 0, 0, 1])
    theta = np.full((4, 3), 1 / 3)
    close(jt.leep(theta, y), 0.75 * np.log(0.75) + 0.25 * np.log(0.25))


def test_upper_bound_and_information(rng):
    # LEEP <= 0, and it improves when the source output predicts y.
    y = rng.integers(0, CY, N)
    noise = random_probs(rng)
    informative = 0.2 * noise + 0.8 * np.eye(CZ)[y]  # source class y_i gets most mass
    low, high = float(leep(noise, y)), float(leep(informative, y))
    assert low <= 1e-6 and high <= 1e-6
    assert high > low
    close(high, leep_ref(informative, y))


def test_logits_equal_softmax(rng):
    logits = 3.0 * rng.normal(size=(N, CZ))
    y = rng.integers(0, CY, N)
    probs = scipy.special.softmax(logits, axis=1)
    want = leep_ref(probs, y)
    close(leep(logits, y, logits=True), want)
    close(leep(probs, y), want)
    with x64():
        close(leep(logits, y, logits=True), want, np.float64)


def test_large_logits_are_stable(rng):
    logits = 200.0 * rng.normal(size=(N, CZ))
    y = rng.integers(0, CY, N)
    got = float(leep(logits, y, logits=True))
    assert np.isfinite(got)
    with x64():
        close(leep(logits, y, logits=True), leep_ref(scipy.special.softmax(logits, axis=1), y), np.float64)


@pytest.mark.parametrize("dead", [0, 3, CZ - 1])
def test_source_class_without_mass(rng, dead):
    theta = random_probs(rng)
    theta[:, dead] = 0.0
    theta /= theta.sum(axis=1, keepdims=True)
    y = rng.integers(0, CY, N)
    got = leep(theta, y)
    assert np.isfinite(float(got))
    close(got, leep_ref(np.delete(theta, dead, axis=1), y))
    with x64():
        close(leep(theta, y), leep_ref(np.delete(theta, dead, axis=1), y), np.float64)


def test_absent_target_classes(rng):
    theta = random_probs(rng)
    y = rng.choice([0, 2], N)
    close(leep(theta, y), leep_ref(theta, y))
    close(leep(theta, y, num_target_classes=9), leep_ref(theta, y))


def test_single_target_class(rng):
    theta = random_probs(rng)
    close(leep(theta, np.zeros(N, int)), 0.0)
    close(jt.leep(theta, np.zeros(N, int)), 0.0)


def test_single_source_class(rng):
    y = rng.integers(0, CY, N)
    want = -float(scipy.stats.entropy(np.bincount(y)))
    close(leep(np.ones((N, 1)), y), want)


def test_mask_equals_dropping_samples(rng):
    theta = random_probs(rng)
    y = rng.integers(0, CY, N)
    mask = rng.random(N) < 0.6
    want = leep_ref(theta[mask], y[mask])
    close(leep(theta, y, mask=mask), want)
    close(leep(theta[mask], y[mask]), want)
    logits = np.log(theta)
    close(leep(logits, y, mask=mask, logits=True), want)


def test_gradients_wrt_logits_match_finite_differences(rng):
    y = rng.integers(0, CY, 20)
    logits = rng.normal(size=(20, CZ))
    with x64():
        fn = lambda x: jt.leep(x, y, logits=True, num_target_classes=CY)  # noqa: E731
        check_grads(fn, (jnp.asarray(logits),), order=1, modes=["rev"])
        g = jax.grad(fn)(jnp.asarray(logits))
        assert np.isfinite(np.asarray(g)).all()
        # softmax is shift invariant per row, so the gradient rows sum to 0
        np.testing.assert_allclose(np.asarray(g).sum(axis=1), 0.0, atol=1e-12)


def test_gradients_wrt_probabilities(rng):
    y = rng.integers(0, CY, 20)
    theta = random_probs(rng, n=20, sharp=0.5)
    with x64():
        fn = lambda p: jt.leep(p, y, num_target_classes=CY)  # noqa: E731
        # finite differences perturb entries; renormalise so every evaluation is a valid input
        normalised = lambda p: fn(p / jnp.sum(p, axis=1, keepdims=True))  # noqa: E731
        check_grads(normalised, (jnp.asarray(theta),), order=1, modes=["rev"])
        theta[:, 2] = 0.0
        theta /= theta.sum(axis=1, keepdims=True)
        g = jax.grad(fn)(jnp.asarray(theta))
        assert np.isfinite(np.asarray(g)).all()


def test_gradients_float32_finite(rng):
    y = rng.integers(0, CY, N)
    logits = rng.normal(size=(N, CZ)).astype(np.float32)
    g = jax.grad(lambda x: leep(x, y, logits=True))(logits)
    assert g.dtype == np.float32
    assert np.isfinite(np.asarray(g)).all()


def test_jit_equals_eager(rng):
    theta = random_probs(rng)
    y = rng.integers(0, CY, N)
    fn = jax.jit(lambda p, t: jt.leep(p, t, num_target_classes=CY))
    np.testing.assert_allclose(fn(theta, y), leep(theta, y), rtol=1e-6)


def test_vmap(rng):
    thetas = np.stack([random_probs(rng) for _ in range(3)])
    ys = rng.integers(0, CY, (3, N))
    got = jax.vmap(lambda p, t: jt.leep(p, t, num_target_classes=CY))(thetas, ys)
    close(got, [leep_ref(p, t) for p, t in zip(thetas, ys, strict=True)])


@pytest.mark.parametrize(
    "bad",
    [
        lambda p: p - 0.5,  # negative entries
        lambda p: 2.0 * p,  # rows sum to 2
        lambda p: 0.9 * p,  # rows sum to 0.9
        lambda p: np.log(p),  # logits passed as probabilities
    ],
)
def test_bad_probabilities_point_to_logits(rng, bad):
    theta = random_probs(rng)
    y = rng.integers(0, CY, N)
    with pytest.raises(ValueError, match="logits=True"):
        leep(bad(theta), y)


def test_probability_tolerance_allows_rounding(rng):
    theta = random_probs(rng).astype(np.float32)
    theta[0] *= 1 + 1e-6
    y = rng.integers(0, CY, N)
    close(leep(theta, y), leep_ref(theta, y))


def test_info_metadata():
    info = jt.leep.info
    assert info.name == "leep"
    assert info.higher_is_better
    assert (info.task, info.source, info.target) == ("classification", "probabilities", "labels")
    assert "LEEP" in info.reference and "ICML 2020" in info.reference
    assert jt.get_estimator("leep") is jt.leep
