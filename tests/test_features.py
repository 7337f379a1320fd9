"""Feature extraction: every model form, batching and padding, layers, streamed statistics, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from x64util import x64

import jaxtransfer as jt
from jaxtransfer.features import extract, pool


def _fn(params, x):
    h = jnp.tanh(x @ params["w"])
    return {"features": h, "logits": h @ params["v"], "hidden": x @ params["w"]}


@pytest.fixture
def setup(rng):
    params = {
        "w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
        "v": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
    }
    x = rng.normal(size=(23, 6)).astype(np.float32)
    return params, x


def test_function_model_matches_direct_call_and_compiles_once(setup):
    params, x = setup
    traces = []

    def fn(p, xb):
        traces.append(xb.shape)
        return _fn(p, xb)

    out = extract(fn, x, params=params, batch_size=5, layers=("hidden",))  # 5 batches, the last of 3 padded
    ref = _fn(params, jnp.asarray(x))
    np.testing.assert_allclose(out.features, ref["features"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.logits, ref["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.layers["hidden"], ref["hidden"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.probabilities, jax.nn.softmax(ref["logits"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.labels, np.argmax(np.asarray(ref["logits"]), axis=1))
    assert out.count == 23 and out.stats is None
    assert traces == [(5, 6)]  # one trace for all batches, the short one included
    other = {k: v + 1 for k, v in params.items()}
    again = extract(fn, x[:7], params=other, batch_size=5, layers=("hidden",))
    assert traces == [(5, 6)]  # a second call, with other weights, reuses the compiled step
    np.testing.assert_allclose(
        again.features, _fn(other, jnp.asarray(x[:7]))["features"], rtol=1e-6, atol=1e-6
    )


def test_iterable_of_uneven_batches_equals_array(setup):
    params, x = setup
    batches = [x[:7], x[7:8], x[8:23]]  # 15 > batch_size is split
    out = extract(_fn, iter(batches), params=params, batch_size=4)
    ref = extract(_fn, x, params=params, batch_size=4)
    np.testing.assert_allclose(out.features, ref.features, rtol=1e-6)
    assert out.count == 23


def test_tuple_and_array_outputs(setup):
    params, x = setup
    pair = extract(lambda p, xb: (xb @ p["w"], xb @ p["w"] @ p["v"]), x, params=params)
    assert pair.features.shape == (23, 5) and pair.logits.shape == (23, 4)
    single = extract(lambda p, xb: xb @ p["w"], x, params=params)
    assert single.logits is None
    with pytest.raises(ValueError, match="no logits"):
        _ = single.labels


class _Sowing(nnx.Module):
    def __init__(self):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
        self.head = nnx.Linear(4, 2, rngs=nnx.Rngs(1))

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        self.sow(nnx.Intermediate, "block", h)
        f = pool(h)
        return f, self.head(f)


def test_nnx_module_with_sown_layers(rng):
    model = _Sowing()
    x = rng.normal(size=(9, 8, 8, 3)).astype(np.float32)
    out = extract(model, x, batch_size=4, layers=("block",))
    h = jax.nn.relu(model.conv(jnp.asarray(x)))
    np.testing.assert_allclose(out.layers["block"], h.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.logits, model.head(h.mean(axis=(1, 2))), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layer 'nope': no matching intermediate"):
        extract(model, x, layers=("nope",))


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(5, name="body")(x))
        return {"features": h, "logits": nn.Dense(3, name="head")(h)}


def test_linen_module_with_intermediates(setup):
    _, x = setup
    module = _Linen()
    variables = module.init(jax.random.key(0), x[:1])
    out = extract(module, x, variables=variables, batch_size=8, layers=("body",))
    ref = module.apply(variables, x)
    np.testing.assert_allclose(out.logits, ref["logits"], rtol=1e-5, atol=1e-6)
    body = x @ np.asarray(variables["params"]["body"]["kernel"]) + np.asarray(
        variables["params"]["body"]["bias"]
    )
    np.testing.assert_allclose(out.layers["body"], body, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="needs its variables"):
        extract(module, x)


def test_zoo_backbone_applies_its_preprocessing(rng):
    from jaxtransfer import zoo

    model = zoo.load("mobilenet_v2", pretrained=False)
    imgs = rng.integers(0, 256, size=(3, 40, 50, 3), dtype=np.uint8)
    out = extract(model, imgs, batch_size=2, layers=("stage2",))
    taps = model.taps(model.preprocess(imgs))
    np.testing.assert_allclose(out.features, taps["features"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.layers["stage2"], taps["stage2"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("classify", [True, False])
def test_streamed_statistics_match_whole_array_estimators(setup, rng, classify):
    params, x = setup
    x = np.concatenate([x] * 4)  # n = 92 > d
    y = rng.integers(0, 3, size=92) if classify else rng.normal(size=(92, 2))
    with x64():
        out = extract(_fn, x, params=params, batch_size=10, keep=(), targets=y)
        full = extract(_fn, x, params=params, batch_size=10)
        assert out.features is None and out.stats.features.count == 92
        targets = np.eye(3)[y] if classify else y
        f64 = np.asarray(full.features, np.float64)  # the statistics accumulate in float64 under x64
        for l2 in (0.0, 0.5):
            np.testing.assert_allclose(
                out.stats.linear_mse(l2), jt.linear_mse(f64, targets, l2=l2), rtol=1e-9
            )
        if classify:
            np.testing.assert_allclose(
                out.stats.nce(), jt.nce(full.labels, y, num_source_classes=4), rtol=1e-12
            )
        else:
            with pytest.raises(ValueError, match="nce needs"):
                out.stats.nce()


def test_streamed_statistics_float32(setup, rng):
    params, x = setup
    y = rng.integers(0, 2, size=23)
    out = extract(_fn, x, params=params, batch_size=6, targets=y)
    ref = jt.linear_mse(out.features, jax.nn.one_hot(y, 2), l2=1.0)
    np.testing.assert_allclose(out.stats.linear_mse(1.0), ref, rtol=1e-4)


def test_bad_input(setup):
    params, x = setup
    with pytest.raises(ValueError, match="data is empty"):
        extract(_fn, x[:0], params=params)
    with pytest.raises(ValueError, match="data is empty"):
        extract(_fn, iter([]), params=params)
    with pytest.raises(ValueError, match="keep must hold"):
        extract(_fn, x, params=params, keep=("feature",))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        extract(_fn, x, params=params, batch_size=0)
    with pytest.raises(TypeError, match="pass params="):
        extract(_fn, x)
    with pytest.raises(TypeError, match="model must be"):
        extract(42, x)
    with pytest.raises(ValueError, match="targets has 3 samples but data has 23"):
        extract(_fn, x, params=params, targets=np.zeros(3, int))
    with pytest.raises(ValueError, match=r"layers \['nope'\] are not among"):
        extract(_fn, x, params=params, layers=("nope",))
    with pytest.raises(TypeError, match="layers must be a sequence"):
        extract(_fn, x, params=params, layers="hidden")
    with pytest.raises(ValueError, match="without 'features'"):
        extract(lambda p, xb: {"logits": xb}, x, params=params)
    x_before = x.copy()
    extract(_fn, x, params=params, batch_size=4)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("batch_sizes", [(7, 1, 15), (23,), (1,) * 23])
def test_iterable_of_labelled_batches_equals_arrays(setup, batch_sizes):
    """(x, int y) batches are class labels, as integer targets= arrays are (issue 13: they were
    read as one regression column, and nce() raised)."""
    params, x = setup
    y = (np.arange(23) * 7) % 3
    ends = np.cumsum(batch_sizes)
    batches = [(x[e - b : e], y[e - b : e]) for b, e in zip(batch_sizes, ends, strict=True)]
    streamed = extract(_fn, iter(batches), params=params, batch_size=4, num_target_classes=3).stats
    whole = extract(_fn, x, params=params, batch_size=4, targets=y).stats
    np.testing.assert_array_equal(streamed.joint, whole.joint)
    np.testing.assert_allclose(streamed.nce(), whole.nce(), rtol=1e-6)
    np.testing.assert_allclose(streamed.linear_mse(l2=0.1), whole.linear_mse(l2=0.1), rtol=1e-4)
    feats = np.asarray(_fn(params, jnp.asarray(x))["features"], np.float64)
    np.testing.assert_allclose(
        streamed.linear_mse(l2=0.1), jt.linear_mse(feats, np.eye(3)[y], l2=0.1), rtol=1e-4
    )
    np.testing.assert_allclose(streamed.nce(), jt.nce(np.asarray(whole_labels(params, x)), y), rtol=1e-5)


def whole_labels(params, x):
    return np.argmax(np.asarray(_fn(params, jnp.asarray(x))["logits"]), axis=1)


def test_iterable_of_regression_batches_equals_arrays(setup):
    params, x = setup
    t = np.linspace(-1, 1, 46).reshape(23, 2).astype(np.float32)
    batches = [(x[:10], t[:10]), (x[10:], t[10:])]
    streamed = extract(_fn, iter(batches), params=params, batch_size=4).stats
    whole = extract(_fn, x, params=params, batch_size=4, targets=t).stats
    np.testing.assert_allclose(streamed.linear_mse(l2=0.1), whole.linear_mse(l2=0.1), rtol=1e-5)
    assert streamed.joint is None


def test_iterable_labels_need_the_class_count_and_stay_in_range(setup):
    params, x = setup
    y = np.arange(23) % 3
    with pytest.raises(ValueError, match="num_target_classes is needed"):
        extract(_fn, iter([(x, y)]), params=params)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        extract(_fn, iter([(x, y)]), params=params, num_target_classes=2)
    with pytest.raises(ValueError, match="every batch must hold integer class labels"):
        extract(_fn, iter([(x[:5], y[:5]), (x[5:], y[5:] + 0.5)]), params=params, num_target_classes=3)


ALL = ("linear_mse", "logme", "hscore", "shrinkage_hscore", "transrate", "gbc", "nce", "conditional_entropy",
       "hardness")  # fmt: skip


def test_many_targets_every_streamed_estimator_against_whole_array(setup, rng):
    """Issue 13: one pass streams every estimator for many tasks, class labels and regression, for the
    features and a layer that is not kept; each score equals the whole-array estimator in float64."""
    params, x = setup
    x = np.concatenate([x] * 4)  # n = 92 > d
    tasks = {
        "three": rng.integers(0, 3, 92),
        "five": rng.integers(0, 5, 92),
        "value": rng.normal(size=(92, 2)),
        "scalar": rng.normal(size=92),
    }
    with x64():
        out = extract(_fn, x, params=params, batch_size=10, layers=("hidden",), keep=(), targets=tasks,
                      estimators=ALL)  # fmt: skip
        full = extract(_fn, x, params=params, batch_size=10, layers=("hidden",))
        assert out.features is None and out.logits is None and out.layers == {}
        assert out.stats.names == ("three", "five", "value", "scalar") and out.stats.features.count == 92
        z = np.asarray(full.labels)
        for which, stats in (("features", out.stats), ("hidden", out.layer_stats["hidden"])):
            f = np.asarray(full.features if which == "features" else full.layers["hidden"], np.float64)
            for t, (name, y) in enumerate(tasks.items()):
                labels = y.dtype.kind == "i"
                want = {
                    "linear_mse": jt.linear_mse(f, np.eye(y.max() + 1)[y] if labels else y, l2=1.0),
                    "logme": jt.logme(f, y, **({} if labels else {"task": "regression"})),
                }
                if labels:
                    want |= {
                        e: getattr(jt, e)(f, y) for e in ("hscore", "shrinkage_hscore", "transrate", "gbc")
                    }
                    want["hardness"] = jt.hardness(y)
                    if which == "features":
                        want["nce"] = jt.nce(z, y, num_source_classes=4)
                        want["conditional_entropy"] = jt.conditional_entropy(z, y, num_source_classes=4)
                for est, ref in want.items():
                    rtol = 1e-6 if est in ("transrate", "gbc") else 1e-9
                    np.testing.assert_allclose(stats.score(est, target=name), ref, rtol=rtol, err_msg=est)
                    np.testing.assert_allclose(stats.score(est)[t], ref, rtol=rtol, err_msg=est)
                if not labels:
                    assert np.isnan(stats.score("hscore")[t])
                    with pytest.raises(ValueError, match="needs class-label targets"):
                        stats.score("gbc", target=name)
        with pytest.raises(ValueError, match="has no logits"):
            out.layer_stats["hidden"].score("nce")


def test_targets_in_batches_as_dicts_and_sequences(setup, rng):
    params, x = setup
    y1, y2 = rng.integers(0, 3, 23), rng.normal(size=23).astype(np.float32)
    whole = extract(_fn, x, params=params, batch_size=4, keep=(), targets=[y1, y2], estimators=ALL).stats
    assert whole.names == ("task0", "task1")
    batches = [(x[:9], {"a": y1[:9], "b": y2[:9]}), (x[9:], {"a": y1[9:], "b": y2[9:]})]
    streamed = extract(_fn, iter(batches), params=params, batch_size=4, num_target_classes={"a": 3},
                       estimators=ALL).stats  # fmt: skip
    assert streamed.names == ("a", "b")
    for est in ALL:
        np.testing.assert_allclose(streamed.score(est), whole.score(est), rtol=2e-4, atol=1e-6, err_msg=est)
    np.testing.assert_array_equal(streamed.joint, whole.joint)
    assert streamed.joint.shape == (1, 4, 3)  # one class-label target, Cz = 4, C = 3
    single = extract(_fn, x, params=params, batch_size=4, targets=y1).stats
    assert single.score("logme").shape == () and single.joint.shape == (4, 3)
    np.testing.assert_allclose(single.score("logme"), whole.score("logme", target=0), rtol=1e-6)
    moments = extract(_fn, x, params=params, batch_size=4, statistics=True).stats
    sums = np.asarray(_fn(params, jnp.asarray(x))["features"]).sum(0)
    f = moments.features
    np.testing.assert_allclose(f.total + 23 * f.shift, sums, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="linear_mse needs targets"):
        moments.linear_mse()


def test_streamed_options_and_errors(setup, rng):
    params, x = setup
    y = rng.integers(0, 2, 23)
    stats = extract(_fn, x, params=params, targets={"y": y}).stats  # default estimators
    assert stats.estimators == jt.features.DEFAULT_ESTIMATORS
    with pytest.raises(ValueError, match="'hscore' was not streamed"):
        stats.score("hscore")
    with pytest.raises(ValueError, match=r"target 'z' is not among the targets \['y'\]"):
        stats.score("logme", target="z")
    with pytest.raises(ValueError, match=r"estimators \['leep'\] cannot be streamed"):
        extract(_fn, x, params=params, targets=y, estimators=("leep",))
    with pytest.raises(ValueError, match=r"keep must hold .* got \['hiden'\]"):
        extract(_fn, x, params=params, layers=("hidden",), keep=("hiden",))
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        extract(_fn, x, params=params, devices=99)
    with pytest.raises(TypeError, match="devices must be None"):
        extract(_fn, x, params=params, devices="gpu")
    with pytest.raises(ValueError, match=r"targets\['b'\] has 3 samples but data has 23"):
        extract(_fn, x, params=params, targets={"a": y, "b": y[:3]})
    with pytest.raises(ValueError, match="every batch must carry the targets of the first"):
        extract(_fn, iter([(x[:5], (y[:5], y[:5])), (x[5:], y[5:])]), params=params, num_target_classes=2)
    kept = extract(_fn, x, params=params, layers=("hidden",), keep=("hidden",))
    assert kept.features is None and kept.layers["hidden"].shape == (23, 5)


def test_streamed_stats_docstring_example():
    import doctest

    from jaxtransfer import _streamed

    result = doctest.testmod(_streamed, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_all_targets_from_one_finalisation_equal_each_alone(setup, rng):
    """score(est) for every target shares one eigendecomposition of the features' moments; each
    target's value equals its own finalisation (float32), with l2 given as one value or several."""
    params, x = setup
    tasks = [rng.integers(0, 3, 23), rng.normal(size=(23, 2)).astype(np.float32), rng.integers(0, 2, 23)]
    stats = extract(_fn, x, params=params, batch_size=8, keep=(), targets=tasks).stats
    cases = (("logme", {}), ("linear_mse", {"l2": 0.5}), ("linear_mse", {"l2": np.array([0.1, 2.0])}))
    for est, opts in cases:
        every = np.asarray(stats.score(est, **opts))
        alone = np.stack([np.asarray(stats.score(est, target=t, **opts)) for t in range(3)])
        assert every.shape == alone.shape
        np.testing.assert_allclose(every, alone, rtol=2e-6, atol=1e-7, err_msg=est)
