"""Held-out Linear/Label MSE against float64 NumPy references that refit ridge n times.

The leave-one-out reference drops each sample in turn, refits the intercept, the centring and the
coefficients on the other n − 1 samples with the same penalty p = nλ on the sum of squares, and
predicts the dropped sample; the GCV reference forms the hat matrix of the augmented design
[1, F] explicitly. Neither uses the spectral formulas under test.
"""

import doctest
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.estimators import _heldout

GRID = np.array([1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0])


def total_variance(f):
    f = np.asarray(f, np.float64)
    return float(np.sum((f - f.mean(axis=0)) ** 2) / f.shape[0])


def loo_ref(f, y, lam):
    """(1/n) Σᵢ ‖yᵢ − ŷ₋ᵢ(fᵢ)‖², ŷ₋ᵢ refitted (intercept, centring, A) without sample i, penalty nλ."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    f = f[:, None] if f.ndim == 1 else f
    y = y[:, None] if y.ndim == 1 else y
    n, d = f.shape
    total = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        mu, my = f[keep].mean(axis=0), y[keep].mean(axis=0)
        fc, yc = f[keep] - mu, y[keep] - my
        a = np.linalg.solve(fc.T @ fc + n * lam * np.eye(d), fc.T @ yc)
        total += np.sum((y[i] - my - (f[i] - mu) @ a) ** 2)
    return total / n


def gcv_ref(f, y, lam):
    """(1/n)‖(I − H)y‖² / (1 − tr(H)/n)², H the hat matrix of [1, F] with penalty diag(0, nλI)."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    f = f[:, None] if f.ndim == 1 else f
    y = y[:, None] if y.ndim == 1 else y
    n, d = f.shape
    x = np.hstack([np.ones((n, 1)), f])
    h = x @ np.linalg.solve(x.T @ x + np.diag([0.0] + [n * lam] * d), x.T)
    return np.sum((y - h @ y) ** 2) / n / (1 - np.trace(h) / n) ** 2


REFS = {"loo": loo_ref, "gcv": gcv_ref}


def curve_ref(f, y, method, grid=GRID):
    var = total_variance(f[:, None] if np.ndim(f) == 1 else f)
    return np.array([REFS[method](f, y, rho * var) for rho in grid])


def data(rng, n, d, k, dtype=np.float64):
    """Features with an offset and uneven scales; targets partly explained by them."""
    f = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)
    y = f @ rng.normal(size=(d, 3)) / np.sqrt(d) + 0.7 * rng.normal(size=(n, 3)) + 2.0
    y = y[:, 0] if k is None else y[:, :k]
    return f.astype(dtype), y.astype(dtype)


SHAPES = [(30, 5, None), (30, 5, 3), (12, 20, 2)]  # 1-D targets, [n, 3] targets, n < d


@pytest.mark.parametrize("method", ["loo", "gcv"])
@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
def test_curve_matches_refitting_reference_float64(rng, method, n, d, k):
    f, y = data(rng, n, d, k)
    want = curve_ref(f, y, method)
    with x64():
        out = jt.heldout_linear_mse_details(f, y, method=method, l2_grid=GRID)
        np.testing.assert_allclose(out.mse, want, rtol=1e-9)
        best = int(np.argmin(want))
        assert int(out.index) == best
        np.testing.assert_allclose(out.score, -want[best], rtol=1e-9)
        np.testing.assert_allclose(out.l2_relative, GRID[best], rtol=1e-12)
        np.testing.assert_allclose(out.total_variance, total_variance(f), rtol=1e-12)
        np.testing.assert_allclose(out.l2, GRID[best] * total_variance(f), rtol=1e-12)
        np.testing.assert_allclose(out.l2_grid, GRID * total_variance(f), rtol=1e-12)
        np.testing.assert_allclose(jt.heldout_linear_mse(f, y, method=method, l2_grid=GRID), out.score)


