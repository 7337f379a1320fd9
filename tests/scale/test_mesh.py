"""score_matrix over 8 CPU devices: sources, samples and both split, equal to one device (issue #12)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent

# float32, relative to the largest |score|. Sources split: the same arithmetic per source. Samples
# split: the streamed statistics' closed forms (jaxtransfer/estimators/_streaming.py, "Precision");
# counts are exact; TransRate's κ = 1e4 weighs the Gram rounding of the small eigenvalues.
SAMPLE_TOL = {"nce": 0, "conditional_entropy": 0, "hardness": 0, "transrate": 1e-4}
CANNOT_SPLIT = {"nleep", "soft_nce", "heldout_linear_mse", "heldout_label_mse"}


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    run = subprocess.run(
        [sys.executable, str(HERE / "_mesh_worker.py")], capture_output=True, text=True, env=env, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_every_estimator_is_covered(results):
    import jaxtransfer as jt

    assert sorted(results) == jt.available_estimators()


def test_sources_split_equals_one_device(results):
    for name, r in results.items():
        assert _rel(r["sources"], r["single"]) <= 1e-6, name
        assert _rel(r["followed"], r["single8"]) <= 1e-6, name


def test_samples_split_equals_one_device(results):
    for name, r in results.items():
        if name in CANNOT_SPLIT:
            assert r["samples"].startswith(f"ValueError: {name} cannot split its samples"), name
            continue
        tol = SAMPLE_TOL.get(name, 5e-6)
        assert _rel(r["samples"], r["single"]) <= tol, name
        assert _rel(r["both"], r["single"]) <= tol, name


def test_shardings(results):
    for name, r in results.items():
        # validation keeps an S-sharded input where it is
        assert r["validated_sharding"] == "P('d',)", name
        # following the inputs: the output is sharded along S like the sources
        assert r["followed_spec"] == "P('d', None)", name


def test_no_all_gather_of_sources(results):
    for name, r in results.items():
        assert not r["sources_all_gather"], name
    for name in ("linear_mse", "logme", "nce"):
        # the samples split does reduce (the check can see collectives), and gathers nothing
        assert results[name]["samples_all_reduce"] and not results[name]["samples_all_gather"], name
