"""A tiny-size run of the LogME benchmark, so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_logme_benchmark_smoke(tmp_path):
    out = tmp_path / "logme.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_logme.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["case"] == "logme_binary" and report["tiny"]
    assert row["speedup"] > 0 and row["compile_s"] > 0 and row["all_sources_at_once"]["speedup"] > 0
    # float32 jaxtransfer agrees with the float64 NumPy LogME it is timed against
    assert row["max_abs_diff_vs_baseline"] < 1e-4
