"""One training loop for Flax NNX models: AdamW on seeded, shuffled mini-batches, for one model or T copies.

:func:`jaxtransfer.models.train` (one model) and
:func:`jaxtransfer.transfer.fine_tune_many` (T copies of one model, one per
target, trained together) are both this loop:

* :func:`loss_and_accuracy` — softmax cross-entropy and accuracy for class
  labels (classes outside ``valid`` masked out), mean squared error for real
  targets;
* :func:`trainer` — the optimiser, the jitted training step and the jitted
  prediction, written for one model; with ``batched=True`` the same step is
  ``vmap``-ed over T stacked copies of the trained variables (the frozen ones,
  the inputs and the batch order are shared). Built once per model structure
  and optimisation, so a second call does not recompile;
* :func:`run_epochs` — ``epochs`` fresh permutations from
  ``numpy.random.default_rng(seed)``, full mini-batches only (the remainder of
  N mod ``batch_size`` is skipped that epoch), the per-epoch mean loss and
  accuracy, and a progress bar.

``train`` is the case ``batched=False`` (T = 1 without the vmap);
``fine_tune_many`` runs the batched case on each chunk of targets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = [
    "TrainHistory",
    "Trainer",
    "check_loop",
    "loss_and_accuracy",
    "model_outputs",
    "run_epochs",
    "trainer",
]


class TrainHistory(NamedTuple):
    """Per-epoch mean training loss, and accuracy for classification (else NaN).

    Arrays [epochs] for one model, [epochs, T] for T copies trained together.
    """

    loss: np.ndarray
    accuracy: np.ndarray


class Trainer(NamedTuple):
    """The compiled pieces of the training loop for one model structure and optimisation.

    ``params`` are the trained variables (stacked [T, ...] when ``batched``),
    ``rest`` the frozen ones, ``valid`` a bool [C] class mask ([T, C] when
    batched) or ``None`` (no mask; always ``None`` for real targets).

    Attributes:
      init: ``params -> opt_state``.
      step: jitted ``(params, opt_state, rest, valid, x, y) -> (params,
        opt_state, loss, accuracy)``; ``y`` is [B] or [B, k] ([T, B] / [T, B, k]
        when batched).
      predict: jitted ``(params, rest, x, valid) -> outputs`` [B, C] ([T, B, C]).
      batched: whether the functions map over a leading target axis.
    """

    init: Callable[[Any], Any]
    step: Callable[..., tuple[Any, Any, jax.Array, jax.Array]]
    predict: Callable[..., jax.Array]
    batched: bool


def model_outputs(module, x):
    """The model's logits (its ``taps(x)["logits"]`` when it has taps), as used for training."""
    return module.taps(x)["logits"] if callable(getattr(module, "taps", None)) else module(x)


def loss_and_accuracy(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean training loss of one batch, and its accuracy.

    Integer targets [B] are class labels: softmax cross-entropy of the logits
    ``outputs`` [B, C] and the fraction of argmax hits. Float targets [B] or
    [B, k] are real values: mean squared error over all B·k entries (the
    targets are reshaped to ``outputs``' shape), accuracy NaN. The kind is read
    from the dtype, which is static under ``jit``.
    """
    if jnp.issubdtype(targets.dtype, jnp.integer):
        loss = optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
        return loss, jnp.mean(jnp.argmax(outputs, axis=-1) == targets)
    err = outputs - targets.reshape(outputs.shape)
    return jnp.mean(err * err), jnp.nan


def _build_trainer(graphdef, learning_rate, weight_decay: float, batched: bool) -> Trainer:
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)

    def outputs(params, rest, x, valid):
        out = model_outputs(nnx.merge(graphdef, params, rest), x)
        return out if valid is None else jnp.where(valid[None, :], out, -1e9)

    def step(params, opt_state, rest, valid, x, y):
        def loss_fn(p):
            return loss_and_accuracy(outputs(p, rest, x, valid), y)

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    if not batched:
        return Trainer(tx.init, jax.jit(step), jax.jit(outputs), False)
    return Trainer(
        jax.vmap(tx.init),
        jax.jit(jax.vmap(step, in_axes=(0, 0, None, 0, None, 0))),
        jax.jit(jax.vmap(outputs, in_axes=(0, None, None, 0))),
        True,
    )


_cached_trainer = functools.lru_cache(maxsize=16)(_build_trainer)


def trainer(graphdef: Any, *, learning_rate: Any, weight_decay: float, batched: bool = False) -> Trainer:
    """The :class:`Trainer` (AdamW) for models of structure ``graphdef``.

    Cached on the structure and the optimisation, never on the weights, so a
    second call for a model of the same architecture reuses the compiled step.
    The frozen variables (``rest``) are an argument of the step, not a constant
    baked into it. An unhashable structure gets fresh functions.

    Args:
      graphdef: the NNX graph definition of ``nnx.split(model, wrt, ...)``.
      learning_rate, weight_decay: AdamW's (``optax.adamw``).
      batched: map every function over a leading axis of T copies.
    """
    try:
        return _cached_trainer(graphdef, learning_rate, weight_decay, batched)
    except TypeError:  # an unhashable model structure or learning rate
        return _build_trainer(graphdef, learning_rate, weight_decay, batched)


def check_loop(epochs, batch_size) -> None:
    """Raise ``ValueError`` unless ``epochs`` and ``batch_size`` are positive ints (bools refused)."""
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def run_epochs(
    fns: Trainer,
    params: Any,
    rest: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    valid: jax.Array | None = None,
    epochs: int,
    batch_size: int,
    seed: int,
    bar: Any,
) -> tuple[Any, TrainHistory]:
    """Train ``params`` from a fresh optimiser state for ``epochs`` shuffled epochs.

    Each epoch takes a permutation of the N samples from one
    ``numpy.random.default_rng(seed)`` and runs ``N // batch_size`` full
    batches through ``fns.step``, so the step compiles once and a run is
    reproducible; T copies (``fns.batched``) see the same batches in the same
    order.

    Args:
      fns: from :func:`trainer`.
      params, rest: the trained and frozen variables.
      inputs: [N, ...] host array.
      targets: [N, ...] host array, or [T, N, ...] when ``fns.batched``.
      valid: class mask for the step, or ``None``.
      epochs, batch_size, seed: the loop (``1 <= batch_size <= N``).
      bar: progress bar (:func:`jaxtransfer._progress.progress_bar`), advanced
        once per epoch; the caller closes it.

    Returns:
      ``(params, TrainHistory)``: float64 arrays [epochs] ([epochs, T] batched).
    """
    opt_state = fns.init(params)
    n = inputs.shape[0]
    rng = np.random.default_rng(seed)
    losses, accuracies = [], []
    for _ in range(epochs):
        order = rng.permutation(n)
        epoch_loss, epoch_acc = [], []
        for i in range(n // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            y = targets[:, idx] if fns.batched else targets[idx]
            params, opt_state, loss, acc = fns.step(params, opt_state, rest, valid, inputs[idx], y)
            epoch_loss.append(loss)
            epoch_acc.append(acc)
        losses.append(np.mean(jax.device_get(epoch_loss), axis=0))
        accuracies.append(np.mean(jax.device_get(epoch_acc), axis=0))
        bar.update(1)
        bar.set_postfix(loss=f"{float(np.mean(losses[-1])):.4f}")
    history = TrainHistory(np.asarray(losses, np.float64), np.asarray(accuracies, np.float64))
    return params, history
