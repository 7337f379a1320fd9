"""Linear MSE and Label MSE against scikit-learn Ridge and NumPy least squares (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from sklearn.linear_model import Ridge
from x64util import x64

import jaxtransfer as jt

# relative to the reference's magnitude; float32 inputs are rounded before the reference sees them
TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-9, "atol": 1e-11}}


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def ridge_ref(f, y, l2):
    """-[(1/n) Σ‖y_i − A f_i − b‖² + λ‖A‖²_F] in float64: Ridge(alpha=nλ), or min-norm lstsq at λ = 0."""
    f = np.asarray(f, np.float64)
    y = np.asarray(y, np.float64)
    if f.ndim == 1:
        f = f[:, None]
    n = f.shape[0]
    if l2 == 0:
        fc, yc = f - f.mean(axis=0), y - y.mean(axis=0)
        coef = np.linalg.lstsq(fc, yc, rcond=None)[0]
        return -float(np.sum((yc - fc @ coef) ** 2) / n)
    model = Ridge(alpha=n * l2, fit_intercept=True, solver="svd").fit(f, y)
    resid = y - model.predict(f)
    return -float(np.sum(resid**2) / n + l2 * np.sum(model.coef_**2))


def data(rng, n, d, k, dtype=np.float32):
    """Features with an offset and a scale, targets partly explained by them."""
    f = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)
    a = rng.normal(size=(d, 3))
    y = f @ a + 0.5 * rng.normal(size=(n, 3)) + 4.0
    y = y[:, 0] if k is None else y[:, :k]
    return f.astype(dtype), y.astype(dtype)


SHAPES = [(40, 5, None), (40, 5, 3), (12, 20, 3)]  # 1-D targets, [n, 3] targets, n < d


@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
@pytest.mark.parametrize("l2", [1.0, 0.01])
def test_matches_ridge_float32(rng, n, d, k, l2):
    f, y = data(rng, n, d, k)
    close(jt.linear_mse(f, y, l2=l2), ridge_ref(f, y, l2))


@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
@pytest.mark.parametrize("l2", [1.0, 1e-3, 0.0])
def test_matches_reference_float64(rng, n, d, k, l2):
    f, y = data(rng, n, d, k, np.float64)
    with x64():
        got = jt.linear_mse(f, y, l2=l2)
        assert got.dtype == np.float64 and got.shape == ()
        close(got, ridge_ref(f, y, l2), np.float64)


def test_default_l2_is_one(rng):
    f, y = data(rng, 40, 5, 3)
    close(jt.linear_mse(f, y), ridge_ref(f, y, 1.0))


def test_hand_worked():
    # y = 2 f + 1 exactly: least squares leaves nothing.
    close(jt.linear_mse(np.array([[0.0], [1.0], [2.0]]), np.array([1.0, 3.0, 5.0]), l2=0.0), 0.0)
    # One centred feature f = ±1 (n = 2), y = ±1: a = 1/(1+λ), objective λ/(1+λ).
    for lam in (0.5, 1.0, 3.0):
        got = jt.linear_mse(np.array([[-1.0], [1.0]]), np.array([-1.0, 1.0]), l2=lam)
        close(got, -lam / (1 + lam))
    # Features unrelated to y (all constant): the objective is the variance of y.
    y = np.array([1.0, 2.0, 4.0, 7.0])
    close(jt.linear_mse(np.ones((4, 2)), y, l2=0.0), -np.var(y))


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("case", ["duplicated", "constant", "scaled_copy", "n_lt_d"])
def test_singular_features(rng, case, l2):
    # shapes match SHAPES so that no new program is compiled
    f, y = data(rng, 40, 4, 3, np.float64)
    extra = {
        "duplicated": f[:, 1:2],
        "constant": np.full((40, 1), 5.0),
        "scaled_copy": 3.0 * f[:, :1] - f[:, 1:2],
    }.get(case)
    if extra is None:  # n < d
        f, y = data(rng, 12, 20, 3, np.float64)
    else:
        f = np.concatenate([f, extra], axis=1)
    want = ridge_ref(f, y, l2)  # from the exactly singular float64 data
    with x64():
        close(jt.linear_mse(f, y, l2=l2), want, np.float64)
    if case == "n_lt_d" and l2 == 0:
        # an exact fit: float32 gives 0 to within its rounding
        assert abs(float(jt.linear_mse(f.astype(np.float32), y.astype(np.float32), l2=l2))) < 1e-4
    else:
        # rounding to float32 makes the singular direction merely tiny; it must still be ignored
        got = jt.linear_mse(f.astype(np.float32), y.astype(np.float32), l2=l2)
        np.testing.assert_allclose(float(got), want, rtol=2e-4, atol=1e-5)


def test_n_lt_d_least_squares_is_exact_fit(rng):
    f = rng.normal(size=(6, 15)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    assert abs(float(jt.linear_mse(f, y, l2=0.0))) < 1e-5


def test_nearly_exact_fit_keeps_digits_in_float32(rng):
    f = (3 * rng.normal(size=(40, 5)) + 10).astype(np.float32)
    y = (f @ rng.normal(size=5) + 2 + 1e-3 * rng.normal(size=40)).astype(np.float32)
    want = ridge_ref(f, y, 0.0)  # ≈ -1e-6, tiny next to var(y) ≈ 50
    np.testing.assert_allclose(float(jt.linear_mse(f, y, l2=0.0)), want, rtol=2e-2)


def test_vector_l2_equals_separate_calls(rng):
    f, y = data(rng, 40, 5, 3)
    l2s = np.array([0.0, 1e-3, 0.1, 1.0, 10.0])
    got = jt.linear_mse(f, y, l2=l2s)
    assert got.shape == (5,)
    separate = [float(jt.linear_mse(f, y, l2=float(lam))) for lam in l2s]
    np.testing.assert_allclose(got, separate, rtol=1e-4, atol=1e-5)
    close(got, [ridge_ref(f, y, lam) for lam in l2s])
    close(jt.linear_mse(f, y, l2=[0.5, 2.0]), [ridge_ref(f, y, 0.5), ridge_ref(f, y, 2.0)])


def test_vector_l2_n_lt_d_float64(rng):
    f, y = data(rng, 10, 25, 2, np.float64)
    l2s = np.array([0.0, 0.01, 1.0])
    with x64():
        close(jt.linear_mse(f, y, l2=l2s), [ridge_ref(f, y, lam) for lam in l2s], np.float64)


@pytest.mark.parametrize(("n", "d", "k"), [(40, 5, 3), (16, 20, None)])
def test_mask_equals_dropping_rows(rng, n, d, k):
    f, y = data(rng, n, d, k, np.float64)
    mask = rng.random(n) < 0.6
    mask[:3] = True
    for l2 in (0.5, np.array([0.0, 0.5])):
        want = [ridge_ref(f[mask], y[mask], lam) for lam in np.atleast_1d(l2)]
        with x64():
            got = jt.linear_mse(f, y, l2=l2, mask=mask)
            close(np.atleast_1d(got), want, np.float64)
    close(
        jt.linear_mse(f.astype(np.float32), y.astype(np.float32), l2=0.5, mask=mask),
        ridge_ref(f[mask].astype(np.float32), y[mask].astype(np.float32), 0.5),
    )


def test_masked_rows_values_do_not_matter(rng):
    f, y = data(rng, 40, 5, 3)
    mask = np.arange(40) % 3 != 0
    f2, y2 = f.copy(), y.copy()
    f2[~mask] = 1e3
    y2[~mask] = -1e3
    np.testing.assert_allclose(jt.linear_mse(f2, y2, mask=mask), jt.linear_mse(f, y, mask=mask), rtol=1e-5)


@pytest.mark.parametrize(("n", "d"), [(20, 4), (8, 12)])  # primal and dual (n < d) forms
def test_gradients_match_finite_differences(rng, n, d):
    f, y = data(rng, n, d, 2, np.float64)
    with x64():
        f, y = jnp.asarray(f), jnp.asarray(y)
        # l2 is traced, so both values run the same program: λ = 1 takes the Cholesky
        # route, λ = 1e-12 (nλ below √eps·tr C) the eigendecomposition route
        for l2 in (1.0, 1e-12):
            fn = lambda f, y, l2=l2: jt.linear_mse(f, y, l2=l2)  # noqa: E731
            check_grads(fn, (f, y), order=1, modes=["rev"])
            gf, gy = jax.grad(fn, argnums=(0, 1))(f, y)
            assert np.isfinite(np.asarray(gf)).all() and np.isfinite(np.asarray(gy)).all()


def test_gradient_wrt_targets_closed_form(rng):
    # d/dY of -(1/n)‖Y_c − F_c A*‖² − λ‖A*‖² is -(2/n) (residual) at the optimum (envelope theorem).
    f, y = data(rng, 20, 4, 2, np.float64)
    l2 = 0.2
    model = Ridge(alpha=20 * l2, solver="svd").fit(f, y)
    want = -2 / 20 * (y - model.predict(f))
    with x64():
        got = jax.grad(lambda t: jt.linear_mse(f, t, l2=l2))(jnp.asarray(y))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-11)


def test_jit_equals_eager(rng):
    f, y = data(rng, 40, 5, 3)
    fn = jax.jit(lambda f, y: jt.linear_mse(f, y))
    np.testing.assert_allclose(fn(f, y), jt.linear_mse(f, y), rtol=1e-6)
    close(fn(f, y), ridge_ref(f, y, 1.0))
    fn2 = jax.jit(lambda f, y, lam: jt.linear_mse(f, y, l2=lam))
    close(fn2(f, y, 0.25), ridge_ref(f, y, 0.25))


def test_second_call_does_not_recompile(rng):
    from jaxtransfer.estimators import _base as _estimator

    jt.linear_mse(*data(rng, 40, 5, 3), l2=0.3)
    before = _estimator._pair._cache_size()
    jt.linear_mse(*data(rng, 40, 5, 3), l2=0.7)  # l2 is traced: a new value is no new program
    assert _estimator._pair._cache_size() == before


def test_vmap(rng):
    pairs = [data(rng, 40, 5, 3) for _ in range(3)]
    fs = np.stack([p[0] for p in pairs])
    ys = np.stack([p[1] for p in pairs])
    got = jax.vmap(lambda f, y: jt.linear_mse(f, y, l2=0.5))(fs, ys)
    close(got, [ridge_ref(f, y, 0.5) for f, y in pairs])


def test_output_scaling(rng):
    # Scaling targets by c scales the objective by c² (with λ fixed).
    f, y = data(rng, 40, 5, 3, np.float64)
    with x64():
        base = float(jt.linear_mse(f, y, l2=0.3))
        close(jt.linear_mse(f, 3.0 * y, l2=0.3), 9.0 * base, np.float64)
        close(jt.linear_mse(f, y + 100.0, l2=0.3), base, np.float64)


# ----------------------------------------------------------------------------- label MSE


@pytest.mark.parametrize("k", [None, 3])
def test_label_mse_1d_predictions(rng, k):
    f, y = data(rng, 40, 1, k)
    pred = f[:, 0]
    for l2 in (0.0, 0.5):
        close(jt.label_mse(pred, y, l2=l2), ridge_ref(pred[:, None], y, l2))
    close(jt.label_mse(pred[:, None], y, l2=0.5), ridge_ref(pred[:, None], y, 0.5))


def test_label_mse_2d_predictions(rng):
    # keypoints: a predicted 2-D point against a target 2-D point
    pred = rng.normal(size=(40, 2))
    y = pred @ np.array([[1.0, 0.2], [-0.3, 0.8]]) + 0.1 * rng.normal(size=(40, 2))
    with x64():
        for l2 in (0.0, 0.1):
            close(jt.label_mse(pred, y, l2=l2), ridge_ref(pred, y, l2), np.float64)
        close(
            jt.label_mse(pred, y, l2=[0.0, 0.1]),
            [ridge_ref(pred, y, 0.0), ridge_ref(pred, y, 0.1)],
            np.float64,
        )


def test_label_mse_mask(rng):
    pred = rng.normal(size=40).astype(np.float32)
    y = (2 * pred + rng.normal(size=40)).astype(np.float32)
    mask = rng.random(40) < 0.5
    close(jt.label_mse(pred, y, l2=0.2, mask=mask), ridge_ref(pred[mask], y[mask], 0.2))


def test_integer_inputs_are_promoted(rng):
    f = rng.integers(-5, 5, (40, 5))
    y = rng.integers(0, 10, (40, 3))
    got = jt.linear_mse(f, y, l2=0.5)
    assert got.dtype == np.float32
    close(got, ridge_ref(f, y, 0.5))


def test_info_metadata():
    for fn, name, source in (
        (jt.linear_mse, "linear_mse", "features"),
        (jt.label_mse, "label_mse", "predictions"),
    ):
        info = fn.info
        assert info.name == name
        assert info.higher_is_better
        assert (info.task, info.source, info.target) == ("regression", source, "values")
        assert "UAI 2023" in info.reference
        assert jt.get_estimator(name) is fn


# ----------------------------------------------------------------------------- l2_relative
def feature_total_variance(f):
    """tr cov(F) = (1/n)‖F − F̄‖²_F in float64: the scale of ``l2_relative``."""
    f = np.asarray(f, np.float64)
    f = f[:, None] if f.ndim == 1 else f
    return float(np.sum((f - f.mean(axis=0)) ** 2) / f.shape[0])


@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
@pytest.mark.parametrize("rho", [0.01, 0.5])
def test_l2_relative_is_l2_times_the_total_variance(rng, n, d, k, rho):
    f, y = data(rng, n, d, k)
    var = feature_total_variance(f)
    close(jt.linear_mse(f, y, l2_relative=rho), ridge_ref(f, y, rho * var))
    # the same as the absolute λ (the factorisation may differ: Cholesky or spectrum)
    close(jt.linear_mse(f, y, l2_relative=rho), float(jt.linear_mse(f, y, l2=np.float32(rho * var))))


def test_l2_relative_is_scale_free(rng):
    f, y = data(rng, 40, 5, 3)
    rhos = np.array([0.0, 1e-3, 0.1, 1.0], np.float32)
    base = np.asarray(jt.linear_mse(f, y, l2_relative=rhos))
    for factor in (1e3, 1e-3):
        scaled = (f * np.float32(factor)).astype(np.float32)
        np.testing.assert_allclose(jt.linear_mse(scaled, y, l2_relative=rhos), base, rtol=1e-5)
        np.testing.assert_allclose(jt.linear_mse(scaled, y, l2_relative=0.1), base[2], rtol=1e-5)
        # an absolute λ does change with the scale
        assert abs(float(jt.linear_mse(scaled, y, l2=0.1)) - float(jt.linear_mse(f, y, l2=0.1))) > 1e-2
    # zero-padded columns leave the total variance, hence λ, unchanged
    padded = np.hstack([f, np.zeros((40, 2), np.float32)])
    np.testing.assert_allclose(jt.linear_mse(padded, y, l2_relative=rhos), base, rtol=1e-5)


def test_l2_relative_in_label_mse_mask_and_score_matrix(rng):
    pred = rng.normal(size=40).astype(np.float32) * 7.0
    y = (2 * pred + rng.normal(size=40)).astype(np.float32)
    mask = rng.random(40) < 0.6
    var = feature_total_variance(pred[mask])
    close(jt.label_mse(pred, y, l2_relative=0.3, mask=mask), ridge_ref(pred[mask], y[mask], 0.3 * var))
    f, t = data(rng, 30, 4, 2)
    sources, targets = np.stack([f, 5 * f]), np.stack([t, -t])
    got = jt.score_matrix("linear_mse", sources, targets, l2_relative=0.2)
    want = [[ridge_ref(s, tt, 0.2 * feature_total_variance(s)) for tt in targets] for s in sources]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_l2_and_l2_relative_together_is_an_error(rng):
    f, y = data(rng, 20, 3, None)
    with pytest.raises(TypeError, match=r"linear_mse takes l2 .* or l2_relative .*not both"):
        jt.linear_mse(f, y, l2=1.0, l2_relative=0.1)
    with pytest.raises(ValueError, match=r"l2_relative must be finite and >= 0, got -1.0"):
        jt.label_mse(f[:, 0], y, l2_relative=-1.0)
