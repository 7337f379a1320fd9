"""The one training loop: losses against NumPy, batched copies equal one-at-a-time runs, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer import models
from jaxtransfer._progress import progress_bar


def test_loss_and_accuracy_match_numpy(rng):
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 8)
    loss, acc = models.loss_and_accuracy(jnp.asarray(logits), jnp.asarray(labels))
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, -np.mean(logp[np.arange(8), labels]), rtol=1e-6)
    assert float(acc) == np.mean(logits.argmax(1) == labels)
    out = rng.normal(size=(8, 1)).astype(np.float32)
    y = rng.normal(size=8).astype(np.float32)  # [B] targets for one output are reshaped to [B, 1]
    loss, acc = models.loss_and_accuracy(jnp.asarray(out), jnp.asarray(y))
    np.testing.assert_allclose(loss, np.mean((out[:, 0] - y) ** 2), rtol=1e-6)
    assert np.isnan(acc)


@pytest.mark.parametrize("classify", [True, False])
def test_batched_copies_equal_one_at_a_time(rng, classify):
    x = rng.normal(size=(40, 5)).astype(np.float32)
    if classify:
        y = np.stack([rng.integers(0, 3, 40), rng.integers(0, 2, 40)])  # [T=2, n]
        valid = jnp.asarray(np.arange(3)[None, :] <= y.max(axis=1)[:, None])
    else:
        y = rng.normal(size=(2, 40, 3)).astype(np.float32)
        valid = None
    model = models.MLP(3, in_features=5, hidden=(6,), seed=1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loop = dict(epochs=3, batch_size=16, seed=4, bar=progress_bar(None, False, "test"))
    many = models.trainer(graphdef, learning_rate=1e-2, weight_decay=1e-4, batched=True)
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (2, *p.shape)), params)
    both, hist = models.run_epochs(many, stacked, rest, x, y, valid=valid, **loop)
    assert hist.loss.shape == (3, 2) and hist.loss.dtype == np.float64
    assert np.all(np.isnan(hist.accuracy)) != classify
    one = models.trainer(graphdef, learning_rate=1e-2, weight_decay=1e-4)
    for t in range(2):
        mask = None if valid is None else valid[t]
        single, h = models.run_epochs(one, params, rest, x, y[t], valid=mask, **loop)
        np.testing.assert_allclose(h.loss, hist.loss[:, t], rtol=1e-5)
        jax.tree.map(
            lambda a, b, t=t: np.testing.assert_allclose(a, b[t], rtol=1e-4, atol=1e-6), single, both
        )


class _CountingMLP(models.MLP):
    traces = 0

    def taps(self, x):
        type(self).traces += 1
        return super().taps(x)


def test_a_second_train_call_reuses_the_compiled_step(rng):
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    model = _CountingMLP(2, in_features=4, hidden=(3,))
    models.train(model, x, y, epochs=2, batch_size=8, progress=False)
    first = _CountingMLP.traces  # the output-shape probe and one trace of the step
    other = _CountingMLP(2, in_features=4, hidden=(3,))  # same structure, other weights
    nnx.update(other, jax.tree.map(lambda v: v + 1, nnx.state(other, nnx.Param)))
    models.train(other, x, y, epochs=1, batch_size=8, seed=1, progress=False)
    # at most the probe again (jax may cache it too); a traced step would add one more
    assert _CountingMLP.traces - first <= 1
    graphdef, _, _ = nnx.split(other, nnx.Param, ...)
    fns = models.trainer(graphdef, learning_rate=1e-3, weight_decay=1e-4)
    assert fns.step._cache_size() == 1  # one compiled step served both calls
