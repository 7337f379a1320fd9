"""The command line: scores match the library, bad input gives one line and exit 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

import jaxtransfer as jt
from jaxtransfer.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def label_files(tmp_path, rng):
    z = rng.integers(0, 3, (2, 60))
    y = rng.integers(0, 4, (3, 60))
    np.save(tmp_path / "z.npy", z)
    np.savez(tmp_path / "y.npz", labels=y)
    return tmp_path, z, y


def test_score_nce_json_matches_library(capsys, label_files):
    path, z, y = label_files
    code, out, err = run(
        capsys,
        "score",
        "--estimator",
        "nce",
        "--source",
        str(path / "z.npy"),
        "--target",
        str(path / "y.npz"),
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["shape"] == [2, 3] and result["orientation"] == "higher_is_better"
    expected = [[float(jt.nce(a, b, num_source_classes=3, num_target_classes=4)) for b in y] for a in z]
    np.testing.assert_allclose(result["scores"], expected, rtol=1e-6)


def test_single_pair_gives_one_by_one(capsys, label_files):
    path, z, y = label_files
    np.save(path / "z0.npy", z[0])
    np.save(path / "y0.npy", y[0])
    code, out, _ = run(
        capsys,
        "score",
        "--estimator",
        "conditional_entropy",
        "--source",
        str(path / "z0.npy"),
        "--target",
        str(path / "y0.npy"),
        "--format",
        "csv",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "source,target,score"
    assert float(lines[1].split(",")[2]) == pytest.approx(float(jt.conditional_entropy(z[0], y[0])), rel=1e-6)


def test_linear_mse_several_l2_csv(capsys, tmp_path, rng):
    f = rng.standard_normal((40, 5))
    y = rng.standard_normal(40)
    np.savez(tmp_path / "in.npz", f=f, y=y)
    code, out, err = run(
        capsys,
        "score",
        "--estimator",
        "linear_mse",
        "--source",
        f"{tmp_path}/in.npz:f",
        "--target",
        f"{tmp_path}/in.npz:y",
        "--l2",
        "0",
        "1",
        "--format",
        "csv",
    )
    assert code == 0, err
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    assert [float(r[2]) for r in rows] == [0.0, 1.0]
    expected = np.asarray(jt.linear_mse(f, y, l2=[0.0, 1.0]))
    np.testing.assert_allclose([float(r[3]) for r in rows], expected, rtol=1e-6)


def test_output_file(capsys, label_files):
    path, _, _ = label_files
    out_file = path / "scores.json"
    code, out, _ = run(
        capsys,
        "score",
        "--estimator",
        "nce",
        "--source",
        str(path / "z.npy"),
        "--target",
        str(path / "y.npz"),
        "-o",
        str(out_file),
    )
    assert code == 0 and out == ""
    assert json.loads(out_file.read_text())["shape"] == [2, 3]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["--estimator", "nope", "--source", "{p}/z.npy", "--target", "{p}/y.npz"],
            "unknown estimator 'nope'",
        ),
        (["--estimator", "nce", "--source", "{p}/missing.npy", "--target", "{p}/y.npz"], "no such file"),
        (["--estimator", "nce", "--source", "{p}/garbage.npy", "--target", "{p}/y.npz"], "not a readable"),
        (["--estimator", "nce", "--source", "{p}/obj.npy", "--target", "{p}/y.npz"], "Python objects"),
        (["--estimator", "nce", "--source", "{p}/z.npy", "--target", "{p}/short.npy"], "samples"),
        (["--estimator", "nce", "--source", "{p}/z.npy", "--target", "{p}/y.npz:nokey"], "no array 'nokey'"),
        (["--estimator", "nce", "--source", "{p}/two.npz", "--target", "{p}/y.npz"], "choose one"),
        (["--estimator", "nce", "--source", "{p}/cube.npy", "--target", "{p}/y.npz"], "expected labels"),
        (
            ["--estimator", "nce", "--source", "{p}/z.npy", "--target", "{p}/y.npz", "--l2", "1"],
            "--l2 applies",
        ),
        (
            ["--estimator", "leep", "--source", "{p}/z.npy", "--target", "{p}/y.npz"],
            "source_probs has 2 samples",
        ),
    ],
)
def test_bad_input_one_line_exit_2(capsys, label_files, argv, words):
    path, _, _ = label_files
    (path / "garbage.npy").write_bytes(b"this is not numpy")
    np.save(path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(path / "short.npy", np.zeros((3, 10), dtype=np.int64))
    np.savez(path / "two.npz", a=np.zeros(60, int), b=np.zeros(60, int))
    np.save(path / "cube.npy", np.zeros((2, 2, 2, 2), dtype=np.int64))
    code, out, err = run(capsys, "score", *[a.format(p=path) for a in argv])
    assert code == 2
    assert out == ""
    assert err.startswith("jaxtransfer: error:") and words in err
    assert len(err.strip().splitlines()) == 1


def test_list_names_every_estimator(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in jt.available_estimators():
        assert name in out


def test_console_script_runs_as_module():
    proc = subprocess.run(
        [sys.executable, "-m", "jaxtransfer", "list"], capture_output=True, text=True, check=True
    )
    assert "linear_mse" in proc.stdout


def test_nleep_takes_a_seed(capsys, tmp_path, rng):
    f = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "y.npy", y)
    argv = [
        "score",
        "--estimator",
        "nleep",
        "--source",
        str(tmp_path / "f.npy"),
        "--target",
        str(tmp_path / "y.npy"),
    ]
    code, out, err = run(capsys, *argv, "--seed", "3")
    assert code == 0, err
    import jax

    expected = float(jt.nleep(f, y, key=jax.random.key(3)))
    assert json.loads(out)["scores"][0][0] == pytest.approx(expected, rel=1e-6)


def test_logme_regression_targets(capsys, tmp_path, rng):
    f = rng.standard_normal((50, 4))
    y = f @ rng.standard_normal((4, 2)) + 0.1 * rng.standard_normal((50, 2))
    np.save(tmp_path / "f.npy", f)
    np.save(tmp_path / "y.npy", y)
    argv = [
        "score",
        "--estimator",
        "logme",
        "--source",
        str(tmp_path / "f.npy"),
        "--target",
        str(tmp_path / "y.npy"),
    ]
    code, out, err = run(capsys, *argv, "--task", "regression")
    assert code == 0, err
    expected = float(jt.logme(f, y, task="regression"))
    assert json.loads(out)["scores"][0][0] == pytest.approx(expected, rel=1e-6)
    code, _, err = run(
        capsys,
        "score",
        "--estimator",
        "nce",
        "--source",
        str(tmp_path / "f.npy"),
        "--target",
        str(tmp_path / "y.npy"),
        "--task",
        "regression",
    )
    assert code == 2 and "--task applies" in err


# --- score over many source files ------------------------------------------------------


@pytest.fixture
def feature_files(tmp_path, rng):
    """Five sources of features [50, 4], one .npy per file in ``sources/``, and two label targets."""
    y = rng.integers(0, 3, (2, 50))
    f = np.eye(3)[y[0]] @ rng.standard_normal((5, 3, 4)) + rng.standard_normal((5, 50, 4))
    f = f.astype(np.float32)
    folder = tmp_path / "sources"
    folder.mkdir()
    for i, name in enumerate(["vit", "resnet", "convnext", "mlp", "deit"]):
        np.save(folder / f"{name}.npy", f[i])
    np.save(tmp_path / "y.npy", y)
    order = [2, 4, 3, 1, 0]  # the files sorted by name: convnext, deit, mlp, resnet, vit
    return folder, f[order], y


@pytest.mark.parametrize("form", ["folder", "glob", "files"])
def test_score_one_source_per_file_matches_stacked(capsys, feature_files, form):
    folder, f, y = feature_files
    spec = {
        "folder": [str(folder)],
        "glob": [str(folder / "*.npy")],
        "files": [str(p) for p in sorted(folder.glob("*.npy"))],
    }[form]
    argv = ["score", "--estimator", "logme", "--source", *spec, "--target", str(y_path(folder))]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    result = json.loads(out)
    assert result["sources"] == ["convnext", "deit", "mlp", "resnet", "vit"]
    assert result["targets"] == [0, 1] and result["shape"] == [5, 2]
    np.testing.assert_allclose(result["scores"], np.asarray(jt.score_matrix("logme", f, y)), rtol=1e-5)


def y_path(folder):
    return folder.parent / "y.npy"


def test_score_files_csv_has_source_names(capsys, feature_files):
    folder, f, y = feature_files
    argv = ["score", "--estimator", "linear_mse", "--source", str(folder), "--target", str(y_path(folder))]
    code, out, err = run(capsys, *argv, "--stacked", "--l2", "0.5", "--format", "csv")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "source,target,score" and len(lines) == 1 + 5 * 2
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows[::2]] == ["convnext", "deit", "mlp", "resnet", "vit"]
    # linear_mse takes real-valued targets: with --stacked, the label file is T = 2 targets of values [n]
    want = np.asarray(jt.score_matrix("linear_mse", f, y.astype(np.float32), l2=0.5))
    np.testing.assert_allclose([float(r[2]) for r in rows], want.ravel(), rtol=1e-5)


def test_score_one_stacked_file_in_several_chunks(capsys, monkeypatch, feature_files):
    from jaxtransfer.estimators import _source_stream

    folder, f, y = feature_files
    np.save(folder.parent / "stacked.npy", f)
    monkeypatch.setattr(_source_stream, "CHUNK_BYTES", 2 * f[0].nbytes)  # chunks of 2 sources
    argv = ["score", "--estimator", "hscore", "--source", str(folder.parent / "stacked.npy")]
    code, out, err = run(capsys, *argv, "--target", str(y_path(folder)))
    assert code == 0, err
    result = json.loads(out)
    assert result["sources"] == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(result["scores"], np.asarray(jt.score_matrix("hscore", f, y)), rtol=1e-5)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("{p}/empty", "the folder {p}/empty holds no .npy file"),
        ("{p}/nothing*.npy", "no file matches the pattern '{p}/nothing*.npy'"),
        ("{p}/sources/bad/*.npy", "one source per file, features as a 2-D array, got shape [2, 50, 4]"),
    ],
)
def test_score_bad_source_files(capsys, feature_files, spec, words):
    folder, f, _ = feature_files
    p = folder.parent
    (p / "empty").mkdir()
    (folder / "bad").mkdir()
    np.save(folder / "bad" / "stacked.npy", f[:2])
    argv = ["score", "--estimator", "logme", "--source", spec.format(p=p), "--target", str(p / "y.npy")]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("jaxtransfer: error: --source") and words.format(p=p) in err, err
    assert len(err.strip().splitlines()) == 1


# --- jaxtransfer zoo ---------------------------------------------------------------


def test_zoo_list(capsys, monkeypatch, tmp_path):
    from jaxtransfer.cli import main

    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v2" in out and "efficientnet_lite2" in out and str(tmp_path) in out
    assert main(["zoo", "list", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [224, 224, 240, 260] and not any(r["cached"] for r in rows)


def test_zoo_fetch_offline_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    from jaxtransfer.cli import main

    monkeypatch.setenv("JAXTRANSFER_CACHE", str(tmp_path))
    monkeypatch.setenv("JAXTRANSFER_OFFLINE", "1")
    assert main(["zoo", "fetch", "mobilenet_v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtransfer: error: mobilenet_v2: weights not in the cache") and "zoo fetch" in err
    assert main(["zoo", "predict", str(tmp_path / "x.png"), "--model", "resnet"]) == 2


def test_zoo_predict_bad_images(capsys, tmp_path):
    from jaxtransfer.cli import main

    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4, 3), np.uint8))
    np.save(tmp_path / "ints.npy", np.zeros((16, 16, 3), np.int64))
    cases = {
        str(tmp_path / "missing.png"): "no such file",
        str(tmp_path / "notes.txt"): "is not a readable image",
        str(tmp_path / "flat.npy"): "at least 8×8",
        str(tmp_path / "ints.npy"): "expected uint8",
    }
    for path, words in cases.items():
        assert main(["zoo", "predict", path]) == 2
        assert words in capsys.readouterr().err
    assert main(["zoo", "predict", str(tmp_path / "flat.npy"), "--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err


@pytest.mark.network
@pytest.mark.slow
def test_zoo_predict_png(capsys, tmp_path):
    from PIL import Image

    from jaxtransfer.cli import main

    data = pytest.importorskip("skimage.data")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    assert (
        main(["zoo", "predict", str(tmp_path / "coffee.png"), "--model", "mobilenet_v2", "--format", "json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    top = result["predictions"][0]["top"][0]
    assert top["class"] == 967 and top["name"] == "espresso" and top["probability"] > 0.5
