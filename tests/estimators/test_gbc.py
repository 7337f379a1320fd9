"""GBC against an independent float64 NumPy implementation (covariance eigh, loops over class pairs)."""

import re

import jax
import numpy as np
import pytest
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.estimators._gbc import gbc

TOL = {np.float32: {"rtol": 2e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}
N, D, C = 60, 8, 4


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def pca_ref(f, k, fraction=None):
    """Scores on the top-k principal components (np.linalg.eigh of the covariance, ddof=0) and
    the largest principal variance; components at rounding level or past ``fraction`` of the
    variance are zero columns."""
    f = np.asarray(f, np.float64)
    fc = f - f.mean(axis=0)
    e, v = np.linalg.eigh(np.cov(f, rowvar=False, bias=True).reshape(f.shape[1], f.shape[1]))
    e, v = np.clip(e[::-1], 0, None), v[:, ::-1]
    keep = e[:k] > 1e-10 * e[0]
    if fraction is not None:
        keep &= np.concatenate([[0.0], np.cumsum(e[: k - 1])]) < fraction * e.sum()
    return fc @ (v[:, :k] * keep), e[0]


def gbc_ref(f, y, k=64, fraction=None, mask=None):
    """-Σ_{i≠j} exp(-D_B(i, j)) over ordered pairs of present classes, diagonal Gaussians."""
    f, y = np.asarray(f, np.float64), np.asarray(y)
    if mask is not None:
        f, y = f[mask], y[mask]
    z, top = pca_ref(f, min(k, f.shape[1]), fraction)
    floor = 1e-6 * top if top > 0 else 1.0
    stats = {}
    for c in np.unique(y):
        zc = z[y == c]
        stats[c] = (zc.mean(axis=0), np.maximum(zc.var(axis=0), floor))
    total = 0.0
    for ci, (mi, vi) in stats.items():
        for cj, (mj, vj) in stats.items():
            if ci == cj:
                continue
            s = (vi + vj) / 2
            db = np.sum((mi - mj) ** 2 / s) / 8 + 0.5 * np.log(np.prod(s / np.sqrt(vi * vj)))
            total += np.exp(-db)
    return -total


def data(rng, n=N, d=D, c=C, sep=1.0, dtype=np.float32):
    """Classes shifted along a few directions, with an offset and uneven scales."""
    y = rng.integers(0, c, n)
    centres = sep * rng.normal(size=(c, d))
    f = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2, d) + 3.0
    return f.astype(dtype), y


@pytest.mark.parametrize("sep", [0.3, 1.0, 2.0])
@pytest.mark.parametrize("k", [3, None])
def test_matches_reference_float32(rng, sep, k):
    f, y = data(rng, sep=sep)
    close(gbc(f, y, num_components=k), gbc_ref(f, y, k or 64))


@pytest.mark.parametrize("k", [1, 3, D])
def test_matches_reference_float64(rng, k):
    f, y = data(rng, dtype=np.float64)
    with x64():
        got = gbc(f, y, num_components=k)
        assert got.dtype == np.float64 and got.shape == ()
        close(got, gbc_ref(f, y, k), np.float64)


def test_default_is_64_components(rng):
    f, y = data(rng, n=150, d=70, c=3)
    with x64():
        f = f.astype(np.float64)
        close(gbc(f, y), gbc_ref(f, y, 64), np.float64)
        assert abs(float(gbc(f, y)) - gbc_ref(f, y, 70)) > 1e-6  # the cap matters here
        close(gbc(f, y, num_components=500), gbc_ref(f, y, 70), np.float64)  # above d means d


@pytest.mark.parametrize("fraction", [0.3, 0.8, 1.0])
def test_explained_variance(rng, fraction):
    f, y = data(rng, dtype=np.float64)
    with x64():
        close(gbc(f, y, explained_variance=fraction), gbc_ref(f, y, 64, fraction), np.float64)
        close(
            gbc(f, y, num_components=2, explained_variance=fraction), gbc_ref(f, y, 2, fraction), np.float64
        )


def test_n_less_than_d(rng):
    f, y = data(rng, n=12, d=30, c=3, dtype=np.float64)
    with x64():
        close(gbc(f, y), gbc_ref(f, y), np.float64)  # rank 11: the other components are zero columns
    close(gbc(f.astype(np.float32), y), gbc_ref(f.astype(np.float32), y), np.float32)


def test_well_separated_classes_score_zero(rng):
    y = np.repeat(np.arange(3), 10)
    f = 1e3 * np.eye(3)[y] + rng.normal(size=(30, 3))
    close(gbc(f, y), 0.0)
    assert float(gbc(f, y)) <= 0


@pytest.mark.parametrize("c", [2, 3, 5])
def test_identical_class_distributions(rng, c):
    base = rng.normal(size=(7, 4))
    f = np.tile(base, (c, 1))  # every class holds the same 7 points
    y = np.repeat(np.arange(c), 7)
    close(gbc(f, y), -c * (c - 1))
    with x64():
        close(gbc(f, y), -c * (c - 1), np.float64)


