"""H-score and shrinkage H-score against float64 NumPy / scikit-learn references and closed forms."""

import doctest

import jax
import numpy as np
import pytest
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage
from sklearn.datasets import load_iris
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.estimators import _hscore
from jaxtransfer.estimators._hscore import hscore, shrinkage_hscore
from jaxtransfer.estimators._hscore import ledoit_wolf_shrinkage as lw_alpha

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-9, "atol": 1e-11}}
ESTIMATORS = [hscore, shrinkage_hscore]


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


# ----------------------------------------------------------------------------- references


def between_cov(f, y):
    """cov(E[f|y]): the 1/n covariance of each sample's class-mean feature vector."""
    g = np.empty_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    return np.cov(g, rowvar=False, bias=True)


def hscore_ref(f, y):
    """tr(pinv(cov f) · cov(E[f|y])) in float64, both covariances with 1/n."""
    f = np.asarray(f, np.float64)
    s = np.cov(f, rowvar=False, bias=True).reshape(f.shape[1], f.shape[1])
    b = between_cov(f, y).reshape(s.shape)
    return float(np.trace(np.linalg.pinv(s, rcond=1e-10, hermitian=True) @ b))


def shrinkage_ref(f, y):
    """tr(Σ_α⁻¹ (1 − α) cov(E[f|y])) with Σ_α and α from scikit-learn's LedoitWolf."""
    f = np.asarray(f, np.float64)
    lw = LedoitWolf().fit(f)
    b = between_cov(f, y).reshape(lw.covariance_.shape)
    return float(np.trace(np.linalg.solve(lw.covariance_, (1 - lw.shrinkage_) * b)))


REFS = {hscore: hscore_ref, shrinkage_hscore: shrinkage_ref}


def data(rng, n, d, c, dtype=np.float32, signal=1.0):
    """Class-dependent means plus correlated noise, with an offset and uneven column scales."""
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)  # every class present
    means = signal * rng.normal(size=(c, d))
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    f = means[y] + rng.normal(size=(n, d)) @ mix
    f = f * rng.uniform(0.5, 3, d) + rng.normal(size=d) * 5
    return f.astype(dtype), y


SHAPES = [(60, 5, 3), (40, 8, 2), (12, 20, 3)]  # n > d, and n < d (dual form)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("fn", ESTIMATORS)
@pytest.mark.parametrize(("n", "d", "c"), SHAPES)
def test_matches_reference_float64(rng, fn, n, d, c):
    f, y = data(rng, n, d, c, np.float64)
    with x64():
        got = fn(f, y)
        assert got.dtype == np.float64 and got.shape == ()
        close(got, REFS[fn](f, y), np.float64)


@pytest.mark.parametrize("fn", ESTIMATORS)
@pytest.mark.parametrize(("n", "d", "c"), SHAPES)
def test_matches_reference_float32(rng, fn, n, d, c):
    f, y = data(rng, n, d, c)
    got = fn(f, y)
    assert got.dtype == np.float32
    close(got, REFS[fn](f, y))


def test_ledoit_wolf_alpha_matches_sklearn(rng):
    cases = [
        rng.normal(size=(60, 5)) * [1, 2, 3, 4, 5] + 7,  # anisotropic, n > d
        rng.normal(size=(12, 20)),  # n < d (dual form)
        rng.normal(size=(60, 5)),  # nearly isotropic: small α
        data(rng, 40, 8, 2, np.float64)[0],
    ]
    alpha_of = jax.jit(lambda f, rows=None, cols=None: lw_alpha(_hscore._source(f, rows, cols)))
    with x64():
        for f in cases:
            alpha = alpha_of(f)
            close(alpha, ledoit_wolf_shrinkage(f), np.float64)
            close(alpha, LedoitWolf().fit(f).shrinkage_, np.float64)
        # masks: samples and feature columns left out
        f = cases[0]
        rows = np.arange(60) % 4 != 0
        cols = np.array([True, False, True, True, False])
        close(alpha_of(f, rows, cols), ledoit_wolf_shrinkage(f[rows][:, cols]), np.float64)
        wide = cases[1]  # dual form with both masks
        rows, cols = np.arange(12) != 4, np.arange(20) % 3 != 0
        close(alpha_of(wide, rows, cols), ledoit_wolf_shrinkage(wide[rows][:, cols]), np.float64)
        # one column: scikit-learn returns 0 (shrinkage is immaterial)
        assert float(alpha_of(f, cols=np.array([False, False, True, False, False]))) == 0.0


