"""Transferability estimators inside a Flax NNX + Optax training loop.

Two uses of jaxtransfer from JAX training code, on scikit-learn's digits:

1. **Checkpoint selection** (the checkpoint-ranking use of Li et al., *Ranking
   Neural Checkpoints*, CVPR 2021). A small CNN learns a source task (is the
   digit ≥ 5?). Every ``--every`` steps a jitted eval step computes LogME and
   Linear MSE of its features on a held-out target task (the digit itself),
   and keeps the checkpoint LogME prefers: the comparison and the copy happen
   on the device, with no transfer to the host. At the end every checkpoint is
   fine-tuned on the target (and a head retrained on its frozen features),
   and the program says whether LogME's choice is the checkpoint that
   transfers best.
2. **An estimator as an auxiliary loss.** The CNN is trained again with
   −Linear MSE of the target task (on a separate labelled batch) added to its
   loss, and the target's transfer of both models is compared: a head
   retrained on the frozen features, and fine-tuning.

The estimators are plain functions of traced arrays: class counts are Python
ints (static), everything else may be traced, and ``jax.grad`` goes through
them (LogME by the envelope theorem, Linear MSE through its factorisation with
the rank held fixed, so dead ReLU units give finite gradients).

Run::

    python examples/train_with_estimators.py          # a few minutes on 2 CPU cores
    python examples/train_with_estimators.py --tiny   # seconds; what `make test` runs
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from flax import nnx
from sklearn.datasets import load_digits

import jaxtransfer as jt
from jaxtransfer import transfer

TARGET_CLASSES = 10  # the target task: which digit (static under jit)
# Linear MSE's ridge penalty: these features are small (ReLU units of about 0.1); λ = 1 would swamp them
L2 = 1e-3


class CNN(nnx.Module):
    """Two 3×3 conv layers, global average pooling, a dense ReLU layer (the features) and a head."""

    def __init__(self, num_classes: int, *, seed: int):
        rngs = nnx.Rngs(seed)
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), strides=2, rngs=rngs)
        self.dense = nnx.Linear(32, 64, rngs=rngs)
        self.head = nnx.Linear(64, num_classes, rngs=rngs)

    def features(self, x):
        h = jax.nn.relu(self.conv1(x[..., None]))
        h = jax.nn.relu(self.conv2(h))
        return jax.nn.relu(self.dense(h.mean(axis=(1, 2))))

    def __call__(self, x):
        return self.head(self.features(x))


class Data(NamedTuple):
    source_x: np.ndarray  # images with source labels
    source_y: np.ndarray
    probe_x: np.ndarray  # target-task images the estimators see (and fine-tuning trains on)
    probe_y: np.ndarray
    test_x: np.ndarray  # target-task images for the test accuracy
    test_y: np.ndarray


def load(tiny: bool, seed: int = 0) -> Data:
    digits = load_digits()
    images = (digits.images / 16).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    sizes = (300, 150, 150) if tiny else (900, 400, 497)
    src, probe, test = np.split(order, np.cumsum(sizes)[:2])
    test = test[: sizes[2]]
    y = digits.target.astype(np.int32)
    return Data(images[src], (y[src] >= 5).astype(np.int32), images[probe], y[probe], images[test], y[test])


class Best(NamedTuple):
    """The checkpoint LogME prefers so far, kept on the device."""

    score: jax.Array
    step: jax.Array
    state: nnx.State


def make_steps(graphdef, tx, aux_weight: float):
    """The jitted train step (cross-entropy, plus −aux_weight·Linear MSE of the target when > 0)
    and eval step (LogME and Linear MSE of the features on the probe; keeps the best by LogME)."""

    def loss_fn(state, x, y, aux_x, aux_y):
        model = nnx.merge(graphdef, state)
        loss = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        if aux_weight:  # a Python float: the branch is static
            onehot = jax.nn.one_hot(aux_y, TARGET_CLASSES)
            loss = loss - aux_weight * jt.linear_mse(model.features(aux_x), onehot, l2=L2)
        return loss

    @jax.jit
    def train_step(state, opt_state, x, y, aux_x, aux_y):
        loss, grads = jax.value_and_grad(loss_fn)(state, x, y, aux_x, aux_y)
        updates, opt_state = tx.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss

    @jax.jit
    def eval_step(state, best: Best, step, probe_x, probe_y):
        f = nnx.merge(graphdef, state).features(probe_x)
        logme = jt.logme(f, probe_y, num_target_classes=TARGET_CLASSES)
        lmse = jt.linear_mse(f, jax.nn.one_hot(probe_y, TARGET_CLASSES), l2=L2)
        better = logme > best.score
        keep = jax.tree.map(lambda new, old: jnp.where(better, new, old), state, best.state)
        best = Best(jnp.where(better, logme, best.score), jnp.where(better, step, best.step), keep)
        return best, logme, lmse

    return train_step, eval_step


def train(data: Data, *, steps: int, every: int, aux_weight: float = 0.0, batch: int = 64, seed: int = 0):
    """Train a CNN on the source task: the final model, the checkpoints, their scores and LogME's pick."""
    model = CNN(2, seed=seed)
    graphdef, state = nnx.split(model)
    tx = optax.adam(2e-3)
    opt_state = tx.init(state)
    train_step, eval_step = make_steps(graphdef, tx, aux_weight)
    best = Best(jnp.asarray(-jnp.inf), jnp.asarray(-1), state)
    rng = np.random.default_rng(seed)
    checkpoints, logme, lmse, losses = [], [], [], []
    for step in range(1, steps + 1):
        i = rng.choice(len(data.source_x), batch, replace=False)
        j = rng.choice(len(data.probe_x), batch, replace=False)  # the auxiliary loss's target batch
        state, opt_state, loss = train_step(
            state, opt_state, data.source_x[i], data.source_y[i], data.probe_x[j], data.probe_y[j]
        )
        losses.append(loss)
        if step % every == 0:
            best, s, m = eval_step(state, best, step, data.probe_x, data.probe_y)
            checkpoints.append((step, state))
            logme.append(s)
            lmse.append(m)
    # one transfer to the host, after training
    logme, lmse, losses, best_step = jax.device_get((logme, lmse, losses, best.step))
    return {
        "model": nnx.merge(graphdef, state),
        "checkpoints": checkpoints,
        "logme": np.asarray(logme),
        "linear_mse": np.asarray(lmse),
        "loss": np.asarray(losses),
        "best_step": int(best_step),
        "best_state": best.state,
        "graphdef": graphdef,
    }


