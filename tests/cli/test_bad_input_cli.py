"""Bad input to the command line and to `rank`: one-line errors (exit 2) or ValueErrors naming what is wrong.

Output paths are checked before any work; broken ``.npy``/``.npz`` files are
described exactly (never unpickled); nonsense numbers are refused at parsing;
out-of-range images and broken source models are refused; an estimator that
cannot be computed is reported, never silently dropped.
"""

import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtransfer as jt
from jaxtransfer import sources
from jaxtransfer._io import read_npz
from jaxtransfer.apps import _rank as rank_module
from jaxtransfer.apps._rank import (
    NotComputedWarning,
    RankResult,
    SourceSpec,
    load_dataset,
    rank,
    ranking_estimators,
)
from jaxtransfer.apps._report import ranked_table, write_outputs
from jaxtransfer.cli import _parser, main
from jaxtransfer.cli._common import CLIError, load_array

N = 24  # images of 8×8 pixels: every model below runs in milliseconds


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    assert err.startswith("jaxtransfer: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def _mlp(folder: Path, name: str, change=None) -> str:
    model = sources.MLP(3, in_features=64, hidden=(4,), seed=1)
    if change is not None:
        change(model)
    return str(sources.save(folder / name, model))


def _nan_weights(model):
    nnx.update(model, jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), nnx.state(model)))


def _zero_weights(model):
    nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model)))