@pytest.mark.parametrize("method", ["loo", "gcv"])
@pytest.mark.parametrize(("n", "d", "k"), SHAPES)
def test_float32_matches_float64_reference(rng, method, n, d, k):
    f, y = data(rng, n, d, k, np.float32)
    want = curve_ref(f, y, method)
    out = jt.heldout_linear_mse_details(f, y, method=method, l2_grid=GRID)
    assert out.mse.dtype == np.float32
    np.testing.assert_allclose(np.asarray(out.mse, np.float64), want, rtol=2e-4)
    np.testing.assert_allclose(
        float(jt.heldout_linear_mse(f, y, method=method, l2_grid=GRID)), -want.min(), rtol=2e-4
    )


def test_classification_targets_one_hot_summed_over_classes(rng):
    labels = np.arange(36) % 3
    f = rng.normal(size=(36, 4)) + 1.5 * np.eye(3, 4)[labels]
    onehot = jt.heldout_linear_mse.info.targets_from_labels(labels)
    assert onehot.shape == (36, 3)
    want = curve_ref(f, onehot, "loo")
    with x64():
        out = jt.heldout_linear_mse_details(f, onehot, l2_grid=GRID)
        np.testing.assert_allclose(out.mse, want, rtol=1e-9)
        # summed over classes: the per-class curves add up
        per_class = [curve_ref(f, onehot[:, c], "loo") for c in range(3)]
        np.testing.assert_allclose(out.mse, np.sum(per_class, axis=0), rtol=1e-9)


def test_label_space_inputs(rng):
    y = rng.normal(size=(25, 2))
    pred = y + 0.4 * rng.normal(size=(25, 2))
    with x64():
        for source in (pred, pred[:, 0]):
            got = jt.heldout_label_mse(source, y, l2_grid=GRID)
            np.testing.assert_allclose(got, -curve_ref(source, y, "loo").min(), rtol=1e-9)
        details = jt.heldout_linear_mse_details(pred[:, 0], y, l2_grid=GRID)  # a vector of predictions
        np.testing.assert_allclose(details.score, jt.heldout_label_mse(pred[:, 0], y, l2_grid=GRID))


def test_scale_free_grid(rng):
    f, y = data(rng, 40, 6, 2, np.float32)
    base = jt.heldout_linear_mse_details(f, y)
    for factor in (1e3, 1e-3, 3.7):
        out = jt.heldout_linear_mse_details(f * np.float32(factor), y)
        np.testing.assert_allclose(out.mse, base.mse, rtol=1e-5)
        assert int(out.index) == int(base.index)
        np.testing.assert_allclose(out.l2, base.l2 * factor**2, rtol=1e-5)
    # zero-padded feature columns change nothing either
    padded = np.hstack([f, np.zeros((40, 3), np.float32)])
    np.testing.assert_allclose(jt.heldout_linear_mse_details(padded, y).mse, base.mse, rtol=1e-5)


def test_default_grid_and_null_model_limit(rng):
    f, y = data(rng, 30, 4, None)
    out = jt.heldout_linear_mse_details(f, y)
    np.testing.assert_allclose(out.l2_grid / out.total_variance, np.logspace(-6, 2, 25), rtol=1e-5)
    assert out.mse.shape == (25,)
    # a huge penalty leaves the intercept alone: e_i = (y_i − ȳ)·n/(n − 1)
    yc = y - y.mean()
    null = np.sum(yc**2) / 30 * (30 / 29) ** 2
    with x64():
        np.testing.assert_allclose(jt.heldout_linear_mse(f, y, l2_grid=1e12), -null, rtol=1e-9)
        np.testing.assert_allclose(jt.heldout_linear_mse(f, y, l2_grid=1e12, method="gcv"), -null, rtol=1e-9)


def test_nearly_exact_fit_keeps_its_digits_in_float32(rng):
    # residuals 1e-4 of the targets' spread, feature means of 100: ‖y‖² − ‖ŷ‖² would cancel to noise
    # of about eps·var(y) = 5e-7, 25× the error being estimated (2e-8)
    f = rng.normal(size=(60, 5)) + 100.0
    y = (f @ rng.normal(size=(5, 2)) + 1e-4 * rng.normal(size=(60, 2))).astype(np.float32)
    f = f.astype(np.float32)
    grid = np.array([1e-9, 1e-8])
    for method in ("loo", "gcv"):
        want = curve_ref(f, y, method, grid)
        got = jt.heldout_linear_mse_details(f, y, method=method, l2_grid=grid).mse
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-2)


