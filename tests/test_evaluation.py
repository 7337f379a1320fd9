"""Evaluation statistics against SciPy, hand-worked hits and regret, bootstrap behaviour."""

import numpy as np
import pytest
from scipy import stats
from x64util import x64

from jaxtransfer import evaluation as ev


def _cases(rng):
    n = 30
    x = rng.normal(size=n)
    yield x, 0.5 * x + rng.normal(size=n)  # continuous, no ties
    yield np.round(x, 0), np.round(0.5 * x + rng.normal(size=n), 0)  # many ties in both
    yield rng.integers(0, 4, n).astype(float), rng.normal(size=n)  # ties in x only
    yield x, -x  # perfect discordance


@pytest.mark.parametrize("case", range(4))
def test_correlations_match_scipy(case, rng):
    x, y = list(_cases(rng))[case]
    with x64():
        np.testing.assert_allclose(ev.pearson(x, y), stats.pearsonr(x, y)[0], rtol=1e-10)
        np.testing.assert_allclose(ev.spearman(x, y), stats.spearmanr(x, y)[0], rtol=1e-10)
        np.testing.assert_allclose(ev.kendall_tau(x, y), stats.kendalltau(x, y)[0], rtol=1e-10)
        np.testing.assert_allclose(ev.rankdata(x), stats.rankdata(x), rtol=1e-12)
        if case != 1:  # weighted τ with elements tied in both x and y is tested below
            np.testing.assert_allclose(ev.weighted_tau(x, y), stats.weightedtau(x, y)[0], rtol=1e-10)


def test_weighted_tau_with_joint_ties(rng):
    x = rng.integers(0, 3, 25).astype(float)
    y = rng.integers(0, 3, 25).astype(float)
    with x64():
        np.testing.assert_allclose(ev.weighted_tau(x, y), stats.weightedtau(x, y)[0], rtol=1e-10)


def test_constant_input_is_nan():
    assert np.isnan(ev.pearson(np.ones(5), np.arange(5.0)))
    assert np.isnan(ev.kendall_tau(np.ones(5), np.arange(5.0)))
    # a constant whose float32 mean is not exact (the mean is a sum times 1/n) is still constant
    c = np.full(14, -0.6929853, np.float32)
    y = np.arange(14.0, dtype=np.float32)
    assert float(np.float32(c.sum()) * np.float32(1 / 14)) != c[0]  # the rounding the guard is for
    for fn in (ev.pearson, ev.spearman, ev.kendall_tau, ev.weighted_tau):
        assert np.isnan(fn(c, y)) and np.isnan(fn(y, c)), fn.__name__
    assert float(ev.pearson(y * 1e-3 + 5.0, y)) == pytest.approx(1.0, abs=1e-3)  # small spread is kept


def test_hits_and_regret_by_hand():
    actual = np.array([0.5, 0.9, 0.7, 0.1])
    scores = np.array([3.0, 1.0, 2.0, 0.0])  # picks source 0 first; the best (1) is ranked 3rd
    assert float(ev.top_k_hit(scores, actual, 1)) == 0.0
    assert float(ev.top_k_hit(scores, actual, 2)) == 0.0
    assert float(ev.top_k_hit(scores, actual, 3)) == 1.0
    np.testing.assert_allclose(ev.regret(scores, actual), 0.4, rtol=1e-6)


def test_evaluate_pooled_vs_within(rng):
    # targets differ a lot in difficulty; within each target the scores rank sources backwards
    s, t = 6, 5
    quality = rng.normal(size=s)
    difficulty = 10 * np.arange(t)
    actual = quality[:, None] + difficulty[None, :]
    scores = -quality[:, None] + difficulty[None, :]
    r = ev.evaluate(scores, actual, num_bootstrap=200, seed=1)
    assert r["pearson_pooled"].value > 0.9  # pooled correlation is fooled by target difficulty
    np.testing.assert_allclose(r["spearman_within"].value, -1.0, rtol=1e-6)
    np.testing.assert_allclose(r["top1_hit"].value, 0.0)
    np.testing.assert_allclose(r["regret"].value, quality.max() - quality.min(), rtol=1e-5)
    for name, iv in r.items():  # percentile intervals need not contain the value (resampling ties sources)
        assert iv.low <= iv.high, name
    within = np.mean([stats.kendalltau(scores[:, j], actual[:, j])[0] for j in range(t)])
    np.testing.assert_allclose(r["kendall_within"].value, within, rtol=1e-5)
    again = ev.evaluate(scores, actual, num_bootstrap=200, seed=1)
    assert again == r  # the bootstrap is seeded


def test_bootstrap_interval_narrows_with_more_sources(rng):
    def width(s):
        q = rng.normal(size=(s, 3))
        r = ev.evaluate(q + 0.7 * rng.normal(size=(s, 3)), q, num_bootstrap=300)
        return r["spearman_within"].high - r["spearman_within"].low

    assert width(200) < width(10)


def test_evaluate_bad_input():
    with pytest.raises(ValueError, match=r"must both be \[S, T\]"):
        ev.evaluate(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 sources"):
        ev.evaluate(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="actual has non-finite"):
        ev.evaluate(np.zeros((3, 2)), np.full((3, 2), np.nan))
