"""float32 against float64 on the features that broke float32: ill-conditioned, offset, rescaled.

The sweep (``bench/bench_numerics.py --quick``) scores every estimator in both precisions on the
same float32 inputs; the targeted tests below pin the cases reported against earlier versions.
"""

import importlib.util
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from x64util import x64

import jaxtransfer as jt

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_numerics", ROOT / "bench" / "bench_numerics.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def both(fn, f, *args, **kwargs):
    """fn in float32 and in float64 on the same float32-rounded features."""
    f = np.asarray(f, np.float32)
    a = float(fn(f, *args, **kwargs))
    with x64():
        b = float(fn(f.astype(np.float64), *args, **kwargs))
    return a, b


def labels_for(rng, f, c):
    g = (f - f.mean(0)) / f.std(0)
    y = np.argmax(g @ rng.normal(size=(f.shape[1], c)) + rng.normal(size=(len(f), c)), axis=1)
    y[:c] = np.arange(c)
    return y


@pytest.mark.slow
def test_sweep_has_no_silent_error():
    result = bench.run(quick=True, progress=False)
    s = bench.summary(result["rows"])
    wrong = [r for r in result["rows"] if r["wrong"]]
    assert not wrong, wrong[:5]
    # the guarantee: condition numbers up to 1e4, offsets up to 100 sd, scales 1e-20 to 1e18
    assert s["guaranteed_range"]["within"] == s["guaranteed_range"]["tried"]
    # beyond it, a result off by more than 1e-3 is always warned about
    beyond = [r for r in result["rows"] if bench.beyond(r) and not r["within"]]
    assert beyond and all(r["warned"] for r in beyond)


def test_column_scales_down_to_a_three_hundredth(rng):
    # n = 500, d = 50, column scales 1 … 10^-2.5: linear_mse(l2=0) was 660× off, H-score, GBC 2–7 %
    f = rng.normal(size=(500, 50)) * np.logspace(0, -2.5, 50)
    y = labels_for(rng, f, 10)
    v = f @ rng.normal(size=50) + 0.01 * rng.normal(size=500)
    for fn, target, kw in [
        (jt.linear_mse, v, {"l2": 0.0}),
        (jt.hscore, y, {}),
        (jt.gbc, y, {}),
        (jt.logme, y, {}),
        (jt.transrate, y, {}),
    ]:
        a, b = both(fn, f, target, **kw)
        assert abs(a - b) <= 1e-3 * abs(b), (fn.info.name, a, b)


def test_logme_with_a_large_mean_keeps_its_sign(rng):
    # unit-variance features + 100: the mean's eigenvalue hid the spread (-0.215 against +0.532)
    f = rng.normal(size=(500, 64))
    y = labels_for(rng, f, 10)
    f = f + 3 * np.eye(10)[y] @ rng.normal(size=(10, 64))  # informative, so LogME is positive
    for offset in (30.0, 100.0):
        a, b = both(jt.logme, f + offset, y)
        assert b > 0 and abs(a - b) <= 1e-4 * abs(b), (offset, a, b)


def test_transrate_when_classes_are_as_large_as_d(rng):
    # n = 128, d = 64, 2 classes of 64: 21.90 against 21.62 before
    f = rng.normal(size=(128, 64))
    y = np.repeat([0, 1], 64)
    a, b = both(jt.transrate, f, y)
    assert abs(a - b) <= 1e-5 * abs(b)


@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1e7, 1e18])
def test_scale_free_estimators_ignore_the_scale(rng, scale):
    # shrinkage H-score became the plain H-score beyond ×1e6 and below ×1e-9, LogME NaN above
    # ×1e18, H-score wrong at ×1e-30
    f = rng.normal(size=(200, 16)) + 2
    y = labels_for(rng, f, 4)
    for fn in (jt.logme, jt.hscore, jt.shrinkage_hscore, jt.gbc):
        want = float(fn(f.astype(np.float32), y))
        got = float(fn((f * scale).astype(np.float32), y))
        assert abs(got - want) <= 1e-5 * abs(want), (fn.info.name, got, want)
    assert float(jt.shrinkage_hscore((f * scale).astype(np.float32), y)) < float(jt.hscore(f, y))


