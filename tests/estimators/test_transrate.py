"""TransRate against float64 NumPy log-determinants, closed forms and the released code's conventions."""

import doctest

import jax
import numpy as np
import pytest
import scipy.stats
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.estimators import _transrate
from jaxtransfer.estimators._transrate import transrate

TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-4}, np.float64: {"rtol": 1e-9, "atol": 1e-9}}


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


# ----------------------------------------------------------------------------- references


def rate_ref(z, kappa):
    """½ log det(I + κ/n ZᵀZ) by slogdet of the d×d matrix, in float64."""
    n, d = z.shape
    sign, logdet = np.linalg.slogdet(np.eye(d) + kappa / n * z.T @ z)
    assert sign > 0
    return 0.5 * logdet


def transrate_ref(f, y, *, eps=None, weighting="proportional"):
    """R(Z) − Σ_c w_c R(Z_c): Z centred once, Z_c its class rows, κ = d/ε² (10⁴ for eps=None)."""
    f = np.asarray(f, np.float64)
    d = f.shape[1]
    kappa = 1e4 if eps is None else d / eps**2
    z = f - f.mean(axis=0)
    classes = np.unique(y)
    rates = np.array([rate_ref(z[y == c], kappa) for c in classes])
    if weighting == "proportional":
        weights = np.array([np.mean(y == c) for c in classes])
    else:
        weights = np.full(len(classes), 1 / len(classes))
    return rate_ref(z, kappa) - float(weights @ rates)


def released_code_ref(f, y, eps=1e-4):
    """The authors' released convention: coefficient 1/(n·eps), classes 0..max(y), divided by max(y)+1."""
    z = np.asarray(f, np.float64)
    z = z - z.mean(axis=0)

    def rate(x):
        return 0.5 * np.linalg.slogdet(np.eye(x.shape[1]) + x.T @ x / (x.shape[0] * eps))[1]

    k = int(y.max()) + 1
    return rate(z) - sum(rate(z[y == c]) for c in range(k)) / k


