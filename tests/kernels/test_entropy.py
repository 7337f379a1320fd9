"""Entropies from counts against scipy.stats.entropy and float64 NumPy references."""

import jax
import jax.numpy as jnp
import jaxtransfer_kernels as K
import numpy as np
import pytest
import scipy.stats
from jax.test_util import check_grads
from x64util import x64

# float32 results against float64 references; float64 (under x64) tightly.
TOL = {np.float32: {"rtol": 2e-6, "atol": 1e-6}, np.float64: {"rtol": 1e-9, "atol": 1e-12}}


# Sweeps call jitted copies (one compile per shape instead of one per op and shape);
# eager calls are exercised by the hand-worked cases and compared in the jit test.
entropy = jax.jit(K.entropy_from_counts, static_argnames="axis")
cond_entropy = jax.jit(K.conditional_entropy_from_counts)


def close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def entropy_ref(counts, axis=-1):
    """scipy entropy in nats, with an all-zero slice giving 0 (scipy gives nan)."""
    counts = np.asarray(counts, np.float64)
    h = scipy.stats.entropy(counts, axis=axis)
    return np.where(counts.sum(axis=axis) > 0, h, 0.0)


def joint_entropy(p):
    """-Σ p log p of a float64 probability array over its last two axes, 0·log 0 = 0."""
    safe = np.where(p > 0, p, 1.0)
    return -np.sum(p * np.log(safe), axis=(-2, -1))


def cond_entropy_ref(joint):
    """H(Y|Z) = H(Y, Z) - H(Z) in float64 from a [..., Cz, Cy] count table."""
    joint = np.asarray(joint, np.float64)
    total = joint.sum(axis=(-2, -1), keepdims=True)
    p = joint / np.where(total > 0, total, 1.0)
    pz = p.sum(-1)
    h_z = -np.sum(pz * np.log(np.where(pz > 0, pz, 1.0)), axis=-1)
    return joint_entropy(p) - h_z


def random_counts(rng, shape, zero_frac=0.3, high=50):
    c = rng.integers(0, high, size=shape)
    return np.where(rng.random(shape) < zero_frac, 0, c)


# ------------------------------------------------------------ entropy_from_counts


def test_entropy_hand_worked():
    h = float(K.entropy_from_counts(jnp.array([1.0, 1.0])))  # eager
    np.testing.assert_allclose(h, np.log(2), rtol=1e-6)
    np.testing.assert_allclose(float(entropy(jnp.array([3, 0, 3, 0]))), np.log(2), rtol=1e-6)
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2
    np.testing.assert_allclose(float(entropy(jnp.array([2, 1, 1]))), 1.5 * np.log(2), rtol=1e-6)
    assert float(entropy(jnp.array([0, 7, 0]))) == 0.0
    assert float(entropy(jnp.array([0, 0, 0]))) == 0.0
    assert float(entropy(jnp.array([5]))) == 0.0


@pytest.mark.parametrize(
    ("shape", "kind"), [((7,), "int"), ((4, 6), "float"), ((2, 3, 5), "int"), ((3, 1), "float")]
)
def test_entropy_vs_scipy(rng, shape, kind):
    counts = random_counts(rng, shape)
    if kind == "float":
        counts = (counts * rng.random(shape)).astype(np.float32)
    got = entropy(counts)
    assert got.shape == shape[:-1] and got.dtype == jnp.float32
    close(got, entropy_ref(counts), np.float32)


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_entropy_axis(rng, axis):
    counts = random_counts(rng, (5, 4, 3)).astype(np.float32)
    got = entropy(counts, axis=axis)
    want = entropy_ref(counts, axis=axis)
    assert got.shape == want.shape
    close(got, want, np.float32)


def test_entropy_zero_rows_give_zero(rng):
    counts = random_counts(rng, (4, 6), zero_frac=0.2) + 1
    counts[1] = 0
    counts[3] = 0
    got = np.asarray(entropy(counts))
    assert got[1] == 0.0 and got[3] == 0.0
    close(got, entropy_ref(counts), np.float32)


