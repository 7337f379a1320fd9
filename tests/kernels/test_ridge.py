"""Spectral ridge objective against scikit-learn Ridge and numpy.linalg.lstsq in float64.

J_j(λ) = min_{a,b} (1/n) Σᵢ (y_ij − aᵀfᵢ − b)² + λ‖a‖², per output column j, bias unpenalised.
"""

import jax
import jax.numpy as jnp
import jaxtransfer_kernels as K
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from x64util import x64

# float32 results against float64 references (objective values are O(1) here); the
# statistics route finalises a difference of sums, so it gets a looser table.
TOL = {np.float32: {"rtol": 2e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-9, "atol": 1e-12}}
STATS_TOL = {np.float32: {"rtol": 2e-3, "atol": 1e-5}, np.float64: {"rtol": 1e-9, "atol": 1e-12}}
L2S = np.array([0.0, 1e-3, 0.1, 10.0])
# most tests share these shapes, so the jitted routes below compile once for them
PRIMAL, DUAL = (40, 6), (12, 30)  # n > d, and n < d (the n×n dual form)


def close(got, want, dtype=np.float32, tol=TOL):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **tol[dtype])


# ---------------------------------------------------------------------- references


def ridge_ref(features, targets, lam):
    """float64 J(λ) per output: sklearn Ridge(alpha=nλ) for λ > 0, min-norm lstsq for λ = 0."""
    f = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    n, d = f.shape
    k = y.shape[1]
    if lam == 0:
        fc, yc = f - f.mean(0), y - y.mean(0)
        coef, *_ = np.linalg.lstsq(fc, yc, rcond=None)
        return np.mean((yc - fc @ coef) ** 2, axis=0)
    model = Ridge(alpha=n * lam, fit_intercept=True, solver="svd").fit(f, y)
    coef = np.reshape(model.coef_, (k, d)).T
    pred = f @ coef + np.reshape(model.intercept_, (k,))
    return np.mean((y - pred) ** 2, axis=0) + lam * np.sum(coef**2, axis=0)


def ridge_ref_many(features, targets, l2s):
    return np.stack([ridge_ref(features, targets, lam) for lam in np.ravel(l2s)]).reshape(*np.shape(l2s), -1)


# ------------------------------------------------------------ the two kernel routes


def _factor_route(features, targets, l2, mask=None, factor_l2=None):
    factor = K.ridge_factor(features, mask, l2=factor_l2)
    return K.ridge_objective(factor, targets, l2, mask), factor.cholesky


def _stats_route(features, targets, l2, mask=None):
    src = K.source_stats(features, mask)
    crs = K.cross_stats(features, targets, mask, feature_shift=src.shift)
    return K.ridge_objective_from_stats(src, crs, l2)


# Sweeps call jitted routes (one compile per shape instead of one per op and shape);
# eager calls are compared with these in test_jit_equals_eager_and_no_recompile.
factor_route = jax.jit(_factor_route)
stats_route = jax.jit(_stats_route)
ridge_factor = jax.jit(K.ridge_factor)
source_stats = jax.jit(K.source_stats)
cross_stats = jax.jit(K.cross_stats)
add_stats = jax.jit(K.add_stats)


def data(rng, n, d, k=3, dtype=np.float32, offset=2.0):
    f = rng.normal(size=(n, d)) + offset
    y = f[:, : min(d, 2)] @ rng.normal(size=(min(d, 2), k)) + rng.normal(size=(n, k)) + 1.0
    return f.astype(dtype), y.astype(dtype)


# ------------------------------------------------------------------------- sweeps


@pytest.mark.parametrize(("n", "d", "k"), [(*PRIMAL, 3), (*DUAL, 3), (25, 25, 2), (30, 1, 1)])
def test_objective_vs_sklearn_vector_l2(rng, n, d, k):
    f, y = data(rng, n, d, k)
    want = ridge_ref_many(f, y, L2S)
    got, chol = factor_route(f, y, L2S)
    assert got.shape == (len(L2S), k) and got.dtype == jnp.float32
    assert not bool(chol)
    close(got, want)
    got = stats_route(f, y, L2S)
    assert got.shape == (len(L2S), k)
    close(got, want, tol=STATS_TOL)


@pytest.mark.parametrize(("n", "d"), [PRIMAL, DUAL])
@pytest.mark.parametrize("lam", L2S.tolist())
def test_objective_scalar_l2_both_factor_kinds(rng, n, d, lam):
    f, y = data(rng, n, d)
    want = ridge_ref(f, y, lam)
    for factor_l2 in (None, lam):  # eigendecomposition for any λ, or built for this λ
        got, _ = factor_route(f, y, np.float32(lam), factor_l2=None if factor_l2 is None else np.float32(lam))
        assert got.shape == (3,)
        close(got, want)
    close(stats_route(f, y, np.float32(lam)), want, tol=STATS_TOL)


