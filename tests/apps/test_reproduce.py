"""The estimator-quality protocols (`jaxtransfer reproduce`): shared pieces and the quick runs."""

import json

import numpy as np
import pytest

from jaxtransfer import sources
from jaxtransfer.apps.reproduce import _common as q
from jaxtransfer.cli import main


def test_off_diagonal_hand_worked():
    m = np.arange(9).reshape(3, 3)  # rows: sources, columns: targets
    np.testing.assert_array_equal(q.off_diagonal(m), [[3, 1, 2], [6, 7, 5]])
    with pytest.raises(ValueError, match="square"):
        q.off_diagonal(np.zeros((2, 3)))


def test_target_variance_share():
    a = np.array([[1.0, 5.0], [1.0, 5.0]])  # all of the variance is between targets
    assert q.target_variance_share(a) == pytest.approx(1.0)
    b = np.array([[0.0, 1.0], [1.0, 0.0]])  # target means equal: none of it
    assert q.target_variance_share(b) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    c = rng.normal(size=(6, 4))
    between = 6 * np.sum((c.mean(0) - c.mean()) ** 2)
    assert q.target_variance_share(c) == pytest.approx(between / np.sum((c - c.mean()) ** 2))


def test_model_cache_trains_once(tmp_path):
    calls = []

    def fit():
        calls.append(1)
        return sources.MLP(2, in_features=3, hidden=(4,), seed=len(calls))

    cache = q.ModelCache(tmp_path, "unit", {"a": 1})
    first = cache.get_or_train("m", fit)
    second = q.ModelCache(tmp_path, "unit", {"a": 1}).get_or_train("m", fit)
    assert len(calls) == 1
    np.testing.assert_array_equal(np.asarray(first.head.kernel[...]), np.asarray(second.head.kernel[...]))
    assert q.ModelCache(tmp_path, "unit", {"a": 2}).folder != cache.folder  # another config, another folder
    (cache.folder / "m.npz").write_bytes(b"not a model")
    q.ModelCache(tmp_path, "unit", {"a": 1}).get_or_train("m", fit)  # a broken file is retrained
    assert len(calls) == 2


def test_cached_results_keyed_by_their_config(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"acc": np.arange(3.0) + len(calls), "seconds": 1.5}

    cache = q.ModelCache(tmp_path, "unit", {"a": 1})
    first = cache.get_or_compute("r", {"epochs": 3}, compute)
    again = q.ModelCache(tmp_path, "unit", {"a": 1})
    second = again.get_or_compute("r", {"epochs": 3}, compute)
    assert len(calls) == 1 and again.result_hits == 1
    np.testing.assert_array_equal(first["acc"], second["acc"])
    assert float(second["seconds"]) == 1.5
    third = again.get_or_compute("r", {"epochs": 4}, compute)  # another transfer config: computed anew
    assert len(calls) == 2 and third["acc"][0] == 2.0


def _check_results(folder):
    results = json.loads((folder / "results.json").read_text())
    report = (folder / "report.md").read_text()
    assert "do not edit by hand" in report and "| estimator |" in report
    assert list((folder).glob("*.png"))
    return results, report


@pytest.mark.slow
def test_reproduce_attributes_quick(tmp_path, capsys):
    assert main(["reproduce", "attributes", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0  # fmt: skip
    results, report = _check_results(tmp_path / "attributes")
    assert [d["dataset"] for d in results["datasets"]] == ["digits", "mnist", "sprites"]
    for d in results["datasets"]:
        t = len(d["tasks"])
        for name, mat in d["scores"].items():
            assert np.asarray(mat).shape == (t, t) and np.all(np.isfinite(mat)), name
        ev = d["evaluation"]["head_accuracy"]
        assert {"nce_labels", "nce_predicted", "leep", "logme", "gbc", "target_only"} <= set(ev)
        assert np.isnan(ev["target_only"]["spearman_within"][0])  # constant within each target
        acc = np.asarray(d["actual"]["head_accuracy"])
        assert np.all((acc >= 0) & (acc <= 1))
    assert "Hardness H(Y)" in report
    # NCE from labels: the conditional entropy of the tasks' train-half labels, from NumPy counts
    from jaxtransfer.datasets import digits_attribute_tasks
    from jaxtransfer.transfer import split_mask

    d = results["datasets"][0]
    labels = digits_attribute_tasks().labels[:4, : d["n"]][:, split_mask(d["n"], seed=0)]
    for s_i, src in enumerate(labels):
        for t_i, tgt in enumerate(labels):
            joint = np.zeros((src.max() + 1, tgt.max() + 1))
            np.add.at(joint, (src, tgt), 1.0)
            p = joint / joint.sum()
            cond = p / p.sum(axis=1, keepdims=True)
            expected = np.sum(p[p > 0] * np.log(cond[p > 0]))
            assert d["scores"]["nce_labels"][s_i][t_i] == pytest.approx(expected, abs=1e-5)
    assert "wrote" in capsys.readouterr().out
    # a second run loads every source model from the cache
    assert main(["reproduce", "attributes", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "attributes" / "results.json").read_text())
    sizes = [len(d["tasks"]) for d in again["datasets"]]
    assert [d["cached_models"] for d in again["datasets"]] == sizes
    assert [d["cached_transfer_results"] for d in again["datasets"]] == sizes
    np.testing.assert_allclose(
        again["datasets"][0]["scores"]["logme"], results["datasets"][0]["scores"]["logme"], rtol=1e-5
    )


@pytest.mark.slow
def test_reproduce_keypoints_quick(tmp_path):
    assert main(["reproduce", "keypoints", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0  # fmt: skip
    results, report = _check_results(tmp_path / "keypoints")
    k = len(results["keypoints"])
    assert set(results["actual"]) == {"head", "fine_tune_half", "fine_tune_full"}
    for name, mat in results["scores"].items():
        assert np.asarray(mat).shape == (k, k) and np.all(np.isfinite(mat)), name
    for truth in results["actual"].values():
        assert np.all(np.asarray(truth) < 0)  # −MSE
    assert set(results["time_per_pair"]) == {
        "linear_mse_l0", "linear_mse_l1", "label_mse_l0", "label_mse_l1", "logme_features", "logme_labels",
        "transrate_features", "transrate_labels",
    }  # fmt: skip
    assert "Time per pair" in report


def test_reproduce_bad_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["reproduce", "keypoints", "--quick", "--out", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err