def test_entropy_scale_invariant(rng):
    counts = random_counts(rng, (3, 8)) + 1
    a = entropy(counts.astype(np.float32))
    b = entropy(1000.0 * counts.astype(np.float32))
    close(a, np.asarray(b, np.float64), np.float32)


def test_entropy_float64(rng):
    counts = random_counts(rng, (3, 4, 9)) * rng.random((3, 4, 9))
    with x64():
        got = K.entropy_from_counts(jnp.asarray(counts, jnp.float64))
        assert got.dtype == jnp.float64
        close(got, entropy_ref(counts), np.float64)
        got = K.entropy_from_counts(jnp.asarray(counts.round().astype(np.int64)))
        assert got.dtype == jnp.float64
        close(got, entropy_ref(counts.round()), np.float64)


# -------------------------------------------------- conditional_entropy_from_counts


def test_conditional_entropy_hand_worked():
    # z=0 always gives y=0; z=1 splits evenly: H(Y|Z) = (2/4)·0 + (2/4)·log 2
    got = float(K.conditional_entropy_from_counts(jnp.array([[2, 0], [1, 1]])))  # eager
    np.testing.assert_allclose(got, 0.5 * np.log(2), rtol=1e-6)
    # Y a function of Z: 0; Y independent and uniform given Z: log 3
    assert float(cond_entropy(jnp.array([[4, 0, 0], [0, 0, 9]]))) == 0.0
    got = float(cond_entropy(jnp.array([[2, 2, 2], [5, 5, 5]])))
    np.testing.assert_allclose(got, np.log(3), rtol=1e-6)
    # an all-zero table, a single cell, an empty row
    assert float(cond_entropy(jnp.zeros((3, 4)))) == 0.0
    assert float(cond_entropy(jnp.array([[7]]))) == 0.0
    got = float(cond_entropy(jnp.array([[0, 0], [3, 3]])))
    np.testing.assert_allclose(got, np.log(2), rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        ((1, 1), "int"),
        ((1, 5), "int"),
        ((4, 1), "float"),
        ((2, 2), "int"),
        ((10, 10), "float"),
        ((30, 20), "int"),
    ],
)
def test_conditional_entropy_vs_reference(rng, shape, kind):
    joint = random_counts(rng, shape)
    if kind == "float":
        joint = (joint * rng.random(shape)).astype(np.float32)
    got = cond_entropy(joint)
    assert got.shape == () and got.dtype == jnp.float32
    close(got, cond_entropy_ref(joint), np.float32)


def test_conditional_entropy_matches_entropy_chain_rule(rng):
    # H(Y|Z) = Σ_z (n_z/N) H(Y | Z = z), computed with scipy row by row
    joint = random_counts(rng, (6, 5))
    joint[2] = 0
    rows = joint.sum(1)
    want = np.sum(rows / rows.sum() * entropy_ref(joint))
    close(cond_entropy(joint), want, np.float32)


@pytest.mark.parametrize("lead", [(3,), (2, 4)])
def test_conditional_entropy_batched_equals_looped(rng, lead):
    joint = random_counts(rng, (*lead, 5, 4))
    joint.reshape(-1, 5, 4)[1] = 0  # one empty table in the batch
    got = np.asarray(cond_entropy(joint))
    assert got.shape == lead
    want = cond_entropy_ref(joint)
    close(got, want, np.float32)
    for idx in np.ndindex(*lead):
        close(got[idx], float(cond_entropy(joint[idx])), np.float32)
    assert got.reshape(-1)[1] == 0.0


def test_conditional_entropy_of_joint_histogram(rng):
    z = rng.integers(0, 4, 300)
    y = (z + rng.integers(0, 2, 300)) % 3
    joint = K.joint_histogram(z, y, num_z=4, num_y=3)
    close(cond_entropy(joint), cond_entropy_ref(np.asarray(joint)), np.float32)


