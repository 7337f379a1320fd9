"""Estimators as Flax NNX metrics (``jaxtransfer.metrics``).

A metric updated batch by batch inside ``nnx.jit`` must give the whole-array
estimator on all the samples — in float64 against independent NumPy
references (ridge closed form, H-score trace, entropies of counts) and against
the whole-array estimators (which their own files test against references);
``compute`` must run on the device with no transfer to the host; ``reset``,
``merge`` and the multi-device paths (``shard_map``, ``nnx.shard_map``,
``pmap``) must give the one-device numbers. The multi-device checks run in a
subprocess with 4 fake CPU devices (``XLA_FLAGS`` must be set before JAX
starts).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from x64util import x64

import jaxtransfer as jt
from jaxtransfer import metrics

N, D, C, CZ, K = 61, 5, 3, 4, 2
CUTS = (0, 16, 32, 48, 61)  # three batches of 16 and one of 13 (two batch shapes: two traces)
F64 = {"rtol": 1e-9, "atol": 1e-11}


def make_data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    f = np.maximum(rng.normal(size=(n, D)) @ rng.normal(size=(D, D)) + 0.5, 0) + 3.0  # ReLU + offset
    y = rng.integers(0, C, n)
    y[:C] = np.arange(C)
    f[:, 0] += 1.5 * y
    z = (y + rng.integers(0, 2, n)) % CZ
    values = f[:, :2] @ rng.normal(size=(2, K)) + rng.normal(size=(n, K))
    logits = rng.normal(size=(n, CZ)) + 2 * np.eye(CZ)[z]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"f": f, "y": y, "z": z, "values": values, "probs": probs}


# ----------------------------------------------------------------------------- NumPy references


def ridge_reference(f, t, lam):
    """−[(1/n)‖Y_c − F_c A‖² + λ‖A‖²_F] at the ridge solution A = (F_cᵀF_c + nλI)⁻¹F_cᵀY_c."""
    n = f.shape[0]
    fc, tc = f - f.mean(0), t - t.mean(0)
    a = np.linalg.solve(fc.T @ fc + n * lam * np.eye(f.shape[1]), fc.T @ tc)
    return -(np.sum((tc - fc @ a) ** 2) / n + lam * np.sum(a * a))


def hscore_reference(f, y):
    """tr(cov(f)⁻¹ cov(E[f|y])), both with 1/n."""
    mu = f.mean(0)
    cov = (f - mu).T @ (f - mu) / len(f)
    between = sum((y == c).mean() * np.outer(f[y == c].mean(0) - mu, f[y == c].mean(0) - mu) for c in set(y))
    return np.trace(np.linalg.solve(cov, between))


def entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return -np.sum(p * np.log(p))


def nce_reference(z, y):
    joint = np.zeros((CZ, C))
    np.add.at(joint, (z, y), 1)
    return -(entropy(joint.ravel()) - entropy(joint.sum(1)))


# name -> (metric(dtype), batch keywords(x), reference(x))
CASES = {
    "linear_mse": (
        lambda dt: metrics.linear_mse(D, K, l2=0.3, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["values"]},
        lambda x: ridge_reference(x["f"], x["values"], 0.3),
    ),
    "linear_mse_labels": (
        lambda dt: metrics.linear_mse(D, num_target_classes=C, l2=[0.0, 1.0], dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: [ridge_reference(x["f"], np.eye(C)[x["y"]], lam) for lam in (0.0, 1.0)],
    ),
    "label_mse": (
        lambda dt: metrics.label_mse(1, K, l2=0.1, dtype=dt),
        lambda x: {"source_predictions": x["f"][:, 0], "targets": x["values"]},
        lambda x: ridge_reference(x["f"][:, :1], x["values"], 0.1),
    ),
    "logme": (
        lambda dt: metrics.logme(D, num_target_classes=C, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: jt.logme(x["f"], x["y"], num_target_classes=C),
    ),
    "logme_regression": (
        lambda dt: metrics.logme(D, K, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["values"]},
        lambda x: jt.logme(x["f"], x["values"], task="regression"),
    ),
    "hscore": (
        lambda dt: metrics.hscore(D, C, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: hscore_reference(x["f"], x["y"]),
    ),
    "shrinkage_hscore": (
        lambda dt: metrics.shrinkage_hscore(D, C, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: jt.shrinkage_hscore(x["f"], x["y"], num_target_classes=C),
    ),
    "transrate": (
        lambda dt: metrics.transrate(D, C, eps=1.0, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: jt.transrate(x["f"], x["y"], num_target_classes=C, eps=1.0),
    ),
    "gbc": (
        lambda dt: metrics.gbc(D, C, num_components=3, dtype=dt),
        lambda x: {"features": x["f"], "targets": x["y"]},
        lambda x: jt.gbc(x["f"], x["y"], num_target_classes=C, num_components=3),
    ),
    "nce": (
        lambda dt: metrics.nce(CZ, C),
        lambda x: {"source_labels": x["z"], "targets": x["y"]},
        lambda x: nce_reference(x["z"], x["y"]),
    ),
    "conditional_entropy": (
        lambda dt: metrics.conditional_entropy(CZ, C),
        lambda x: {"source_labels": x["z"], "targets": x["y"]},
        lambda x: -nce_reference(x["z"], x["y"]),
    ),
    "hardness": (
        lambda dt: metrics.hardness(C),
        lambda x: {"targets": x["y"]},
        lambda x: entropy(np.bincount(x["y"], minlength=C).astype(float)),
    ),
}


@nnx.jit
def eval_step(metric, batch):
    metric.update(**batch)


def run_batches(metric, batch, cuts=CUTS):
    for lo, hi in itertools.pairwise(cuts):
        eval_step(metric, {k: v[lo:hi] for k, v in batch.items()})


@pytest.mark.parametrize("name", list(CASES))
def test_jitted_updates_equal_the_reference_float64(name):
    make, batch, reference = CASES[name]
    with x64():
        x = make_data()
        metric = make(jnp.float64)
        run_batches(metric, batch(x))
        got = metric.compute()
        assert isinstance(got, jax.Array)
        np.testing.assert_allclose(got, np.asarray(reference(x), float), **F64)


@pytest.mark.parametrize("name", ["linear_mse", "logme", "hscore", "nce"])
def test_float32_jitted_updates_equal_the_whole_array_estimator(name):
    make, batch, reference = CASES[name]
    x = make_data(seed=1)
    metric = make(None)
    run_batches(metric, batch(x))
    np.testing.assert_allclose(metric.compute(), np.asarray(reference(x), float), rtol=2e-4, atol=2e-5)


def test_mask_and_multimetric():
    """One MultiMetric step feeds every metric (here with an nnx Average); masked samples are left out."""
    x = make_data(seed=2)
    keep = np.random.default_rng(3).random(N) > 0.3
    multi = nnx.MultiMetric(lmse=metrics.linear_mse(D, K, l2=0.3), loss=nnx.metrics.Average())

    @nnx.jit
    def step(multi, f, values, mask):
        multi.update(features=f, targets=values, values=jnp.sum(f, axis=1), mask=mask)

    for lo, hi in itertools.pairwise(CUTS):
        step(multi, x["f"][lo:hi], x["values"][lo:hi], keep[lo:hi])
    out = multi.compute()
    f, t = x["f"][keep], x["values"][keep]
    np.testing.assert_allclose(out["lmse"], ridge_reference(f, t, 0.3), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["loss"], f.sum(1).mean(), rtol=1e-5)


def test_multimetric_with_argnames():
    x = make_data(seed=2)
    multi = nnx.MultiMetric(
        lmse=metrics.linear_mse(D, K, l2=0.3, argnames=("features", "values")),
        hs=metrics.hscore(D, C, argnames=("features", "labels")),
    )

    @nnx.jit
    def step(multi, f, values, y):
        multi.update(features=f, values=values, labels=y)

    for lo, hi in itertools.pairwise(CUTS):
        step(multi, x["f"][lo:hi], x["values"][lo:hi], x["y"][lo:hi])
    out = multi.compute()
    np.testing.assert_allclose(out["lmse"], ridge_reference(x["f"], x["values"], 0.3), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["hs"], hscore_reference(x["f"], x["y"]), rtol=2e-4, atol=2e-5)


def test_compute_stays_on_the_device():
    """Inside a jitted step and eagerly: no device-to-host transfer."""
    x = make_data()
    f, y = jnp.asarray(x["f"], jnp.float32), jnp.asarray(x["y"])
    metric = metrics.logme(D, num_target_classes=C)

    @nnx.jit
    def step(metric, f, y):
        metric.update(features=f, targets=y)
        return metric.compute()

    step(metric, f, y)  # compile outside the guard
    metric.compute()
    metric.reset()
    with jax.transfer_guard_device_to_host("disallow"):
        inside = step(metric, f, y)
        outside = metric.compute()
    np.testing.assert_allclose(inside, outside, rtol=1e-6)
    np.testing.assert_allclose(outside, jt.logme(x["f"], x["y"]), rtol=2e-4)


def test_reset():
    x = make_data()
    metric = metrics.hscore(D, C)
    run_batches(metric, {"features": x["f"][::-1], "targets": x["y"][::-1]})
    metric.reset()
    np.testing.assert_array_equal(metric.stats.get_value().counts, 0)
    run_batches(metric, {"features": x["f"], "targets": x["y"]})
    np.testing.assert_allclose(metric.compute(), hscore_reference(x["f"], x["y"]), rtol=2e-4)


def test_no_retrace_with_the_same_shapes():
    traces = []

    @nnx.jit
    def step(metric, f, y):
        traces.append(1)
        metric.update(features=f, targets=y)

    x = make_data()
    metric = metrics.linear_mse(D, num_target_classes=C)
    for lo in (0, 16, 32):
        step(metric, x["f"][lo : lo + 16], x["y"][lo : lo + 16])
    assert len(traces) == 1


def test_merge_two_metrics():
    with x64():
        x = make_data()
        a, b = metrics.logme(D, num_target_classes=C), metrics.logme(D, num_target_classes=C)
        run_batches(a, {"features": x["f"], "targets": x["y"]}, cuts=(0, 16, 30))
        b.update(features=x["f"][30:], targets=x["y"][30:])
        a.merge(b)
        np.testing.assert_allclose(a.compute(), jt.logme(x["f"], x["y"]), **F64)


def test_leep_two_passes_in_a_jitted_step():
    with x64():
        x = make_data()
        metric = metrics.leep(CZ, C)
        batch = {"source_probs": x["probs"], "targets": x["y"]}
        run_batches(metric, batch)
        with pytest.raises(ValueError, match="two passes"):
            metric.compute()
        metric.second_pass()
        run_batches(metric, batch)
        np.testing.assert_allclose(metric.compute(), jt.leep(x["probs"], x["y"]), **F64)
        metric.reset()  # back to the first pass
        with pytest.raises(ValueError, match="two passes"):
            metric.compute()


def test_generic_constructor_splits_init_and_compute_options():
    m = metrics.EstimatorMetric(jt.streaming.logme, D, num_target_classes=C, max_iter=7)
    assert m._init_options == (("num_target_classes", C),) and m._options == (("max_iter", 7),)
    assert m.argnames == ("features", "targets")
    assert metrics.nce(CZ, C).argnames == ("source_labels", "targets")


def test_bad_input():
    x = make_data()
    m = metrics.logme(D, num_target_classes=C)
    with pytest.raises(ValueError, match=r"features must have shape \[b, 5\].*got shape \(61, 4\)"):
        m.update(features=x["f"][:, :4], targets=x["y"])
    with pytest.raises(ValueError, match=r"features must have shape \[b, 5\]"):
        eval_step(m, {"features": x["f"][:, :4], "targets": x["y"]})  # static: also under jit
    with pytest.raises(ValueError, match=r"targets contains the label 3.*num_target_classes=3"):
        m.update(features=x["f"], targets=x["y"] + 1)
    with pytest.raises(ValueError, match=r"source_labels contains the label 4.*num_source_classes=4"):
        metrics.nce(CZ, C).update(source_labels=x["z"] + 1, targets=x["y"])
    with pytest.raises(ValueError, match="non-finite"):
        m.update(features=np.full((3, D), np.nan), targets=np.zeros(3, int))
    with pytest.raises(TypeError, match=r"needs the keyword arguments \['features', 'targets'\]; missing"):
        m.update(feature=x["f"], targets=x["y"])
    with pytest.raises(TypeError, match="unknown options"):
        metrics.EstimatorMetric(jt.streaming.logme, D, num_target_classes=C, l2=1.0)
    with pytest.raises(TypeError, match="estimator must be a streaming estimator"):
        metrics.EstimatorMetric(jt.logme, D)
    with pytest.raises(ValueError, match="tol must be finite and > 0"):
        metrics.logme(D, num_target_classes=C, tol=-1.0)
    with pytest.raises(ValueError, match="l2 must be finite and >= 0"):
        metrics.linear_mse(D, l2=[0.0, -1.0])
    with pytest.raises(ValueError, match="argnames must be 2 strings"):
        metrics.hscore(D, C, argnames=("features",))
    with pytest.raises(ValueError, match="same metric with the same sizes"):
        m.merge(metrics.logme(D, num_target_classes=C + 1))
    with pytest.raises(TypeError, match="other must be an EstimatorMetric"):
        m.merge(nnx.metrics.Average())
    with pytest.raises(TypeError, match="takes one pass"):
        m.second_pass()
    with pytest.raises(TypeError, match="concrete value"):
        jax.jit(lambda lam: metrics.linear_mse(D, l2=lam).compute())(jnp.asarray(1.0))


# ----------------------------------------------------------------------------- several devices

DEVICES = 4
MULTI_DEVICE = textwrap.dedent(
    """
    import json
    from functools import partial

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from jax.sharding import Mesh, PartitionSpec as P

    from jaxtransfer import metrics

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    f = (np.maximum(rng.normal(size=(128, 5)), 0) + 1.0).astype(np.float32)
    y = rng.integers(0, 3, 128)
    z = (y + rng.integers(0, 2, 128)) % 4
    probs = jax.nn.softmax(jnp.asarray(rng.normal(size=(128, 4)) + 2 * np.eye(4)[z], jnp.float32), -1)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    makers = {
        "linear_mse": lambda: metrics.linear_mse(5, num_target_classes=3, l2=0.1),
        "logme": lambda: metrics.logme(5, num_target_classes=3),
        "hscore": lambda: metrics.hscore(5, 3),
        "nce": lambda: metrics.nce(4, 3),
    }
    # each way for two estimators (compiling is what costs time here)
    ways = {
        "linear_mse": ("shard_map", "pmap"),
        "logme": ("shard_map", "nnx_shard_map"),
        "hscore": ("nnx_shard_map", "pmap"),
        "nce": ("shard_map", "pmap"),
    }
    def batch(name, s):
        if name == "nce":
            return {"source_labels": z[s], "targets": y[s]}
        return {"features": f[s], "targets": y[s]}
    out = {}
    for name, make in makers.items():
        one = make()  # one device, batches of 32
        for lo in range(0, 128, 32):
            one.update(**batch(name, slice(lo, lo + 32)))
        res = {"one": float(one.compute())}

        if "shard_map" in ways[name]:  # (a)
            # jax.shard_map on the split state, update(axis_name=) each step: a replicated metric
            m = make()
            graphdef, state = nnx.split(m)

            @jax.jit
            def step_a(state, b):
                def local(state, b):
                    mm = nnx.merge(graphdef, state)
                    mm.update(**b, axis_name="data")
                    return nnx.state(mm)
                return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P())(state, b)

            for lo in range(0, 128, 32):
                state = step_a(state, batch(name, slice(lo, lo + 32)))
            nnx.update(m, state)
            res["shard_map"] = float(m.compute())

        if "nnx_shard_map" in ways[name]:  # (b) nnx.shard_map inside nnx.jit, the metric itself
            m = make()

            @nnx.jit
            def step_b(m, b):
                @nnx.shard_map(mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
                def local(m, b):
                    m.update(**b, axis_name="data")
                local(m, b)

            for lo in range(0, 128, 32):
                step_b(m, batch(name, slice(lo, lo + 32)))
            res["nnx_shard_map"] = float(m.compute())

        if "pmap" in ways[name]:  # (c) per-device metrics (leading device axis), one all_reduce
            graphdef, state = nnx.split(make())
            per = jax.tree.map(lambda a: jnp.broadcast_to(a, (4,) + a.shape), state)

            @partial(jax.pmap, axis_name="data")
            def update_c(state, b):
                mm = nnx.merge(graphdef, state)
                mm.update(**b)
                return nnx.state(mm)

            @partial(jax.pmap, axis_name="data")
            def reduce_c(state):
                mm = nnx.merge(graphdef, state)
                mm.all_reduce("data")
                return mm.compute()

            for lo in range(0, 128, 32):
                b = batch(name, slice(lo, lo + 32))
                per = update_c(per, {k: np.asarray(v).reshape(4, 8, *np.shape(v)[1:]) for k, v in b.items()})
            res["pmap"] = [float(v) for v in reduce_c(per)]
        out[name] = res

    # LEEP's two passes with update(axis_name=) under shard_map
    one = metrics.leep(4, 3)
    for p in range(2):
        for lo in range(0, 128, 32):
            one.update(source_probs=probs[lo : lo + 32], targets=y[lo : lo + 32])
        if p == 0:
            one.second_pass()
    m = metrics.leep(4, 3)

    @nnx.jit
    def step_l(m, p, t):
        @nnx.shard_map(mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())
        def local(m, p, t):
            m.update(source_probs=p, targets=t, axis_name="data")
        local(m, p, t)

    for p in range(2):
        for lo in range(0, 128, 32):
            step_l(m, probs[lo : lo + 32], y[lo : lo + 32])
        if p == 0:
            m.second_pass()
    out["leep"] = {"one": float(one.compute()), "nnx_shard_map": float(m.compute())}
    print("RESULT" + json.dumps(out))
    """
)


def test_merge_across_four_devices():
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert set(out) == {"linear_mse", "logme", "hscore", "nce", "leep"}
    for name, res in out.items():
        one = res.pop("one")
        assert len(res) == (1 if name == "leep" else 2), res
        assert np.isfinite(one), name
        for how, value in res.items():
            for v in np.atleast_1d(value):  # pmap: every device holds the merged score
                if name == "nce":  # exact integer counts
                    assert v == one, (name, how, v, one)
                else:
                    np.testing.assert_allclose(v, one, rtol=1e-5, atol=1e-6, err_msg=f"{name} {how}")
