"""A tiny-size run of the speed benchmark, so that it cannot rot."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import jaxtransfer

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    """``git <args>``'s output at the repository root; None without git or outside a checkout of it."""
    if shutil.which("git") is None:
        return None
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode or Path(top.stdout.strip()).resolve() != ROOT:
        return None
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _recipe(target: str) -> str:
    """The commands of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, flags=re.M)
    assert found, f"no target {target} in the Makefile"
    return found.group(1)


def test_make_bench_writes_outside_the_tracked_results():
    if _git("rev-parse", "HEAD") is None:
        pytest.skip("not in a git checkout")
    outs = re.findall(r"--out (\S+)", _recipe("bench"))
    assert outs
    for out in outs:
        assert _git("ls-files", "--", out) == "", f"make bench overwrites the tracked {out}"
        assert _git("check-ignore", out), f"make bench writes {out}, which git does not ignore"
    # the committed figures are rewritten only on request
    assert "--out bench/results/speed.json" in _recipe("bench-results")


def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_speed.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = json.loads(out.read_text())
    assert report["config"] == {"repeats": 1, "only": None, "seed": 0} and report["tiny"] is True
    assert report["code"]["jaxtransfer"] == jaxtransfer.__version__
    assert report["code"]["commit"] == (_git("rev-parse", "HEAD") or "unknown")
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


def test_streaming_benchmark_smoke(tmp_path):
    out = tmp_path / "streaming.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_streaming.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rows = json.loads(out.read_text())["results"]
    wanted = {"linear_mse", "logme", "hscore", "transrate", "gbc", "nce", "leep"}
    assert wanted <= {r["estimator"] for r in rows}
    for row in rows:  # streamed statistics equal the whole-array estimator in float64
        assert row["float64"]["rel_diff"] < 1e-9, (row["case"], row["estimator"])


def test_out_of_core_benchmark_smoke(tmp_path):
    out = tmp_path / "out_of_core.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_out_of_core.py"), "--tiny", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["tiny"] is True and report["files"]["count"] == report["sizes"]["S"]
    runs = [r for r in report["peak_rss"] if "mode" in r]
    assert {(r["estimator"], r["mode"]) for r in runs} == {
        (e, m) for e in ("linear_mse", "logme") for m in ("stream", "in_memory")
    }
    assert all(r["peak_rss_mib"] > 0 for r in runs)
    for row in report["peak_rss"]:  # the streamed scores equal the in-memory call's
        if "max_abs_diff" in row:
            assert row["max_abs_diff"] < 1e-4, row
    for row in report["time"]:
        assert row["max_abs_diff_streamed_vs_in_memory"] < 1e-4 and row["ratio_streamed_vs_in_memory"] > 0
    assert report["cli"]["cli"]["peak_rss_mib"] > 0 and report["cli"]["floor_peak_rss_mib"] > 0