def test_least_squares_that_interpolates_is_inf_under_loo(rng):
    f, y = data(rng, 8, 10, None)
    assert float(jt.heldout_linear_mse(f, y, l2_grid=0.0)) == -np.inf
    # with a positive penalty in the grid the minimum is finite
    assert np.isfinite(float(jt.heldout_linear_mse(f, y, l2_grid=[0.0, 0.01])))
    # n > d + 1: least squares has a leave-one-out error, and it is the refitting one
    f, y = data(rng, 20, 3, None)
    with x64():
        np.testing.assert_allclose(jt.heldout_linear_mse(f, y, l2_grid=0.0), -loo_ref(f, y, 0.0), rtol=1e-9)


def test_mask_and_score_matrix(rng):
    f, y = data(rng, 30, 4, 2, np.float32)
    mask = np.ones(30, bool)
    mask[[3, 11, 20]] = False
    got = jt.heldout_linear_mse(f, y, mask=mask, l2_grid=GRID)
    np.testing.assert_allclose(got, jt.heldout_linear_mse(f[mask], y[mask], l2_grid=GRID), rtol=1e-5)
    sources, targets = np.stack([f, f[::-1]]), np.stack([y, 2 * y + 1, y[::-1]])
    matrix = jt.score_matrix("heldout_linear_mse", sources, targets, method="gcv")
    loop = [[float(jt.heldout_linear_mse(s, t, method="gcv")) for t in targets] for s in sources]
    np.testing.assert_allclose(matrix, loop, rtol=1e-5)


def test_gradient_matches_finite_differences(rng):
    f, y = data(rng, 20, 3, 2)
    v = rng.normal(size=f.shape)
    with x64():
        for method in ("loo", "gcv"):
            fn = jax.jit(lambda x, method=method: jt.heldout_linear_mse(x, y, method=method, l2_grid=GRID))
            g = np.asarray(jax.grad(fn)(f))
            step = 1e-6
            fd = (float(fn(f + step * v)) - float(fn(f - step * v))) / (2 * step)
            np.testing.assert_allclose(np.sum(g * v), fd, rtol=1e-5)


def test_bad_input_names_the_argument(rng):
    f, y = data(rng, 10, 3, None)
    with pytest.raises(ValueError, match="method must be one of 'loo', 'gcv', got 'kfold'"):
        jt.heldout_linear_mse(f, y, method="kfold")
    with pytest.raises(ValueError, match=r"l2_grid must be finite and >= 0, got \[0.1, -1.0\]"):
        jt.heldout_linear_mse(f, y, l2_grid=[0.1, -1.0])
    with pytest.raises(ValueError, match=r"l2_grid must be a scalar or a 1-D array, got shape \(2, 2\)"):
        jt.heldout_label_mse(f[:, 0], y, l2_grid=np.ones((2, 2)))
    with pytest.raises(ValueError, match="l2_grid is empty"):
        jt.heldout_linear_mse(f, y, l2_grid=[])
    with pytest.raises(TypeError, match="heldout_linear_mse got unexpected option\\(s\\) l2; it accepts"):
        jt.score_matrix("heldout_linear_mse", f[None], y[None], l2=1.0)
    with pytest.raises(
        ValueError, match=r"features must have shape \[n, d\] or \[n\], got shape \(10, 3, 1\)"
    ):
        jt.heldout_linear_mse_details(f[:, :, None], y)
    with pytest.raises(ValueError, match="features has 10 samples but targets has 9"):
        jt.heldout_linear_mse_details(f, y[:9])


def test_docstring_examples():
    result = doctest.testmod(_heldout, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "heldout.json"
    bench = Path(__file__).resolve().parents[2] / "bench" / "bench_heldout.py"
    subprocess.run([sys.executable, str(bench), "--tiny", "--out", str(out)], check=True, timeout=300)
    (row,) = json.loads(out.read_text())["results"]
    timed = {"heldout_loo", "heldout_gcv", "linear_mse_l2_1", "linear_mse_25_l2", "logme"}
    assert set(row["per_pair_s"]) == timed
    assert row["max_rel_diff_vs_numpy_float64"] < 1e-4
