"""The estimator-quality protocols (`jaxtransfer reproduce`): shared pieces and the quick runs."""

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats

import jaxtransfer
from jaxtransfer import sources
from jaxtransfer.apps.reproduce import KEYPOINTS_QUICK
from jaxtransfer.apps.reproduce import _common as q
from jaxtransfer.cli import main
from jaxtransfer.cli._reproduce import add_reproduce_parser

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    """``git <args>``'s output at the repository root; None without git or outside a checkout of it."""
    if shutil.which("git") is None:
        return None
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode or Path(top.stdout.strip()).resolve() != ROOT:
        return None
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_pairs_mask_and_judge_leave_out_self_pairs():
    np.testing.assert_array_equal(
        q.pairs_mask(3), [[False, True, True], [True, False, True], [True, True, False]]
    )
    actual = np.array([[9.0, 0.8, 0.3], [0.6, 9.0, 0.9], [0.4, 0.2, 9.0]])  # the diagonal would dominate
    scores = {"good": actual.copy(), "bad": -actual}
    got = q.judge(scores, {"acc": actual}, mask=q.pairs_mask(3), num_bootstrap=0, seed=0)
    assert got["acc"]["good"]["kendall_within"] == [1.0, 1.0, 1.0]
    assert got["acc"]["bad"]["kendall_within"] == [-1.0, -1.0, -1.0]
    off = q.pairs_mask(3)
    expected = np.corrcoef(actual[off], actual[off])[0, 1]
    assert got["acc"]["good"]["pearson_pooled"][0] == pytest.approx(expected)


def test_ceilings_from_runs():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 5))
    mask = q.pairs_mask(5)
    same = q.ceilings({"head": np.stack([base, base])}, mask=mask, num_bootstrap=10, seed=0)["head"]
    assert same["between_seeds"]["kendall_within"] == [1.0, 1.0, 1.0]  # a deterministic transfer
    assert same["ceiling"]["kendall_within"] == [1.0, 1.0, 1.0]
    assert "top1_hit" in same["between_seeds"] and "top1_hit" not in same["ceiling"]
    assert q.ceilings({"head": base[None]}, mask=mask, num_bootstrap=10, seed=0) == {}  # one seed: none
    runs = base[None] + 0.5 * rng.normal(size=(3, 5, 5))
    got = q.ceilings({"ft": runs}, mask=mask, num_bootstrap=0, seed=0)["ft"]
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    kendall = np.mean(
        [np.mean([stats.kendalltau(runs[i][mask[:, t], t], runs[j][mask[:, t], t])[0] for t in range(5)])
         for i, j in pairs]
    )  # fmt: skip
    assert got["between_seeds"]["kendall_within"][0] == pytest.approx(kendall, rel=1e-5)
    r = np.sin(np.pi * kendall / 2)
    assert got["ceiling"]["kendall_within"][0] == pytest.approx(
        2 / np.pi * np.arcsin(np.sqrt(3 * r / (1 + 2 * r)))
    )


def test_seeds_option_and_command():
    cfg = q.check_seeds(KEYPOINTS_QUICK, None)
    assert cfg.seeds == 1 and q.check_seeds(KEYPOINTS_QUICK, 4).seeds == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            ValueError, match=r"seeds must be an integer >= 1 \(transfer runs per pair\), got"
        ):
            q.check_seeds(KEYPOINTS_QUICK, bad)
    assert q.command("keypoints", True, 1) == "jaxtransfer reproduce keypoints --quick"
    assert q.command("keypoints", True, 2) == "jaxtransfer reproduce keypoints --quick --seeds 2"
    assert q.command("attributes", False, q.DEFAULT_SEEDS) == "jaxtransfer reproduce attributes"
    assert q.command("attributes", False, 1) == "jaxtransfer reproduce attributes --seeds 1"
    assert "no noise ceiling" in q.ceiling_note(1) and "(Spearman–Brown)" in q.ceiling_note(3)


def test_target_variance_share():
    a = np.array([[1.0, 5.0], [1.0, 5.0]])  # all of the variance is between targets
    # with missing pairs: target 0 has {1, 3} (mean 2), target 1 has {5} (the grand mean is 3)
    m = np.array([[1.0, 5.0], [3.0, np.nan], [100.0, 7.0]])
    mask = np.array([[True, True], [True, True], [False, False]])
    assert q.target_variance_share(m, mask) == pytest.approx((2 * 1 + 1 * 4) / (4 + 0 + 4))
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


def test_default_output_is_not_tracked():
    if _git("rev-parse", "HEAD") is None:
        pytest.skip("not in a git checkout")
    parser = argparse.ArgumentParser()
    add_reproduce_parser(parser.add_subparsers())
    for protocol in ("attributes", "keypoints"):
        out = Path(parser.parse_args(["reproduce", protocol]).out) / protocol
        assert not out.is_absolute() and ".." not in out.parts
        assert _git("ls-files", "--", str(out)) == "", f"{out} holds tracked files"
        assert _git("check-ignore", str(out / "results.json")), f"{out} is not git-ignored"
        # the committed reports exist, and only an explicit --out bench/results/quality rewrites them
        assert _git("ls-files", "--", f"bench/results/quality/{protocol}/results.json")
        assert f"reproduce {protocol} --out bench/results/quality" in (ROOT / "Makefile").read_text()


