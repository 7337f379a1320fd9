"""Actual transferability: transfer a source to a target with Optax and measure it on held-out data.

Two protocols, both from fixed seeds on a train/test split:

* :func:`head_retrain` — a new head on the source's frozen features: a
  multinomial logistic regression (classification, L2-penalised, full-batch
  Adam for a fixed number of steps from a zero start, so the convex problem has
  one answer) or a ridge regression in closed form (regression). One call
  trains the heads of *all* targets on the same features together, as one
  ``vmap`` over targets. :func:`head_retrain_matrix` loops over sources.
* :func:`fine_tune` — a new head on a copy of a Flax NNX model, then training
  of the whole model or of the variables an NNX filter picks (its last blocks,
  say), with :func:`jaxtransfer.sources.train`.

Results (:class:`TransferResult`): test accuracy and mean test log-likelihood
for classification, test mean squared error for regression; ``score`` is the
"higher is better" actual transferability (accuracy, or −MSE).
"""

from __future__ import annotations

import warnings
from functools import partial
from numbers import Integral
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._progress import progress_bar
from .models import Trainer, check_loop, run_epochs, trainer

__all__ = [
    "TransferResult",
    "fine_tune",
    "fine_tune_many",
    "head_retrain",
    "head_retrain_matrix",
    "split_mask",
]


class TransferResult(NamedTuple):
    """Test metrics of transferred models, one value per target (or [S, T] for a matrix).

    Attributes:
      accuracy: test accuracy (classification; NaN for regression).
      log_likelihood: mean test log p(y | x) (classification; NaN for regression).
      mse: test mean squared error (regression; NaN for classification).
    """

    accuracy: np.ndarray
    log_likelihood: np.ndarray
    mse: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """Higher-is-better actual transferability: accuracy, or −MSE for regression."""
        return np.where(np.isnan(self.accuracy), -self.mse, self.accuracy)


