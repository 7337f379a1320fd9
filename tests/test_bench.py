"""A tiny-size run of the speed benchmark, so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_speed.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    cases = {row["case"]: row for row in report["results"]}
    assert {"linear_mse_ridge", "nce_binary", "nce_10class", "nce_1000x100", "leep"} <= set(cases)
    for row in report["results"]:
        if "speedup" in row:
            assert row["speedup"] > 0 and row["compile_s"] > 0
            # the benchmark's jaxtransfer result agrees with its baseline
            assert row["max_abs_diff_vs_baseline"] < 1e-3, row["case"]


def test_factorisation_benchmark_smoke(tmp_path):
    out = tmp_path / "factorisation.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_factorisation.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rows = json.loads(out.read_text())["results"]
    routes = [r for r in rows if r["case"] == "spectrum"]
    assert {r["features"] for r in routes} == {"easy", "hard"}
    # hard features (condition 1e3 and a large mean) take the SVD; easy ones keep the Gram route
    assert all(r["auto_took"] == ("svd" if r["features"] == "hard" else "gram") for r in routes)
    assert all(r["median_s"] > 0 for r in rows if r["case"] == "score_matrix")
