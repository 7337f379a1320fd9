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
    with pytest.raises(ValueError, match="actual has infinite values"):
        ev.evaluate(np.zeros((3, 2)), np.full((3, 2), np.inf))
    with pytest.raises(ValueError, match="no target with 2 present pairs"):  # NaN: every pair missing
        ev.evaluate(np.zeros((3, 2)), np.full((3, 2), np.nan))
    with pytest.raises(
        ValueError, match=r"no target with 2 present pairs \(present pairs per target: \[1, 1\]"
    ):
        ev.evaluate(np.zeros((3, 2)), np.zeros((3, 2)), mask=np.eye(3, 2, dtype=bool))
    with pytest.raises(TypeError, match="mask must be a bool array, got dtype int"):
        ev.evaluate(np.zeros((3, 2)), np.zeros((3, 2)), mask=np.ones((3, 2), int))
    with pytest.raises(
        ValueError, match=r"mask must have the shape of scores and actual \(3, 2\), got \(2, 3\)"
    ):
        ev.evaluate(np.zeros((3, 2)), np.zeros((3, 2)), mask=np.ones((2, 3), bool))


# --- missing pairs -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(4))
def test_masked_correlations_match_scipy_on_the_present_entries(case, rng):
    x, y = list(_cases(rng))[case]
    keep = rng.random(x.shape[0]) < 0.7
    xs, ys = np.where(keep, x, np.nan), np.where(keep, y, -1e30)  # absent entries must not count
    refs = {ev.pearson: stats.pearsonr, ev.spearman: stats.spearmanr, ev.kendall_tau: stats.kendalltau,
            ev.weighted_tau: stats.weightedtau}  # fmt: skip
    with x64():
        for fn, ref in refs.items():
            if fn is ev.weighted_tau and case == 1:
                continue  # joint ties: tested unmasked above
            np.testing.assert_allclose(fn(xs, ys, keep), ref(x[keep], y[keep])[0], rtol=1e-10)
        np.testing.assert_allclose(np.asarray(ev.rankdata(xs, keep))[keep], stats.rankdata(x[keep]))
        np.testing.assert_allclose(ev.regret(xs, ys, keep), ev.regret(x[keep], y[keep]), rtol=1e-12)
        for k in (1, 3, int(keep.sum())):
            assert float(ev.top_k_hit(xs, ys, k, keep)) == float(ev.top_k_hit(x[keep], y[keep], k))


