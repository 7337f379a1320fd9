"""Ground truth by transfer: head retraining against scikit-learn, batching over targets, fine-tuning."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from x64util import x64

from jaxtransfer import sources, transfer


@pytest.fixture
def data(rng):
    n, d = 240, 6
    f = rng.normal(size=(n, d))
    w = rng.normal(size=(d, 3))
    labels = np.stack([np.argmax(f @ w + 0.5 * rng.normal(size=(n, 3)), axis=1), (f[:, 0] > 0).astype(int)])
    return f, labels


def test_split_mask():
    m = transfer.split_mask(10, test_fraction=0.3, seed=1)
    assert m.dtype == bool and m.sum() == 7
    np.testing.assert_array_equal(m, transfer.split_mask(10, test_fraction=0.3, seed=1))
    with pytest.raises(ValueError, match="test_fraction"):
        transfer.split_mask(10, test_fraction=1.0)


def test_logistic_head_matches_scikit_learn(data):
    f, labels = data
    train = transfer.split_mask(f.shape[0], seed=0)
    l2 = 0.01
    with x64():
        res = transfer.head_retrain(f, labels, train_mask=train, l2=l2, steps=3000, learning_rate=0.05)
    mu, sd = f[train].mean(0), f[train].std(0)
    z = (f - mu) / sd
    for t, y in enumerate(labels):
        # sklearn minimises C·Σ nll + ½‖W‖²; ours mean nll + ½·l2·‖W‖², so C = 1 / (n_train · l2). For two
        # classes sklearn fits one vector w = w₁ − w₂, and the optimum of ours has w₁ = −w₂: C doubles.
        c = (2 if y.max() == 1 else 1) / (train.sum() * l2)
        clf = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(z[train], y[train])
        logp = clf.predict_log_proba(z[~train])
        np.testing.assert_allclose(
            res.log_likelihood[t], np.mean(logp[np.arange((~train).sum()), y[~train]]), atol=2e-4
        )
        np.testing.assert_allclose(
            res.accuracy[t], clf.score(z[~train], y[~train]), atol=1 / (~train).sum() + 1e-9
        )
    assert np.all(np.isnan(res.mse)) and np.allclose(res.score, res.accuracy)


def test_ridge_head_matches_scikit_learn(rng):
    n, d = 200, 5
    f = rng.normal(size=(n, d))
    y = np.stack([f @ rng.normal(size=(d, 2)) + rng.normal(size=(n, 2)) for _ in range(3)])  # [T=3, n, 2]
    train = transfer.split_mask(n, seed=2)
    with x64():
        res = transfer.head_retrain(f, y, train_mask=train, task="regression", l2=0.1)
    z = (f - f[train].mean(0)) / f[train].std(0)
    for t in range(3):
        model = Ridge(alpha=0.1 * train.sum()).fit(z[train], y[t][train])
        mse = np.mean((model.predict(z[~train]) - y[t][~train]) ** 2)
        np.testing.assert_allclose(res.mse[t], mse, rtol=1e-8)
    np.testing.assert_allclose(res.score, -res.mse)


def test_batched_equals_looped_and_matrix(data):
    f, labels = data
    both = transfer.head_retrain(f, labels, steps=100)
    for t in range(2):
        one = transfer.head_retrain(f, labels[t], steps=100)
        np.testing.assert_allclose(one.accuracy, both.accuracy[t], rtol=1e-6)
        np.testing.assert_allclose(one.log_likelihood, both.log_likelihood[t], rtol=1e-4)
    mat = transfer.head_retrain_matrix([f, f[:, :2]], labels, steps=100)
    assert mat.accuracy.shape == (2, 2)
    np.testing.assert_allclose(mat.accuracy[0], both.accuracy, rtol=1e-6)
    assert mat.accuracy[0, 1] > mat.accuracy[1, 1] - 0.05  # both see feature 0, which decides task 1


def test_num_target_classes_and_its_deprecated_alias(data):
    f, labels = data
    inferred = transfer.head_retrain(f, labels, steps=50)
    given = transfer.head_retrain(f, labels, num_target_classes=5, steps=50)  # extra classes masked out
    np.testing.assert_allclose(given.log_likelihood, inferred.log_likelihood, rtol=1e-5)
    with pytest.warns(DeprecationWarning, match="num_classes= is deprecated; use num_target_classes="):
        old = transfer.head_retrain(f, labels, num_classes=5, steps=50)
    np.testing.assert_array_equal(old.log_likelihood, given.log_likelihood)
    with pytest.warns(DeprecationWarning, match="num_classes= is deprecated"):
        mat = transfer.head_retrain_matrix([f], labels, num_classes=5, steps=50)
    np.testing.assert_array_equal(mat.log_likelihood[0], given.log_likelihood)
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(TypeError, match="num_target_classes=4 and its deprecated alias num_classes=5"),
    ):
        transfer.head_retrain(f, labels, num_target_classes=4, num_classes=5)
    with pytest.raises(ValueError, match=r"label 2, but num_target_classes=2; labels must lie in \[0, 2\)"):
        transfer.head_retrain(f, labels, num_target_classes=2)
    with pytest.raises(TypeError, match=r"num_target_classes must be an integer, got 3\.0"):
        transfer.head_retrain(f, labels, num_target_classes=3.0)


def test_head_retrain_bad_input(data):
    f, labels = data
    with pytest.raises(ValueError, match="task must be"):
        transfer.head_retrain(f, labels, task="ranking")
    with pytest.raises(ValueError, match="features must be"):
        transfer.head_retrain(f[0], labels)
    with pytest.raises(ValueError, match="samples on axis 1"):
        transfer.head_retrain(f, labels[:, :10])
    with pytest.raises(ValueError, match="non-negative integer labels"):
        transfer.head_retrain(f, labels - 1)
    with pytest.raises(ValueError, match="train_mask must be"):
        transfer.head_retrain(f, labels, train_mask=np.ones(f.shape[0], bool))


def test_fine_tune_source_cnn():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images / 16).astype(np.float32), d.target
    src, _ = sources.train(
        sources.SmallCNN(2, channels=(8, 16), hidden=32), x, (y >= 5).astype(int), epochs=3
    )
    tuned, res = transfer.fine_tune(src, x, y, epochs=12, batch_size=32, learning_rate=3e-3)
    assert tuned.head.out_features == 10 and src.head.out_features == 2  # a copy; the source is unchanged
    assert 0.5 < float(res.accuracy) <= 1.0 and float(res.log_likelihood) < 0
    _, head_only = transfer.fine_tune(src, x, y, trainable="head", epochs=1, batch_size=64)
    assert float(head_only.accuracy) < float(res.accuracy)
    with pytest.raises(TypeError, match=r"head is an nnx\.Linear"):
        from flax import nnx

        transfer.fine_tune(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), x, y)


def _regression_setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3))
    y = np.stack([x @ w[:, :2], np.tanh(x @ w[:, 1:])]).astype(np.float32)  # [T=2, n, 2]
    model = sources.MLP(4, in_features=6, hidden=(16,), seed=1)
    return x, y, model


def test_fine_tune_many_batched_equals_one_target_at_a_time():
    x, y, model = _regression_setup()
    kw = dict(epochs=4, batch_size=16, learning_rate=1e-2, seed=3, progress=False)
    _, both = transfer.fine_tune_many(model, x, y, **kw)
    for t in range(2):
        _, one = transfer.fine_tune_many(model, x, y[t], **kw)
        np.testing.assert_allclose(both.mse[t], one.mse, rtol=1e-4)
    (_, params, _), chunked = transfer.fine_tune_many(model, x, y, target_batch=1, **kw)
    np.testing.assert_allclose(chunked.mse, both.mse, rtol=1e-4)
    assert params["head"]["kernel"].shape[0] == 2  # the chunks' copies stacked again
    with pytest.raises(ValueError, match="target_batch"):
        transfer.fine_tune_many(model, x, y, target_batch=0, **kw)
    assert both.mse.shape == (2,) and np.all(np.isnan(both.accuracy))


def test_fine_tune_many_matches_sources_train_loop():
    """The vmapped fine-tuning equals sources.train (a plain loop) on a copy with the same new head."""
    from flax import nnx

    x, y, model = _regression_setup()
    mask = transfer.split_mask(x.shape[0], seed=3)
    kw = dict(epochs=3, batch_size=16, learning_rate=1e-2, seed=3)
    for trainable, wrt in (("all", nnx.Param), ("head", nnx.All(nnx.Param, nnx.PathContains("head")))):
        _, res = transfer.fine_tune_many(model, x, y[1], trainable=trainable, progress=False, **kw)
        copy = nnx.clone(model)
        copy.head = nnx.Linear(16, 2, rngs=nnx.Rngs(3))
        trained, _ = sources.train(
            copy, x[mask], y[1][mask], wrt=wrt, weight_decay=1e-4, progress=False, **kw
        )
        pred = np.asarray(trained(x[~mask]), np.float64)
        expected = np.mean((pred - y[1][~mask]) ** 2)
        np.testing.assert_allclose(res.mse, expected, rtol=1e-4)
        if trainable == "head":  # the body is untouched
            np.testing.assert_array_equal(
                np.asarray(trained.dense[0].kernel[...]), np.asarray(model.dense[0].kernel[...])
            )


def test_fine_tune_many_classification_masks_absent_classes():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, digit = (d.images[:600] / 16).astype(np.float32), d.target[:600]
    labels = np.stack([digit, (digit % 2)]).astype(np.int32)
    src = sources.MLP(3, in_features=64, hidden=(32,), seed=0)
    (graphdef, params, rest), res = transfer.fine_tune_many(
        src, x, labels, epochs=6, batch_size=32, learning_rate=1e-2, progress=False
    )
    assert res.accuracy.shape == (2,) and np.all(res.accuracy > [0.8, 0.7])
    from flax import nnx

    parity = nnx.merge(graphdef, jax.tree.map(lambda p: p[1], params), rest)
    assert parity.head.out_features == 10  # shared width; classes 2..9 masked for the parity target
    tuned, single = transfer.fine_tune(
        src, x, labels[1], epochs=6, batch_size=32, learning_rate=1e-2, progress=False
    )
    assert tuned.head.out_features == 2 and 0.7 < float(single.accuracy) <= 1


def test_fine_tune_many_bad_input():
    x, y, model = _regression_setup()
    with pytest.raises(ValueError, match="n=120 samples"):
        transfer.fine_tune_many(model, x, y[:, :50], progress=False)
    with pytest.raises(ValueError, match="NaN"):
        transfer.fine_tune_many(model, x, np.full((120, 2), np.nan, np.float32), progress=False)
    with pytest.raises(ValueError, match="trainable must be"):
        transfer.fine_tune_many(model, x, y, trainable="body", progress=False)
    with pytest.raises(TypeError, match="dtype"):
        transfer.fine_tune_many(model, x, np.array(["a"] * 120), progress=False)