def test_conditional_entropy_float64(rng):
    joint = random_counts(rng, (2, 3, 7, 5)) * rng.random((2, 3, 7, 5))
    with x64():
        got = K.conditional_entropy_from_counts(jnp.asarray(joint, jnp.float64))
        assert got.dtype == jnp.float64
        close(got, cond_entropy_ref(joint), np.float64)


def test_entropies_jit_equals_eager(rng):
    counts = random_counts(rng, (3, 6, 4)).astype(np.float32)
    traces = []

    @jax.jit
    def f(c):
        traces.append(None)
        return K.entropy_from_counts(c), K.conditional_entropy_from_counts(c)

    h, ch = f(counts)
    np.testing.assert_allclose(np.asarray(h), np.asarray(K.entropy_from_counts(counts)), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(ch), np.asarray(K.conditional_entropy_from_counts(counts)), rtol=1e-6
    )
    close(ch, cond_entropy_ref(counts), np.float32)
    counts2 = random_counts(rng, (3, 6, 4)).astype(np.float32)
    close(f(counts2)[0], entropy_ref(counts2), np.float32)
    assert len(traces) == 1


# ----------------------------------------------------------------------- gradients


def test_gradients_finite_with_zero_counts(rng):
    counts = random_counts(rng, (5, 4), zero_frac=0.4).astype(np.float32)
    counts[0] = 0.0  # an all-zero row
    for fn in (
        lambda c: jnp.sum(K.entropy_from_counts(c)),
        lambda c: jnp.sum(K.entropy_from_counts(c, axis=0)),
        K.conditional_entropy_from_counts,
    ):
        g = np.asarray(jax.jit(jax.grad(fn))(jnp.asarray(counts)))
        assert np.isfinite(g).all()
    g = np.asarray(jax.jit(jax.grad(K.conditional_entropy_from_counts))(jnp.zeros((3, 3))))
    assert np.isfinite(g).all()


def central_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


def test_gradients_match_finite_differences(rng):
    counts = rng.random((4, 5)) * 10 + 0.5  # strictly positive
    with x64():

        def h(c):
            return jnp.sum(K.entropy_from_counts(c) * jnp.arange(1.0, 5.0))

        def ch(c):
            return K.conditional_entropy_from_counts(c)

        for fn, ref in (
            (h, lambda c: np.sum(entropy_ref(c) * np.arange(1.0, 5.0))),
            (ch, lambda c: float(cond_entropy_ref(c))),
        ):
            x = jnp.asarray(counts, jnp.float64)
            check_grads(jax.jit(fn), (x,), order=1, modes=("fwd", "rev"))
            # the gradient against central differences of the independent float64 reference
            np.testing.assert_allclose(
                np.asarray(jax.jit(jax.grad(fn))(x)), central_difference(ref, counts), rtol=1e-6, atol=1e-9
            )


def test_entropy_gradient_closed_form(rng):
    # dH/dn_c = -(log(n_c/N) + H)/N for the distribution p_c = n_c/N
    counts = rng.random(6) * 5 + 0.1
    with x64():
        g = np.asarray(jax.jit(jax.grad(K.entropy_from_counts))(jnp.asarray(counts, jnp.float64)))
    n = counts.sum()
    want = -(np.log(counts / n) + entropy_ref(counts)) / n
    np.testing.assert_allclose(g, want, **TOL[np.float64])


def test_entropy_gradient_closed_form_with_zeros():
    # zero entries do not change the gradient at the positive ones
    counts = np.array([3.0, 0.0, 1.5, 0.0, 2.5])
    with x64():
        g = np.asarray(jax.jit(jax.grad(K.entropy_from_counts))(jnp.asarray(counts, jnp.float64)))
    assert np.isfinite(g).all()
    pos = counts > 0
    n = counts.sum()
    want = -(np.log(counts[pos] / n) + entropy_ref(counts)) / n
    np.testing.assert_allclose(g[pos], want, **TOL[np.float64])
