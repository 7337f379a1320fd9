"""Data-parallel extraction (issue 12): under 8 fake CPU devices, a batch split over the devices gives the
single-device features and statistics, and the compiled step really splits the batch.

The device count must be set before jax is imported, so the checks run in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import jax.numpy as jnp
    import numpy as np
    from jaxtransfer import features

    assert jax.local_device_count() == 8, jax.local_devices()
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5))
    v = rng.normal(size=(5, 4))

    def fn(p, x):
        h = jnp.tanh(x @ p["w"])
        return {"features": h, "logits": h @ p["v"], "hidden": x @ p["w"]}

    params = {"w": w, "v": v}
    n = 77  # batches of 12 -> rounded up to 16 on 8 devices; the last one short and padded
    x = rng.normal(size=(n, 6))
    tasks = {
        "digit": rng.integers(0, 4, n),
        "parity": rng.integers(0, 2, n),
        "value": rng.normal(size=(n, 2)),
    }
    ests = ("linear_mse", "logme", "hscore", "shrinkage_hscore", "transrate", "gbc", "nce", "hardness")
    kw = dict(params=params, batch_size=12, layers=("hidden",), targets=tasks, estimators=ests)
    one = features.extract(fn, x, devices=1, **kw)
    many = features.extract(fn, x, **kw)  # default: every local device
    res = {"count": [one.count, many.count]}
    res["features"] = float(np.max(np.abs(np.asarray(one.features) - np.asarray(many.features))))
    res["logits"] = float(np.max(np.abs(np.asarray(one.logits) - np.asarray(many.logits))))
    diff = np.asarray(one.layers["hidden"]) - np.asarray(many.layers["hidden"])
    res["hidden"] = float(np.max(np.abs(diff)))
    res["joint_equal"] = bool(np.array_equal(one.stats.joint, many.stats.joint))
    scores = {}
    for est in ests:
        for which, out in (("features", one.stats), ("hidden", one.layer_stats["hidden"])):
            other = many.stats if which == "features" else many.layer_stats["hidden"]
            if est == "nce" and which == "hidden":
                continue
            a, b = np.asarray(out.score(est)), np.asarray(other.score(est))
            scores[f"{est}/{which}"] = [a.tolist(), b.tolist()]
    res["scores"] = scores
    # the features each device holds: a slice of the batch, not all of it
    res["devices"] = len(many.features.sharding.device_set)
    # the compiled step: its input split along the batch, an all-reduce summing the statistics
    batch = np.zeros((16, 6))
    shard = features._placement(None)
    xs = jax.device_put(batch, shard.batch)
    key, state = features._adapter(fn, params, None)
    _, step = features._step(key, ("hidden",), ("features",), None, (), shard.batch)
    compiled = step.lower(state, xs, 16, None, None).compile()
    res["input_sharding"] = [str(a) for a in compiled.input_shardings[0][1].spec]
    kept = step(state, xs, 16, None, None)[0]["features"]
    res["local_rows"] = [s.data.shape[0] for s in kept.addressable_shards]
    _, step_stats = features._step(key, ("hidden",), ("features",), None, ("features",), shard.batch)
    init = features._init_stats(lambda s, b: fn(s, b), state, batch, None, layers=(),
                                spec=((), (), (), True, ("linear_mse",)), dtype=jnp.float64)
    text = step_stats.lower(state, xs, 16, None, init).compile().as_text()
    res["all_reduce"] = "all-reduce" in text
    print("RESULT" + json.dumps(res))
    """
)


@pytest.fixture(scope="module")
def result():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_data_parallel_outputs_equal_single_device(result):
    assert result["count"] == [77, 77]
    assert result["features"] < 1e-12 and result["logits"] < 1e-12 and result["hidden"] < 1e-12
    assert result["devices"] == 8


def test_data_parallel_statistics_equal_single_device(result):
    import numpy as np

    assert result["joint_equal"]
    for name, (one, many) in result["scores"].items():
        np.testing.assert_allclose(many, one, rtol=1e-9, atol=1e-12, err_msg=name)
    # H-scores and GBC need class labels: NaN for the regression target, on both paths
    assert np.isnan(result["scores"]["hscore/features"][0][2])


def test_compiled_step_splits_the_batch(result):
    assert result["input_sharding"] == ["batch"]
    assert result["local_rows"] == [2] * 8  # 16 rows over 8 devices
    assert result["all_reduce"]  # the per-device statistics are summed by XLA
