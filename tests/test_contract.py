"""The contract every registered estimator keeps, checked over ``jaxtransfer.available_estimators()``.

Inputs are generated from each estimator's metadata (``fn.info``), so a new
estimator is covered as soon as it is registered; its own test file keeps only
its maths. For every estimator:

* an eager call equals the same call under ``jax.jit`` (class counts static),
  and a second call with the same shapes does not recompile;
* ``jax.vmap`` over the sources (class counts static) equals the loop;
* a sample ``mask`` equals dropping those samples in the one-pair call;
* ``score_matrix(name, sources[S], targets[T])`` equals the per-pair loop
  (dropping the samples the masks drop), over every path of ``score_matrix``:
  the estimator's default batch, a padded last chunk, one source per step and
  all sources at once; no mask, ``mask``/``source_mask``, ``target_mask``, all
  three (``MATRIX_CASES``);
* the metadata is one of the documented values and matches the signature, whose
  positional arguments are named by the source kind and ``targets`` (one name per concept);
* bad input raises an error that names the argument.

Runtime is compile time: each distinct program costs seconds for the iterative
estimators. The unmasked tests therefore run on M = N - DROP samples, the number
every masked pair keeps, so one compiled one-pair program serves the eager
calls and every dropping loop.

Tolerances (``TOL``): every comparison runs the same maths in the same dtype,
so the only differences are rounding from a different operation order — XLA
fuses and reorders reductions differently in a standalone program, under
``vmap`` and in ``score_matrix``, and a masked reduction sums zeros where
dropping sums fewer terms. ``rtol`` 1e-4 is ~800 float32 ulps, generous for a
single pass. NLEEP gets a looser bound: its EM feeds each iteration's rounding
into the next and k-means takes hard assignments, so differences grow with the
iterations. Measured with this file's inputs (num_iter=10, n = 37 and 40): the
largest relative difference between eager and jit, vmap and loop, loop and
score_matrix, mask and dropping was 1.2e-5 for TransRate (2e-6 absolute on scores
of 0.1-0.8: a difference of two log-determinants), 1.1e-6 for NLEEP, 6e-7 for
the others and 0 for the histogram estimators; NLEEP's bound is 1e-3, the
documented float32-vs-float64 agreement (README "Numerical guarantees").
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
import scipy.special

import jaxtransfer as jt

NAMES = jt.available_estimators()
N, S, T = 40, 3, 2  # samples; sources and targets of a score_matrix call
DROP = 3  # samples a mask drops
M = N - DROP  # samples of every unmasked call and of every pair once masked
D, CZ, CY, K = 3, 4, 3, 2  # feature dimension, source and target classes, output dimension of values

TOL = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}
LOOSER = {"nleep": {np.dtype(np.float32): {"rtol": 1e-3, "atol": 1e-4}}}  # see the module docstring

FAST = {"num_iter": 10}  # iteration counts cut down, where an estimator takes them

SOURCE_KINDS = {"labels", "probabilities", "features", "predictions", "none"}
TARGET_KINDS = {"labels", "values"}
ORIENTATIONS = {"higher_is_better", "lower_is_better", "higher_is_harder"}


def close(name, got, want):
    got = np.asarray(got)
    tol = LOOSER.get(name, {}).get(got.dtype, TOL[got.dtype])
    np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64), **tol)


# ----------------------------------------------------------------------------- inputs from metadata
def labels(rng, c, shape=()):
    """Class labels [*shape, N] with every class of 0..c-1 present among the first c samples."""
    out = rng.integers(0, c, (*shape, N))
    out[..., :c] = rng.permuted(np.broadcast_to(np.arange(c), (*shape, c)), axis=-1)
    return out


def make_targets(info, rng, t):
    """T targets [T, N] (labels) or [T, N, K] (values)."""
    if info.target == "labels":
        return labels(rng, CY, (t,))
    return rng.normal(size=(t, N, K)).astype(np.float32)


def make_sources(info, rng, s, targets):
    """S sources [S, N, ...] for the estimator's source kind, informative of the first target."""
    y = targets[0]
    if info.source in ("labels", "none"):  # "none": score_matrix still takes (and ignores) labels
        return labels(rng, CZ, (s,))
    if info.source == "probabilities":
        return scipy.special.softmax(2.0 * rng.normal(size=(s, N, CZ)), axis=-1).astype(np.float32)
    if info.source == "features":
        signal = np.eye(CY)[y] if info.target == "labels" else y
        w = rng.normal(size=(s, signal.shape[-1], D))
        return (2.0 * signal @ w + rng.normal(size=(s, N, D))).astype(np.float32)
    if info.source == "predictions":
        return (y + 0.5 * rng.normal(size=(s, *y.shape))).astype(np.float32)
    raise AssertionError(f"{info.name}: unknown source kind {info.source!r}")


