"""The singular spectrum kernel against float64 NumPy SVDs, on features built to be hard for float32.

Features with a chosen singular spectrum (condition numbers 10 to 1e4), a large common mean, global
scales from 1e-30 to 1e30, zero columns and n < d; both routes (the Gram eigendecomposition and the
SVD) and the automatic choice between them.
"""

import jax
import jax.numpy as jnp
import jaxtransfer_kernels as K
import numpy as np
import pytest
from x64util import x64

spectrum = jax.jit(K.spectrum, static_argnames=("center", "method"))


def features(rng, n, d, cond, offset=0.0, scale=1.0):
    """[n, d] with singular values log-spaced over ``cond`` (before the offset), times ``scale``."""
    r = min(n, d)
    u, _ = np.linalg.qr(rng.normal(size=(n, r)))
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    s = np.logspace(0, -np.log10(cond), r) * np.sqrt(n)
    return ((u * s) @ v.T + offset) * scale


def reference(f, center=True):
    """float64 singular values of the (centred) float32-rounded features, descending."""
    f = np.asarray(f, np.float64)
    if center:
        f = f - f.mean(axis=0)
    return np.linalg.svd(f, compute_uv=False)


def kept(spec):
    """Singular values in the input's units, and the orthonormal basis of the kept directions."""
    sigma = np.asarray(spec.singular, np.float64) / float(spec.scale)
    keep = np.asarray(spec.keep)
    return sigma[keep], np.asarray(spec.basis, np.float64)[:, keep]


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(
    ("n", "d", "cond", "offset", "scale"),
    [
        (200, 20, 10.0, 0.0, 1.0),
        (200, 20, 1e4, 0.0, 1.0),
        (200, 20, 1e3, 100.0, 1.0),  # a mean 100× the spread
        (40, 80, 1e3, 5.0, 1.0),  # n < d
        (200, 20, 1e3, 1.0, 1e-30),
        (200, 20, 1e3, 1.0, 1e30),
    ],
)
def test_singular_values_keep_their_digits_in_float32(rng, method, n, d, cond, offset, scale):
    f = features(rng, n, d, cond, offset, scale).astype(np.float32)
    want = reference(f)
    spec = spectrum(f, method=method)
    sigma, basis = kept(spec)
    rank = min(n - 1, d)
    assert sigma.shape == (rank,)
    # absolute error about eps·σ_max, so the smallest carry eps·cond relative error
    np.testing.assert_allclose(sigma, want[:rank], rtol=0, atol=2e-6 * want[0])
    np.testing.assert_allclose(basis.T @ basis, np.eye(rank), atol=1e-4)
    if method == "auto":  # the Gram route resolves condition numbers up to 1/√GRAM_RESOLUTION
        assert bool(spec.svd) == (cond > K.GRAM_RESOLUTION**-0.5)


def test_gram_route_loses_what_the_svd_keeps(rng):
    # the reason for the SVD route: the Gram matrix squares the condition number
    f = features(rng, 300, 30, 1e3).astype(np.float32)
    want = reference(f)
    gram, _ = kept(spectrum(f, method="gram"))
    svd, _ = kept(spectrum(f, method="svd"))
    assert len(gram) < len(want) - 1  # directions below √(eps·n)·σ_max dropped as zero
    np.testing.assert_allclose(svd, want[:30], rtol=1e-3)


def test_uncentred_and_centred(rng):
    f = features(rng, 50, 6, 10.0, offset=3.0)
    with x64():
        spec = spectrum(f, center=False)
        np.testing.assert_allclose(np.asarray(spec.mean), 0)
        np.testing.assert_allclose(kept(spec)[0], reference(f, center=False), rtol=1e-12)
        spec = spectrum(f)
        np.testing.assert_allclose(np.asarray(spec.mean), f.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(kept(spec)[0], reference(f)[:6], rtol=1e-10)


@pytest.mark.parametrize("method", ["auto", "svd", "gram"])
def test_structural_zeros(rng, method):
    # zero columns, masked rows and the centring's lost direction are dropped in every route
    f = features(rng, 30, 8, 5.0).astype(np.float32)
    f[:, [2, 5]] = 0.0
    mask = np.arange(30) % 5 != 0
    spec = spectrum(f, mask, method=method)
    sigma, basis = kept(spec)
    np.testing.assert_allclose(sigma, reference(f[mask])[:6], rtol=1e-4)
    assert int(spec.rank_bound) == 6 and not bool(spec.unresolved)
    assert (basis[~mask] == 0).all()
    assert not bool(spec.svd) or method == "svd"  # nothing beyond the structural zeros: Gram route


def test_duplicated_columns_take_the_svd_and_drop_the_copy(rng):
    f = features(rng, 100, 6, 5.0).astype(np.float32)
    f = np.hstack([f, 2.0 * f[:, :1]])
    spec = spectrum(f)
    assert bool(spec.svd)  # the rank is below the structural bound: the Gram route cannot tell
    assert int(np.asarray(spec.keep).sum()) == 6 and not bool(spec.unresolved)


def test_unresolved_band_flags_condition_beyond_float32(rng):
    f = features(rng, 300, 20, 1e5).astype(np.float32)
    assert bool(spectrum(f).unresolved)
    assert not bool(spectrum(features(rng, 300, 20, 1e3).astype(np.float32)).unresolved)
    with x64():  # float64 resolves it
        assert not bool(spectrum(features(rng, 300, 20, 1e5)).unresolved)


def test_scaling_is_exact(rng):
    # powers of two: the scaled features are the input's bits with a shifted exponent
    f = features(rng, 20, 3, 10.0).astype(np.float32) * np.float32(3e-25)
    scaled = K.centre_and_scale(f, center=False)
    assert 1 <= float(jnp.max(jnp.abs(scaled.features))) < 2
    np.testing.assert_array_equal(np.asarray(scaled.features) / np.float32(scaled.scale), f)
    assert float(K.power_of_two_scale(jnp.float32(0.0))) == 1.0


@pytest.mark.parametrize(("p", "q"), [(60, 8), (8, 60)])
def test_half_logdet_identity_plus(rng, p, q):
    b = features(rng, p, q, 1e3).astype(np.float32)
    for coef in (1e-3, 1.0, 1e3, 1e8):
        want = 0.5 * np.sum(np.log1p((coef * np.linalg.svd(b.astype(np.float64), compute_uv=False)) ** 2))
        got = float(K.half_logdet_identity_plus(jnp.asarray(b), jnp.float32(coef)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # rank-deficient B with a huge coefficient: rounding noise in the null space adds nothing
    low = (rng.normal(size=(p, 2)) @ rng.normal(size=(2, q))).astype(np.float32)
    want = 0.5 * np.sum(np.log1p((1e8 * np.linalg.svd(low.astype(np.float64), compute_uv=False)[:2]) ** 2))
    np.testing.assert_allclose(float(K.half_logdet_identity_plus(jnp.asarray(low), 1e8)), want, rtol=1e-4)
