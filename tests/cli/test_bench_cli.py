"""``jaxtransfer bench`` and ``jaxtransfer.apps.microbench``: figures consistent, JSON round-trips."""

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtransfer.apps import flop_model, microbench, microbench_table, time_call
from jaxtransfer.cli import main

TINY = dict(sources=4, targets=3, samples=120, dim=8, classes=3, source_classes=4, repeats=2, matmul_size=64)
ARGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def _check_row(row, report):
    s, t = report["config"]["sources"], report["config"]["targets"]
    run = row["run"]
    assert row["compile_s"] > 0
    assert 0 < run["min_s"] <= run["q25_s"] <= run["median_s"] <= run["q75_s"] <= run["max_s"]
    assert row["pairs"] == s * t
    np.testing.assert_allclose(row["pairs_per_s"], s * t / run["median_s"], rtol=1e-12)
    if row["flops"] is not None:
        np.testing.assert_allclose(row["achieved_flops_per_s"], row["flops"] / run["median_s"], rtol=1e-12)
        np.testing.assert_allclose(
            row["fraction_of_matmul_rate"],
            row["achieved_flops_per_s"] / report["matmul"]["total_flops_per_s"],
            rtol=1e-12,
        )
    assert row["peak_memory"]["bytes"] > 0
    assert row["scores"]["shape"] == [s, t] and row["scores"]["finite_fraction"] == 1.0


def test_cli_table_and_json_round_trip(capsys, tmp_path):
    path = tmp_path / "bench.json"
    code = main(["bench", "--estimator", "linear_mse", "--estimator", "nce", *ARGS, "--json", str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(path.read_text())
    assert json.loads(json.dumps(report)) == report
    assert [r["estimator"] for r in report["results"]] == ["linear_mse", "nce"]
    for row in report["results"]:
        _check_row(row, report)
        assert row["estimator"] in out
    mm = report["matmul"]
    assert mm["size"] == 64 and mm["flops"] == 2 * 64**3
    np.testing.assert_allclose(mm["flops_per_s"], mm["flops"] / mm["median_s"], rtol=1e-12)
    # the table is the report's own rendering, and both stages were timed on the features
    assert out.strip() == microbench_table(report).strip()
    assert set(report["stages"]) == {"gram", "eigh", "model"}
    assert report["stages"]["gram"]["flops"] == 2 * 120 * 8 * 8 * 4
    env = report["environment"]
    assert env["backend"] == "cpu" and env["devices"] and env["jax"] and "commit" in env["code"]
    np.testing.assert_allclose(report["total_median_s"], sum(r["run"]["median_s"] for r in report["results"]))
    nce, lin = (r["scores"]["mean"] for r in reversed(report["results"]))
    # NCE = −H(Y|Z) ∈ [−log C, 0], close to −log C for independent uniform labels (n = 120 ≫ Cz·C)
    assert -math.log(3) <= nce <= 0 and nce < -0.8 * math.log(3)
    # −(MSE + penalty) of 3 one-hot columns: at most their total variance 1 − 1/C ≈ 0.667, and noise
    # features explain at most a small share of it
    assert -0.7 <= lin <= -0.5


def test_chunked_sources_score_as_whole():
    """Sources made and scored 2 at a time (the last chunk overlapping) give the same scores and
    the chunks' times summed."""
    cfg = {**TINY, "sources": 5, "stages": False}
    whole = microbench("nce", **cfg)
    chunked = microbench("nce", source_chunk=2, **cfg)
    a, b = whole["results"][0], chunked["results"][0]
    assert (a["chunks"], b["chunks"], b["source_chunk"]) == (1, 3, 2)
    assert b["run"]["chunks_summed"] == 3 and b["scores"]["shape"] == [5, 3]
    np.testing.assert_allclose(b["scores"]["mean"], a["scores"]["mean"], rtol=1e-6)


def test_float64_runs_under_x64_and_leaves_it_off():
    report = microbench("nce", dtype="float64", **TINY)
    assert report["config"]["dtype"] == "float64" and report["matmul"]["dtype"] == "float64"
    assert report["results"][0]["scores"]["finite_fraction"] == 1.0
    assert jnp.zeros(()).dtype == jnp.float32


def test_flop_model_hand_counts():
    sizes = dict(sources=2, targets=3, samples=100, dim=10, classes=4, source_classes=5)
    # LogME: per source Gram 2·100·10·10 + eigh 9·10³ + basis 2·100·10·10; per pair 4·100·10·4
    assert flop_model("logme", **sizes)["flops"] == 2 * (20000 + 9000 + 20000) + 6 * 16000
    # Linear MSE, λ = 1 ≥ √eps·d: Gram + Cholesky 10³/3; per pair 4·100·10·4 + 2·10²·4
    assert flop_model("linear_mse", **sizes)["flops"] == pytest.approx(2 * (20000 + 1000 / 3) + 6 * 16800)
    # λ = 0 takes the spectrum, as LogME
    assert flop_model("linear_mse", l2=0.0, **sizes)["flops"] == flop_model("logme", **sizes)["flops"]
    assert flop_model("nce", **sizes)["flops"] == 6 * 2 * 100 * 5 * 4
    assert flop_model("leep", **sizes)["flops"] == 6 * 2 * 100 * 5 * 5
    assert flop_model("gbc", **sizes) is None


def test_time_call_counts_calls_and_orders_quantiles():
    calls = []
    t = time_call(lambda: calls.append(1) or jnp.zeros(()), repeats=4, warmup=2)
    assert len(calls) == 6 and t["repeats"] == 4
    assert 0 < t["min_s"] <= t["q25_s"] <= t["median_s"] <= t["q75_s"] <= t["max_s"]
    with pytest.raises(ValueError, match="repeats must be a positive int, got 0"):
        time_call(lambda: 0, repeats=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--estimator", "nope"], "unknown estimator 'nope'"),
        (["--estimator", "hardness"], "hardness takes no source"),
        (["--estimator", "nce", "--sources", "0"], "expected a positive integer (1 or more), got 0"),
        (["--estimator", "nce", "--memory-fraction", "2"], "expected a number in (0, 1], got 2.0"),
        (["--estimator", "nce", "--out", "a.json", "--json", "b.json"], "--json is another name for --out"),
        (["--estimator", "nce", "--dtype", "float16"], "invalid choice: 'float16'"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code = main(["bench", *argv])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.json").exists()


def test_library_bad_input():
    with pytest.raises(ValueError, match="dtype must be one of float32, float64, got 'float16'"):
        microbench("nce", dtype="float16")
    with pytest.raises(ValueError, match="samples must be a positive int, got 0"):
        microbench("nce", samples=0)
    with pytest.raises(ValueError, match="devices must be 'first' or 'all', got 'gpu'"):
        microbench("nce", devices="gpu")
    with pytest.raises(TypeError, match="estimators must be names"):
        microbench([3])


def test_devices_all_shards_sources_over_two_cpu_devices(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jaxtransfer", "bench", "--estimator", "nce", "--devices", "--quiet"]
    done = subprocess.run(
        [*cmd, *ARGS, "--out", str(tmp_path / "b.json")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert len(report["environment"]["devices"]) == 2 and report["matmul"]["devices"] == 2
    np.testing.assert_allclose(report["matmul"]["total_flops_per_s"], 2 * report["matmul"]["flops_per_s"])
    _check_row(report["results"][0], report)
    odd = subprocess.run(
        [*cmd, *ARGS, "--sources", "3"], env=env, capture_output=True, text=True, timeout=300
    )
    assert odd.returncode == 2
    assert "sources must be a multiple of the 2 devices to shard over, got 3" in odd.stderr