def test_linear_mse_penalty_follows_the_scale(rng):
    # ridge is not scale-free: features × s with λ × s² is the same problem (A f = (A/s)(s f)), at any s
    f = rng.normal(size=(100, 8))
    v = f @ rng.normal(size=8) + rng.normal(size=100)
    want = float(jt.linear_mse(f.astype(np.float32), v, l2=0.5))
    for s in (2.0**-60, 2.0**50):
        got = float(jt.linear_mse((f * s).astype(np.float32), v, l2=0.5 * s**2))
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # a penalty that overflows float32 in the scaled units leaves only the target variance
    got = float(jt.linear_mse((f * 1e-30).astype(np.float32), v, l2=1.0))
    np.testing.assert_allclose(got, -np.var(v), rtol=1e-5)


def test_exact_fit(rng):
    # n < d: least squares fits exactly (float64 gives -4e-30); float32 stays at rounding level
    f = rng.normal(size=(100, 300)) + 1
    v = rng.normal(size=100)
    a, b = both(jt.linear_mse, f, v, l2=0.0)
    assert abs(b) < 1e-20 and abs(a) < 1e-9 * np.var(v)


def test_logme_unbounded_evidence_is_reported_as_such(rng):
    f = rng.normal(size=(50, 5))
    y = f @ rng.normal(size=5)  # exactly in the span of the features, n > rank
    details = jt.logme_details(f, y, task="regression")
    assert bool(details.unbounded[0]) and np.isposinf(float(details.score))
    assert np.isposinf(float(details.beta[0])) and np.isnan(float(details.alpha[0]))
    assert np.isposinf(float(jt.logme(f, y, task="regression")))
    noisy = y + 1e-2 * rng.normal(size=50)
    details = jt.logme_details(f, noisy, task="regression")
    assert not bool(details.unbounded[0]) and np.isfinite(float(details.score))
    # n ≤ rank: every target fits exactly, and the supremum at α/β → 0 is finite
    wide = rng.normal(size=(10, 30))
    details = jt.logme_details(wide, rng.normal(size=10), task="regression")
    assert not bool(details.unbounded[0]) and np.isfinite(float(details.score))


def test_leep_and_nleep_never_exceed_zero(rng):
    y = rng.permutation(np.arange(600) % 15)
    f = 100.0 * np.eye(15)[y]
    assert float(jt.nleep(f.astype(np.float32), y, key=jax.random.key(0))) <= 0.0
    p = np.eye(15)[y].astype(np.float32) * (1 - 1e-6) + 1e-6 / 15
    assert float(jt.leep(p, y)) <= 0.0


# ------------------------------------------------------------------ the precision warning


def conditioned(rng, n, d, cond):
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return ((u * np.logspace(0, -np.log10(cond), d)) @ v.T * np.sqrt(n)).astype(np.float32)


def test_precision_warning_beyond_float32(rng):
    f = conditioned(rng, 300, 20, 1e6)
    y = labels_for(rng, f, 4)
    with pytest.warns(jt.PrecisionWarning, match="jax_enable_x64"):
        jt.hscore(f, y)
    with pytest.warns(jt.PrecisionWarning, match="sources 1"):
        jt.score_matrix("hscore", np.stack([conditioned(rng, 300, 20, 10.0), f]), y[None])
    with pytest.warns(jt.PrecisionWarning):
        jt.linear_mse(f, f[:, 0] + f[:, -1], l2=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jt.linear_mse(f, f[:, 0], l2=1.0)  # the penalty shrinks the unresolved directions away
        jt.hscore(conditioned(rng, 300, 20, 1e3), y)  # within the guarantee: silent
        jax.jit(lambda a, b: jt.hscore(a, b, num_target_classes=4))(f, y)  # traced: no host sync
        with x64():
            jt.hscore(f.astype(np.float64), y)  # float64 resolves it


# ---------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "convert",
    [
        lambda f: f.astype(np.float16),
        lambda f: f.astype(ml_dtypes.bfloat16),
        lambda f: jnp.asarray(f, jnp.bfloat16),
        lambda f: f.astype(">f4"),  # big-endian, as read from some files
        lambda f: np.round(f * 100).astype(np.int16),
    ],
)
def test_dtypes_users_have_are_upcast(rng, convert):
    f = rng.normal(size=(60, 5)).astype(np.float32)
    y = labels_for(rng, f, 3)
    given = convert(f)
    same = np.asarray(given).astype(np.float32)  # the values the estimator sees, in float32
    for fn in (jt.hscore, jt.logme, jt.gbc):
        got = fn(given, y)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), float(fn(same, y)), rtol=1e-6)
    np.testing.assert_allclose(
        float(jt.linear_mse(given, y.astype(">f8"))),
        float(jt.linear_mse(same, y.astype(np.float32))),
        rtol=1e-6,
    )