def test_code_version_outside_a_checkout(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(q.subprocess, "run", no_git)  # no git on the machine: "unknown", never an error
    code = q.code_version()
    assert code == {"jaxtransfer": jaxtransfer.__version__, "commit": "unknown", "dirty": "unknown"}
    results = {"command": "jaxtransfer reproduce keypoints", "code": code, "config": {"seed": 3}}
    assert q.generated_by(results) == (
        "Generated by `jaxtransfer reproduce keypoints` (jaxtransfer "
        f"{jaxtransfer.__version__}, commit unknown; seed 3); do not edit by hand."
    )


def _check_results(folder, protocol, command=None):
    results = json.loads((folder / "results.json").read_text())
    report = (folder / "report.md").read_text()
    assert "do not edit by hand" in report and "| estimator |" in report
    assert list((folder).glob("*.png"))
    # the code version and the configuration that produced the report
    assert results["protocol"] == protocol and results["quick"] is True
    assert results["command"] == (command or f"jaxtransfer reproduce {protocol} --quick")
    assert results["config"]["seed"] == 0 and results["config"]["num_bootstrap"] == 20
    assert results["environment"]["jax"] == jax.__version__
    assert results["environment"]["platform"] == jax.default_backend()
    code = results["code"]
    assert code["jaxtransfer"] == jaxtransfer.__version__
    head = _git("rev-parse", "HEAD") or "unknown"  # outside a checkout: recorded as unknown
    assert code["commit"] == head and isinstance(code["dirty"], bool) == (head != "unknown")
    assert f"`{results['command']}` (jaxtransfer {jaxtransfer.__version__}, commit {head[:12]}" in report
    return results, report


@pytest.mark.slow
def test_reproduce_attributes_quick(tmp_path, capsys):
    assert main(["reproduce", "attributes", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0  # fmt: skip
    results, report = _check_results(tmp_path / "attributes", "attributes")
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
    # two seeds of the transfer runs: the truth is their mean, their agreement the noise ceiling
    assert main(["reproduce", "keypoints", "--quick", "--seeds", "2", "--out", str(tmp_path), "--cache",
                 str(tmp_path / "c"), "--no-progress"]) == 0  # fmt: skip
    command = "jaxtransfer reproduce keypoints --quick --seeds 2"
    results, report = _check_results(tmp_path / "keypoints", "keypoints", command)
    k = len(results["keypoints"])
    assert results["config"]["seeds"] == 2
    assert set(results["actual"]) == {"head", "fine_tune_half", "fine_tune_full"}
    for name, mat in results["scores"].items():
        assert np.asarray(mat).shape == (k, k) and np.all(np.isfinite(mat)), name
    for truth, mat in results["actual"].items():
        runs = np.asarray(results["actual_runs"][truth])
        assert runs.shape == (2, k, k) and np.all(runs < 0)  # −MSE
        np.testing.assert_allclose(mat, runs.mean(axis=0))
    # head retraining is an exact ridge fit: the seeds agree exactly; fine-tuning's do not
    np.testing.assert_array_equal(*results["actual_runs"]["head"])
    assert not np.array_equal(*results["actual_runs"]["fine_tune_full"])
    ceiling = results["noise_ceiling"]
    assert ceiling["head"]["between_seeds"]["kendall_within"] == [1.0, 1.0, 1.0]
    off = ~np.eye(k, dtype=bool)
    a, b = (np.asarray(r) for r in results["actual_runs"]["fine_tune_full"])
    within = np.nanmean([stats.kendalltau(a[off[:, t], t], b[off[:, t], t])[0] for t in range(k)])
    assert ceiling["fine_tune_full"]["between_seeds"]["kendall_within"][0] == pytest.approx(within, abs=1e-6)
    assert "noise ceiling: one seed's transfer vs another's" in report and "Kendall τ within" in report
    expected = {"linear_mse_l0", "linear_mse_l1", "label_mse_l0", "label_mse_l1", "logme_features",
                "logme_labels", "transrate_features", "transrate_labels"}  # fmt: skip
    expected |= {
        e for e in ("heldout_linear_mse", "heldout_label_mse") if e in jaxtransfer.available_estimators()
    }
    assert set(results["time_per_pair"]) == expected
    assert "Time per pair" in report
    # a second run with one seed reuses the first seed's cached transfer and reports no ceiling
    assert main(["reproduce", "keypoints", "--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0  # fmt: skip
    again = json.loads((tmp_path / "keypoints" / "results.json").read_text())
    assert again["cached_transfer_results"] == k and again["noise_ceiling"] == {}
    np.testing.assert_array_equal(again["actual_runs"]["fine_tune_full"][0], a)
    assert "no noise ceiling is measured" in (tmp_path / "keypoints" / "report.md").read_text()


def test_reproduce_bad_out(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["reproduce", "keypoints", "--quick", "--out", str(target)]) == 2
    assert "not a folder" in capsys.readouterr().err