def test_iris_golden_value():
    # transformer-ranker's test value for the shrinkage H-score on iris is 1.177842480406727. Its
    # cov(E[f|y]) is divided by n − 1 while the Ledoit–Wolf covariance uses 1/n; with 1/n on both
    # (the definition here) the score is that value times (n − 1)/n.
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32).astype(np.float64)
    n = x.shape[0]
    with x64():
        got = float(shrinkage_hscore(x, y))
    np.testing.assert_allclose(got * n / (n - 1), 1.177842480406727, rtol=1e-6)
    np.testing.assert_allclose(got, shrinkage_ref(x, y), rtol=1e-9)
    # float32 features give the same to float32 accuracy
    np.testing.assert_allclose(float(shrinkage_hscore(x.astype(np.float32), y)), got, rtol=1e-5)


def test_two_classes_at_plus_minus_mu_closed_form():
    # Each class is ±μ plus the offsets ±√d·σ·e_j, whose empirical covariance is exactly σ²I.
    d, sigma = 4, 0.7
    mu = np.array([1.0, -0.5, 0.25, 2.0])
    offsets = np.concatenate([np.eye(d), -np.eye(d)]) * np.sqrt(d) * sigma
    f = np.concatenate([mu + offsets, -mu + offsets]) + 3.0
    y = np.repeat([0, 1], 2 * d)
    s = mu @ mu / sigma**2  # μᵀW⁻¹μ with W = σ²I: H = s / (1 + s)
    alpha = ledoit_wolf_shrinkage(f)
    m = (mu @ mu + d * sigma**2) / d  # tr S / d
    # Sherman–Morrison: Σ_α = (1−α)μμᵀ + c I with c = (1−α)σ² + α·m
    c = (1 - alpha) * sigma**2 + alpha * m
    h_alpha = (1 - alpha) * (mu @ mu) / (c + (1 - alpha) * (mu @ mu))
    with x64():
        close(hscore(f, y), s / (1 + s), np.float64)
        close(shrinkage_hscore(f, y), h_alpha, np.float64)
    close(hscore(f.astype(np.float32), y), s / (1 + s))
    close(shrinkage_hscore(f.astype(np.float32), y), h_alpha)