def _constant_head(model):
    model.head.kernel[...] = 0.0
    model.head.bias[...] = jnp.arange(3.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny target dataset and tiny source models (untrained MLPs), as files."""
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    images = rng.random((N, 8, 8)).astype(np.float32)
    labels = np.stack([np.arange(N) % 2, np.arange(N) % 3], 1)
    np.savez(folder / "data.npz", images=images, labels=labels)
    return {
        "folder": folder,
        "images": images,
        "labels": labels,
        "data": str(folder / "data.npz"),
        "mlp": _mlp(folder, "mlp.npz"),
        "nan": _mlp(folder, "nan.npz", _nan_weights),
        "zero": _mlp(folder, "zero.npz", _zero_weights),
        "head": _mlp(folder, "head.npz", _constant_head),
    }


# 1. output paths, checked before any work


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("missing/scores.json", ("missing/scores.json", "folder that does not exist", "existing folder")),
        (".", ("is a folder", "expected the path of a file")),
    ],
)
def test_score_output_checked_before_any_work(capsys, tmp_path, output, words):
    # the source file does not exist either: the output is what gets reported, so it was checked first
    argv = ["score", "--estimator", "nce", "--source", tmp_path / "nope.npy", "--target", tmp_path / "y.npy"]
    code, out, err = run(capsys, *argv, "--out", tmp_path / output)
    assert_one_line_error(code, err, "--out:", *words)
    assert out == ""


def test_score_output_written_when_fine(capsys, tmp_path):
    np.save(tmp_path / "z.npy", np.arange(30) % 3)
    np.save(tmp_path / "y.npy", np.arange(30) % 2)
    argv = ["score", "--estimator", "nce", "--source", tmp_path / "z.npy", "--target", tmp_path / "y.npy"]
    code, _, err = run(capsys, *argv, "-o", tmp_path / "s.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["shape"] == [1, 1]


def test_score_deprecated_output_alias_still_writes_with_a_warning(capsys, tmp_path):
    np.save(tmp_path / "z.npy", np.arange(30) % 3)
    np.save(tmp_path / "y.npy", np.arange(30) % 2)
    argv = ["score", "--estimator", "nce", "--source", tmp_path / "z.npy", "--target", tmp_path / "y.npy"]
    code, out, err = run(capsys, *argv, "--output", tmp_path / "s.json")
    assert code == 0, err
    assert out == ""
    assert err == "jaxtransfer: warning: --output is deprecated; use --out (or -o)\n"
    assert json.loads((tmp_path / "s.json").read_text())["shape"] == [1, 1]
    # both names at once: refused before any work
    code, out, err = run(capsys, *argv, "--output", tmp_path / "a.json", "-o", tmp_path / "b.json")
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith("jaxtransfer: error: --out and its deprecated alias --output")
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()


def test_demo_deprecated_output_alias_is_checked_like_out(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--output", tmp_path / "missing" / "demo.json")
    assert code == 2 and out == ""
    warning, error = err.splitlines()
    assert warning == "jaxtransfer: warning: --output is deprecated; use --out (or -o)"
    assert error.startswith("jaxtransfer: error: --out:") and "folder that does not exist" in error


def test_every_command_that_writes_names_the_option_out():
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        if "-o" in flags or "--out" in flags:
            assert {"--out", "-o"} <= flags, name
            assert next(a for a in parser._actions if "-o" in a.option_strings).dest == "out", name
    assert {"score", "demo", "rank", "reproduce"} <= {
        name for name, p in sub.choices.items() if any("--out" in a.option_strings for a in p._actions)
    }


def test_demo_output_checked_before_the_demo_runs(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--out", tmp_path / "missing" / "demo.json")
    assert_one_line_error(code, err, "--out:", "folder that does not exist")
    assert out == ""  # the demo printed nothing: it never ran


def test_rank_out_checked_before_any_work(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    missing_data = tmp_path / "missing.npz"  # would be the first error if --out were checked later
    code, out, err = run(capsys, "rank", "--data", missing_data, "--out", tmp_path / "file")
    assert_one_line_error(code, err, "--out:", "file is an existing file, not a folder", "expected a folder")
    assert out == ""
    code, _, err = run(capsys, "rank", "--data", missing_data, "--out", tmp_path / "file" / "results")
    assert_one_line_error(code, err, "--out:", "cannot create the folder", "is a file, not a folder")


def test_reproduce_out_and_cache_checked_before_any_work(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "reproduce", "keypoints", "--quick", "--out", tmp_path / "file" / "r")
    assert_one_line_error(code, err, "--out:", "is a file, not a folder")
    code, _, err = run(
        capsys, "reproduce", "keypoints", "--quick", "--out", tmp_path / "r", "--cache", tmp_path / "file"
    )
    assert_one_line_error(code, err, "--cache:", "existing file, not a folder")
    assert not (tmp_path / "r").exists()


def test_write_outputs_refuses_a_file(tmp_path):
    result = RankResult(["s"], ["t"], {"logme": np.zeros((1, 1))}, None, None, {}, {})
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"out: .*file is an existing file, not a folder"):
        write_outputs(result, tmp_path / "file")


# 2. loaders: every bad file gets its own clear message; nothing is unpickled


class _Touch:
    """Unpickling this creates a file: proof that nothing was unpickled when the file stays absent."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _npy_bytes(arr, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _bad_files(folder: Path) -> dict[str, tuple[str, ...]]:
    """name -> words its error must hold."""
    npy = _npy_bytes(np.arange(100.0))
    (folder / "truncated.npy").write_bytes(npy[:-40])
    (folder / "header_only.npy").write_bytes(npy[:20])
    _zip(folder / "member_truncated.npz", {"a.npy": npy[:-8]})
    np.savez(folder / "whole.npz", a=np.arange(1000.0))
    data = (folder / "whole.npz").read_bytes()
    (folder / "cut.npz").write_bytes(data[: len(data) // 2])
    _zip(folder / "text_member.npz", {"notes.txt": b"hello"})
    _zip(folder / "fake_npy_member.npz", {"a.npy": b"hello, not numpy"})
    np.savez(folder / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    (folder / "empty.npy").write_bytes(b"")
    _zip(folder / "no_arrays.npz", {})
    return {
        "truncated.npy": ("truncated", "760 of the 800 data bytes"),
        "header_only.npy": ("truncated",),
        "member_truncated.npz": ("truncated", "array 'a'"),
        "cut.npz": ("truncated or corrupt",),
        "text_member.npz": ("member 'notes.txt' is not a .npy array",),
        "fake_npy_member.npz": ("'a' is not a .npy array",),
        "objects.npz": ("array 'a' holds Python objects", "never loaded"),
        "empty.npy": ("empty",),
        "no_arrays.npz": ("holds no arrays",),
    }


def test_cli_bad_array_files(capsys, tmp_path):
    np.save(tmp_path / "y.npy", np.arange(30) % 2)
    for name, words in _bad_files(tmp_path).items():
        code, out, err = run(
            capsys, "score", "--estimator", "nce", "--source", tmp_path / name, "--target", tmp_path / "y.npy"
        )
        assert_one_line_error(code, err, "--source: ", name, *words)
        assert "Python objects" not in err or name == "objects.npz", err  # the old mislabelling
        assert out == ""


def test_library_readers_share_the_messages(tmp_path):
    _bad_files(tmp_path)
    with pytest.raises(
        ValueError, match=r"text_member\.npz is not a readable model file .*not a \.npy array"
    ):
        sources.load(tmp_path / "text_member.npz")
    with pytest.raises(
        ValueError, match=r"path: .*cut\.npz is not a readable .npz file .*truncated or corrupt"
    ):
        load_dataset(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match=r"member_truncated\.npz .*it is truncated"):
        read_npz(tmp_path / "member_truncated.npz", what="x")


def test_object_arrays_are_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    evil = np.empty(1, object)
    evil[0] = _Touch(marker)
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", a=evil)
    with pytest.raises(CLIError, match="holds Python objects"):
        load_array(str(tmp_path / "evil.npy"), "--source")
    with pytest.raises(CLIError, match="holds Python objects"):
        load_array(str(tmp_path / "evil.npz"), "--source")
    with pytest.raises(ValueError, match="holds Python objects"):
        read_npz(tmp_path / "evil.npz", what="x")
    assert not marker.exists()


@pytest.mark.parametrize(
    "arr",
    [
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.array(3.5),
        np.zeros((0, 4), np.float32),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array([(1,)], dtype=[("é", "i4")]),  # non-latin-1 field name: format version 3.0
        np.array([True, False]),
        np.array(["ab", "c"]),
        np.arange(6, dtype=np.complex64),
    ],
    ids=["fortran", "0-d", "empty", "structured", "v3-header", "bool", "str", "complex"],
)
def test_good_files_still_load(tmp_path, arr):
    np.save(tmp_path / "a.npy", arr)
    np.savez_compressed(tmp_path / "c.npz", x=arr)
    for spec in (tmp_path / "a.npy", tmp_path / "c.npz", f"{tmp_path / 'c.npz'}:x"):
        got = load_array(str(spec), "--source")
        assert got.dtype == arr.dtype and got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


# 3. nonsense numbers, refused at parsing


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--image-size", "0"], ("argument --image-size", "positive integer", "got 0")),
        (["--image-size", "-5"], ("argument --image-size", "positive integer", "got -5")),
        (["--image-size", "big"], ("argument --image-size", "positive integer", "got 'big'")),
        (["--bootstrap", "-1"], ("argument --bootstrap", "integer >= 0", "got -1")),
        (["--batch-size", "0"], ("argument --batch-size", "positive integer", "got 0")),
    ],
)
def test_rank_rejects_bad_numbers_at_parsing(capsys, tmp_path, argv, words):
    code, out, err = run(capsys, "rank", "--data", tmp_path / "missing.npz", *argv)
    assert_one_line_error(code, err, *words, "jaxtransfer rank --help")
    assert out == ""


def test_bootstrap_zero_is_allowed():
    assert _parser().parse_args(["rank", "--bootstrap", "0"]).bootstrap == 0


def test_rank_library_rejects_bad_numbers(tiny):
    spec = [SourceSpec(tiny["mlp"])]
    with pytest.raises(ValueError, match=r"image_size must be a positive int or None, got 0"):
        rank(tiny["images"], tiny["labels"], None, spec, image_size=0)
    with pytest.raises(ValueError, match=r"num_bootstrap must be an int >= 0 .*got -1"):
        rank(tiny["images"], tiny["labels"], None, spec, num_bootstrap=-1)


# 4. images out of range, broken source models, estimators that cannot be computed


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1e30, ("float images must hold values in [0, 1]", "or be uint8", "to 1e+30")),
        (-0.5, ("float images must hold values in [0, 1]", "from -0.5")),
        (1.5, ("float images must hold values in [0, 1]", "to 1.5")),
        (np.nan, ("NaN or infinite", "expected floats in [0, 1]")),
    ],
)
def test_rank_refuses_images_out_of_range(capsys, tiny, tmp_path, value, words):
    images = tiny["images"].copy()
    images[3, 2, 1] = value
    np.savez(tmp_path / "bad.npz", images=images, labels=tiny["labels"])
    code, _, err = run(capsys, "rank", "--data", tmp_path / "bad.npz", "--sources", tiny["mlp"])
    assert_one_line_error(code, err, "bad.npz", *words)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rank(images, tiny["labels"], None, [SourceSpec(tiny["mlp"])])


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("nan", ("source ", "nan.npz: its features are NaN or infinite on 24 of 24 images", "weights")),
        ("zero", ("zero.npz: its features are the same for all 24 images", "every one of the 4 columns")),
        ("head", ("head.npz: its head's predictions are the same for all 24 images",)),
    ],
)
def test_rank_refuses_broken_source_models(capsys, tiny, tmp_path, model, words):
    out = tmp_path / "results"
    code, _, err = run(
        capsys, "rank", "--data", tiny["data"], "--sources", tiny["mlp"], tiny[model], "--out", out
    )
    assert_one_line_error(code, err, *words)
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(("value", "words"), [(1e30, "to 1e+30"), (-1.0, "from -1 to"), (np.inf, "to inf")])
def test_zoo_predict_refuses_float_images_out_of_range(capsys, tmp_path, value, words):
    image = np.full((16, 16, 3), 0.5, np.float32)
    image[0, 0, 0] = value
    np.save(tmp_path / "image.npy", image)
    code, _, err = run(capsys, "zoo", "predict", tmp_path / "image.npy")  # refused before any backbone loads
    assert_one_line_error(code, err, "IMAGE: expected float pixels in [0, 1]", words)