def split_mask(n: int, *, test_fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """A boolean train mask [n] with ``round(n · (1 − test_fraction))`` True, from a seeded permutation."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_train = round(n * (1 - test_fraction))
    if n_train < 2 or n - n_train < 1:
        raise ValueError(f"a split of {n} samples leaves {n_train} to train and {n - n_train} to test")
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_train]] = True
    return mask


def _standardise(features, train):
    w = train.astype(features.dtype)[:, None]
    count = jnp.sum(w)
    mean = jnp.sum(features * w, axis=0, keepdims=True) / count
    var = jnp.sum(((features - mean) ** 2) * w, axis=0, keepdims=True) / count
    scale = jnp.where(var > 0, jnp.sqrt(var), 1)
    return (features - mean) / scale


def _logistic_one(f, y, train, num_classes, l2, steps, lr):
    """One softmax head by full-batch Adam from zero; returns test accuracy and log-likelihood.

    Classes above this target's largest label are masked out of the softmax, so
    a binary target batched with a 10-class one still gets a binary head.
    """
    w_train = train.astype(f.dtype)
    valid = (jnp.arange(num_classes) <= jnp.max(y))[None, :]

    def head(p):
        return jnp.where(valid, f @ p[0] + p[1][None, :], -jnp.inf)

    n_train = jnp.sum(w_train)
    params = (jnp.zeros((f.shape[1], num_classes), f.dtype), jnp.zeros((num_classes,), f.dtype))
    tx = optax.adam(lr)

    def loss(p):
        logits = head(p)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(nll * w_train) / n_train + 0.5 * l2 * jnp.sum(p[0] ** 2)

    def step(carry, _):
        p, state = carry
        grads = jax.grad(loss)(p)
        updates, state = tx.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    logp = jax.nn.log_softmax(head(params))
    test = 1 - w_train
    n_test = jnp.sum(test)
    acc = jnp.sum((jnp.argmax(logp, axis=1) == y) * test) / n_test
    ll = jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0] * test) / n_test
    return acc, ll


def _ridge_one(f, y, train, l2):
    """Closed-form ridge on the train rows (bias unpenalised); returns the test MSE."""
    w = train.astype(f.dtype)[:, None]
    n_train = jnp.sum(w)
    fm = jnp.sum(f * w, axis=0, keepdims=True) / n_train
    ym = jnp.sum(y * w, axis=0, keepdims=True) / n_train
    fc, yc = (f - fm) * w, (y - ym) * w
    gram = jnp.matmul(fc.T, fc, precision=jax.lax.Precision.HIGHEST)
    rhs = jnp.matmul(fc.T, yc, precision=jax.lax.Precision.HIGHEST)
    coef = jnp.linalg.solve(gram + n_train * l2 * jnp.eye(f.shape[1], dtype=f.dtype), rhs)
    pred = (f - fm) @ coef + ym
    test = 1 - w[:, 0]
    return jnp.sum(jnp.mean((pred - y) ** 2, axis=1) * test) / jnp.sum(test)


@partial(jax.jit, static_argnames=("num_classes", "steps"))
def _logistic_all(f, ys, train, l2, lr, *, num_classes, steps):
    """Softmax heads for every target [T, n] on one source's features; compiled once per shape."""
    z = _standardise(f, train)
    return jax.vmap(lambda y: _logistic_one(z, y, train, num_classes, l2, steps, lr))(ys)


@jax.jit
def _ridge_all(f, ys, train, l2):
    """Ridge heads for every target [T, n, k] on one source's features; compiled once per shape."""
    z = _standardise(f, train)
    return jax.vmap(lambda t: _ridge_one(z, t, train, l2))(ys)


def _deprecated_num_classes(num_target_classes, num_classes, stacklevel: int = 3):
    """``num_target_classes``, or the deprecated ``num_classes`` (with a DeprecationWarning)."""
    if num_classes is None:
        return num_target_classes
    warnings.warn(
        "num_classes= is deprecated; use num_target_classes=", DeprecationWarning, stacklevel=stacklevel
    )
    if num_target_classes is not None and num_target_classes != num_classes:
        raise TypeError(
            f"got num_target_classes={num_target_classes!r} and its deprecated alias "
            f"num_classes={num_classes!r}; pass num_target_classes only"
        )
    return num_classes


def head_retrain(
    features,
    targets,
    *,
    train_mask=None,
    task: str = "classification",
    num_target_classes: int | None = None,
    l2: float = 1e-3,
    steps: int = 300,
    learning_rate: float = 0.05,
    seed: int = 0,
    num_classes: int | None = None,
) -> TransferResult:
    """Retrain a head on frozen features for every target at once; test metrics per target.

    Features are standardised with the train rows' mean and deviation. For
    classification the head is softmax regression with penalty ``l2/2·‖W‖²``
    (bias unpenalised) trained by full-batch Adam for ``steps`` steps from zero;
    for regression it is ridge with penalty ``l2`` (per train sample, as in
    :func:`jaxtransfer.linear_mse`) solved exactly. With two classes the softmax
    head equals logistic regression on w = w₁ − w₂ with penalty ``l2/4·‖w‖²``.

    Args:
      features: [n, d] source features on the target inputs.
      targets: [T, n] or [n] integer labels (classification); [T, n], [T, n, k]
        or [n] real values (regression).
      train_mask: bool [n], True for training rows; default :func:`split_mask`
        with ``seed`` (half train, half test).
      task: ``"classification"`` or ``"regression"``.
      num_target_classes: static class count (classification), at least the
        largest label + 1; inferred from the labels when None.
      l2, steps, learning_rate: the head's training.
      seed: the split seed when ``train_mask`` is None.
      num_classes: deprecated alias of ``num_target_classes`` (warns).

    Returns:
      :class:`TransferResult` with arrays [T] (scalars' shape () for 1-D targets).

    Raises:
      ValueError: shapes, an unknown task, a split without train or test rows,
        a ``num_target_classes`` below the largest label + 1.
      TypeError: a non-int ``num_target_classes``, or both it and ``num_classes``.
    """
    num_target_classes = _deprecated_num_classes(num_target_classes, num_classes)
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    f = np.asarray(features, dtype=np.float32 if not jax.config.jax_enable_x64 else np.float64)
    if f.ndim != 2 or f.shape[0] < 3:
        raise ValueError(f"features must be [n, d] with n >= 3, got shape {f.shape}")
    n = f.shape[0]
    y = np.asarray(targets)
    single = y.ndim == 1 or (task == "regression" and y.ndim == 2 and y.shape[0] == n and y.shape[1] != n)
    if single:
        y = y[None]
    if y.shape[1] != n:
        raise ValueError(
            f"targets must have n={n} samples on axis 1 (or 0 for one target), got {np.shape(targets)}"
        )
    train = split_mask(n, seed=seed) if train_mask is None else np.asarray(train_mask, bool)
    if train.shape != (n,) or train.sum() < 2 or (~train).sum() < 1:
        raise ValueError(f"train_mask must be bool [{n}] with >= 2 train and >= 1 test rows")
    fj, tj = jnp.asarray(f), jnp.asarray(train)
    nan = np.full(y.shape[0], np.nan)
    if task == "classification":
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError("classification targets must be non-negative integer labels")
        c = int(y.max()) + 1
        if num_target_classes is not None:
            if isinstance(num_target_classes, bool) or not isinstance(num_target_classes, Integral):
                raise TypeError(f"num_target_classes must be an integer, got {num_target_classes!r}")
            if num_target_classes < c:
                raise ValueError(
                    f"targets contain the label {c - 1}, but num_target_classes={num_target_classes}; "
                    f"labels must lie in [0, {num_target_classes})"
                )
            c = int(num_target_classes)
        out = _logistic_all(fj, jnp.asarray(y, jnp.int32), tj, l2, learning_rate, num_classes=c, steps=steps)
        acc, ll = (np.asarray(v) for v in out)
        result = TransferResult(acc, ll, nan)
    else:
        yy = y.astype(f.dtype).reshape(y.shape[0], n, -1)
        mse = np.asarray(_ridge_all(fj, jnp.asarray(yy), tj, l2))
        result = TransferResult(nan, nan, mse)
    return TransferResult(*(v[0] for v in result)) if single else result


def head_retrain_matrix(sources, targets, *, progress: bool | None = False, **kwargs) -> TransferResult:
    """:func:`head_retrain` for each source: ``sources`` is a sequence of [n, d_s] features.

    Args:
      sources: a sequence of S feature arrays [n, d_s].
      targets: as :func:`head_retrain`, shared by every source.
      progress: a progress bar over sources (``None``: when stderr is a terminal).
      **kwargs: :func:`head_retrain`'s keyword options.

    Returns:
      :class:`TransferResult` with arrays [S, T].
    """
    if "num_classes" in kwargs:  # deprecated: warn once, at the caller
        kwargs["num_target_classes"] = _deprecated_num_classes(
            kwargs.get("num_target_classes"), kwargs.pop("num_classes")
        )
    sources = list(sources)
    bar = progress_bar(len(sources), progress, "head retraining", unit="source")
    results = []
    for f in sources:
        results.append(head_retrain(f, targets, **kwargs))
        bar.update(1)
    bar.close()
    return TransferResult(
        *(np.stack([np.atleast_1d(getattr(r, k)) for r in results]) for k in TransferResult._fields)
    )


def _head_name(model) -> str:
    for name in ("head", "classifier"):
        if isinstance(getattr(model, name, None), nnx.Linear):
            return name
    raise TypeError(
        "fine_tune needs a model whose head is an nnx.Linear named 'head' or 'classifier'; "
        f"got {type(model).__name__}"
    )


def _trainable_filter(trainable: Any, head: str):
    if isinstance(trainable, str):
        filters = {"all": nnx.Param, "head": nnx.All(nnx.Param, nnx.PathContains(head))}
        if trainable not in filters:
            raise ValueError(f"trainable must be 'all', 'head' or an NNX filter, got {trainable!r}")
        return filters[trainable]
    return trainable


def _new_head_model(model, num_outputs: int, seed: int):
    head = _head_name(model)
    tuned = nnx.clone(model)
    old = getattr(tuned, head)
    setattr(tuned, head, nnx.Linear(old.in_features, num_outputs, rngs=nnx.Rngs(seed)))
    return tuned, head


def _tuning_targets(targets, n: int):
    """Targets as [T, n] int labels or [T, n, k] floats; whether it is classification; T was given."""
    y = np.asarray(targets)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise TypeError(f"targets must be integer labels or real values, got dtype {y.dtype}")
    classify = np.issubdtype(y.dtype, np.integer)
    if classify:
        stacked = y.ndim == 2
        y = y if stacked else y[None]
        if y.ndim != 2:
            raise ValueError(f"targets (integer labels) must be [n] or [T, n], got shape {np.shape(targets)}")
        if y.size and y.min() < 0:
            raise ValueError("targets (integer labels) must be non-negative")
    else:
        stacked = y.ndim == 3 or (y.ndim == 2 and y.shape[0] != n)
        y = (
            (y if y.ndim == 3 else y[..., None])
            if stacked
            else (y[None] if y.ndim == 2 else y[None, :, None])
        )
        if not np.all(np.isfinite(y)):
            raise ValueError("targets hold NaN or infinite values")
        y = y.astype(np.float32)
    if y.shape[1] != n:
        raise ValueError(f"targets must have n={n} samples, got shape {np.shape(targets)}")
    return y, classify, stacked


def _check_tuning_args(n: int, train_mask, seed: int, epochs, batch_size, target_batch, t: int):
    """The train rows [n] and the target chunk size of :func:`fine_tune_many`, checked."""
    train_rows = split_mask(n, seed=seed) if train_mask is None else np.asarray(train_mask, bool)
    if train_rows.shape != (n,) or train_rows.sum() < 1 or (~train_rows).sum() < 1:
        raise ValueError(f"train_mask must be bool [{n}] with train and test rows")
    check_loop(epochs, batch_size)
    if target_batch is None:
        target_batch = t
    if isinstance(target_batch, bool) or not isinstance(target_batch, int) or target_batch < 1:
        raise ValueError(f"target_batch must be a positive int or None, got {target_batch!r}")
    return train_rows, target_batch


def _predict(fns: Trainer, params, rest, x, valid, batch_size: int) -> np.ndarray:
    """The T copies' outputs [T, n, C] on ``x`` [n, ...], ``batch_size`` rows per call."""
    parts = [
        np.asarray(fns.predict(params, rest, x[i : i + batch_size], valid))
        for i in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(parts, axis=1)


def _tune_in_chunks(
    fns: Trainer, start, rest, valid, x_train, y_train, x_test, *, target_batch: int, bar, **loop
):
    """Train T copies of ``start`` ``target_batch`` at a time; stacked params [T, ...] and test outputs.

    Every chunk runs :func:`jaxtransfer.models.run_epochs` from the same start
    and seed, so it sees the same batches in the same order: results do not
    depend on ``target_batch``.
    """
    t = y_train.shape[0]
    trained, outs = [], []
    for lo in range(0, t, target_batch):
        chunk = slice(lo, min(lo + target_batch, t))
        c = chunk.stop - chunk.start
        params = jax.tree.map(lambda p, c=c: jnp.broadcast_to(p, (c, *p.shape)), start)
        ok = None if valid is None else valid[chunk]
        params, _ = run_epochs(fns, params, rest, x_train, y_train[chunk], valid=ok, bar=bar, **loop)
        trained.append(params)
        outs.append(_predict(fns, params, rest, x_test, ok, loop["batch_size"]))
    return jax.tree.map(lambda *p: jnp.concatenate(p), *trained), np.concatenate(outs)


def _test_metrics(out: np.ndarray, y_test: np.ndarray, classify: bool) -> TransferResult:
    """Test accuracy and log-likelihood of logits [T, n, C], or the MSE of outputs [T, n, k]."""
    nan = np.full(out.shape[0], np.nan)
    if classify:
        logp = np.asarray(jax.nn.log_softmax(out, axis=-1))
        acc = np.mean(logp.argmax(-1) == y_test, axis=1)
        ll = np.mean(np.take_along_axis(logp, y_test[..., None], axis=-1)[..., 0], axis=1)
        return TransferResult(acc, ll, nan)
    return TransferResult(nan, nan, np.mean((out - y_test) ** 2, axis=(1, 2)))


def fine_tune_many(
    model: nnx.Module,
    inputs,
    targets,
    *,
    train_mask=None,
    trainable: Any = "all",
    epochs: int = 3,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    target_batch: int | None = None,
    progress: bool | None = None,
) -> tuple[Any, TransferResult]:
    """Fine-tune one model to T targets on the same inputs at once: T copies trained as one ``vmap``.

    Each target gets a copy of ``model`` with a new head (the same seeded
    initialisation for all), trained with AdamW on the same shuffled
    mini-batches of the train rows (``numpy.random.default_rng(seed)``, one
    permutation per epoch, full batches only); only the variables ``trainable``
    selects change. All T copies are updated by one jitted, vmapped step, so the
    step compiles once for a model structure and T, whatever the targets hold.
    It is the training loop of :func:`jaxtransfer.models.train`
    (:func:`jaxtransfer.models.run_epochs`), batched over targets.

    Integer targets are class labels (softmax cross-entropy; the head has as
    many outputs as the largest class count, and the classes above a target's
    largest label are masked out of its softmax, as in :func:`head_retrain`);
    float targets are regression outputs (mean squared error over the k outputs).

    Args:
      model: an NNX module with an ``nnx.Linear`` head named ``head`` or
        ``classifier``.
      inputs: [n, ...].
      targets: int [T, n] or [n] labels; float [T, n, k], [T, n] or [n, k] / [n]
        values ([T, n] is read as T targets when T != n).
      train_mask: bool [n]; default :func:`split_mask` with ``seed``.
      trainable: ``"all"``, ``"head"`` or an NNX filter of the variables to train.
      epochs, batch_size, learning_rate, weight_decay, seed: the optimisation.
      target_batch: targets trained together in one vmapped step (default: all
        T). Smaller bounds memory, and on CPUs, where a vmapped convolution
        over T weight sets runs slower per image than T separate ones, 1 can be
        faster; results are the same for any value.
      progress: progress bar over epochs (None: when stderr is a terminal).

    Returns:
      ``(trained, TransferResult)``: ``trained`` is ``(graphdef, params, rest)``
      with params stacked [T, ...] (``nnx.merge(graphdef, params_t, rest)`` gives
      copy t), and the test metrics [T] (scalars for a single target).

    Raises:
      ValueError, TypeError: shapes, dtypes, a bad split or filter, a model without a linear head.
    """
    x = np.asarray(inputs)
    n = x.shape[0]
    y, classify, stacked = _tuning_targets(targets, n)
    t = y.shape[0]
    train_rows, target_batch = _check_tuning_args(n, train_mask, seed, epochs, batch_size, target_batch, t)
    num_outputs = int(y.max()) + 1 if classify else y.shape[2]
    tuned, head = _new_head_model(model, num_outputs, seed)
    graphdef, start, rest = nnx.split(tuned, _trainable_filter(trainable, head), ...)
    # classes above a target's largest label are masked out of its softmax
    valid = jnp.asarray(np.arange(num_outputs)[None, :] <= y.max(axis=1)[:, None]) if classify else None
    fns = trainer(
        graphdef, learning_rate=float(learning_rate), weight_decay=float(weight_decay), batched=True
    )
    x_train, x_test = x[train_rows], x[~train_rows]
    n_chunks = -(-t // target_batch)
    bar = progress_bar(epochs * n_chunks, progress, "fine-tuning", unit="epoch")
    try:
        params, out = _tune_in_chunks(
            fns, start, rest, valid, x_train, y[:, train_rows], x_test, target_batch=target_batch,
            bar=bar, epochs=epochs, batch_size=min(batch_size, x_train.shape[0]), seed=seed,
        )  # fmt: skip
    finally:
        bar.close()
    result = _test_metrics(out, y[:, ~train_rows], classify)
    if not stacked:
        result = TransferResult(*(v[0] for v in result))
    return (graphdef, params, rest), result


def fine_tune(
    model: nnx.Module,
    inputs,
    targets,
    *,
    train_mask=None,
    trainable: Any = "all",
    epochs: int = 3,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[nnx.Module, TransferResult]:
    """Fine-tune a copy of ``model`` with a new head for one target; test metrics.

    :func:`fine_tune_many` with one target, returning the fine-tuned model.

    Args:
      model: an NNX module with an ``nnx.Linear`` head named ``head`` or
        ``classifier`` (the zoo's backbones, :mod:`jaxtransfer.sources` models).
      inputs: [n, ...].
      targets: int [n] labels (classification) or float [n] / [n, k] values
        (regression).
      train_mask: bool [n]; default :func:`split_mask` with ``seed``.
      trainable: ``"all"``, ``"head"``, or an NNX filter of the variables to
        train (for example ``nnx.Any(nnx.PathContains("head"), nnx.PathContains("blocks"))``).
      epochs, batch_size, learning_rate, seed: the optimisation (AdamW, weight decay 1e-4).

    Returns:
      ``(fine_tuned_model, TransferResult)`` with scalar metrics.

    Notes:
      Batch-norm statistics stay as they are (the zoo's modules run batch norm
      with running averages); only parameters are trained.
    """
    (graphdef, params, rest), result = fine_tune_many(
        model, inputs, targets, train_mask=train_mask, trainable=trainable, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed, progress=progress,
    )  # fmt: skip
    return nnx.merge(graphdef, jax.tree.map(lambda p: p[0], params), rest), result
