"""NLEEP against an independent float64 NumPy EM started from the same samples, and LEEP's formula."""

import re

import jax
import numpy as np
import pytest
import scipy.special
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.estimators._nleep import KMEANS_ITER, _prepare, _seed_indices, nleep

TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-9, "atol": 1e-10}}
N, D, C = 48, 6, 3
ITER = 20  # most tests share this static configuration, so they share one compilation
KEY = jax.random.key(0)


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def pca_ref(f, k, fraction):
    """Top-k principal-component scores (np.linalg.eigh of the ddof=0 covariance); components past
    ``fraction`` of the variance or at rounding level are zero columns. Also the top variance."""
    fc = f - f.mean(axis=0)
    e, v = np.linalg.eigh(fc.T @ fc / f.shape[0])
    e, v = np.clip(e[::-1], 0, None), v[:, ::-1]
    keep = e[:k] > 1e-10 * e[0]
    if fraction is not None:
        keep &= np.concatenate([[0.0], np.cumsum(e[: k - 1])]) < fraction * e.sum()
    return fc @ (v[:, :k] * keep), e[:k] * keep, e[0]


def m_step_ref(z, r, means, var, floor):
    """M-step per component, direct two-pass variance; an empty component keeps its parameters, weight 0."""
    means, var, weights = means.copy(), var.copy(), np.zeros(len(means))
    for c in range(len(means)):
        nc = r[:, c].sum()
        if nc > 0:
            means[c] = r[:, c] @ z / nc
            var[c] = np.maximum(r[:, c] @ (z - means[c]) ** 2 / nc, floor)
        weights[c] = nc / len(z)
    return means, var, weights


def kmeans_init_ref(z, seeds, variances, floor):
    """scikit-learn's kmeans initialisation: Lloyd from the seed rows, then the hard assignment's M-step."""
    k = len(seeds)
    means, var = z[seeds].copy(), np.tile(np.maximum(variances, floor), (k, 1))

    def hard(means):
        d2 = ((z[:, None, :] - means[None, :, :]) ** 2).sum(-1)
        return np.eye(k)[np.argmin(d2, axis=1)]

    for _ in range(KMEANS_ITER):
        means, var, _ = m_step_ref(z, hard(means), means, var, floor)
    return m_step_ref(z, hard(means), means, var, floor)


def em_ref(z, seeds, variances, floor, num_iter):
    """Diagonal GMM by EM in float64 from the k-means initialisation, with per-component loops."""
    n = z.shape[0]
    means, var, weights = kmeans_init_ref(z, seeds, variances, floor)
    idx = seeds

    def posteriors():
        logp = np.empty((n, len(idx)))
        for c in range(len(idx)):
            with np.errstate(divide="ignore"):  # log 0 = −inf for an empty component
                log_weight = np.log(weights[c])
            logp[:, c] = log_weight + scipy.stats.norm.logpdf(z, means[c], np.sqrt(var[c])).sum(1)
        return np.exp(logp - scipy.special.logsumexp(logp, axis=1, keepdims=True))

    for _ in range(num_iter):
        means, var, weights = m_step_ref(z, posteriors(), means, var, floor)
    return posteriors()


def leep_ref(theta, y):
    n = len(y)
    p_yz = {c: theta[y == c].sum(axis=0) / n for c in np.unique(y)}
    p_z = sum(p_yz.values())
    return float(np.mean([np.log(np.sum(p_yz[y[i]] / p_z * theta[i])) for i in range(n)]))


def nleep_ref(f, y, key, *, k=64, fraction=0.8, clusters=None, num_iter=100, mask=None):
    """NLEEP in float64 on the kept rows, seeded by jaxtransfer's own k-means++ draw
    (``_seed_indices``, the one shared piece: it fixes the random rows); returns (score, posteriors)."""
    f, y = np.asarray(f, np.float64), np.asarray(y)
    clusters = clusters or 5 * (int(y.max()) + 1)
    m = np.ones(len(y), bool) if mask is None else np.asarray(mask)
    f, y = f[m], y[m]
    z, variances, top = pca_ref(f, min(k, f.shape[1]), fraction)
    seeds = np.asarray(_seed_indices(key, jax.numpy.asarray(z), None, clusters))
    floor = 1e-6 * top if top > 0 else 1.0
    theta = em_ref(z, seeds, variances, floor, num_iter)
    return leep_ref(theta, y), theta


def data(rng, n=N, d=D, c=C, sep=3.0, dtype=np.float64):
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    f = sep * rng.normal(size=(c, d))[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2, d) + 2.0
    return f.astype(dtype), y


def posteriors(f, y, key, mask=None, *, k=64, fraction=0.8, clusters=None, num_iter=100):
    k = min(k, f.shape[1])
    clusters = clusters or 5 * (int(y.max()) + 1)
    ev = None if fraction is None else np.asarray(fraction, f.dtype)
    statics = {"num_components": k, "num_clusters": clusters, "num_iter": num_iter}
    theta = _PREPARE(jax.numpy.asarray(f), mask, key=key, explained_variance=ev, **statics)
    return np.asarray(theta, np.float64)