def test_constant_head_is_fine_without_prediction_estimators(tiny):
    result = rank(
        tiny["images"], tiny["labels"], None, [SourceSpec(tiny["head"])],
        estimators=["gbc"], ground_truth=False, progress=False, print_fn=lambda *a: None,
    )  # fmt: skip
    assert np.isfinite(result.scores["gbc"]).all() and result.not_computed == {}


def test_no_estimator_is_silently_dropped(tiny):
    # a layer has no predictions, so leep and nce cannot be computed: they stay in the result, marked
    spec = SourceSpec(tiny["mlp"], "dense1")
    with pytest.warns(NotComputedWarning) as record:
        result = rank(
            tiny["images"], tiny["labels"], None, [spec],
            ground_truth=False, progress=False, print_fn=lambda *a: None,
        )  # fmt: skip
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        f"{est} could not be computed for any source (a layer has no predictions); "
        "its scores are NaN in the outputs"
        for est in ("leep", "nce", "soft_nce")
    ]  # soft_nce takes the source's probabilities, as leep does
    on_features = [
        "gbc",
        "heldout_linear_mse",
        "hscore",
        "linear_mse",
        "logme",
        "nleep",
        "shrinkage_hscore",
        "transrate",
    ]
    assert list(result.scores) == ranking_estimators() == [*on_features, "leep", "nce", "soft_nce"]
    for est in ("leep", "nce", "soft_nce"):
        assert np.isnan(result.scores[est]).all()
        assert result.not_computed[est] == {spec.name: "a layer has no predictions"}
    for est in on_features:
        assert np.isfinite(result.scores[est]).all(), est
    table = ranked_table(result)
    assert f"— leep not computed for {spec.name}: a layer has no predictions" in table