def test_l2_array_shape(rng):
    f, y = data(rng, *PRIMAL)
    l2 = np.array([[0.0, 0.01, 0.1], [1.0, 3.0, 10.0]], np.float32)
    got, _ = factor_route(f, y, l2)
    assert got.shape == (2, 3, 3)
    close(got, ridge_ref_many(f, y, l2))
    got = stats_route(f, y, l2)
    assert got.shape == (2, 3, 3)
    close(got, ridge_ref_many(f, y, l2), tol=STATS_TOL)


def test_objective_rises_to_variance(rng):
    # J(λ) rises with λ towards the target variance (a → 0 as λ → ∞)
    f, y = data(rng, *PRIMAL)
    l2 = np.array([1e-4, 1e-1, 1e2, 1e7], np.float32)
    got = np.asarray(factor_route(f, y, l2)[0], np.float64)
    assert (np.diff(got, axis=0) >= -1e-6).all()
    close(got[-1], np.var(y.astype(np.float64), axis=0), tol={np.float32: {"rtol": 1e-4, "atol": 0}})


# ------------------------------------------------------------------- Cholesky path


@pytest.mark.parametrize(("n", "d"), [PRIMAL, DUAL])
def test_cholesky_threshold_and_paths_agree(rng, n, d):
    f, y = data(rng, n, d)
    f64 = f.astype(np.float64)
    fc = f64 - f64.mean(0)
    trace = np.sum(fc**2)  # tr(C) = tr(K) = ‖F_c‖²
    threshold = np.sqrt(np.finfo(np.float32).eps) * trace / n  # λ with n·λ = √eps·tr(C)
    for lam, want_chol in ((2.0 * threshold, True), (0.5 * threshold, False), (0.0, False), (1.0, True)):
        lam = np.float32(lam)
        got, chol = factor_route(f, y, lam, factor_l2=lam)
        assert bool(chol) is want_chol, lam
        close(got, ridge_ref(f, y, float(lam)))
        eig, chol = factor_route(f, y, lam)
        assert not bool(chol)
        close(eig, np.asarray(got, np.float64), tol={np.float32: {"rtol": 1e-5, "atol": 1e-6}})