_PREPARE = jax.jit(_prepare, static_argnames=("num_components", "num_clusters", "num_iter"))


@pytest.mark.parametrize(
    "kw",
    [
        {"num_iter": ITER},
        {"num_iter": ITER, "fraction": None, "k": 4, "clusters": 4},
        {"num_iter": 0},
    ],
)
def test_matches_numpy_em_float64(rng, kw):
    f, y = data(rng)
    with x64():
        want, theta = nleep_ref(f, y, KEY, **kw)
        opts = {"fraction": "explained_variance", "k": "num_components", "clusters": "num_clusters"}
        got = nleep(f, y, key=KEY, **{opts.get(a, a): b for a, b in kw.items()})
        assert got.dtype == np.float64 and got.shape == ()
        close(got, want, np.float64)
        np.testing.assert_allclose(posteriors(f, y, KEY, **kw), theta, atol=1e-9)


def test_default_options_float64(rng):
    f, y = data(rng, d=10)
    with x64():
        want, _ = nleep_ref(f, y, KEY)  # 80 % of the variance, 5·C clusters, 100 iterations
        close(nleep(f, y, key=KEY), want, np.float64)


def test_float32_close_to_float64(rng):
    f, y = data(rng, sep=4.0)
    f = f.astype(np.float32)
    want, _ = nleep_ref(f, y, KEY, num_iter=ITER)
    close(nleep(f, y, key=KEY, num_iter=ITER), want)
    with x64():
        close(nleep(f.astype(np.float64), y, key=KEY, num_iter=ITER), want, np.float64)


def test_same_key_is_bitwise_identical(rng):
    f, y = data(rng, dtype=np.float32)
    a = np.asarray(nleep(f, y, key=jax.random.key(3), num_iter=ITER))
    b = np.asarray(nleep(f, y, key=jax.random.key(3), num_iter=ITER))
    c = np.asarray(nleep(f, y, key=jax.random.PRNGKey(3), num_iter=ITER))  # a raw key, same bits
    assert a.tobytes() == b.tobytes() == c.tobytes()
    raw = np.asarray(jax.random.key_data(jax.random.key(3)))  # a NumPy uint32[2] key
    assert np.asarray(nleep(f, y, key=raw, num_iter=ITER)).tobytes() == a.tobytes()
    scores = [float(nleep(f, y, key=jax.random.key(s), num_iter=ITER)) for s in range(4)]
    assert all(np.isfinite(scores)) and all(s <= 1e-6 for s in scores)
    assert len(set(scores)) > 1  # the key matters


def test_seeds_are_distinct_kept_rows(rng):
    z = rng.normal(size=(30, 3))
    mask = np.arange(30) % 3 != 0
    idx = np.asarray(_seed_indices(KEY, z, mask, 12))
    assert len(set(idx.tolist())) == 12 and mask[idx].all()
    # the draw depends on the kept rows only: the same rows after dropping the masked ones
    dropped = np.asarray(_seed_indices(KEY, z[mask], None, 12))
    np.testing.assert_array_equal((np.cumsum(mask) - 1)[idx], dropped)
    with x64():  # the same rows whatever the precision mode
        np.testing.assert_array_equal(np.asarray(_seed_indices(KEY, z, mask, 12)), idx)
    # more clusters than distinct kept rows: every kept row is used, then they repeat
    idx = np.asarray(_seed_indices(KEY, z, mask, 25))
    assert mask[idx].all() and len(set(idx.tolist())) == 20