def options(info, *, static=True):
    """The caller's options: a PRNG key, short iterations and (``static``) the class counts."""
    out = {**info.caller_options(seed=0), **{k: v for k, v in FAST.items() if k in info.options}}
    if static and "num_target_classes" in info.options and info.target == "labels":
        out["num_target_classes"] = CY
    if static and "num_source_classes" in info.options and info.source == "labels":
        out["num_source_classes"] = CZ
    return out


def call(fn, source, target, **kw):
    """One pair through the public function (an estimator without a source takes the target only)."""
    return fn(target, **kw) if fn.info.source == "none" else fn(source, target, **kw)


def setup(name, seed=0):
    fn = jt.get_estimator(name)
    rng = np.random.default_rng([seed, NAMES.index(name)])
    targets = make_targets(fn.info, rng, T)
    return fn, make_sources(fn.info, rng, S, targets), targets, rng


def unmasked(arrays):
    """The first ``M`` samples of stacked arrays [S or T, N, ...]: the unmasked tests run on M samples,
    so their one-pair program is the one the dropping loops of the masked tests compile."""
    return arrays[:, :M]


def loop(fn, sources, targets, opts, keep=None):
    """``out[s, t]``: pair (s, t) on the samples ``keep(s, t)`` keeps, by dropping the others."""
    out = np.empty((len(sources), len(targets)))
    for i, src in enumerate(sources):
        for j, tgt in enumerate(targets):
            rows = slice(None) if keep is None else keep(i, j)
            out[i, j] = float(call(fn, src[rows], tgt[rows], **opts))
    return out