def test_constant_features(rng):
    y = rng.integers(0, 3, 20)
    y[:3] = [0, 1, 2]
    close(gbc(np.full((20, 5), 2.5), y), -6.0)


def test_absent_classes_are_left_out(rng):
    f, y = data(rng, c=3)
    sparse = np.array([0, 2, 5])[y]  # labels 1, 3, 4 never occur
    want = gbc_ref(f, y)
    for kw in ({}, {"num_target_classes": 9}):
        got = gbc(f, sparse, **kw)
        assert np.isfinite(float(got))
        close(got, want)


def test_single_class_scores_zero(rng):
    f, _ = data(rng)
    close(gbc(f, np.zeros(N, int), num_target_classes=3), 0.0)


def test_mask_equals_dropping_rows(rng):
    f, y = data(rng)
    mask = rng.random(N) < 0.6
    want = gbc_ref(f, y, mask=mask)
    close(gbc(f, y, mask=mask), want)
    close(gbc(f[mask], y[mask], num_target_classes=C), want)
    # masking every sample of a class removes the class
    keep = y != 1
    close(gbc(f, y, mask=keep), gbc_ref(f, y, mask=keep))


def test_invariances(rng):
    f, y = data(rng, dtype=np.float64)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    with x64():
        want = gbc_ref(f, y)
        close(gbc(f, y), want, np.float64)
        for g in (7.5 * f, f - 100.0, f @ q, np.hstack([f, np.zeros((N, 5))])):
            close(gbc(g, y), want, np.float64)
    padded = np.hstack([f, np.zeros((N, 3))]).astype(np.float32)
    close(gbc(padded, y), gbc_ref(f.astype(np.float32), y))


def test_single_sample_class_uses_the_floor(rng):
    f, y = data(rng, c=3)
    y[0] = 3  # class 3 has one sample: variance 0, floored
    got = gbc(f, y)
    assert np.isfinite(float(got))
    close(got, gbc_ref(f, y))


def test_jit_equals_eager(rng):
    f, y = data(rng)
    fn = jax.jit(lambda a, b: gbc(a, b, num_target_classes=C, num_components=5))
    np.testing.assert_allclose(fn(f, y), gbc(f, y, num_components=5), rtol=1e-6)


def test_score_matrix_equals_loop(rng):
    sources = np.stack([data(rng)[0] for _ in range(2)])
    targets = np.stack([data(rng)[1] for _ in range(3)])
    targets[2] = np.where(targets[2] == 3, 0, targets[2])  # one target without class 3
    loop = [[float(gbc(s, t, num_target_classes=C)) for t in targets] for s in sources]
    close(jt.score_matrix(gbc, sources, targets), loop)
    close(jt.score_matrix(gbc, sources, targets, batch_size=2), loop)
    tmask = rng.random((3, N)) < 0.7
    loop = [
        [float(gbc(s, t, mask=m, num_target_classes=C)) for t, m in zip(targets, tmask, strict=True)]
        for s in sources
    ]
    close(jt.score_matrix(gbc, sources, targets, target_mask=tmask), loop)
    close(jt.score_matrix("gbc", sources, targets, target_mask=tmask), loop)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"targets": np.linspace(0, 1, N)}, TypeError, "targets must hold integer class labels"),
        ({"targets": np.zeros(N - 1, int)}, ValueError, "features has 60 samples but targets has 59"),
        ({"features": np.full((N, D), np.nan)}, ValueError, "features contains a non-finite value"),
        ({"features": np.ones(N)}, ValueError, "features must have shape [n, d]"),
        ({"num_components": 0}, ValueError, "num_components must be at least 1"),
        ({"num_components": 2.0}, TypeError, "num_components must be a Python int"),
        ({"explained_variance": 1.5}, ValueError, "explained_variance must lie in (0, 1]"),
        ({"explained_variance": 0.0}, ValueError, "explained_variance must lie in (0, 1]"),
        ({"explained_variance": "all"}, TypeError, "explained_variance must be None or a number"),
        ({"num_target_classes": 2}, ValueError, "num_target_classes=2"),
    ],
)
def test_bad_input(rng, kwargs, error, words):
    f, y = data(rng)
    args = {"features": f, "targets": y, **kwargs}
    with pytest.raises(error, match=re.escape(words)):
        gbc(**args)


def test_unknown_option_in_score_matrix(rng):
    f, y = data(rng)
    with pytest.raises(TypeError, match=re.escape("gbc got unexpected option(s) eps")):
        jt.score_matrix(gbc, f[None], y[None], eps=1e-3)


def test_bad_mask(rng):
    f, y = data(rng)
    with pytest.raises(ValueError, match="mask must have shape"):
        gbc(f, y, mask=np.ones(N - 1, bool))


def test_info_metadata():
    info = gbc.info
    assert info.name == "gbc" and info.higher_is_better
    assert (info.task, info.source, info.target) == ("classification", "features", "labels")
    assert "Bhattacharyya" in info.reference and "CVPR 2022" in info.reference
    assert jt.get_estimator("gbc") is gbc