def test_seeds_spread_out():
    # k-means++: a far-away point is drawn as soon as one seed sits in the big cluster
    z = np.concatenate([np.zeros((99, 2)), [[1000.0, 0.0]]])
    z[:99, 1] = np.linspace(0, 1, 99)
    hits = [99 in np.asarray(_seed_indices(jax.random.key(s), z, None, 2)).tolist() for s in range(20)]
    assert all(hits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("setup", ["one_hot", "index", "blobs"])
def test_separable_classes_give_zero(rng, setup, dtype):
    # perfectly separable classes: every mixture component sits inside one class, NLEEP = 0 (as with
    # scikit-learn's kmeans-initialised mixtures); random-row seeds with the overall variance left
    # components straddling classes (-0.09 to -1.4, depending on the key)
    c, n = 15, 600
    y = rng.permutation(np.arange(n) % c)
    f = {
        "one_hot": 100.0 * np.eye(c)[y],
        "index": np.stack([y, y % 3], axis=1).astype(float),
        "blobs": 1000 * rng.normal(size=(c, 32))[y] + rng.normal(size=(n, 32)),
    }[setup]
    with x64(dtype == np.float64):
        for key in range(3):
            got = float(nleep(f.astype(dtype), y, key=jax.random.key(key)))
            assert -1e-5 < got <= 0.0


def test_mask_equals_dropping_rows(rng):
    f, y = data(rng)
    mask = rng.random(N) < 0.7
    mask[:C] = True
    with x64():
        want, theta = nleep_ref(f, y, KEY, num_iter=ITER, mask=mask)
        got = nleep(f, y, key=KEY, num_iter=ITER, mask=mask)
        close(got, want, np.float64)
        close(nleep(f[mask], y[mask], key=KEY, num_iter=ITER), float(got), np.float64)
        np.testing.assert_allclose(posteriors(f, y, KEY, mask, num_iter=ITER)[mask], theta, atol=1e-9)


def test_absent_classes(rng):
    f, y = data(rng)
    sparse = np.array([0, 2, 5])[y]
    with x64():
        want, _ = nleep_ref(f, y, KEY, num_iter=ITER, clusters=10)
        got = nleep(f, sparse, key=KEY, num_iter=ITER, num_clusters=10, num_target_classes=8)
        assert np.isfinite(float(got))
        close(got, want, np.float64)


def test_constant_features_give_minus_label_entropy(rng):
    y = rng.integers(0, C, N)
    want = -float(scipy.stats.entropy(np.bincount(y)))
    close(nleep(np.full((N, D), 3.0, np.float32), y, key=KEY, num_iter=ITER), want)


def test_zero_padded_columns_change_nothing(rng):
    f, y = data(rng)
    with x64():
        want = nleep(f, y, key=KEY, num_iter=ITER)
        close(nleep(np.hstack([f, np.zeros((N, 4))]), y, key=KEY, num_iter=ITER), float(want), np.float64)
        close(nleep(5.0 * f - 1.0, y, key=KEY, num_iter=ITER), float(want), np.float64)


def test_more_clusters_than_samples(rng):
    f, y = data(rng, n=10)
    got = nleep(f.astype(np.float32), y, key=KEY, num_clusters=25, num_iter=10)
    assert np.isfinite(float(got)) and float(got) <= 1e-6


def test_jit_equals_eager(rng):
    f, y = data(rng, dtype=np.float32)
    fn = jax.jit(lambda a, b, key: nleep(a, b, key=key, num_target_classes=C, num_iter=ITER))
    np.testing.assert_allclose(fn(f, y, KEY), nleep(f, y, key=KEY, num_iter=ITER), rtol=1e-6)


def test_score_matrix_equals_loop(rng):
    sources = np.stack([data(rng, dtype=np.float32)[0] for _ in range(2)])
    targets = np.stack([data(rng)[1] for _ in range(3)])
    opts = {"key": KEY, "num_iter": ITER, "num_target_classes": C}
    loop = [[float(nleep(s, t, **opts)) for t in targets] for s in sources]
    close(jt.score_matrix(nleep, sources, targets, **opts), loop)  # one source per step
    smask = rng.random((2, N)) < 0.8
    loop = [
        [float(nleep(s, t, mask=m, **opts)) for t in targets] for s, m in zip(sources, smask, strict=True)
    ]
    got = jt.score_matrix("nleep", sources, targets, source_mask=smask, batch_size=2, key=KEY, num_iter=ITER)
    close(got, loop)  # both sources in one vmapped step


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"key": None}, TypeError, "nleep needs key=<PRNG key>"),
        ({"key": 0}, TypeError, "key must be a PRNG key"),
        ({"key": np.zeros(3, np.uint32)}, TypeError, "key must be a PRNG key"),
        ({"key": np.zeros(2, np.int32)}, TypeError, "key must be a PRNG key"),
        ({"key": jax.random.split(KEY, 2)}, ValueError, "key must be a single PRNG key"),
        ({"num_iter": -1}, ValueError, "num_iter must be at least 0"),
        ({"num_clusters": 0}, ValueError, "num_clusters must be at least 1"),
        ({"num_clusters": 2.5}, TypeError, "num_clusters must be a Python int"),
        ({"num_components": 0}, ValueError, "num_components must be at least 1"),
        ({"explained_variance": 2.0}, ValueError, "explained_variance must lie in (0, 1]"),
        ({"targets": np.linspace(0, 1, N)}, TypeError, "targets must hold integer class labels"),
        ({"targets": -np.ones(N, int)}, ValueError, "targets contains the negative label -1"),
        ({"features": np.ones((N - 2, D))}, ValueError, "features has 46 samples but targets has 48"),
        ({"features": np.full((N, D), np.inf)}, ValueError, "features contains a non-finite value"),
    ],
)
def test_bad_input(rng, kwargs, error, words):
    f, y = data(rng)
    args = {"features": f, "targets": y, "key": KEY, **kwargs}
    with pytest.raises(error, match=re.escape(words)):
        nleep(**args)


def test_unknown_option(rng):
    f, y = data(rng)
    with pytest.raises(TypeError, match=re.escape("nleep got unexpected option(s) tol")):
        jt.score_matrix(nleep, f[None], y[None], key=KEY, tol=1e-3)


def test_info_metadata():
    info = nleep.info
    assert info.name == "nleep" and info.higher_is_better
    assert (info.task, info.source, info.target) == ("classification", "features", "labels")
    assert "Ranking Neural Checkpoints" in info.reference and "CVPR 2021" in info.reference
    assert jt.get_estimator("nleep") is nleep
