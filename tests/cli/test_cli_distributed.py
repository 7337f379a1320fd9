"""`jaxtransfer score` in multi-process mode: two processes on localhost equal one (issue #12)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "jaxtransfer"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args: list[str], out: Path) -> None:
    port = _port()
    procs = [
        subprocess.Popen(
            [
                *CLI,
                *args,
                "--out",
                str(out),
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
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]


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