def bins_ref(v, b):
    """⌊b·r/n⌋ with r the minimum rank (number of strictly smaller values)."""
    r = scipy.stats.rankdata(v, method="min").astype(int) - 1
    return np.minimum(b * r // len(v), b - 1)


def regression_ref(f, targets, b, **kw):
    targets = np.asarray(targets).reshape(len(targets), -1)
    return float(np.mean([transrate_ref(f, bins_ref(t, b), **kw) for t in targets.T]))


def data(rng, n, d, c, dtype=np.float32, sizes=None):
    y = rng.integers(0, c, n) if sizes is None else np.repeat(np.arange(c), sizes)
    y[:c] = np.arange(c)
    means = 1.5 * rng.normal(size=(c, d))
    f = means[y] + rng.normal(size=(n, d)) @ (np.eye(d) + rng.normal(size=(d, d)) / d)
    return (0.5 * f + 3.0).astype(dtype), y


SHAPES = [(60, 6, 3), (12, 20, 3)]  # primal (n ≥ d, classes smaller than d included) and dual (n < d)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(("n", "d", "c"), SHAPES)
@pytest.mark.parametrize("weighting", ["proportional", "uniform"])
@pytest.mark.parametrize("eps", [None, 0.5])
def test_matches_reference_float64(rng, n, d, c, weighting, eps):
    f, y = data(rng, n, d, c, np.float64)
    with x64():
        got = transrate(f, y, eps=eps, weighting=weighting)
        assert got.dtype == np.float64 and got.shape == ()
        close(got, transrate_ref(f, y, eps=eps, weighting=weighting), np.float64)


@pytest.mark.parametrize(("n", "d", "c"), [*SHAPES, (60, 16, 6)])  # the last: every n_c < d
def test_float32_matches_float64_reference(rng, n, d, c):
    f, y = data(rng, n, d, c)
    want = transrate_ref(f, y)
    got = float(transrate(f, y))
    # a difference of two rates of ≈ R(Z): its float32 error is relative to R(Z)
    scale = rate_ref(f.astype(np.float64) - f.mean(axis=0), 1e4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_released_code_convention(rng):
    # eps=None, weighting="uniform" is the authors' released code (κ = 1/(n·1e-4) · n, 1/K weights)
    f, y = data(rng, 60, 6, 3, np.float64)
    with x64():
        close(transrate(f, y, weighting="uniform"), released_code_ref(f, y), np.float64)
        # eps = √(d·1e-4) in the formula is the same coefficient
        close(transrate(f, y, eps=float(np.sqrt(6e-4))), transrate(f, y), np.float64)


def test_closed_form_classes_on_orthogonal_axes():
    # C classes, each a point a·e_c (no spread), d = C: with κ = d/ε²,
    # R(Z) = (C−1)/2·log(1 + κa²/C), R(Z_c) = ½ log(1 + κa²(1 − 1/C)).
    for c, a, eps, r in ((3, 1.0, 1.0, 1), (4, 2.0, 0.5, 3)):
        f = np.tile(a * np.eye(c), (r, 1))
        y = np.tile(np.arange(c), r)
        kappa = c / eps**2
        want = (c - 1) / 2 * np.log1p(kappa * a**2 / c) - 0.5 * np.log1p(kappa * a**2 * (1 - 1 / c))
        with x64():
            close(transrate(f, y, eps=eps), want, np.float64)
            close(transrate(f, y, eps=eps, weighting="uniform"), want, np.float64)  # balanced
        close(transrate(f.astype(np.float32), y, eps=eps), want)


def test_two_symmetric_classes_give_zero():
    # Z_c is not re-centred (paper and released code): two classes at ±μ with equal spread have
    # Z_cᵀZ_c/n_c = ZᵀZ/n = μμᵀ + σ²I, so the rates cancel exactly.
    d, sigma = 4, 0.7
    mu = np.array([1.0, -0.5, 0.25, 2.0])
    offsets = np.concatenate([np.eye(d), -np.eye(d)]) * np.sqrt(d) * sigma
    f = np.concatenate([mu + offsets, -mu + offsets]) + 3.0
    y = np.repeat([0, 1], 2 * d)
    with x64():
        close(transrate(f, y, eps=1.0), 0.0, np.float64)
    # with the class spread doubled in one class it is positive
    f2 = np.concatenate([mu + offsets, -mu + 2 * offsets])
    with x64():
        got = float(transrate(f2, y, eps=1.0))
    assert got > 0.05
    close(got, transrate_ref(f2, y, eps=1.0), np.float64)


def test_proportional_is_never_negative_uniform_can_differ_a_lot(rng):
    for seed in range(3):
        f, y = data(np.random.default_rng(seed), 60, 6, 3)
        assert float(transrate(f, y)) >= 0
    # imbalanced: one large diffuse class and two tiny tight ones
    f = rng.normal(size=(60, 6))
    y = np.zeros(60, int)
    y[:3], y[3:6] = 1, 2
    f[:3] = 0.01 * f[:3] + 1
    f[3:6] = 0.01 * f[3:6] - 1
    prop = transrate_ref(f, y, eps=1.0)
    unif = transrate_ref(f, y, eps=1.0, weighting="uniform")
    assert unif > 5 * prop  # the weighting choice matters (released code vs formula)
    with x64():
        close(transrate(f, y, eps=1.0), prop, np.float64)
        close(transrate(f, y, eps=1.0, weighting="uniform"), unif, np.float64)


def test_zero_padding_and_dual_form(rng):
    # with eps=None (κ independent of d), zero columns add nothing; padding past n switches to the
    # n×n kernel form, which must give the same value
    f, y = data(rng, 12, 6, 3, np.float64)
    padded = np.concatenate([f, np.zeros((12, 10))], axis=1)
    with x64():
        base = float(transrate(f, y))
        close(transrate(padded, y), base, np.float64)
        close(base, transrate_ref(f, y), np.float64)


def test_absent_classes_change_nothing(rng):
    f, y = data(rng, 60, 6, 3)
    for weighting in ("proportional", "uniform"):
        close(
            transrate(f, y, num_target_classes=5, weighting=weighting), transrate(f, y, weighting=weighting)
        )


# ----------------------------------------------------------------------------- regression form


def test_quantile_bins(rng):
    v = rng.normal(size=40)
    got = np.asarray(_transrate.quantile_bins(v, None, 4))
    np.testing.assert_array_equal(got, bins_ref(v, 4))
    np.testing.assert_array_equal(np.bincount(got), [10, 10, 10, 10])
    # the same as cutting at the quartiles
    np.testing.assert_array_equal(got, np.digitize(v, np.quantile(v, [0.25, 0.5, 0.75])))
    # ties share a bin; sizes differ by at most one without ties
    ties = np.array([3.0, 1.0, 1.0, 1.0, 2.0, 5.0, 4.0])
    np.testing.assert_array_equal(_transrate.quantile_bins(ties, None, 3), bins_ref(ties, 3))
    np.testing.assert_array_equal(
        np.bincount(np.asarray(_transrate.quantile_bins(v[:37], None, 4))), [10, 9, 9, 9]
    )
    # a mask: ranks among the kept samples only
    keep = rng.random(40) < 0.6
    np.testing.assert_array_equal(
        np.asarray(_transrate.quantile_bins(v, keep, 3))[keep], bins_ref(v[keep], 3)
    )


@pytest.mark.parametrize("k", [None, 3])
def test_regression_matches_reference(rng, k):
    f, _ = data(rng, 60, 6, 3, np.float64)
    targets = f[:, :3] @ rng.normal(size=(3, 3)) + rng.normal(size=(60, 3))
    targets = targets[:, 0] if k is None else targets
    with x64():
        got = transrate(f, targets, task="regression", bins=5)
        close(got, regression_ref(f, targets, 5), np.float64)
        close(transrate(f, targets, task="regression", bins=5, weighting="uniform"),
              regression_ref(f, targets, 5, weighting="uniform"), np.float64)  # fmt: skip
        if k is not None:
            # the average over output dimensions of the per-dimension scores
            per_dim = [float(transrate(f, targets[:, j], task="regression", bins=5)) for j in range(k)]
            close(got, np.mean(per_dim), np.float64)
    close(transrate(f.astype(np.float32), targets.astype(np.float32), task="regression", bins=5),
          regression_ref(f.astype(np.float32), targets.astype(np.float32), 5))  # fmt: skip


def test_label_space_transrate_on_predictions(rng):
    # UAI 2023: the source model's predicted keypoints [n, 2] stand in for its features
    keypoints = rng.uniform(-1, 1, (60, 2))
    predictions = keypoints @ np.array([[0.9, 0.1], [-0.2, 1.1]]) + 0.1 * rng.normal(size=(60, 2))
    with x64():
        got = float(transrate(predictions, keypoints, task="regression", bins=4, eps=0.1))
        close(got, regression_ref(predictions, keypoints, 4, eps=0.1), np.float64)
        shuffled = float(
            transrate(predictions[rng.permutation(60)], keypoints, task="regression", bins=4, eps=0.1)
        )
    assert got > 3 * shuffled and got > shuffled + 0.1  # ≈ 0.22 against ≈ 0.04


def test_regression_mask_equals_dropping_rows(rng):
    f, _ = data(rng, 60, 6, 3, np.float64)
    targets = f[:, :2] + rng.normal(size=(60, 2))
    keep = rng.random(60) < 0.7
    with x64():
        got = transrate(f, targets, task="regression", bins=3, mask=keep)
        close(got, regression_ref(f[keep], targets[keep], 3), np.float64)


# ----------------------------------------------------------------------------- masks, batching, jit


@pytest.mark.parametrize(("n", "d", "c"), SHAPES)
def test_mask_equals_dropping_rows(rng, n, d, c):
    f, y = data(rng, n, d, c, np.float64)
    keep = rng.random(n) < 0.7
    keep[:c] = True
    for weighting in ("proportional", "uniform"):
        with x64():
            got = transrate(f, y, mask=keep, eps=0.5, weighting=weighting)
            close(got, transrate_ref(f[keep], y[keep], eps=0.5, weighting=weighting), np.float64)
    f2 = f.astype(np.float32).copy()
    f2[~keep] = 1e4  # the left-out rows' values do not matter
    close(transrate(f2, y, mask=keep), transrate_ref(f[keep].astype(np.float32), y[keep]))


def test_class_block_bounds_every_class_under_any_mask(rng):
    """Each class's singular values come from a block of ``_class_rows`` rows: it must hold every
    class (classification) and every quantile bin (regression, ties included) under any mask."""
    n, bins = 90, 4
    labels = np.repeat([0, 1, 2], [70, 15, 5])
    values = np.round(rng.normal(size=(n, 2)), 1)  # heavy ties
    rows = _transrate._class_rows(labels, n, "classification", None)
    rows_reg = _transrate._class_rows(values, n, "regression", bins)
    assert rows >= 70 and rows_reg < n
    for _ in range(50):
        keep = rng.random(n) < rng.uniform(0.3, 1.0)
        assert np.bincount(labels[keep]).max() <= rows
        for v in values[keep].T:
            assert np.bincount(bins_ref(v, bins)).max() <= rows_reg
    f, _ = data(rng, n, 6, 3, np.float64)
    keep = rng.random(n) < 0.6
    with x64():
        close(
            transrate(f, values, task="regression", bins=bins, mask=keep),
            regression_ref(f[keep], values[keep], bins),
            np.float64,
        )
        close(transrate(f, labels, mask=keep), transrate_ref(f[keep], labels[keep]), np.float64)


def test_score_matrix_equals_loop(rng):
    s_count, t_count, n, d, c = 3, 4, 24, 5, 3
    sources = (rng.normal(size=(s_count, n, d)) + 2).astype(np.float32)
    targets = rng.integers(0, c, (t_count, n))
    sources[:, :, 0] += targets[0]
    smask = rng.random((s_count, n)) < 0.8
    tmask = rng.random((t_count, n)) < 0.8
    smask[:, :8] = tmask[:, :8] = True
    opts = {"num_target_classes": c, "eps": 0.5}
    got = jt.score_matrix(transrate, sources, targets, **opts)
    want = [[float(transrate(s, t, **opts)) for t in targets] for s in sources]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = jt.score_matrix(
        transrate, sources, targets, source_mask=smask, target_mask=tmask, batch_size=2, **opts
    )
    want = [
        [float(transrate(s, t, mask=sm & tm, **opts)) for t, tm in zip(targets, tmask, strict=True)]
        for s, sm in zip(sources, smask, strict=True)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    keep = smask[2] & tmask[3]
    close(want[2][3], transrate_ref(sources[2][keep], targets[3][keep], eps=0.5))
    # regression targets [T, n, k]
    values = rng.normal(size=(2, n, 2)).astype(np.float32)
    got = jt.score_matrix(transrate, sources, values, task="regression", bins=3)
    want = [[float(transrate(s, t, task="regression", bins=3)) for t in values] for s in sources]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_jit_equals_eager(rng):
    f, y = data(rng, 60, 6, 3)
    eager = float(transrate(f, y, eps=0.5))
    fn = jax.jit(lambda f, y, e: transrate(f, y, eps=e, num_target_classes=3))
    np.testing.assert_allclose(float(fn(f, y, 0.5)), eager, rtol=1e-5)
    close(fn(f, y, 2.0), transrate_ref(f, y, eps=2.0))  # eps is traced: no recompilation needed
    values = f[:, :2] + 1
    reg = jax.jit(lambda f, t: transrate(f, t, task="regression", bins=4))
    np.testing.assert_allclose(
        float(reg(f, values)), float(transrate(f, values, task="regression", bins=4)), rtol=1e-5
    )


# ----------------------------------------------------------------------------- bad input


def test_bad_input(rng):
    f, y = data(rng, 20, 4, 2)
    v = f[:, 0]
    cases = [
        (
            ValueError,
            "weighting must be one of 'proportional', 'uniform', got 'balanced'",
            {"weighting": "balanced"},
        ),
        (ValueError, "task must be one of 'classification', 'regression'", {"task": "multilabel"}),
        (ValueError, "eps must be finite and > 0, got 0.0", {"eps": 0.0}),
        (ValueError, "eps must be finite and > 0", {"eps": float("inf")}),
        (TypeError, "eps must be a positive number or None", {"eps": "small"}),
        (ValueError, "bins applies to task='regression'", {"bins": 4}),
    ]
    for err, words, opts in cases:
        with pytest.raises(err, match=words):
            transrate(f, y, **opts)
    reg_cases = [
        (ValueError, "bins must be at least 2, got 1", {"bins": 1}),
        (TypeError, "bins must be a Python int", {"bins": 2.5}),
        (ValueError, "needs bins=<int >= 2>", {}),
        (
            ValueError,
            "num_target_classes applies to task='classification'",
            {"bins": 3, "num_target_classes": 3},
        ),
    ]
    for err, words, opts in reg_cases:
        with pytest.raises(err, match=words):
            transrate(f, v, task="regression", **opts)
    with pytest.raises(TypeError, match="transrate got unexpected option"):
        jt.score_matrix(transrate, f[None], y[None], ridge=1.0)
    with pytest.raises(TypeError, match="targets must hold integer class labels"):
        transrate(f, v)
    with pytest.raises(ValueError, match="targets contains a non-finite"):
        transrate(f, np.where(np.arange(20) == 3, np.nan, v), task="regression", bins=3)
    with pytest.raises(ValueError, match="features has 20 samples but targets has 19"):
        transrate(f, y[:19])
    with pytest.raises(ValueError, match="features contains a non-finite"):
        transrate(np.where(np.arange(4) == 1, np.inf, f), y)


def test_metadata_and_doctests():
    info = transrate.info
    assert info.name == "transrate" and info.higher_is_better
    assert (info.task, info.source, info.target) == ("classification", "features", "labels")
    assert "ICML 2022" in info.reference and "UAI 2023" in info.reference
    assert jt.get_estimator("transrate") is transrate
    result = doctest.testmod(_transrate, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 2 and result.failed == 0
