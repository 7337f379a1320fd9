"""The example programs run (tiny mode) and do what they say."""

import importlib.util
from pathlib import Path

import jax
import numpy as np

import jaxtransfer as jt

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_with_estimators_tiny(capsys):
    example = _load("train_with_estimators")
    out = example.main(["--tiny"])
    printed = capsys.readouterr().out
    run, data = out["run"], out["data"]
    steps = [step for step, _ in run["checkpoints"]]
    assert steps == [10, 20, 30, 40]
    # the checkpoint kept on the device is LogME's argmax, state and all
    assert run["best_step"] == steps[int(np.argmax(run["logme"]))]
    kept = dict(run["checkpoints"])[run["best_step"]]
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(run["best_state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the jitted eval step's scores are the eager estimators' on the same features
    for (_, state), logme, lmse in zip(run["checkpoints"], run["logme"], run["linear_mse"], strict=True):
        f = np.asarray(example.nnx.merge(run["graphdef"], state).features(data.probe_x))
        np.testing.assert_allclose(logme, float(jt.logme(f, data.probe_y)), rtol=1e-4, atol=1e-5)
        onehot = np.eye(10, dtype=np.float32)[data.probe_y]
        np.testing.assert_allclose(lmse, float(jt.linear_mse(f, onehot, l2=example.L2)), rtol=1e-4, atol=1e-5)
    assert np.isfinite(run["loss"]).all() and np.isfinite(out["aux_run"]["loss"]).all()
    for ft, head in (out["plain"], out["aux"]):
        assert 0 <= ft <= 1 and 0 <= head <= 1
    best = steps[int(np.argmax(out["fine_tuned"]))]
    assert out["best_fine_tuned_step"] == best
    assert "fine-tuned accuracy: LogME's pick" in printed and f"the best, step {best};" in printed
    pick_line = next(line for line in printed.splitlines() if line.endswith("<- LogME's pick"))
    assert pick_line.split()[0] == str(run["best_step"])
