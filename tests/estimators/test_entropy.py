"""Conditional entropy, NCE and hardness against float64 NumPy/SciPy references.

Most cases share one shape (N samples, CZ × CY classes, passed explicitly) so
that the suite compiles each pair function only a few times.
"""

import jax
import numpy as np
import pytest
import scipy.stats
from x64util import x64

import jaxtransfer as jt

# Results in the default float32 against float64 references; x64 runs compared tightly.
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}
N, CZ, CY = 40, 4, 5
METHODS = ["onehot", "scatter"]


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def ce(z, y, method="onehot", fn=jt.conditional_entropy, **kw):
    """The estimator at the shared class counts."""
    kw = {"num_source_classes": CZ, "num_target_classes": CY, **kw}
    return fn(z, y, method=method, **kw)


def cond_entropy_ref(z, y, mask=None):
    """H(Y|Z) in nats: -Σ P(y,z) log(P(y,z)/P(z)), straight from the definition in float64."""
    z, y = np.asarray(z, int), np.asarray(y, int)
    if mask is not None:
        z, y = z[np.asarray(mask, bool)], y[np.asarray(mask, bool)]
    joint = np.zeros((z.max() + 1, y.max() + 1))
    np.add.at(joint, (z, y), 1.0)
    p_zy = joint / z.size
    p_z = np.broadcast_to(p_zy.sum(axis=1, keepdims=True), p_zy.shape)
    nz = p_zy > 0
    return float(-np.sum(p_zy[nz] * np.log(p_zy[nz] / p_z[nz])))


def freq_entropy(y):
    return float(scipy.stats.entropy(np.bincount(np.asarray(y))))


@pytest.mark.parametrize("method", METHODS)
def test_matches_reference(rng, method):
    for _ in range(3):
        z = rng.integers(0, CZ, N)
        y = rng.integers(0, CY, N)
        want = cond_entropy_ref(z, y)
        close(ce(z, y, method), want)
        close(ce(z, y, method, fn=jt.nce), -want)


@pytest.mark.parametrize(("cz", "cy"), [(3, 4), (25, 30)])  # auto picks onehot, then scatter
def test_auto_method_with_inferred_class_counts(rng, cz, cy):
    z = rng.integers(0, cz, 300)
    y = rng.integers(0, cy, 300)
    z[0], y[0] = cz - 1, cy - 1  # the inferred counts are cz, cy
    close(jt.conditional_entropy(z, y), cond_entropy_ref(z, y))


@pytest.mark.parametrize("method", METHODS)
def test_float64(rng, method):
    z = rng.integers(0, CZ, N)
    y = rng.integers(0, CY, N)
    with x64():
        got = ce(z, y, method)
        assert got.dtype == np.float64
        close(got, cond_entropy_ref(z, y), np.float64)


