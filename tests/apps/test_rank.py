"""The main job, `jaxtransfer rank`: small source models on digits end to end, outputs, bad input."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxtransfer import sources
from jaxtransfer.apps import SourceSpec, default_dataset, rank, ranked_table, write_outputs
from jaxtransfer.cli import main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = load_digits()
    x, y = (d.images / 16).astype(np.float32), d.target
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for name, target, seed in (("digit", y, 0), ("parity", y % 2, 1)):
        init = sources.SmallCNN(int(target.max()) + 1, channels=(8, 16), hidden=16, seed=seed)
        model, _ = sources.train(init, x[:600], target[:600], epochs=3, batch_size=64, seed=seed)
        paths.append(str(sources.save(folder / f"{name}.npz", model)))
    paths.append(
        str(sources.save(folder / "untrained.npz", sources.MLP(3, in_features=64, hidden=(16,), seed=5)))
    )
    return paths


def test_rank_end_to_end(models, tmp_path):
    images, labels, names = default_dataset(400)
    specs = [SourceSpec.parse(p) for p in models] + [SourceSpec(models[0], "conv1")]
    result = rank(
        images, labels[:6], names[:6], specs, num_bootstrap=50, progress=False, print_fn=lambda *a: None
    )
    assert result.sources[-1].endswith(":conv1") and len(result.targets) == 6
    for est in (
        "logme",
        "linear_mse",
        "hscore",
        "shrinkage_hscore",
        "transrate",
        "gbc",
        "nleep",
        "leep",
        "nce",
    ):
        assert result.scores[est].shape == (4, 6), est
    assert np.isnan(
        result.scores["leep"][3]
    ).all()  # a layer has no head: prediction-based estimators skip it
    assert np.all((result.actual > 0.3) & (result.actual <= 1))
    ev = result.evaluation["logme"]
    assert -1 <= ev["spearman_within"][0] <= 1 and ev["spearman_within"][1] <= ev["spearman_within"][2]
    assert "leep" in result.evaluation  # three sources with heads
    table = ranked_table(result)
    assert "accuracy" in table and "digit.npz" in table
    files = write_outputs(result, tmp_path / "out")
    names_written = {p.name for p in files}
    assert {
        "scores.json",
        "scores.csv",
        "evaluation.json",
        "evaluation.csv",
        "summary.png",
        "logme.png",
    } <= names_written
    doc = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert np.allclose(doc["actual_accuracy"], result.actual)
    assert (tmp_path / "out" / "logme.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_cli_rank_json_and_files(models, tmp_path, capsys):
    data = tmp_path / "data.npz"
    d = load_digits()
    np.savez(
        data,
        images=(d.images[:300] * 16).astype(np.uint8),
        labels=np.stack([d.target[:300] % 2, d.target[:300] >= 5], 1).astype(int),
        names=np.array(["odd", "ge5"]),
    )
    code = main(
        [
            "rank",
            "--data",
            str(data),
            "--sources",
            *models[:2],
            "--bootstrap",
            "20",
            "--format",
            "json",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["targets"] == ["odd", "ge5"] and len(out["sources"]) == 2
    assert set(out["timings_s"]) >= {"features", "scores", "ground_truth", "evaluation", "outputs", "total"}
    assert (tmp_path / "o" / "evaluation.csv").is_file()


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"images": np.zeros((5, 8, 8)), "label": np.zeros(5)}, "needs arrays 'images' and 'labels'"),
        ({"images": np.zeros((5, 8)), "labels": np.arange(5) % 2}, "images must be [N, H, W]"),
        ({"images": np.zeros((5, 8, 8), np.int64), "labels": np.arange(5) % 2}, "uint8"),
        ({"images": np.zeros((5, 8, 8)), "labels": np.arange(4) % 2}, "labels must be [N] or [N, T] for N=5"),
        ({"images": np.zeros((0, 8, 8)), "labels": np.zeros(0, int)}, "empty"),
        ({"images": np.zeros((5, 8, 8)), "labels": np.zeros(5, int)}, "single class"),
        ({"images": np.zeros((5, 8, 8)), "labels": np.linspace(0, 1, 5)}, "non-negative integers"),
    ],
)
def test_cli_rank_bad_data(tmp_path, capsys, arrays, words):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    out = tmp_path / "out"
    assert main(["rank", "--data", str(data), "--sources", "x.npz", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxtransfer: error:") and words in err and err.count("\n") == 1
    assert not out.exists()  # nothing half-written


def test_cli_rank_bad_arguments(tmp_path, capsys, models):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    cases = [
        (["--data", str(tmp_path / "missing.npz")], "no such file"),
        (["--data", str(tmp_path / "junk.npz")], "not a readable .npz"),
        (["--sources", "resnet9000"], "neither a zoo backbone"),
        (["--sources", f"{models[0]}:nope", "--max-samples", "50"], "no layer 'nope'"),
        (["--sources", models[0], "--estimators", "hardness"], "do not apply"),
        (["--max-samples", "3"], "--max-samples must be at least 10"),
    ]
    for argv, words in cases:
        assert main(["rank", *argv]) == 2, argv
        assert words in capsys.readouterr().err, argv


@pytest.mark.network
@pytest.mark.slow
def test_rank_zoo_backbone_small(tmp_path, capsys):
    argv = ["rank", "--sources", "mobilenet_v2", "--layers", "stage6", "--max-samples", "120",
            "--image-size", "32", "--bootstrap", "20", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "mobilenet_v2:stage6" in text and "stage times:" in text
    assert (tmp_path / "summary.png").is_file()