def test_hand_worked():
    # column 0 is the class (all of its variance is between classes), column 1 is independent of it
    f = np.array([[-1.0, 0.0], [-1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    close(hscore(f, np.array([0, 0, 1, 1])), 1.0)
    close(hscore(f, np.array([0, 1, 0, 1])), 1.0)
    # labels unrelated to both columns: no class-mean spread at all
    close(hscore(f, np.array([0, 1, 1, 0])), 0.0)
    # one class: nothing between classes
    close(hscore(f, np.zeros(4, int)), 0.0)
    close(shrinkage_hscore(f, np.zeros(4, int)), 0.0)


def test_noise_with_n_below_d_saturates_hscore_but_not_shrinkage(rng):
    n, d, c = 50, 200, 3
    f = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    plain = float(hscore(f, y))
    shrunk = float(shrinkage_hscore(f, y))
    close(plain, c - 1)  # any labels are explained perfectly when n ≤ d: H = C − 1
    close(plain, hscore_ref(f, y))
    close(shrunk, shrinkage_ref(f, y))
    assert 0 <= shrunk < 0.2 * (c - 1)  # ≈ 0.21 here (α ≈ 0.97)
    # features that do carry the labels still score well above the noise at the same n, d (≈ 1.41)
    informative = f + 5 * np.eye(c, d, dtype=np.float32)[y]
    assert float(shrinkage_hscore(informative, y)) > 0.5 * (c - 1)


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_never_negative_and_float32_agrees_on_ill_conditioned_features(rng, fn):
    # a nearly collinear column (σ ratio 1e-5, below float32's cut-off): a float32 pseudo-inverse
    # that keeps it gives noise, possibly negative; here it is dropped or shrunk.
    f, y = data(rng, 60, 5, 3, np.float64)
    f = np.concatenate([f, f[:, :1] * 2 + 1e-5 * rng.normal(size=(60, 1))], axis=1)
    got = float(fn(f.astype(np.float32), y))
    assert got >= 0
    with x64():
        want = float(fn(f, y))
    if fn is shrinkage_hscore:
        np.testing.assert_allclose(got, want, rtol=1e-3)
        close(want, shrinkage_ref(f, y), np.float64)
    else:
        # float64 resolves the extra direction, float32 does not: it loses at most its share
        assert want - 1.0 <= got <= want + 1e-4
        close(hscore(f[:, :5].astype(np.float32), y), hscore_ref(f[:, :5], y))


def test_hscore_invariant_to_invertible_linear_maps(rng):
    f, y = data(rng, 60, 5, 3, np.float64)
    a = rng.normal(size=(5, 5)) + 2 * np.eye(5)
    with x64():
        base = float(hscore(f, y))
        close(hscore(f @ a + 4.0, y), base, np.float64)
        # shrinkage toward a multiple of I is invariant to a common scale, not to general maps
        shrunk = float(shrinkage_hscore(f, y))
        close(shrinkage_hscore(1e3 * f - 2.0, y), shrunk, np.float64)


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_absent_classes_change_nothing(rng, fn):
    f, y = data(rng, 40, 8, 2)
    close(fn(f, y, num_target_classes=5), fn(f, y))
    close(fn(f, 3 * y), fn(f, y))  # labels 0 and 3; classes 1, 2 empty


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("fn", ESTIMATORS)
@pytest.mark.parametrize(("n", "d", "c"), [(60, 5, 3), (12, 20, 3)])
def test_feature_mask_equals_dropping_columns(rng, fn, n, d, c):
    f, y = data(rng, n, d, c, np.float64)
    cols = rng.random(d) < 0.6
    cols[:2] = True
    with x64():
        close(fn(f, y, feature_mask=cols), REFS[fn](f[:, cols], y), np.float64)
        # zero padding: the padded columns' values never matter once masked
        padded = np.concatenate([f, np.zeros((n, 7))], axis=1)
        keep = np.r_[np.ones(d, bool), np.zeros(7, bool)]
        close(fn(padded, y, feature_mask=keep), REFS[fn](f, y), np.float64)
        junk = padded.copy()
        junk[:, d:] = rng.normal(size=(n, 7))
        close(fn(junk, y, feature_mask=keep), REFS[fn](f, y), np.float64)
    close(fn(f.astype(np.float32), y, feature_mask=cols), REFS[fn](f[:, cols].astype(np.float32), y))


def test_zero_padding_without_a_mask():
    # plain H-score ignores all-zero columns by itself (they have no variance); the shrinkage
    # H-score does not (d enters tr S/d and α), which is what feature_mask is for
    rng = np.random.default_rng(1)
    f, y = data(rng, 60, 5, 3, np.float64)
    padded = np.concatenate([f, np.zeros((60, 3))], axis=1)
    with x64():
        close(hscore(padded, y), hscore_ref(f, y), np.float64)
        assert abs(float(shrinkage_hscore(padded, y)) - shrinkage_ref(f, y)) > 1e-3


@pytest.mark.parametrize("fn", ESTIMATORS)
@pytest.mark.parametrize(("n", "d", "c"), [(60, 5, 3), (16, 20, 3)])
def test_mask_equals_dropping_rows(rng, fn, n, d, c):
    f, y = data(rng, n, d, c, np.float64)
    rows = rng.random(n) < 0.7
    rows[:c] = True
    with x64():
        close(fn(f, y, mask=rows), REFS[fn](f[rows], y[rows]), np.float64)
    close(fn(f.astype(np.float32), y, mask=rows), REFS[fn](f[rows].astype(np.float32), y[rows]))
    # the left-out rows' values do not matter
    f2 = f.astype(np.float32).copy()
    f2[~rows] = 1e4
    close(fn(f2, y, mask=rows), REFS[fn](f[rows].astype(np.float32), y[rows]))


# ----------------------------------------------------------------------------- batching, jit


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_score_matrix_equals_loop(rng, fn):
    s_count, t_count, n, d, c = 3, 4, 24, 6, 3
    sources = rng.normal(size=(s_count, n, d)).astype(np.float32)
    targets = rng.integers(0, c, (t_count, n))
    sources[:, :, 0] += targets[0]  # some signal
    cols = np.array([True, True, False, True, True, True])
    smask = rng.random((s_count, n)) < 0.8
    tmask = rng.random((t_count, n)) < 0.8
    smask[:, :8] = tmask[:, :8] = True
    opts = {"num_target_classes": c, "feature_mask": cols}
    got = jt.score_matrix(fn, sources, targets, **opts)
    want = [[float(fn(s, t, **opts)) for t in targets] for s in sources]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = jt.score_matrix(fn, sources, targets, source_mask=smask, target_mask=tmask, batch_size=2, **opts)
    want = [
        [float(fn(s, t, mask=sm & tm, **opts)) for t, tm in zip(targets, tmask, strict=True)]
        for s, sm in zip(sources, smask, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    close(
        np.asarray(want)[0, 1],
        REFS[fn](sources[0][smask[0] & tmask[1]][:, cols], targets[1][smask[0] & tmask[1]]),
    )


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_jit_and_vmap_equal_eager(rng, fn):
    f, y = data(rng, 40, 8, 2)
    eager = float(fn(f, y))
    jitted = jax.jit(lambda f, y: fn(f, y, num_target_classes=2))
    np.testing.assert_allclose(float(jitted(f, y)), eager, rtol=1e-6)
    cols = np.ones(8, bool)
    cols[3] = False
    jm = jax.jit(lambda f, y, m: fn(f, y, num_target_classes=2, feature_mask=m))
    np.testing.assert_allclose(float(jm(f, y, cols)), float(fn(f, y, feature_mask=cols)), rtol=1e-6)
    fs = np.stack([f, 2 * f + 1, f[::-1].copy()])
    got = jax.vmap(lambda f: fn(f, y, num_target_classes=2))(fs)
    np.testing.assert_allclose(got, [float(fn(x, y)) for x in fs], rtol=1e-5)


def test_second_call_does_not_recompile(rng):
    from jaxtransfer.estimators import _base as _estimator

    f, y = data(rng, 40, 8, 2)
    cols = np.ones(8, bool)
    shrinkage_hscore(f, y, feature_mask=cols)
    before = _estimator._pair._cache_size()
    cols[2] = False  # a different feature mask is a new value, not a new program
    shrinkage_hscore(f + 1, y, feature_mask=cols)
    assert _estimator._pair._cache_size() == before


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", ESTIMATORS)
def test_bad_input(rng, fn):
    f, y = data(rng, 20, 4, 2)
    with pytest.raises(ValueError, match="feature_mask must have shape \\[4\\]"):
        fn(f, y, feature_mask=np.ones(5, bool))
    with pytest.raises(ValueError, match="keeps no feature column"):
        fn(f, y, feature_mask=np.zeros(4, bool))
    with pytest.raises(TypeError, match="feature_mask must be a boolean array"):
        fn(f, y, feature_mask=np.ones(4))
    with pytest.raises(ValueError, match="only 0/1"):
        fn(f, y, feature_mask=np.array([0, 1, 2, 1]))
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        fn(f, y.astype(float))
    with pytest.raises(ValueError, match="features has 20 samples but targets has 19"):
        fn(f, y[:19])
    with pytest.raises(ValueError, match="features must have shape \\[n, d\\]"):
        fn(f[:, 0], y)
    with pytest.raises(ValueError, match="non-finite"):
        fn(np.where(np.arange(4) == 2, np.nan, f), y)
    with pytest.raises(ValueError, match="targets contains the label 1, but num_target_classes=1"):
        fn(f, y, num_target_classes=1)
    with pytest.raises(TypeError, match="unexpected option"):
        jt.score_matrix(fn, f[None], y[None], ridge=1.0)
    with pytest.raises(TypeError, match="pass num_target_classes=<int>"):
        jax.jit(lambda f, y: fn(f, y))(f, y)


def test_metadata_and_doctests():
    for fn, name in ((hscore, "hscore"), (shrinkage_hscore, "shrinkage_hscore")):
        info = fn.info
        assert info.name == name and info.higher_is_better
        assert (info.task, info.source, info.target) == ("classification", "features", "labels")
        assert jt.get_estimator(name) is fn
    assert "ICIP 2019" in hscore.info.reference
    assert "ECML-PKDD 2022" in shrinkage_hscore.info.reference
    result = doctest.testmod(_hscore, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
