"""score_matrix equals a Python loop of one-pair calls, for every batching and masking combination."""

import dataclasses

import jax
import numpy as np
import pytest
import scipy.special
import scipy.stats

import jaxtransfer as jt
from jaxtransfer.estimators import _matrix_core as _score_matrix

TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}
S, T, N, CZ, CY, D, K = 5, 3, 24, 4, 3, 4, 2
ESTIMATORS = ["nce", "conditional_entropy", "leep", "linear_mse", "label_mse", "hardness"]
CLASS_OPTIONS = {"num_source_classes": CZ, "num_target_classes": CY}


def close(got, want, dtype=np.float32):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **TOL[dtype])


def make(rng, name, s=S, t=T):
    """Stacked sources and targets for an estimator, and its options."""
    if name in ("nce", "conditional_entropy", "hardness"):
        return rng.integers(0, CZ, (s, N)), rng.integers(0, CY, (t, N)), {}
    if name == "leep":
        probs = scipy.special.softmax(2 * rng.normal(size=(s, N, CZ)), axis=-1).astype(np.float32)
        return probs, rng.integers(0, CY, (t, N)), {"num_target_classes": CY}
    if name == "linear_mse":
        return (
            rng.normal(size=(s, N, D)).astype(np.float32),
            rng.normal(size=(t, N, K)).astype(np.float32),
            {"l2": 0.5},
        )
    if name == "label_mse":
        return (
            rng.normal(size=(s, N)).astype(np.float32),
            rng.normal(size=(t, N)).astype(np.float32),
            {"l2": 0.5},
        )
    raise AssertionError(name)


def pair(name, source, target, mask, opts):
    """One pair through the public one-pair estimator."""
    if name == "hardness":
        return float(jt.hardness(target, num_target_classes=CY, mask=mask))
    if name in ("nce", "conditional_entropy"):
        opts = {**CLASS_OPTIONS, **opts}
    return np.asarray(jt.get_estimator(name)(source, target, mask=mask, **opts))


def loop(name, sources, targets, opts, mask=None, source_mask=None, target_mask=None):
    out = []
    for s, src in enumerate(sources):
        row = []
        for t, tgt in enumerate(targets):
            keep = np.ones(N, bool)
            for m in (
                mask,
                None if source_mask is None else source_mask[s],
                None if target_mask is None else target_mask[t],
            ):
                if m is not None:
                    keep &= m
            row.append(pair(name, src, tgt, None if keep.all() else keep, opts))
        out.append(row)
    return np.array(out)


def random_masks(rng, s=S, t=T):
    def one(shape):
        m = rng.random(shape) < 0.75
        m[..., :6] = True  # every pair keeps some samples
        return m

    return {"mask": one(N), "source_mask": one((s, N)), "target_mask": one((t, N))}


@pytest.mark.parametrize("batch_size", [1, 2, S])  # 2 does not divide S: the last chunk is padded
@pytest.mark.parametrize("name", ESTIMATORS)
def test_equals_loop_for_every_batch_size(rng, name, batch_size):
    sources, targets, opts = make(rng, name)
    got = jt.score_matrix(name, sources, targets, batch_size=batch_size, **opts)
    assert got.shape == (S, T)
    close(got, loop(name, sources, targets, opts))


