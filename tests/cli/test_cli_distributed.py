"""`jaxtransfer score` and `jaxtransfer rank` in multi-process mode: two processes on localhost equal one
(issue #12); and the row bookkeeping of ``jaxtransfer._hosts`` against hand-worked cases."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxtransfer import _hosts as hosts
from jaxtransfer import sources
from jaxtransfer.apps import default_dataset

CLI = [sys.executable, "-m", "jaxtransfer"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args: list[str], out: Path | list[Path], code: int = 0) -> list[tuple[str, str]]:
    """Run ``jaxtransfer ARGS --out OUT`` as processes 0 and 1 (``out``: one path, or one per process),
    each expected to exit with ``code``; returns their (stdout, stderr)."""
    port = _port()
    outs = out if isinstance(out, list) else [out, out]
    procs = [
        subprocess.Popen(
            [
                *CLI,
                *args,
                "--out",
                str(outs[i]),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    printed = []
    for p in procs:
        stdout, err = p.communicate(timeout=600)
        assert p.returncode == code, err[-2000:]
        printed.append((stdout, err))
    return printed


def test_sources_split_over_two_processes(tmp_path):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 80, 6)).astype(np.float32)  # 5 sources: 3 on process 0, 2 on process 1
    np.save(tmp_path / "src.npy", src)
    np.save(tmp_path / "tgt.npy", rng.integers(0, 3, (2, 80)))
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"model{i}.npy", src[i])
    common = ["score", "--estimator", "logme", "--target", str(tmp_path / "tgt.npy")]
    one = tmp_path / "one.json"
    subprocess.run([*CLI, *common, "--source", str(tmp_path / "src.npy"), "--out", str(one)], check=True)
    _two_processes([*common, "--source", str(tmp_path / "src.npy")], tmp_path / "two.json")
    _two_processes([*common, "--source", str(folder)], tmp_path / "files.json")
    ref = json.loads(one.read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    files = json.loads((tmp_path / "files.json").read_text())
    np.testing.assert_allclose(two["scores"], ref["scores"], rtol=1e-6)
    np.testing.assert_allclose(files["scores"], ref["scores"], rtol=1e-6)
    assert files["sources"] == [f"model{i}" for i in range(5)]


def test_incomplete_process_options_are_refused(tmp_path):
    np.save(tmp_path / "src.npy", np.zeros((1, 4, 2), np.float32))
    np.save(tmp_path / "tgt.npy", np.zeros((1, 4), np.int64))
    run = subprocess.run(
        [
            *CLI,
            "score",
            "--estimator",
            "logme",
            "--source",
            str(tmp_path / "src.npy"),
            "--target",
            str(tmp_path / "tgt.npy"),
            "--num-processes",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "--coordinator, --num-processes and --process-id go together" in run.stderr


@pytest.mark.parametrize("value", ["localhost", "host:port"])
def test_bad_coordinator(tmp_path, value):
    np.save(tmp_path / "src.npy", np.zeros((1, 4, 2), np.float32))
    np.save(tmp_path / "tgt.npy", np.zeros((1, 4), np.int64))
    run = subprocess.run(
        [
            *CLI,
            "score",
            "--estimator",
            "logme",
            "--source",
            str(tmp_path / "src.npy"),
            "--target",
            str(tmp_path / "tgt.npy"),
            "--coordinator",
            value,
            "--num-processes",
            "2",
            "--process-id",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "--coordinator must be HOST:PORT" in run.stderr


@pytest.fixture(scope="module")
def rank_inputs(tmp_path_factory):
    """Three small saved models (two CNNs trained briefly, an untrained MLP) and 300 digits with two
    attribute tasks, as files."""
    folder = tmp_path_factory.mktemp("rank")
    d = load_digits()
    x, y = (d.images / 16).astype(np.float32), d.target
    paths = []
    for name, target, seed in (("digit", y, 0), ("parity", y % 2, 1)):
        init = sources.SmallCNN(int(target.max()) + 1, channels=(8, 16), hidden=16, seed=seed)
        model, _ = sources.train(init, x[:600], target[:600], epochs=2, batch_size=64, seed=seed)
        paths.append(str(sources.save(folder / f"{name}.npz", model)))
    mlp = sources.MLP(3, in_features=64, hidden=(16,), seed=5)
    paths.append(str(sources.save(folder / "untrained.npz", mlp)))
    images, labels, names = default_dataset(300)
    data = folder / "data.npz"
    np.savez(data, images=images, labels=labels[:2].T, names=np.array(names[:2]))
    return folder, data, paths


def test_rank_split_over_two_processes_equals_one(rank_inputs):
    """Models split by model (digit and its layer, untrained on process 0; parity on process 1):
    scores, ground truth, evaluation and picks equal the one-process run; process 0 alone prints
    and writes."""
    folder, data, paths = rank_inputs
    common = [
        "rank", "--data", str(data), "--sources", *paths, f"{paths[0]}:conv1",
        "--estimators", "logme", "leep", "hscore", "--bootstrap", "20", "--pick-resamples", "3",
        "--format", "json", "--no-plots",
    ]  # fmt: skip
    # the one-process reference runs beside the two processes (the test's time is mostly compiling)
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = subprocess.Popen([*CLI, *common, "--out", str(folder / "one")], **pipes)
    printed = [out for out, _ in _two_processes(common, [folder / "two0", folder / "two1"])]
    stdout, stderr = one.communicate(timeout=600)
    assert one.returncode == 0, stderr[-2000:]
    assert printed[1] == "" and not (folder / "two1").exists()  # process 1 prints and writes nothing
    ref, two = json.loads(stdout), json.loads(printed[0])
    assert two["sources"] == ref["sources"] and len(ref["sources"]) == 4
    assert two["targets"] == ref["targets"] and two["pick_by"] == ref["pick_by"] == "logme"
    assert set(two["scores"]) == set(ref["scores"]) == {"logme", "leep", "hscore"}
    for est, mat in ref["scores"].items():
        np.testing.assert_allclose(np.array(two["scores"][est], float), np.array(mat, float), rtol=1e-6)
    np.testing.assert_allclose(two["actual_accuracy"], ref["actual_accuracy"], rtol=1e-6)
    assert two["not_computed"] == ref["not_computed"]
    assert list(ref["not_computed"]["leep"]) == [f"{paths[0]}:conv1"]  # a layer has no predictions
    for mine, theirs in zip(two["picks"], ref["picks"], strict=True):
        assert (mine["source"], mine["support"], mine["agree"]) == (
            theirs["source"],
            theirs["support"],
            theirs["agree"],
        )
        np.testing.assert_allclose(mine["margin"], theirs["margin"], rtol=1e-6)
    assert set(two["evaluation"]) == set(ref["evaluation"]) and ref["evaluation"]
    for est, stats in ref["evaluation"].items():
        for name, values in stats.items():
            np.testing.assert_allclose(two["evaluation"][est][name], values, rtol=1e-6, err_msg=name)
    files = sorted(p.name for p in (folder / "one").iterdir())
    assert sorted(p.name for p in (folder / "two0").iterdir()) == files and "picks.csv" in files
    written = json.loads((folder / "two0" / "scores.json").read_text())
    assert [p["source"] for p in written["picks"]] == [p["source"] for p in ref["picks"]]
    np.testing.assert_allclose(written["actual_accuracy"], ref["actual_accuracy"], rtol=1e-6)


def test_rank_source_failing_on_one_process_fails_on_both(rank_inputs):
    """A bad layer of a model on process 1 stops both processes before any extraction, each with the
    error (process 0 saying where it was raised), instead of leaving process 0 waiting for process 1."""
    folder, data, paths = rank_inputs
    common = ["rank", "--data", str(data), "--sources", paths[0], f"{paths[1]}:nolayer", "--format", "json"]
    (out0, err0), (out1, err1) = _two_processes(common, folder / "failed", code=2)
    assert out0 == out1 == "" and not (folder / "failed").exists()
    assert f"source {paths[1]}: no layer 'nolayer'" in err1 and "raised on process" not in err1
    assert f"source {paths[1]}: no layer 'nolayer'" in err0 and "(raised on process 1)" in err0


def test_rows_split_by_model_and_placed_back():
    # models a, b, c in order of first appearance: a -> 0, b -> 1, c -> 0 (k % 2)
    owner = hosts.by_group(["a", "a", "b", "c", "a", "b"], 2)
    assert owner.tolist() == [0, 0, 1, 0, 0, 1]
    assert hosts.local_rows(owner, 0).tolist() == [0, 1, 3, 4]
    assert hosts.local_rows(owner, 1).tolist() == [2, 5]
    assert hosts.strided(5, 2).tolist() == [0, 1, 0, 1, 0]
    assert hosts.by_group(["a", "b"], 3).tolist() == [0, 1]  # process 2 owns nothing
    # each process's rows first in its block of 4, padding after: the global order comes back
    every = np.full((2, 4, 3), -1.0)
    every[0] = np.array([0, 1, 3, 4])[:, None] * 10 + np.arange(3)
    every[1, :2] = np.array([2, 5])[:, None] * 10 + np.arange(3)
    np.testing.assert_array_equal(hosts.place_rows(every, owner), np.arange(6)[:, None] * 10 + np.arange(3))
    with pytest.raises(ValueError, match=r"process 0 owns 4 rows, but each holds only 3"):
        hosts.place_rows(every[:, :3], owner)
    with pytest.raises(ValueError, match=r"owner: expected process indices in \[0, 2\), got 0..2"):
        hosts.place_rows(every, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"count: expected a positive number of processes, got 0"):
        hosts.strided(3, 0)


def test_gather_with_one_process_returns_the_rows():
    owner = hosts.by_group(["a", "b"], 1)
    local = np.arange(6.0).reshape(2, 3)
    assert hosts.gather_rows(local, owner) is local
    assert hosts.gather_json({"x": [1]}) == [{"x": [1]}]
    with pytest.raises(ValueError, match=r"process 0 owns 2 of the 2 rows; got an array of shape \(3, 3\)"):
        hosts.gather_rows(np.zeros((3, 3)), owner)
    with pytest.raises(KeyError), hosts.fail_together():  # one process: the block's own error, untouched
        raise KeyError("x")
