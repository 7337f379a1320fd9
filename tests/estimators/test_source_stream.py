"""score_matrix over a stream of sources: files, iterators and callables, one chunk in memory at a time.

Every estimator: the streamed matrix equals ``score_matrix`` on the stacked
sources (the same jitted program per chunk, so float32 rounding only). Real
values: Linear MSE against a float64 ridge reference (scikit-learn) and NCE
against hand counts. Memory behaviour: no chunk holds more than ``batch_size``
sources and sources are requested lazily, one chunk ahead at most.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from sklearn.linear_model import Ridge

import jaxtransfer as jt
from jaxtransfer.estimators import _source_stream
from jaxtransfer.estimators._source_stream import is_source_stream, score_sources

N, S, T = 30, 5, 2
D, CZ, CY, K = 3, 4, 3, 2


def labels(rng, c, shape=()):
    out = rng.integers(0, c, (*shape, N))
    out[..., :c] = np.arange(c)  # every class present
    return out


def inputs(info, rng):
    """S sources and T targets of the estimator's kinds."""
    targets = labels(rng, CY, (T,)) if info.target == "labels" else rng.normal(size=(T, N, K))
    targets = targets.astype(np.int64 if info.target == "labels" else np.float32)
    if info.source in ("labels", "none"):
        sources = labels(rng, CZ, (S,))
    elif info.source == "probabilities":
        sources = scipy.special.softmax(2 * rng.normal(size=(S, N, CZ)), axis=-1).astype(np.float32)
    elif info.source == "features":
        y = np.eye(CY)[targets[0]] if info.target == "labels" else targets[0]
        sources = (y @ rng.normal(size=(S, y.shape[-1], D)) + rng.normal(size=(S, N, D))).astype(np.float32)
    else:  # predictions
        sources = (targets[0] + 0.5 * rng.normal(size=(S, *targets[0].shape))).astype(np.float32)
    return sources, targets


def opts(info):
    out = {**info.caller_options(seed=0), **({"num_iter": 10} if "num_iter" in info.options else {})}
    if "num_source_classes" in info.options and info.source == "labels":
        out["num_source_classes"] = CZ
    return out


@pytest.mark.parametrize("name", jt.available_estimators())
def test_every_estimator_streamed_equals_stacked(name):
    fn = jt.get_estimator(name)
    rng = np.random.default_rng([7, jt.available_estimators().index(name)])
    sources, targets = inputs(fn.info, rng)
    o = opts(fn.info)
    want = np.asarray(jt.score_matrix(name, sources, targets, **o))
    # a callable of known length: chunks of 2, 2 and 1 (padded to 2), one compiled program
    got = jt.score_matrix(name, lambda i: sources[i], targets, num_sources=S, batch_size=2, **o)
    assert isinstance(got, jnp.ndarray) and got.shape == want.shape == (S, T)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def ridge_ref(f, y, l2):
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    n = f.shape[0]
    model = Ridge(alpha=n * l2, fit_intercept=True, solver="svd").fit(f, y)
    return -float(np.sum((y - model.predict(f)) ** 2) / n + l2 * np.sum(model.coef_**2))


@pytest.fixture
def files(tmp_path, rng):
    """Seven sources of features [40, 4] saved one per .npy file, and three real-valued targets."""
    f = rng.normal(size=(7, 40, 4)).astype(np.float32)
    y = (f[:3, :, :2] @ rng.normal(size=(2, 2)) + 0.3 * rng.normal(size=(3, 40, 2))).astype(np.float32)
    folder = tmp_path / "sources"
    folder.mkdir()
    for i in range(7):
        np.save(folder / f"model_{i}.npy", f[i])
    return folder, f, y


@pytest.mark.parametrize("form", ["folder", "glob", "paths", "iterator of paths"])
def test_files_match_float64_ridge(files, form):
    folder, f, y = files
    spec = {
        "folder": str(folder),
        "glob": str(folder / "model_*.npy"),
        "paths": sorted(folder.glob("*.npy")),
        "iterator of paths": iter(sorted(folder.glob("*.npy"))),
    }[form]
    out = score_sources("linear_mse", spec, y, l2=0.5, batch_size=3, progress=False)
    want = np.array([[ridge_ref(f[s], y[t], 0.5) for t in range(3)] for s in range(7)])
    np.testing.assert_allclose(out.scores, want, rtol=1e-4, atol=1e-5)
    assert out.names == tuple(f"model_{i}" for i in range(7))
    # the same through score_matrix, as a jax.Array
    np.testing.assert_allclose(
        np.asarray(jt.score_matrix("linear_mse", str(folder), y, l2=0.5)), out.scores, rtol=1e-6
    )