def test_cholesky_factor_contents(rng):
    f, _ = data(rng, *PRIMAL)
    factor = ridge_factor(f, l2=np.float32(0.5))
    assert bool(factor.cholesky)
    fc = f.astype(np.float64) - f.astype(np.float64).mean(0)
    # the factor of C/(nλ) + I, which is scale-free: the same for features at any scale
    want = np.linalg.cholesky(fc.T @ fc / (40 * 0.5) + np.eye(6))
    np.testing.assert_allclose(np.asarray(factor.factor, np.float64), want, rtol=1e-4, atol=1e-4)
    # 1/(nλ) in the units of the scaled features (a power of two times the input's)
    scale = float(factor.spectrum.scale)
    np.testing.assert_allclose(float(factor.inv_penalty), 1 / (20.0 * scale**2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(factor.spectrum.mean), f.astype(np.float64).mean(0), rtol=1e-5)
    assert float(factor.spectrum.count) == 40.0


# ------------------------------------------------------- singular and edge features


def test_collinear_features_lambda_zero_is_min_norm_lstsq(rng):
    # dyadic values, so the duplicate and affine columns are exactly collinear in float32
    n = PRIMAL[0]
    base = rng.integers(-16, 16, size=(n, 3)) / 4.0
    f = np.concatenate([base, base[:, :1], 2.0 * base[:, 1:2] + 1.0, np.full((n, 1), 0.75)], axis=1)
    f = f.astype(np.float32)
    assert f.shape == PRIMAL
    y = (base @ rng.normal(size=(3, 3)) + rng.normal(size=(n, 3))).astype(np.float32)
    assert np.linalg.matrix_rank(f - f.mean(0)) == 3
    want = ridge_ref(f, y, 0.0)
    # the reduced problem on the independent columns has the same residual
    close(want, ridge_ref(base, y, 0.0), np.float64)
    close(factor_route(f, y, np.float32(0.0))[0], want)
    close(stats_route(f, y, np.float32(0.0)), want, tol=STATS_TOL)
    close(factor_route(f, y, L2S)[0], ridge_ref_many(f, y, L2S))


@pytest.mark.parametrize(("n", "d"), [PRIMAL, DUAL])
def test_constant_feature_column(rng, n, d):
    f, y = data(rng, n, d)
    f[:, 2] = 0.3  # not a dyadic value: its float32 mean is not exact
    want = ridge_ref_many(f, y, L2S)
    close(factor_route(f, y, L2S)[0], want)
    close(stats_route(f, y, L2S), want, tol=STATS_TOL)
    for lam in (0.0, 0.1):
        close(factor_route(f, y, np.float32(lam), factor_l2=np.float32(lam))[0], ridge_ref(f, y, lam))


def test_all_features_constant_gives_target_variance(rng):
    n, d = PRIMAL
    f = np.tile(np.linspace(-2.0, 1.5, d, dtype=np.float32)[None, :] + np.float32(0.1), (n, 1))
    y = rng.normal(size=(n, 3)).astype(np.float32)
    want = np.tile(np.var(y.astype(np.float64), axis=0), (len(L2S), 1))
    close(factor_route(f, y, L2S)[0], want)
    close(stats_route(f, y, L2S), want, tol=STATS_TOL)


def test_n_less_than_d_lambda_zero_fits_exactly(rng):
    f, y = data(rng, *DUAL)
    var = np.var(y.astype(np.float64), axis=0)
    got = np.asarray(factor_route(f, y, np.float32(0.0))[0], np.float64)
    assert (np.abs(got) <= 1e-5 * var).all()
    got = np.asarray(stats_route(f, y, np.float32(0.0)), np.float64)
    assert (np.abs(got) <= 1e-4 * var).all()


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize(("n", "d"), [PRIMAL, DUAL])
def test_mask_equals_dropping_rows(rng, n, d):
    f, y = data(rng, n, d)
    mask = rng.random(n) < 0.6
    # masked rows hold junk that must not leak in
    f[~mask] = 1e3
    y[~mask] = -1e3
    want = ridge_ref_many(f[mask], y[mask], L2S)
    close(factor_route(f, y, L2S, mask)[0], want)
    close(stats_route(f, y, L2S, mask), want, tol=STATS_TOL)
    for lam in (0.0, 0.05):
        lam = np.float32(lam)
        got, _ = factor_route(f, y, lam, mask, factor_l2=lam)
        close(got, ridge_ref(f[mask], y[mask], float(lam)))


def test_factor_mask_stats(rng):
    f, _ = data(rng, *PRIMAL)
    mask = rng.random(PRIMAL[0]) < 0.5
    spec = ridge_factor(f, mask).spectrum
    assert float(spec.count) == mask.sum()
    np.testing.assert_allclose(np.asarray(spec.mean), f[mask].astype(np.float64).mean(0), rtol=1e-5)
    centred = np.asarray(spec.features) / float(spec.scale)
    assert (centred[~mask] == 0).all()
    np.testing.assert_allclose(centred[mask], f[mask] - f[mask].mean(0), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- streaming


def test_streamed_stats_add_to_whole_array_stats(rng):
    (n, d), k = PRIMAL, 3
    f, y = data(rng, n, d, k)
    mask = rng.random(n) < 0.8
    cut = 15
    s1 = source_stats(f[:cut], mask[:cut])
    c1 = cross_stats(f[:cut], y[:cut], mask[:cut], feature_shift=s1.shift)
    s2 = source_stats(f[cut:], mask[cut:], shift=s1.shift)
    c2 = cross_stats(f[cut:], y[cut:], mask[cut:], feature_shift=s1.shift, target_shift=c1.shift)
    src, crs = add_stats(s1, s2), add_stats(c1, c2)

    whole_s = source_stats(f, mask, shift=s1.shift)
    whole_c = cross_stats(f, y, mask, feature_shift=s1.shift, target_shift=c1.shift)
    assert float(src.count) == mask.sum()
    for got, want in zip(src, whole_s, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)
    for got, want in zip(crs, whole_c, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)

    # and against float64 NumPy sums about the same shifts
    fs = (f.astype(np.float64) - np.asarray(s1.shift, np.float64)) * mask[:, None]
    ys = (y.astype(np.float64) - np.asarray(c1.shift, np.float64)) * mask[:, None]
    np.testing.assert_allclose(np.asarray(src.total), fs.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(src.gram), fs.T @ fs, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(crs.total), ys.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(crs.cross), fs.T @ ys, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(crs.squares), (ys**2).sum(0), rtol=1e-5, atol=1e-3)

    want = ridge_ref_many(f[mask], y[mask], L2S)
    finalise = jax.jit(K.ridge_objective_from_stats)
    close(finalise(src, crs, L2S), want, tol=STATS_TOL)
    close(finalise(whole_s, whole_c, L2S), want, tol=STATS_TOL)


def test_stats_default_shift_is_masked_mean(rng):
    f, y = data(rng, *PRIMAL)
    mask = rng.random(PRIMAL[0]) < 0.5
    s = source_stats(f, mask)
    c = cross_stats(f, y, mask, feature_shift=s.shift)
    np.testing.assert_allclose(np.asarray(s.shift), f[mask].astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(c.shift), y[mask].astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s.total), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(c.total), 0.0, atol=1e-4)


# ------------------------------------------------------------------ near-exact fit


def test_near_exact_fit_factor_route_keeps_digits(rng):
    n, d, k = 200, 10, 2
    f = rng.normal(size=(n, d)) + 5.0
    y = f @ rng.normal(size=(d, k)) + 1e-4 * rng.normal(size=(n, k)) + 3.0
    f, y = f.astype(np.float32), y.astype(np.float32)
    var = np.var(y.astype(np.float64), axis=0)
    for lam in (0.0, 1e-8):
        want = ridge_ref(f, y, lam)  # about 1e-8, nine orders below the variance
        assert (want < 1e-6 * var).all()
        # residuals computed directly: a small relative error (observed ≤ 1.3e-3 over seeds)
        got, _ = factor_route(f, y, np.float32(lam))
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-2)
        # closed form from sums: only absolute accuracy relative to the target variance
        got = np.asarray(stats_route(f, y, np.float32(lam)), np.float64)
        assert (np.abs(got - want) <= 1e-5 * var).all()


