"""Two jax.distributed processes on localhost (gloo): sources, then samples, split across them (#12)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from scale_data import ESTIMATORS, inputs

import jaxtransfer as jt

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    port, out = _free_port(), tmp_path / "scores.json"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_worker.py"), str(port), str(i), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    got = json.loads(out.read_text())
    assert got["devices"] == 4 and got["local_devices"] == 2
    for name in ESTIMATORS:
        src, tgt, opts = inputs(name)
        ref = np.asarray(jt.score_matrix(name, src, tgt, **opts))
        scale = np.max(np.abs(ref))
        assert np.max(np.abs(np.asarray(got[name]["sources"]) - ref)) <= 1e-6 * scale, name
        tol = 0 if name == "nce" else 5e-6  # counts are exact
        assert np.max(np.abs(np.asarray(got[name]["samples"]) - ref)) <= tol * scale, name
        assert got[name]["sources_spec"] == "P('x', None)", name