def test_nce_hand_counts_from_a_generator_of_unknown_length():
    # z = [0, 0, 1, 1], y = [0, 1, 1, 1]: H(Y|Z) = ½·H(½) + ½·0 = ½ log 2, so NCE = -½ log 2
    # z = y: NCE = 0; z constant: NCE = -H(Y) = -(¼ log 4 + ¾ log 4/3)
    y = np.array([[0, 1, 1, 1]])
    rows = [[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 2, 2]] * 30  # 90 sources, more than the first capacity
    out = score_sources("nce", (np.array(r) for r in rows), y, batch_size=4, num_source_classes=3)
    hy = 0.25 * np.log(4) + 0.75 * np.log(4 / 3)
    want = np.array([-0.5 * np.log(2), 0.0, -hy] * 30)[:, None]
    assert out.scores.shape == (90, 1) and out.names is None
    np.testing.assert_allclose(out.scores, want, rtol=1e-6, atol=1e-7)


def test_sources_are_read_lazily_one_chunk_at_a_time(monkeypatch, rng):
    f = rng.normal(size=(10, N, D)).astype(np.float32)
    y = labels(rng, CY, (T,))
    requested, seen = [], []
    real = _source_stream.score_stacked

    def spy(fn, sources, *args, **kwargs):
        seen.append((np.shape(sources)[0], len(requested)))
        return real(fn, sources, *args, **kwargs)

    def load(i):
        requested.append(i)
        return f[i]

    monkeypatch.setattr(_source_stream, "score_stacked", spy)
    out = score_sources("logme", load, y, num_sources=10, batch_size=4)
    assert requested == list(range(10))
    # equal chunks of at most 4: 4, 4, 4 (the last padded), each loaded just before it runs
    assert seen == [(4, 4), (4, 8), (4, 10)]
    np.testing.assert_allclose(out.scores, np.asarray(real("logme", f, y)), rtol=1e-5, atol=1e-6)


def test_masks_are_sliced_per_chunk(rng):
    f = rng.normal(size=(S, N, D)).astype(np.float32)
    y = labels(rng, CY, (T,))
    smask = rng.random((S, N)) > 0.2
    tmask = rng.random((T, N)) > 0.2
    mask = np.arange(N) != 5
    kw = {"mask": mask, "source_mask": smask, "target_mask": tmask}
    want = np.asarray(jt.score_matrix("hscore", f, y, **kw))
    got = np.asarray(jt.score_matrix("hscore", iter(list(f)), y, batch_size=2, **kw))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"source_mask must have shape \[5, n\], got shape \[4, 30\]"):
        jt.score_matrix("hscore", lambda i: f[i], y, num_sources=S, source_mask=smask[:4])


def test_l2_vector_gives_three_axes(files):
    folder, f, y = files
    out = score_sources("linear_mse", folder, y, l2=[0.1, 2.0], batch_size=2)
    assert out.scores.shape == (7, 3, 2)
    np.testing.assert_allclose(out.scores[4, 1, 1], ridge_ref(f[4], y[1], 2.0), rtol=1e-4)


def test_npz_single_array_fortran_and_big_endian_files(tmp_path, rng):
    f = rng.normal(size=(3, N, D))
    y = labels(rng, CY, (T,))
    np.savez(tmp_path / "a.npz", features=f[0].astype(np.float32))
    np.save(tmp_path / "b.npy", np.asfortranarray(f[1].astype(np.float32)))
    np.save(tmp_path / "c.npy", f[2].astype(">f8"))
    paths = [tmp_path / "a.npz", tmp_path / "b.npy", str(tmp_path / "c.npy")]
    out = score_sources("logme", paths, y)
    want = np.asarray(jt.score_matrix("logme", f.astype(np.float32), y))
    np.testing.assert_allclose(out.scores, want, rtol=1e-5, atol=1e-6)
    assert out.names == ("a", "b", "c")


def test_equal_stems_give_paths(tmp_path, rng):
    f = rng.normal(size=(2, N, D)).astype(np.float32)
    for sub, arr in zip("xy", f, strict=True):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "model.npy", arr)
    out = score_sources("logme", str(tmp_path / "*" / "model.npy"), labels(rng, CY, (1,)))
    assert out.names == (str(tmp_path / "x" / "model.npy"), str(tmp_path / "y" / "model.npy"))


def test_what_counts_as_a_stream(tmp_path):
    arr = np.zeros((2, 4, 3), np.float32)
    np.save(tmp_path / "a.npy", arr)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    for array_like in (arr, jnp.asarray(arr), mapped, [[0, 1], [1, 0]], [arr[0], arr[1]], (1, 2)):
        assert not is_source_stream(array_like)
    for stream in (
        str(tmp_path),
        tmp_path,
        [tmp_path / "a.npy"],
        (str(tmp_path / "a.npy"), arr[0]),
        iter([arr[0]]),
        (a for a in arr),
        map(np.asarray, arr),
        lambda i: arr[i],
    ):
        assert is_source_stream(stream)


