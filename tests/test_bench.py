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
