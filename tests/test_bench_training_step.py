"""A tiny-size run of the training-step benchmark, so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_step_benchmark_smoke(tmp_path):
    out = tmp_path / "training_step.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training_step.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["tiny"]
    rows = {row["case"]: row for row in report["results"]}
    timed = {"plain", "aux_linear_mse", "aux_logme", "aux_leep", "eval_forward", "eval_logme_metric"}
    assert timed | {"eval_logme", "logme_metric_compute", "metric_vs_whole_array"} == set(rows)
    for name in timed:
        assert rows[name]["ratio"] > 0 and rows[name]["compile_s"] > 0
    assert rows["plain"]["ratio"] == 1.0 and rows["eval_forward"]["ratio"] == 1.0
    # the metric's LogME (Gram route, float32) against the whole-array LogME of the same batch:
    # 32 samples of 64 ReLU features, rank-deficient, so float32 agreement is loose
    assert rows["metric_vs_whole_array"]["abs_diff"] < 1e-2