def test_progress_lines_over_sources(capsys, monkeypatch, rng):
    monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", "0")
    f = rng.normal(size=(S, N, D)).astype(np.float32)
    score_sources("logme", lambda i: f[i], labels(rng, CY, (1,)), num_sources=S, batch_size=2)
    err = capsys.readouterr().err
    assert "score_matrix: 0/5 source (0%)" in err and "score_matrix: 2/5 source" in err
    assert "score_matrix: done 5 source in" in err
    score_sources("logme", lambda i: f[i], labels(rng, CY, (1,)), num_sources=S, progress=False)
    assert capsys.readouterr().err == ""


def test_precision_warning_names_the_global_source(rng):
    u, _ = np.linalg.qr(rng.normal(size=(300, 6)))
    bad = (u * np.logspace(0, -6, 6) * np.sqrt(300)).astype(np.float32)  # condition number 1e6
    good = rng.normal(size=(300, 6)).astype(np.float32)
    f = [good, good, good, bad, good]
    y = rng.integers(0, 3, (1, 300))
    with pytest.warns(jt.PrecisionWarning, match=r"\(sources 3\)"):
        jt.score_matrix("hscore", iter(f), y, batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jt.score_matrix("hscore", iter([good] * 3), y, batch_size=2)


# ----------------------------------------------------------------------------- bad input
def test_bad_streams(tmp_path, rng):
    f = rng.normal(size=(4, N, D)).astype(np.float32)
    y = labels(rng, CY, (T,))
    with pytest.raises(TypeError, match=r"sources is a callable .*pass num_sources=<int>"):
        jt.score_matrix("logme", lambda i: f[i], y)
    with pytest.raises(ValueError, match="num_sources must be a positive int, got 0"):
        jt.score_matrix("logme", lambda i: f[i], y, num_sources=0)
    with pytest.raises(ValueError, match="num_sources=3, but sources yielded 4 sources"):
        jt.score_matrix("logme", iter(f), y, num_sources=3)
    with pytest.raises(ValueError, match="sources is empty: the stream yielded no source"):
        jt.score_matrix("logme", iter([]), y)
    with pytest.raises(ValueError, match="names has 2 entries, but there are 4 sources"):
        score_sources("logme", lambda i: f[i], y, num_sources=4, names=["a", "b"])
    with pytest.raises(
        ValueError, match=r"sources\[2\] has shape \[30, 2\], but sources\[0\] has shape \[30, 3\]"
    ):
        jt.score_matrix("logme", iter([f[0], f[1], f[2, :, :2]]), y)
    nan = f.copy()
    nan[3, 7, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"sources\[3\] contains a non-finite value \(nan\) at index \(7, 1\)"
    ):
        jt.score_matrix("logme", iter(nan), y, batch_size=2)
    with pytest.raises(TypeError, match=r"sources\[1\] must be a real-valued array, got dtype <U1"):
        jt.score_matrix("logme", iter([f[0], np.full((N, D), "a")]), y)
    with pytest.raises(
        TypeError, match=r"sources\[0\] must be an array or the path of a .npy file, got NoneType"
    ):
        jt.score_matrix("logme", iter([None]), y)
    # a later chunk's error says which sources it holds
    with pytest.raises(ValueError, match=r"sources 2\.\.3: .*negative label"):
        bad = labels(rng, CZ, (4,))
        bad[3, 0] = -1
        jt.score_matrix("nce", iter(bad), y, batch_size=2)


def test_bad_files(tmp_path, rng):
    y = labels(rng, CY, (T,))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"sources: the folder .*empty holds no .npy file"):
        jt.score_matrix("logme", empty, y)
    with pytest.raises(ValueError, match="sources: no file matches the pattern"):
        jt.score_matrix("logme", str(tmp_path / "*.npy"), y)
    with pytest.raises(ValueError, match="sources: no such file"):
        jt.score_matrix("logme", str(tmp_path / "missing.npy"), y)
    np.savez(tmp_path / "two.npz", a=np.zeros((N, D)), b=np.zeros((N, D)))
    with pytest.raises(ValueError, match=r"sources\[0\] \(.*two.npz\): .*holding 2 arrays.*cannot be"):
        jt.score_matrix("logme", [tmp_path / "two.npz"], y)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"sources\[0\] .*obj.npy.*Python objects"):
        jt.score_matrix("logme", [tmp_path / "obj.npy"], y)
    np.save(tmp_path / "short.npy", np.zeros((N, D), np.float32))
    with open(tmp_path / "short.npy", "r+b") as fh:
        fh.truncate(os.path.getsize(tmp_path / "short.npy") - 8)
    with pytest.raises(ValueError, match="truncated"):
        jt.score_matrix("logme", [Path(tmp_path / "short.npy")], y)