def test_docstring_hand_worked_case():
    # z = 0 sees y ∈ {0, 1} (entropy log 2, weight 1/2); z = 1 sees only y = 1.
    close(jt.conditional_entropy([0, 0, 1, 1], [0, 1, 1, 1]), 0.5 * np.log(2))
    # a bijection z -> y
    close(jt.nce([0, 1, 0, 1], [1, 0, 1, 0]), 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_target_function_of_source_is_zero(rng, method):
    z = rng.integers(0, CZ, N)
    y = np.array([2, 0, 2, 4])[z]  # many-to-one map z -> y
    close(ce(z, y, method), 0.0)
    close(ce(z, y, method, fn=jt.nce), 0.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("cz", "cy"), [(4, 5), (2, 5), (4, 2)])
def test_independent_uniform_labels_give_log_cy(method, cz, cy):
    # Every (z, y) pair appears equally often: Y is independent of Z and uniform.
    m = N // (cz * cy)
    z = np.repeat(np.arange(cz), cy * m)
    y = np.tile(np.repeat(np.arange(cy), m), cz)
    assert z.size == N
    close(ce(z, y, method), np.log(cy))


def test_independent_random_labels_near_log_c(rng):
    n = 20000
    z = rng.integers(0, CZ, n)
    y = rng.integers(0, CY, n)
    got = float(ce(z, y))
    close(got, cond_entropy_ref(z, y))
    assert abs(got - np.log(CY)) < 2e-3  # plug-in bias ≈ CZ(CY-1)/(2n) = 4e-4


@pytest.mark.parametrize("method", METHODS)
def test_single_class(rng, method):
    y = rng.integers(0, CY, N)
    z = rng.integers(0, CZ, N)
    ones = np.zeros(N, int)
    # one source class: H(Y|Z) = H(Y)
    close(ce(ones, y, method, num_source_classes=1), freq_entropy(y))
    close(ce(ones, y, method), freq_entropy(y))
    # one target class: nothing left to predict
    close(ce(z, ones, method, num_target_classes=1), 0.0)
    close(ce(z, ones, method), 0.0)
    close(ce(ones, ones, method, num_source_classes=1, num_target_classes=1), 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_absent_classes_change_nothing(rng, method):
    # Labels use classes {0, 2} / {1, 4}: the gaps and the unused top classes are empty cells.
    z = rng.choice([0, 2], N)
    y = rng.choice([1, 4], N)
    want = cond_entropy_ref(z, y)
    close(ce(z, y, method), want)  # counts CZ, CY, larger than what is used
    close(jt.conditional_entropy(z, y, method=method), want)  # counts inferred: 3, 5
    close(ce(z, y, method, num_source_classes=17, num_target_classes=23), want)


@pytest.mark.parametrize("method", METHODS)
def test_mask_equals_dropping_samples(rng, method):
    z = rng.integers(0, CZ, N)
    y = rng.integers(0, CY, N)
    mask = rng.random(N) < 0.6
    want = cond_entropy_ref(z[mask], y[mask])
    close(ce(z, y, method, mask=mask), want)
    close(ce(z, y, method, mask=mask.astype(np.int32)), want)  # a 0/1 mask means the same
    close(ce(z[mask], y[mask], method), want)


def test_methods_agree(rng):
    for _ in range(3):
        z = rng.integers(0, CZ, N)
        y = rng.integers(0, CY, N)
        values = [float(ce(z, y, m)) for m in METHODS]
        np.testing.assert_allclose(values, values[0], rtol=1e-6, atol=1e-7)


def test_nce_is_minus_conditional_entropy(rng):
    z = rng.integers(0, CZ, N)
    y = rng.integers(0, CY, N)
    assert float(ce(z, y, fn=jt.nce)) == -float(ce(z, y))


def test_bounds(rng):
    # 0 <= H(Y|Z) <= H(Y): conditioning cannot increase entropy.
    for _ in range(5):
        z = rng.integers(0, CZ, N)
        y = rng.integers(0, CY, N)
        h = float(ce(z, y))
        assert -1e-6 <= h <= freq_entropy(y) + 1e-5


def test_bool_labels(rng):
    z = rng.random(N) < 0.5
    y = rng.random(N) < 0.3
    close(ce(z, y), cond_entropy_ref(z, y))


# ----------------------------------------------------------------------------- hardness


def test_hardness_is_label_entropy(rng):
    for c in (2, CY, 13):
        y = rng.integers(0, c, N)
        close(jt.hardness(y, num_target_classes=13), freq_entropy(y))
    y = rng.integers(0, CY, N)
    y[0] = CY - 1
    close(jt.hardness(y), freq_entropy(y))  # class count inferred


def test_hardness_hand_worked():
    close(jt.hardness(np.arange(4)), np.log(4))
    close(jt.hardness(np.array([0, 0, 0, 1])), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    close(jt.hardness(np.array([3, 3, 3, 3])), 0.0)


def test_hardness_float64(rng):
    y = rng.integers(0, CY, N)
    with x64():
        got = jt.hardness(y, num_target_classes=CY)
        assert got.dtype == np.float64
        close(got, freq_entropy(y), np.float64)


def test_hardness_absent_classes(rng):
    y = rng.choice([0, 3, 7], N)
    close(jt.hardness(y, num_target_classes=13), freq_entropy(y))


def test_hardness_mask(rng):
    y = rng.integers(0, CY, N)
    mask = rng.random(N) < 0.5
    close(jt.hardness(y, num_target_classes=CY, mask=mask), freq_entropy(y[mask]))


def test_hardness_stacked(rng):
    ys = rng.integers(0, CY, (4, N))
    got = jt.hardness(ys, num_target_classes=CY)
    assert got.shape == (4,)
    close(got, [freq_entropy(y) for y in ys])
    mask = rng.random((4, N)) < 0.7
    want = [freq_entropy(y[m]) for y, m in zip(ys, mask, strict=True)]
    close(jt.hardness(ys, num_target_classes=CY, mask=mask), want)


def test_hardness_equals_conditional_entropy_with_trivial_source(rng):
    y = rng.integers(0, CY, N)
    close(jt.hardness(y, num_target_classes=CY), float(ce(np.zeros(N, int), y)))


# ----------------------------------------------------------------------------- transformations


def test_vmap_nce_with_static_class_counts(rng):
    zs = rng.integers(0, CZ, (5, N))
    ys = rng.integers(0, CY, (5, N))
    fn = jax.vmap(lambda z, y: jt.nce(z, y, num_source_classes=CZ, num_target_classes=CY))
    close(fn(zs, ys), [-cond_entropy_ref(z, y) for z, y in zip(zs, ys, strict=True)])


def test_jit_nce_with_static_class_counts_equals_eager(rng):
    z = rng.integers(0, CZ, N)
    y = rng.integers(0, CY, N)
    fn = jax.jit(lambda z, y: jt.nce(z, y, num_source_classes=CZ, num_target_classes=CY))
    np.testing.assert_allclose(
        fn(z, y), jt.nce(z, y, num_source_classes=CZ, num_target_classes=CY), rtol=1e-6
    )
    close(fn(z, y), -cond_entropy_ref(z, y))


def test_jit_nce_without_class_counts_raises(rng):
    z = rng.integers(0, CZ, N)
    y = rng.integers(0, CY, N)
    with pytest.raises(TypeError, match="num_source_classes"):
        jax.jit(lambda z, y: jt.nce(z, y))(z, y)
    with pytest.raises(TypeError, match="num_target_classes"):
        jax.jit(lambda z, y: jt.nce(z, y, num_source_classes=CZ))(z, y)


def test_second_pair_call_does_not_recompile(rng):
    from jaxtransfer.estimators import _base as _estimator

    def call():
        return ce(rng.integers(0, CZ, N), rng.integers(0, CY, N), fn=jt.nce)

    call()
    before = _estimator._pair._cache_size()
    call()
    call()
    assert _estimator._pair._cache_size() == before


def test_info_metadata():
    info = jt.nce.info
    assert info.name == "nce"
    assert info.higher_is_better
    assert (info.task, info.source, info.target) == ("classification", "labels", "labels")
    assert "Tran" in info.reference and "ICCV 2019" in info.reference
    assert jt.conditional_entropy.info.name == "conditional_entropy"
    assert not jt.conditional_entropy.info.higher_is_better
    assert jt.hardness.info.name == "hardness"
    assert jt.hardness.info.orientation == "higher_is_harder"
    assert not jt.hardness.info.higher_is_better
    for name in ("nce", "conditional_entropy", "hardness"):
        assert name in jt.available_estimators()
        assert jt.get_estimator(name).info.name == name
