"""kernels.branch: lax.cond per member; inside uniform_batch a chunk that agrees runs one route (#12)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtransfer_kernels import branch, ridge_factor, ridge_objective, uniform_batch


def _f(x):
    return branch(jnp.sum(x) > 0, lambda v: jnp.sin(v).sum(), lambda v: (v * v).sum(), x)


def _reference(xs):
    return np.array([np.sin(x).sum() if x.sum() > 0 else (x * x).sum() for x in np.asarray(xs, float)])


def _uniform(xs):
    with uniform_batch("chunk"):
        return jax.vmap(_f, axis_name="chunk")(xs)


def test_values_equal_cond_for_agreeing_and_mixed_chunks():
    base = np.arange(1.0, 4.0, dtype=np.float32)
    for xs in (np.stack([base, base + 1]), np.stack([-base, -base - 1]), np.stack([base, -base])):
        np.testing.assert_allclose(np.asarray(_uniform(xs)), _reference(xs), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(jax.vmap(_f)(xs)), _reference(xs), rtol=1e-6)
        np.testing.assert_allclose(float(_f(xs[0])), _reference(xs[:1])[0], rtol=1e-6)


def test_uniform_batch_keeps_a_conditional_plain_vmap_selects():
    xs = jnp.ones((3, 4))
    assert "cond[" in str(jax.make_jaxpr(jax.jit(_uniform))(xs))
    plain = str(jax.make_jaxpr(jax.vmap(_f))(xs))
    assert "cond[" not in plain and "select_n" in plain  # what vmap does to lax.cond: both branches


def test_ridge_through_uniform_chunks_equals_one_at_a_time(rng):
    # penalties that send some sources to the Cholesky route and others to the spectrum
    f = rng.normal(size=(4, 30, 5)).astype(np.float32)
    y = rng.normal(size=(30, 2)).astype(np.float32)
    l2 = jnp.asarray([1.0, 1.0, 1e-9, 1e-9], jnp.float32)

    def one(fi, lam):
        return ridge_objective(ridge_factor(fi, l2=lam), y, lam)

    singles = np.stack([np.asarray(one(f[i], l2[i])) for i in range(4)])
    for chunk in (slice(0, 2), slice(2, 4), slice(1, 3)):  # Cholesky, spectrum, mixed

        def batched(fs, lams):
            with uniform_batch("s"):
                return jax.vmap(one, axis_name="s")(fs, lams)

        got = np.asarray(jax.jit(batched)(f[chunk], l2[chunk]))
        np.testing.assert_allclose(got, singles[chunk], rtol=1e-5, atol=1e-7)


def test_outside_the_context_branch_is_lax_cond():
    def cond(x):
        return lax.cond(jnp.sum(x) > 0, lambda v: jnp.sin(v).sum(), lambda v: (v * v).sum(), x)

    assert str(jax.make_jaxpr(_f)(jnp.ones(3))) == str(jax.make_jaxpr(cond)(jnp.ones(3)))