def test_evaluate_missing_pairs_hand_worked():
    # 3 tasks, each a source and a target; a task's pair with itself is missing (NaN in actual)
    actual = np.array([[np.nan, 0.8, 0.3], [0.6, np.nan, 0.9], [0.4, 0.2, np.nan]])
    scores = np.array([[9.0, 1.0, 2.0], [3.0, 9.0, 1.0], [4.0, 0.0, 9.0]])  # the diagonal is ignored
    r = ev.evaluate(scores, actual, num_bootstrap=0)
    # target 0: sources 1, 2 have actual 0.6 > 0.4, scores 3 < 4: discordant, pick source 2 (regret 0.2)
    # target 1: sources 0, 2: 0.8 > 0.2 and 1 > 0: concordant, right pick
    # target 2: sources 0, 1: 0.3 < 0.9 and 2 > 1: discordant, pick source 0 (regret 0.6)
    np.testing.assert_allclose(r["kendall_within"].value, -1 / 3, rtol=1e-6)
    np.testing.assert_allclose(r["spearman_within"].value, -1 / 3, rtol=1e-6)
    np.testing.assert_allclose(r["top1_hit"].value, 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(r["regret"].value, (0.2 + 0.0 + 0.6) / 3, rtol=1e-6)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(
        r["kendall_pooled"].value, stats.kendalltau(scores[off], actual[off])[0], rtol=1e-6
    )
    # the same pairs given by a mask (the diagonal holds garbage) or by NaN in scores
    by_mask = ev.evaluate(scores, np.nan_to_num(actual, nan=5.0), mask=off, num_bootstrap=50)
    by_nan = ev.evaluate(np.where(off, scores, np.nan), np.nan_to_num(actual, nan=5.0), num_bootstrap=50)
    assert by_mask == by_nan
    assert by_mask["kendall_within"].value == pytest.approx(r["kendall_within"].value)


def test_evaluate_with_missing_pairs_against_scipy_per_target(rng):
    s, t = 9, 5
    actual = rng.normal(size=(s, t))
    scores = actual + rng.normal(size=(s, t))
    mask = rng.random((s, t)) < 0.7
    mask[:, 4] = False
    mask[[2, 5], 4] = True  # target 4: two sources
    mask[:, 3] = False
    mask[6, 3] = True  # target 3: one source, no choice to make: left out of the within-target means
    with x64():
        r = ev.evaluate(scores, actual, mask=mask, num_bootstrap=0)
    ranked = [j for j in range(t) if mask[:, j].sum() >= 2]
    assert ranked == [0, 1, 2, 4]
    refs = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau,
            "weighted_tau": stats.weightedtau}  # fmt: skip
    for name, ref in refs.items():
        within = np.mean([ref(scores[mask[:, j], j], actual[mask[:, j], j])[0] for j in ranked])
        np.testing.assert_allclose(r[f"{name}_within"].value, within, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(r[f"{name}_pooled"].value, ref(scores[mask], actual[mask])[0], rtol=1e-9)
    picks = [np.flatnonzero(mask[:, j])[np.argmax(scores[mask[:, j], j])] for j in ranked]
    best = [np.max(actual[mask[:, j], j]) for j in ranked]
    np.testing.assert_allclose(
        r["regret"].value, np.mean([b - actual[p, j] for b, p, j in zip(best, picks, ranked, strict=True)])
    )
    np.testing.assert_allclose(
        r["top1_hit"].value, np.mean([actual[p, j] == b for b, p, j in zip(best, picks, ranked, strict=True)])
    )


def test_evaluate_on_a_subset_of_sources_equals_the_masked_evaluation(rng):
    s, t = 10, 4
    actual = rng.normal(size=(s, t)) + np.arange(t)
    scores = actual + 0.8 * rng.normal(size=(s, t))
    rows = np.array([0, 2, 3, 5, 8, 9])
    mask = np.zeros((s, t), bool)
    mask[rows] = True
    masked = ev.evaluate(scores, actual, mask=mask, num_bootstrap=0)
    subset = ev.evaluate(scores[rows], actual[rows], num_bootstrap=0)
    for name in subset:
        np.testing.assert_allclose(masked[name].value, subset[name].value, rtol=1e-5, err_msg=name)


def test_bootstrap_keeps_missing_pairs_missing(rng):
    # the diagonal holds a huge outlier; were it ever resampled into a target's sources, pooled Pearson
    # would collapse in some resamples
    s = 8
    actual = rng.normal(size=(s, s))
    scores = actual + 0.3 * rng.normal(size=(s, s))
    outlier = np.where(np.eye(s, dtype=bool), 1e6, actual)
    r = ev.evaluate(scores, outlier, mask=~np.eye(s, dtype=bool), num_bootstrap=300, seed=3)
    assert r["pearson_pooled"].low > 0.5
    again = ev.evaluate(np.where(np.eye(s, dtype=bool), np.nan, scores), actual, num_bootstrap=300, seed=3)
    assert again == r


# --- the noise ceiling -------------------------------------------------------------------------------


def test_seed_agreement_is_the_mean_over_ordered_pairs_of_runs(rng):
    runs = rng.normal(size=(3, 6, 4)) + rng.normal(size=(1, 6, 4))
    mask = ~np.eye(6, 4, dtype=bool)
    got = ev.seed_agreement(runs, mask=mask, num_bootstrap=0)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    for name in got:
        ref = np.mean(
            [ev.evaluate(runs[i], runs[j], mask=mask, num_bootstrap=0)[name].value for i, j in pairs]
        )
        np.testing.assert_allclose(got[name].value, ref, rtol=1e-5, err_msg=name)
    same = ev.seed_agreement(np.stack([runs[0]] * 2), num_bootstrap=20)
    assert same["kendall_within"] == (1.0, 1.0, 1.0) and same["regret"].value == 0.0
    boot = ev.seed_agreement(runs, mask=mask, num_bootstrap=100, seed=1)
    assert boot["kendall_within"].low < got["kendall_within"].value < boot["kendall_within"].high
    with pytest.raises(ValueError, match="at least 2 runs"):
        ev.seed_agreement(runs[:1])
    with pytest.raises(ValueError, match=r"must be \[N, S, T\]"):
        ev.seed_agreement(runs[0])


def test_noise_ceiling_closed_form():
    iv = ev.Interval(0.5, 0.2, 0.8)
    got = ev.noise_ceiling({"pearson_within": iv, "kendall_pooled": iv, "spearman_within": iv,
                            "top1_hit": iv, "weighted_tau_within": iv}, 3)  # fmt: skip
    assert set(got) == {"pearson_within", "kendall_pooled", "spearman_within"}
    for r, c in zip((0.5, 0.2, 0.8), got["pearson_within"], strict=True):
        assert c == pytest.approx(np.sqrt(3 * r / (1 + 2 * r)))
    rho = np.sin(np.pi * 0.5 / 2)
    assert got["kendall_pooled"].value == pytest.approx(
        2 / np.pi * np.arcsin(np.sqrt(3 * rho / (1 + 2 * rho)))
    )
    rho = 2 * np.sin(np.pi * 0.5 / 6)
    expected = 6 / np.pi * np.arcsin(np.sqrt(3 * rho / (1 + 2 * rho)) / 2)
    assert got["spearman_within"].value == pytest.approx(expected)
    assert ev.noise_ceiling({"kendall_within": ev.Interval(-0.2, -0.5, 1.0)}, 3)["kendall_within"] == (
        0,
        0,
        1,
    )
    assert ev.noise_ceiling({"pearson_pooled": iv}, 1)["pearson_pooled"].value == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError, match="num_runs must be an integer >= 1, got 0"):
        ev.noise_ceiling({}, 0)


def test_noise_ceiling_matches_the_noise_free_truth_in_simulation(rng):
    # a_i = μ + ε_i: the ceiling from the runs' agreement is the correlation of μ with their mean
    s, n = 250, 3
    mu = rng.normal(size=(s, 2))
    runs = mu[None] + rng.normal(size=(n, s, 2))
    with x64():
        agreement = ev.seed_agreement(runs, num_bootstrap=0)
        ceiling = ev.noise_ceiling(agreement, n)
        truth = ev.evaluate(mu, runs.mean(axis=0), num_bootstrap=0)
    for name in ("pearson_pooled", "spearman_pooled", "kendall_pooled", "kendall_within", "spearman_within"):
        assert agreement[name].value < truth[name].value - 0.1  # one run is a much lower bar than the mean
        np.testing.assert_allclose(ceiling[name].value, truth[name].value, atol=0.03, err_msg=name)