# ------------------------------------------------------------------------- float64


def test_float64(rng):
    f, y = data(rng, *PRIMAL, dtype=np.float64)
    mask = rng.random(PRIMAL[0]) < 0.8
    fd, yd = data(rng, *DUAL, dtype=np.float64)
    with x64():
        fj, yj, l2 = jnp.asarray(f), jnp.asarray(y), jnp.asarray(L2S)
        want = ridge_ref_many(f, y, L2S)
        got, _ = factor_route(fj, yj, l2)
        assert got.dtype == jnp.float64
        close(got, want, np.float64)
        close(stats_route(fj, yj, l2), want, np.float64, STATS_TOL)
        want = ridge_ref_many(f[mask], y[mask], L2S)
        close(factor_route(fj, yj, l2, jnp.asarray(mask))[0], want, np.float64)
        lam = jnp.asarray(1.0, jnp.float64)
        got, chol = factor_route(fj, yj, lam, factor_l2=lam)
        assert bool(chol)
        close(got, ridge_ref(f, y, 1.0), np.float64)
        # dual form
        got, _ = factor_route(jnp.asarray(fd), jnp.asarray(yd), l2)
        assert got.dtype == jnp.float64
        close(got, ridge_ref_many(fd, yd, L2S), np.float64)


def test_float64_near_exact_fit(rng):
    n, d = 100, 6
    f = rng.normal(size=(n, d))
    y = f @ rng.normal(size=(d, 1)) + 1e-6 * rng.normal(size=(n, 1))
    with x64():
        got, _ = factor_route(jnp.asarray(f), jnp.asarray(y), jnp.asarray(0.0))
    np.testing.assert_allclose(np.asarray(got), ridge_ref(f, y, 0.0), rtol=1e-6)


# ------------------------------------------------------------------ jit and eager


def test_jit_equals_eager_and_no_recompile(rng):
    n, d = PRIMAL
    traces = []

    @jax.jit
    def both(f, y, mask, lam):
        traces.append(None)
        return _factor_route(f, y, lam, mask, factor_l2=lam)[0], _stats_route(f, y, lam, mask)

    for i, lam in enumerate((0.0, 0.5)):  # eigendecomposition, then Cholesky: same trace
        f, y = data(rng, n, d)
        mask = rng.random(n) < 0.7
        lam = np.float32(lam)
        jf, js = both(f, y, mask, lam)
        ef, chol = _factor_route(f, y, lam, mask, factor_l2=lam)  # eager
        assert bool(chol) is (i == 1)
        es = _stats_route(f, y, lam, mask)
        np.testing.assert_allclose(np.asarray(jf), np.asarray(ef), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(js), np.asarray(es), rtol=1e-5, atol=1e-6)
        close(jf, ridge_ref(f[mask], y[mask], float(lam)))
    assert len(traces) == 1


def test_cholesky_factor_with_several_penalties_gives_nan():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((30, 4)).astype(np.float32)
    y = rng.standard_normal((30, 1)).astype(np.float32)
    factor = K.ridge_factor(f, l2=1.0)
    assert bool(factor.cholesky)
    assert np.isnan(np.asarray(K.ridge_objective(factor, y, jnp.array([0.5, 1.0])))).all()
    eig = K.ridge_factor(f)
    assert np.isfinite(np.asarray(K.ridge_objective(eig, y, jnp.array([0.5, 1.0])))).all()