def target_transfer(model, data: Data, *, epochs: int) -> tuple[float, float]:
    """(fine-tuned test accuracy, retrained-head test accuracy) of ``model`` on the target task."""
    x = np.concatenate([data.probe_x, data.test_x])
    y = np.concatenate([data.probe_y, data.test_y])
    train_rows = np.arange(len(x)) < len(data.probe_x)
    _, tuned = transfer.fine_tune(
        model, x, y, train_mask=train_rows, epochs=epochs, batch_size=32, learning_rate=2e-3, progress=False
    )
    features = model.features(jnp.asarray(x))
    head = transfer.head_retrain(features, y, train_mask=train_rows, num_target_classes=TARGET_CLASSES)
    return float(tuned.accuracy), float(head.accuracy)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 600; tiny 40)")
    parser.add_argument("--every", type=int, default=None, help="checkpoint interval (default 50; tiny 10)")
    parser.add_argument("--aux-weight", type=float, default=1.0, help="weight of −Linear MSE in part 2")
    args = parser.parse_args(argv)
    steps = args.steps or (40 if args.tiny else 600)
    every = args.every or (10 if args.tiny else 50)
    epochs = 1 if args.tiny else 5
    data = load(args.tiny)
    start = time.perf_counter()

    print(f"1. Checkpoint selection: {steps} steps on 'digit >= 5', a checkpoint every {every} steps;")
    print(f"   target: the digit itself ({len(data.probe_x)} probe images, {len(data.test_x)} test images)")
    run = train(data, steps=steps, every=every)
    models = [nnx.merge(run["graphdef"], state) for _, state in run["checkpoints"]]
    transfers = np.array([target_transfer(model, data, epochs=epochs) for model in models])
    tuned, heads = transfers[:, 0], transfers[:, 1]
    print(f"   {'step':>5}  {'LogME':>8}  {'Linear MSE':>10}  {'fine-tuned':>10}  {'retrained head':>14}")
    rows = zip(run["checkpoints"], run["logme"], run["linear_mse"], tuned, heads, strict=True)
    for (step, _), s, m, acc, head in rows:
        mark = "  <- LogME's pick" if step == run["best_step"] else ""
        print(f"   {step:>5}  {s:>8.4f}  {m:>10.4f}  {acc:>10.3f}  {head:>14.3f}{mark}")
    steps_seen = [step for step, _ in run["checkpoints"]]
    picked = steps_seen.index(run["best_step"])
    for name, acc in (("fine-tuned", tuned), ("retrained-head", heads)):
        best = steps_seen[int(np.argmax(acc))]
        rho = scipy.stats.spearmanr(run["logme"], acc).statistic if len(acc) > 2 else float("nan")
        agree = "agrees with" if best == run["best_step"] else "differs from"
        print(
            f"   {name} accuracy: LogME's pick {agree} the best, step {best}; regret "
            f"{acc.max() - acc[picked]:.3f}; Spearman(LogME, accuracy) over checkpoints {rho:.2f}"
        )
    best_tuned = steps_seen[int(np.argmax(tuned))]

    print(f"2. Auxiliary loss: cross-entropy − {args.aux_weight} × Linear MSE (λ = {L2}) of a target batch")
    plain = target_transfer(run["model"], data, epochs=epochs)
    aux = train(data, steps=steps, every=steps, aux_weight=args.aux_weight)
    helped = target_transfer(aux["model"], data, epochs=epochs)
    for name, (ft, head) in (("without", plain), ("with", helped)):
        print(f"   {name:>7} the auxiliary loss: fine-tuned accuracy {ft:.3f}, retrained head {head:.3f}")
    print(f"   ({time.perf_counter() - start:.0f} s in all)")
    return {
        "run": run,
        "fine_tuned": tuned,
        "retrained_head": heads,
        "best_fine_tuned_step": best_tuned,
        "plain": plain,
        "aux": helped,
        "aux_run": aux,
        "data": data,
    }


if __name__ == "__main__":
    main()