def disjoint_masks(rng, drop=DROP):
    """``mask`` [N], ``source_mask`` [S, N] and ``target_mask`` [T, N], each dropping its own ``drop``
    samples (never one of the first max(CZ, CY), so every class stays). The dropped sets are disjoint,
    so every pair keeps the same number of samples whichever masks are given, and the dropping loop
    compiles once per sample count rather than once per pair."""
    rows = rng.permutation(np.arange(max(CZ, CY), N))[: (1 + S + T) * drop].reshape(1 + S + T, drop)
    m = np.ones((1 + S + T, N), bool)
    np.put_along_axis(m, rows, False, axis=1)
    return {"mask": m[0], "source_mask": m[1 : 1 + S], "target_mask": m[1 + S :]}


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    fn = jt.get_estimator(name)
    info = fn.info
    assert info.name == name
    assert info.source in SOURCE_KINDS
    assert info.target in TARGET_KINDS
    assert info.task in ("classification", "regression")
    assert info.orientation in ORIENTATIONS
    assert (info.orientation == "lower_is_better") == (name == "conditional_entropy")
    assert (info.orientation == "higher_is_harder") == (name == "hardness")
    assert isinstance(info.reference, str) and info.reference.strip()
    params = inspect.signature(fn).parameters
    keyword_only = {k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(info.options) == keyword_only - {"mask"}
    assert "mask" in params
    # one name per concept: the target task's values are `targets`; the source input says what it is
    source_names = {
        "labels": ["source_labels"],
        "probabilities": ["source_probs"],
        "features": ["features"],
        "predictions": ["source_predictions"],
        "none": [],
    }
    assert positional(fn) == [*source_names[info.source], "targets"]
    assert not {"num_classes", "labels", "target_labels"} & set(params)


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    fn, sources, targets, _ = setup(name)
    sources, targets = unmasked(sources), unmasked(targets)
    opts, inferred = options(fn.info), options(fn.info, static=False)
    jitted = jax.jit(lambda s, t: call(fn, s, t, **opts))
    for src, tgt in ((sources[0], targets[0]), (sources[1], targets[1])):  # the second: no recompile
        eager = call(fn, src, tgt, **inferred)  # class counts read from the data
        got = jitted(src, tgt)
        assert got.shape == eager.shape == ()
        assert got.dtype == eager.dtype == np.dtype(jax.numpy.result_type(float))
        close(name, got, eager)
    assert jitted._cache_size() == 1


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_sources_equals_loop(name):
    fn, sources, targets, _ = setup(name)
    sources, targets = unmasked(sources), unmasked(targets)
    opts = options(fn.info)
    # an estimator without a source is batched over its targets instead
    over_targets = fn.info.source == "none"
    got = jax.vmap(lambda s, t: call(fn, s, t, **opts), in_axes=(None, 0) if over_targets else (0, None))(
        sources[0] if over_targets else sources, targets if over_targets else targets[0]
    )
    want = (
        loop(fn, sources[:1], targets, opts)[0]
        if over_targets
        else loop(fn, sources, targets[:1], opts)[:, 0]
    )
    assert got.shape == want.shape
    close(name, got, want)


@pytest.mark.parametrize("name", NAMES)
def test_mask_equals_dropping_samples(name):
    fn, sources, targets, rng = setup(name)
    opts = options(fn.info)  # class counts fixed: dropping samples must not change the problem's size
    m = disjoint_masks(rng)["mask"]
    got = call(fn, sources[0], targets[0], mask=m, **opts)
    close(name, got, call(fn, sources[0][m], targets[0][m], **opts))


# Each case is one compiled program per estimator, and together they take every path of
# ``score_matrix``: the estimator's default batch (one source per step for most, all sources at
# once for the histogram estimators and LEEP), a padded last chunk (2 for S = 3), one source per
# step and all at once; without a mask, with a per-source mask (``mask`` and ``source_mask`` make
# the same program), a per-target mask, and all three. Every masked pair keeps M = N - DROP samples.
MATRIX_CASES = {  # batch_size, samples each mask drops, the spellings
    "unmasked-default": (None, 0, [()]),
    "source-padded": (2, DROP, [("mask",), ("source_mask",)]),
    "target-one_per_step": (1, DROP, [("target_mask",)]),
    "all-at_once": (S, 1, [("mask", "source_mask", "target_mask")]),
}


@pytest.mark.parametrize("case", list(MATRIX_CASES))
@pytest.mark.parametrize("name", NAMES)
def test_score_matrix_equals_loop(name, case):
    fn, sources, targets, rng = setup(name)
    batch_size, drop, spellings = MATRIX_CASES[case]
    if not drop:
        sources, targets = unmasked(sources), unmasked(targets)
        got = jt.score_matrix(name, sources, targets, batch_size=batch_size, **options(fn.info, static=False))
        assert got.shape == (S, T)
        close(name, got, loop(fn, sources, targets, options(fn.info)))
        return
    opts = options(fn.info)
    masks = disjoint_masks(rng, drop)
    for keys in spellings:
        given = {k: masks[k] for k in keys}

        def keep(i, j, given=given):
            m = np.ones(N, bool)
            m &= given.get("mask", True)
            m &= given["source_mask"][i] if "source_mask" in given else True
            m &= given["target_mask"][j] if "target_mask" in given else True
            assert m.sum() == M
            return m

        got = jt.score_matrix(name, sources, targets, batch_size=batch_size, **given, **opts)
        assert got.shape == (S, T)
        close(name, got, loop(fn, sources, targets, opts, keep))


def positional(fn):
    return [k for k, p in inspect.signature(fn).parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_argument(name):
    fn, sources, targets, _ = setup(name)
    opts = options(fn.info, static=False)
    args = positional(fn)
    if fn.info.source == "none":
        (target_arg,) = args
        with pytest.raises(TypeError, match=target_arg):
            fn(np.full(targets[0].shape, "a"), **opts)
        with pytest.raises(ValueError, match=r"mask must have shape"):
            fn(targets[0], mask=np.ones(N - 1, bool), **opts)
        return
    source_arg, target_arg = args
    with pytest.raises(ValueError, match=rf"{source_arg}.*{target_arg}|{target_arg}.*{source_arg}"):
        fn(sources[0][:-1], targets[0], **opts)
    with pytest.raises(ValueError, match=rf"{source_arg}.*{target_arg}|{target_arg}.*{source_arg}"):
        jt.score_matrix(name, sources[:, :-1], targets, **opts)
    with pytest.raises(TypeError, match=source_arg):
        fn(np.full(sources[0].shape, "a"), targets[0], **opts)
    with pytest.raises(ValueError, match=r"mask must have shape"):
        fn(sources[0], targets[0], mask=np.ones(N - 1, bool), **opts)
    with pytest.raises(TypeError, match=r"mask must be a boolean array"):
        fn(sources[0], targets[0], mask=np.ones(N, np.float32), **opts)
    for key, shape in (("source_mask", (S, N - 1)), ("target_mask", (S, N))):
        with pytest.raises(ValueError, match=rf"^{key} must have shape"):
            jt.score_matrix(name, sources, targets, **{key: np.ones(shape, bool)}, **opts)


def test_registry_covers_the_public_estimators():
    public = {
        name for name in jt.__all__ if isinstance(getattr(getattr(jt, name), "info", None), jt.EstimatorInfo)
    }
    assert public == set(NAMES)
    for name in NAMES:
        assert jt.get_estimator(name) is getattr(jt, name)
