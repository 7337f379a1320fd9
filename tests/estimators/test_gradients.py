"""Reverse-mode gradients of the estimators (DESIGN.md, "Inside training code").

* against central finite differences in float64 on generic inputs, along random directions;
* finite (``jnp.isfinite``) on rank-deficient features — dead (all-zero) units, duplicated and
  constant columns, n < d — for every differentiable estimator and every λ of linear_mse;
* LogME by the envelope theorem, under ``jit`` and ``vmap``; 0 where it is +inf;
* linear_mse's Cholesky and eigendecomposition paths give the same gradient;
* soft NCE equals NCE on one-hot probabilities and is differentiable in them;
* label_mse (1-D and 2-D predictions) like linear_mse, and in its targets;
* NLEEP: the gradient is the derivative with its discrete choices held fixed (k-means++ seeds,
  Lloyd assignments, the number of principal components kept): it matches finite differences
  where those choices do not change, and the score jumps where they do, which no gradient sees.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtransfer_kernels import ridge_factor, ridge_objective, safe_eigh, safe_svd

import jaxtransfer as jt
from tests.x64util import x64

N, D, C = 24, 5, 3
L2S = (0.0, 1e-3, 0.01, 1.0)


def _data(seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    f = rng.normal(size=(n, d)) + 1.5 * np.eye(C, d)[y]  # informative of the labels
    w = rng.normal(size=(d, 2))
    yr = f @ w + 0.5 * rng.normal(size=(n, 2))  # regression targets the features explain in part
    return f, y, yr


def _estimator_fns():
    """name -> f(features, labels, values) for every estimator differentiable in its features."""
    out = {f"linear_mse[{lam}]": (lambda f, y, yr, lam=lam: jt.linear_mse(f, yr, l2=lam)) for lam in L2S}
    out.update(
        {
            "logme": lambda f, y, yr: jt.logme(f, y, num_target_classes=C),
            "logme[regression]": lambda f, y, yr: jt.logme(f, yr, task="regression"),
            "hscore": lambda f, y, yr: jt.hscore(f, y, num_target_classes=C),
            "shrinkage_hscore": lambda f, y, yr: jt.shrinkage_hscore(f, y, num_target_classes=C),
            "transrate": lambda f, y, yr: jt.transrate(f, y, num_target_classes=C),
            "gbc": lambda f, y, yr: jt.gbc(f, y, num_target_classes=C),
            # predicted labels: a 1-D prediction, and 2-D ones (a keypoint)
            "label_mse[1d]": lambda f, y, yr: jt.label_mse(f[:, 0], yr, l2=0.0),
            "label_mse[2d]": lambda f, y, yr: jt.label_mse(f[:, 1:3], yr, l2=0.1),
        }
    )
    return out


# value and gradient of every estimator for a stack of feature matrices [B, n, d] in one program,
# jitted once per shape and dtype and shared by the tests below (compiling is what costs time here)
FNS = _estimator_fns()


@jax.jit
def values_and_grads(f, y, yr):
    return {
        name: jax.vmap(jax.value_and_grad(fn), in_axes=(0, None, None))(f, y, yr) for name, fn in FNS.items()
    }


NAMES = list(FNS)
H = 1e-6  # finite-difference step (float64)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name):
    with x64():
        f, y, yr = _data()
        v = np.random.default_rng(1).normal(size=f.shape)
        values, grads = values_and_grads(np.stack([f, f + H * v, f - H * v]), y, yr)[name]
        fd = float(values[1] - values[2]) / (2 * H)
        analytic = float(jnp.vdot(grads[0], v))
        assert abs(analytic - fd) <= 1e-5 * max(abs(fd), 1e-3), (analytic, fd)


def _degenerate(seed=2):
    """Dead ReLU units (all-zero columns), a duplicated column, a constant column: [3, N, D]."""
    f, _, _ = _data(seed=seed)
    dead = np.maximum(f, 0)
    dead[:, :3] = 0
    dup = f.copy()
    dup[:, 1] = dup[:, 0]
    const = f.copy()
    const[:, 2] = 1.5
    return np.stack([dead, dup, const])


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
@pytest.mark.parametrize("wide", [False, True], ids=["rank_deficient", "n_lt_d"])
def test_gradients_finite_on_rank_deficient_features(dtype, wide):
    """Every estimator, every λ: a finite value has a finite gradient (vmapped: both branches of
    every data-dependent factorisation choice run, and neither may leak a NaN)."""
    with x64(dtype == "float64"):
        f = np.random.default_rng(3).normal(size=(1, N, 2 * N)) if wide else _degenerate()
        f = jnp.asarray(f, dtype)
        _, y, _ = _data()
        yr = jnp.asarray(np.random.default_rng(4).normal(size=(N, 2)), dtype)
        for name, (values, grads) in values_and_grads(f, y, yr).items():
            assert bool(jnp.all(jnp.isfinite(values))), (name, values)
            assert bool(jnp.all(jnp.isfinite(grads))), name


def test_gradient_on_dead_units_is_the_rank_fixed_derivative():
    """λ > 0: ridge is smooth at a zero column, whose exact derivative is 0 (its coefficient is 0)."""
    with x64():
        f = _degenerate()[0]
        _, _, yr = _data(seed=2)
        g = jax.jit(jax.grad(lambda x: jt.linear_mse(x, yr, l2=0.1)))(jnp.asarray(f))
        np.testing.assert_allclose(np.asarray(g)[:, :3], 0, atol=1e-12)


def _fd_error(fn, x, seed, h=H):
    """Relative error of ⟨∇f, v⟩ against the central difference along a random v."""
    v = np.random.default_rng(seed).normal(size=np.shape(x))
    g = jax.jit(jax.grad(fn))(jnp.asarray(x))
    fd = (float(fn(x + h * v)) - float(fn(x - h * v))) / (2 * h)
    return abs(float(jnp.vdot(g, v)) - fd) / max(abs(fd), 1e-8)


def test_logme_gradient_wrt_regression_targets():
    with x64():
        f, _, yr = _data()
        assert _fd_error(lambda t: jt.logme(f, t, task="regression"), yr, seed=6) < 1e-5


def test_logme_gradient_under_jit_and_vmap():
    with x64():
        f, y, _ = _data()
        stack = np.stack([f, 1.3 * f[::-1] + 0.1, _data(seed=7)[0]])
        grad = jax.grad(lambda x: jt.logme(x, y, num_target_classes=C))
        one = jax.jit(grad)
        want = np.stack([np.asarray(one(x)) for x in stack])
        got = jax.jit(jax.vmap(grad))(stack)
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_logme_gradient_is_zero_where_unbounded():
    with x64():
        f, _, _ = _data()
        t = f @ np.array([1.0, -2.0, 0.5, 0.0, 1.0])  # in the span of the features: +inf
        fn = lambda x: jt.logme(x, t, task="regression")  # noqa: E731
        assert float(fn(f)) == np.inf
        g = jax.grad(fn)(jnp.asarray(f))
        np.testing.assert_array_equal(g, 0)


def test_linear_mse_cholesky_and_spectral_paths_agree():
    """The run-time choice (λ·n against the Gram trace) changes the factorisation, not the gradient."""
    with x64():
        f, _, yr = _data()
        lam = 0.5

        @partial(jax.jit, static_argnums=1)
        def grad(x, use_l2):
            def objective(a):
                return jnp.sum(ridge_objective(ridge_factor(a, l2=lam if use_l2 else None), yr, lam))

            return jax.grad(objective)(x)

        assert bool(ridge_factor(f, l2=lam).cholesky) and not bool(ridge_factor(f).cholesky)
        g_chol, g_spec = grad(f, True), grad(f, False)
        np.testing.assert_allclose(g_chol, g_spec, rtol=1e-9, atol=1e-12)


def test_safe_factorisations_keep_values():
    a = np.random.default_rng(8).normal(size=(7, 4)).astype(np.float32)
    a[:, 3] = a[:, 0]
    g = a.T @ a
    for got, want in zip(safe_eigh(g), jnp.linalg.eigh(g), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(safe_svd(a), jnp.linalg.svd(a, full_matrices=False), strict=True):
        np.testing.assert_array_equal(got, want)


def test_soft_nce_equals_nce_on_one_hot():
    rng = np.random.default_rng(9)
    z = rng.integers(0, 4, 50)
    y = (z + rng.integers(0, 2, 50)) % 3
    mask = rng.random(50) > 0.2
    one_hot = np.eye(4, dtype=np.float32)[z]
    np.testing.assert_allclose(jt.soft_nce(one_hot, y), jt.nce(z, y), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        jt.soft_nce(one_hot, y, mask=mask), jt.nce(z, y, mask=mask), rtol=1e-6, atol=1e-7
    )


def test_soft_nce_gradient():
    with x64():
        rng = np.random.default_rng(10)
        y = rng.integers(0, 3, 30)
        logits = rng.normal(size=(30, 4))
        fn = lambda lg: jt.soft_nce(jax.nn.softmax(lg, axis=-1), y, num_target_classes=3)  # noqa: E731
        assert _fd_error(fn, logits, seed=11) < 1e-6
        # one-hot rows (zero cells of the joint): finite by the documented choice
        g = jax.grad(lambda p: jt.soft_nce(p, y, num_target_classes=3))(jnp.eye(4)[rng.integers(0, 4, 30)])
        assert bool(jnp.all(jnp.isfinite(g)))


def test_label_mse_gradient_wrt_targets():
    with x64():
        f, _, yr = _data()
        assert _fd_error(lambda t: jt.label_mse(f[:, :2], t, l2=0.1), yr, seed=12) < 1e-6


# NLEEP with few components and iterations, to keep compiling cheap (6 components over 3 classes
# leave the posteriors soft, so the score has a gradient of a useful size)
def _nleep(x, y):
    return jt.nleep(x, y, key=jax.random.key(0), num_target_classes=C, num_clusters=6, num_iter=30)


def test_nleep_gradient_holds_its_discrete_choices_fixed():
    """Reverse mode runs through the EM iterations (``lax.fori_loop``); the k-means++ seeds (an
    argmax), the Lloyd assignments (an argmin) and the kept components (a threshold) are
    piecewise constant in F, so they contribute nothing. Where they do not change, that is the
    derivative: it matches a float64 central difference. Across the places where they change,
    the score jumps (a discontinuity of ~0.1 along the line below, against a change of ~5e-4 per
    step that the gradient predicts): a gradient-based use of NLEEP sees none of that."""
    with x64():
        f, y, _ = _data()
        v = np.random.default_rng(13).normal(size=f.shape)
        fn = jax.jit(jax.vmap(jax.value_and_grad(_nleep), in_axes=(0, None)))
        values, grads = fn(jnp.asarray(np.stack([f, f + H * v, f - H * v])), y)
        fd = float(values[1] - values[2]) / (2 * H)
        analytic = float(jnp.vdot(grads[0], v))
        assert abs(fd) > 1e-3  # a gradient of a useful size, not a flat region
        assert abs(analytic - fd) <= 1e-6 * abs(fd), (analytic, fd)
        assert bool(jnp.all(jnp.isfinite(grads)))
        ts = np.linspace(-0.5, 0.5, 101)  # ‖0.5·v‖ is about 45% of ‖F‖
        line = np.asarray(jax.jit(jax.vmap(_nleep, in_axes=(0, None)))(f[None] + ts[:, None, None] * v, y))
        steps = np.abs(np.diff(line))
        smooth = abs(analytic) * (ts[1] - ts[0])  # the change per step the gradient at F predicts
        assert np.median(steps) < 5 * smooth
        assert steps.max() > 50 * smooth, (steps.max(), smooth)


def test_nleep_gradient_finite_on_dead_units():
    with x64():
        f = _degenerate()[0]  # three all-zero columns
        _, y, _ = _data()
        value, g = jax.jit(jax.value_and_grad(_nleep))(jnp.asarray(f), y)
        assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(g)))