# Each case is one compiled program: a shared ``mask`` and a ``source_mask`` both become a
# per-source mask, so each case checks both spellings.
MASK_CASES = {
    "source": (1, [("mask",), ("source_mask",)]),
    "both": (2, [("mask", "target_mask"), ("source_mask", "target_mask")]),
    "all": (2, [("mask", "source_mask", "target_mask")]),
    "target": (S, [("target_mask",)]),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
@pytest.mark.parametrize("name", ESTIMATORS)
def test_equals_loop_with_masks(rng, name, case):
    batch_size, spellings = MASK_CASES[case]
    sources, targets, opts = make(rng, name)
    masks = random_masks(rng)
    for keys in spellings:
        given = {k: masks[k] for k in keys}
        got = jt.score_matrix(name, sources, targets, batch_size=batch_size, **given, **opts)
        assert got.shape == (S, T)
        close(got, loop(name, sources, targets, opts, **given))


@pytest.mark.parametrize("name", ["nce", "linear_mse"])
def test_default_batch_size(rng, name):
    sources, targets, opts = make(rng, name)
    close(jt.score_matrix(name, sources, targets, **opts), loop(name, sources, targets, opts))


@pytest.mark.parametrize(("name", "stepped"), [("linear_mse", 1), ("leep", 4), ("nce", 4)])
def test_cpu_runs_a_chunk_of_factorised_sources_one_after_another(rng, monkeypatch, name, stepped):
    """On a CPU, batch_size > 1 of an estimator that factorises each source runs them in turn (one
    source per step, never slower); estimators without a factorisation keep the chunk."""
    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(_score_matrix, "SEQUENTIAL_PLATFORMS", frozenset({"cpu"}))
    seen = []
    compiled = _score_matrix._matrix

    def spy(*args, **kwargs):
        seen.append(kwargs["batch"])
        return compiled(*args, **kwargs)

    monkeypatch.setattr(_score_matrix, "_matrix", spy)
    sources, targets, opts = make(rng, name)
    got = jt.score_matrix(name, sources, targets, batch_size=4, **opts)
    assert seen == [stepped]
    close(got, loop(name, sources, targets, opts))


@pytest.mark.parametrize("method", ["onehot", "scatter"])
def test_histogram_methods_with_masks(rng, method):
    sources, targets, _ = make(rng, "nce")
    masks = random_masks(rng)
    got = jt.score_matrix("nce", sources, targets, method=method, batch_size=3, **masks)
    close(got, loop("nce", sources, targets, {}, **masks))


@pytest.mark.parametrize("method", ["onehot", "scatter"])
def test_single_class_sources(rng, method):
    # one source class: every pair scores H(Y) over the samples its target keeps
    sources = np.zeros((S, N), int)
    targets = rng.integers(0, CY, (T, N))
    target_mask = random_masks(rng)["target_mask"]
    got = jt.score_matrix(
        "conditional_entropy", sources, targets, method=method, batch_size=2, target_mask=target_mask
    )
    want = [scipy.stats.entropy(np.bincount(y[m])) for y, m in zip(targets, target_mask, strict=True)]
    close(got, np.broadcast_to(want, (S, T)))


def test_many_classes_uses_scatter_and_matches(rng):
    cz, cy = 30, 20  # (cz-1)(cy-1) > 256: "auto" picks the scatter-add
    sources = rng.integers(0, cz, (3, 60))
    targets = rng.integers(0, cy, (2, 60))
    sources[0, 0], targets[0, 0] = cz - 1, cy - 1
    got = jt.score_matrix(jt.conditional_entropy, sources, targets)
    want = [
        [float(jt.conditional_entropy(z, y, num_source_classes=cz, num_target_classes=cy)) for y in targets]
        for z in sources
    ]
    close(got, want)


def test_function_or_name(rng):
    sources, targets, opts = make(rng, "leep")
    np.testing.assert_array_equal(
        jt.score_matrix("leep", sources, targets, **opts), jt.score_matrix(jt.leep, sources, targets, **opts)
    )


def test_inferred_class_counts_cover_all_sources_and_targets(rng):
    sources = rng.integers(0, 3, (S, N))
    targets = rng.integers(0, 2, (T, N))
    sources[-1, 0] = 6  # only the last source uses classes up to 6
    targets[1, 3] = 4
    got = jt.score_matrix(jt.nce, sources, targets, batch_size=2)
    # absent classes change no entropy, so the loop may use any larger class counts
    want = loop("nce", sources, targets, {"num_source_classes": 7, "num_target_classes": 5})
    close(got, want)


@pytest.mark.parametrize(("name", "batch_size"), [("linear_mse", None), ("label_mse", 2)])
def test_vector_l2(rng, name, batch_size):
    sources, targets, _ = make(rng, name)
    l2s = np.array([0.0, 0.1, 1.0], np.float32)
    masks = random_masks(rng)
    got = jt.score_matrix(
        name, sources, targets, l2=l2s, batch_size=batch_size, source_mask=masks["source_mask"]
    )
    assert got.shape == (S, T, 3)
    want = np.stack(
        [loop(name, sources, targets, {"l2": float(lam)}, source_mask=masks["source_mask"]) for lam in l2s],
        axis=-1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_hardness_rows_are_the_target_entropies(rng):
    sources, targets, _ = make(rng, "hardness")
    got = np.asarray(jt.score_matrix("hardness", sources, targets))
    want = [scipy.stats.entropy(np.bincount(y)) for y in targets]
    close(got, np.broadcast_to(want, (S, T)))


def test_leep_with_logits(rng):
    logits = rng.normal(size=(S, N, CZ)).astype(np.float32)
    targets = rng.integers(0, CY, (T, N))
    got = jt.score_matrix("leep", logits, targets, logits=True, batch_size=2)
    close(got, loop("leep", scipy.special.softmax(logits, axis=-1), targets, {"num_target_classes": CY}))


@pytest.mark.parametrize(
    ("name", "opts"),
    [("nce", CLASS_OPTIONS), ("leep", {"num_target_classes": CY}), ("linear_mse", {"l2": 0.5})],
)
def test_second_call_does_not_recompile(rng, name, opts):
    jt.score_matrix(name, *make(rng, name)[:2], batch_size=2, **opts)
    before = _score_matrix._matrix._cache_size()
    for _ in range(2):
        sources, targets, _ = make(rng, name)
        got = jt.score_matrix(name, sources, targets, batch_size=2, **opts)
        close(got, loop(name, sources, targets, opts))
    assert _score_matrix._matrix._cache_size() == before


def test_second_call_does_not_trace_again(rng):
    # An estimator whose finish counts its Python calls: they happen only while tracing.
    calls = []
    base = jt.linear_mse.info

    def finish(*args, **kwargs):
        calls.append(1)
        return base.finish(*args, **kwargs)

    def counting(features, targets, **kw):  # pragma: no cover - only its .info is used
        raise AssertionError

    counting.info = dataclasses.replace(base, name="counting_linear_mse", finish=finish)
    sources, targets, _ = make(rng, "linear_mse", s=3, t=2)
    first = jt.score_matrix(counting, sources, targets, l2=0.25, batch_size=1)
    traced = len(calls)
    assert traced > 0
    close(first, loop("linear_mse", sources, targets, {"l2": 0.25}))
    sources, targets, _ = make(rng, "linear_mse", s=3, t=2)
    second = jt.score_matrix(counting, sources, targets, l2=0.75, batch_size=1)
    assert len(calls) == traced
    close(second, loop("linear_mse", sources, targets, {"l2": 0.75}))


def test_jit_of_score_matrix_with_static_options(rng):
    sources, targets, _ = make(rng, "nce")
    fn = jax.jit(lambda z, y: jt.score_matrix("nce", z, y, **CLASS_OPTIONS))
    close(fn(sources, targets), loop("nce", sources, targets, {}))