def test_estimator_returning_nan_is_reported_loudly(capsys, tiny, tmp_path, monkeypatch):
    real = jt.score_matrix

    def hscore_fails(fn, *args, **kwargs):
        scores = real(fn, *args, **kwargs)
        return jnp.full_like(scores, jnp.nan) if fn.info.name == "hscore" else scores

    monkeypatch.setattr(rank_module, "score_matrix", hscore_fails)
    out = tmp_path / "results"
    code, stdout, err = run(
        capsys, "rank", "--data", tiny["data"], "--sources", tiny["mlp"], "--estimators", "logme", "hscore",
        "--no-ground-truth", "--format", "json", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert err.startswith("jaxtransfer: warning: hscore could not be computed for source ")
    assert "mlp.npz: it returned nan on 2 of 2 targets (task0, task1)" in err
    assert "those scores are NaN in the outputs" in err
    doc = json.loads(stdout)
    assert set(doc["scores"]) == {"logme", "hscore"}  # still there, as NaN
    assert np.isnan(doc["scores"]["hscore"]).all() and np.isfinite(doc["scores"]["logme"]).all()
    assert doc["not_computed"]["hscore"][tiny["mlp"]].startswith("it returned nan")
    written = json.loads((out / "scores.json").read_text())
    assert written["not_computed"] == doc["not_computed"]
