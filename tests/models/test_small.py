"""Small source models: training is reproducible and learns; files round-trip without pickle."""

import jax
import numpy as np
import pytest
from flax import nnx
from sklearn.datasets import load_digits

from jaxtransfer import sources
from jaxtransfer._nnx import get_value
from jaxtransfer.features import extract


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images / 16).astype(np.float32), d.target


def _params(model):
    return {"/".join(map(str, p)): np.asarray(get_value(v)) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_cnn_learns_digits_reproducibly_and_leaves_the_input_alone(digits):
    x, y = digits
    init = sources.SmallCNN(10, seed=3)
    before = _params(init)
    a, hist = sources.train(init, x[:1200], y[:1200], epochs=6, batch_size=64, learning_rate=3e-3, seed=1)
    b, _ = sources.train(init, x[:1200], y[:1200], epochs=6, batch_size=64, learning_rate=3e-3, seed=1)
    for key, value in _params(init).items():
        np.testing.assert_array_equal(value, before[key])  # the argument is not trained in place
    for key, value in _params(a).items():
        np.testing.assert_array_equal(value, _params(b)[key])  # same seeds, same model
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    test_acc = np.mean(np.argmax(np.asarray(a(x[1200:])), axis=1) == y[1200:])
    assert test_acc > 0.85, test_acc  # held-out digits: a real check that training works
    out = extract(a, x[1200:], batch_size=100, layers=a.layer_names)
    assert out.features.shape == (597, 64) and set(out.layers) == {"conv1", "conv2", "conv3"}


def test_mlp_regression_beats_the_mean(digits):
    x, _ = digits
    target = np.stack([x.mean(axis=(1, 2)), x[:, :4].mean(axis=(1, 2))], axis=1).astype(np.float32)
    model, hist = sources.train(sources.MLP(2, in_features=64), x, target, epochs=20, learning_rate=3e-3)
    mse = np.mean((np.asarray(model(x)) - target) ** 2)
    assert mse < 0.1 * np.mean(target.var(axis=0)), mse
    assert np.all(np.isnan(hist.accuracy))


def test_wrt_filter_trains_only_the_head(digits):
    x, y = digits
    init = sources.SmallCNN(10, channels=(4, 8), hidden=8)
    trained, _ = sources.train(init, x[:256], y[:256], epochs=1, batch_size=64, wrt=nnx.PathContains("head"))
    old, new = _params(init), _params(trained)
    assert all(np.array_equal(old[k], new[k]) for k in old if not k.startswith("head"))
    assert not np.array_equal(old["head/kernel"], new["head/kernel"])


def test_save_load_round_trip(tmp_path, digits):
    x, _ = digits
    model = sources.SmallCNN(3, channels=(4, 8), hidden=6, seed=2)
    path = sources.save(tmp_path / "cnn", model)
    assert path.name == "cnn.npz"
    loaded = sources.load(path)
    np.testing.assert_array_equal(loaded(x[:5]), model(x[:5]))
    mlp = sources.MLP(2, in_features=64, hidden=(5,))
    np.testing.assert_array_equal(sources.load(sources.save(tmp_path / "m.npz", mlp))(x[:3]), mlp(x[:3]))


def test_load_rejects_bad_files(tmp_path):
    model = sources.MLP(2, in_features=3, hidden=(4,))
    good = dict(np.load(sources.save(tmp_path / "good.npz", model)))
    with pytest.raises(FileNotFoundError, match="no such model file"):
        sources.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable model file"):
        sources.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "pickled.npz", __config__=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable model file"):
        sources.load(tmp_path / "pickled.npz")  # object arrays are never unpickled
    np.savez(tmp_path / "evil.npz", **{**good, "__config__": np.array('{"class": "os.system", "a": 1}')})
    with pytest.raises(ValueError, match="does not describe a SmallCNN or MLP"):
        sources.load(tmp_path / "evil.npz")
    np.savez(tmp_path / "short.npz", **{k: v for k, v in good.items() if k != "head/bias"})
    with pytest.raises(ValueError, match=r"missing \['head/bias'\]"):
        sources.load(tmp_path / "short.npz")
    np.savez(tmp_path / "shape.npz", **{**good, "head/bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="head/bias has shape"):
        sources.load(tmp_path / "shape.npz")


def test_train_bad_input(digits):
    x, y = digits
    model = sources.SmallCNN(10, channels=(4,), hidden=4)
    with pytest.raises(ValueError, match="targets has 5 samples but inputs has 10"):
        sources.train(model, x[:10], y[:5])
    with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
        sources.train(model, x[:10], y[:10] + 5)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        sources.train(model, x[:10], y[:10], epochs=0)
    with pytest.raises(ValueError, match="inputs is empty"):
        sources.train(model, x[:0], y[:0])
    with pytest.raises(ValueError, match="targets have 2 outputs per sample, the model 10"):
        sources.train(model, x[:10], np.zeros((10, 2), np.float32))
    with pytest.raises(TypeError, match="model must be one of"):
        sources.save("/tmp/x.npz", nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    assert jax.numpy.isfinite(model(x[:2])).all()


def test_small_cnn_coords_and_stem_stride(tmp_path):
    import jax.numpy as jnp

    m = sources.SmallCNN(2, in_channels=3, channels=(4, 8), hidden=8, coords=True, stem_stride=2, seed=1)
    assert m.convs[0].in_features == 5  # three colours and the two coordinate channels
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    taps = m.taps(jnp.asarray(x))
    assert taps["logits"].shape == (3, 2) and taps["conv2"].shape == (3, 8)
    back = sources.load(sources.save(tmp_path / "m", m))
    np.testing.assert_allclose(np.asarray(back(jnp.asarray(x))), np.asarray(m(jnp.asarray(x))), rtol=1e-6)
    assert back.coords and back.convs[0].strides in (2, (2, 2))
