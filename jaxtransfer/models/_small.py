"""Small source models trained here: Flax NNX CNNs and MLPs, Optax training, pickle-free files.

Source-task experiments need a model trained on one task and scored on another.
These helpers make such models from any labelled array dataset with fixed
seeds and no downloads:

* :class:`SmallCNN` (images [N, H, W] or [N, H, W, C]) and :class:`MLP`
  (vectors [N, D]); both expose ``taps(x)`` with ``features`` (the
  penultimate layer), ``logits`` (the head's outputs) and named layers, so
  :func:`jaxtransfer.features.extract` reads them directly;
* :func:`train`: AdamW with softmax cross-entropy (class labels) or mean
  squared error (real targets), shuffled mini-batches from a seeded NumPy
  generator, one split of the model and one jitted step — the one-model case
  of the training loop in :mod:`jaxtransfer.models._training`, which
  :func:`jaxtransfer.transfer.fine_tune_many` runs for many targets at once;
* :func:`save` / :func:`load`: one ``.npz`` with the architecture as JSON and
  every variable as an array; loaded with ``allow_pickle=False`` and an
  allow-list of model classes, so a file can never run code.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._io import read_npz, write_npz
from .._nnx import get_value, module_list, set_value
from .._progress import progress_bar
from ._training import TrainHistory, check_loop, model_outputs, run_epochs, trainer

__all__ = ["MLP", "SmallCNN", "TrainHistory", "load", "model_outputs", "save", "train"]

_CONFIG_KEY = "__config__"


def _as_float(x: jax.Array) -> jax.Array:
    """uint8 images become floats in [0, 1]; other inputs are cast to float32."""
    x = jnp.asarray(x)
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


class SmallCNN(nnx.Module):
    """A small convolutional network: ``len(channels)`` stages of 3×3 conv + ReLU
    (stride ``stem_stride`` for the first, 2 after), global average pooling, a
    dense ReLU layer of ``hidden`` units (the features), and a linear head of
    ``num_outputs``.

    With ``coords=True`` two channels holding each pixel's x and y in [−1, 1]
    are appended to the input (CoordConv, Liu et al., NeurIPS 2018), so the
    pooled features can locate things — what keypoint regression needs.

    Taps: ``conv1`` … ``convK`` (pooled), ``features``, ``logits``.
    """

    def __init__(
        self,
        num_outputs: int,
        *,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        hidden: int = 64,
        coords: bool = False,
        stem_stride: int = 1,
        seed: int = 0,
    ):
        rngs = nnx.Rngs(seed)
        self.config = json.dumps(
            {"class": "SmallCNN", "num_outputs": num_outputs, "in_channels": in_channels,
             "channels": list(channels), "hidden": hidden, "coords": coords, "stem_stride": stem_stride,
             "seed": seed}
        )  # fmt: skip
        self.coords = coords
        convs, cin = [], in_channels + 2 * coords
        for i, c in enumerate(channels):
            stride = stem_stride if i == 0 else 2
            convs.append(nnx.Conv(cin, c, (3, 3), strides=stride, padding="SAME", rngs=rngs))
            cin = c
        self.convs = module_list(convs)
        self.dense = nnx.Linear(cin, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, num_outputs, rngs=rngs)
        self.layer_names = tuple(f"conv{i + 1}" for i in range(len(channels)))

    def taps(self, x: jax.Array) -> dict[str, jax.Array]:
        y = _as_float(x)
        if y.ndim == 3:
            y = y[..., None]
        if self.coords:
            n, h, w = y.shape[:3]
            gy, gx = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
            grid = jnp.broadcast_to(jnp.stack([gx, gy], -1)[None], (n, h, w, 2)).astype(y.dtype)
            y = jnp.concatenate([y, grid], axis=-1)
        out = {}
        for name, conv in zip(self.layer_names, self.convs, strict=True):
            y = jax.nn.relu(conv(y))
            out[name] = jnp.mean(y, axis=(1, 2))
        out["features"] = jax.nn.relu(self.dense(out[self.layer_names[-1]]))
        out["logits"] = self.head(out["features"])
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.taps(x)["logits"]


class MLP(nnx.Module):
    """A multilayer perceptron on flattened inputs: dense ReLU layers of sizes
    ``hidden`` (the last is the features) and a linear head.

    Taps: ``dense1`` … ``denseK``, ``features`` (= the last dense layer), ``logits``.
    """

    def __init__(
        self, num_outputs: int, *, in_features: int, hidden: Sequence[int] = (128, 64), seed: int = 0
    ):
        if not hidden:
            raise ValueError("hidden must list at least one layer size")
        rngs = nnx.Rngs(seed)
        self.config = json.dumps(
            {
                "class": "MLP",
                "num_outputs": num_outputs,
                "in_features": in_features,
                "hidden": list(hidden),
                "seed": seed,
            }
        )
        dims = [in_features, *hidden]
        layers = [nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(dims)]
        self.dense = module_list(layers)
        self.head = nnx.Linear(dims[-1], num_outputs, rngs=rngs)
        self.layer_names = tuple(f"dense{i + 1}" for i in range(len(hidden)))

    def taps(self, x: jax.Array) -> dict[str, jax.Array]:
        y = _as_float(x).reshape(x.shape[0], -1)
        out = {}
        for name, layer in zip(self.layer_names, self.dense, strict=True):
            y = jax.nn.relu(layer(y))
            out[name] = y
        out["features"] = y
        out["logits"] = self.head(y)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.taps(x)["logits"]


_MODELS = {"SmallCNN": SmallCNN, "MLP": MLP}


def _training_targets(model: nnx.Module, x: np.ndarray, y: np.ndarray, epochs, batch_size) -> np.ndarray:
    """Check :func:`train`'s arguments; the targets as class labels, or real targets as float32."""
    n = x.shape[0]
    if n == 0:
        raise ValueError("inputs is empty: got 0 samples")
    if y.shape[0] != n:
        raise ValueError(f"targets has {y.shape[0]} samples but inputs has {n}")
    check_loop(epochs, batch_size)
    width = jax.eval_shape(model_outputs, model, jnp.asarray(x[:1])).shape[-1]
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1:
            raise ValueError(f"integer targets must be class labels of shape [N], got shape {y.shape}")
        if y.min() < 0 or y.max() >= width:
            raise ValueError(f"targets must be labels in [0, {width}), got range [{y.min()}, {y.max()}]")
        return y
    if int(np.prod(y.shape[1:])) != width:
        raise ValueError(f"targets have {int(np.prod(y.shape[1:]))} outputs per sample, the model {width}")
    return y.astype(np.float32)


def train(
    model: nnx.Module,
    inputs: Any,
    targets: Any,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    wrt: Any = nnx.Param,
    progress: bool | None = None,
) -> tuple[nnx.Module, TrainHistory]:
    """Train a copy of ``model`` on ``(inputs, targets)`` with AdamW; the argument is not changed.

    Integer targets [N] are class labels (softmax cross-entropy on the logits);
    float targets [N] or [N, k] are regression outputs (mean squared error).
    Each epoch visits a fresh permutation from ``numpy.random.default_rng(seed)``
    in full batches (the remainder of N mod ``batch_size`` is skipped that
    epoch), so a run is reproducible and the step compiles once (once per
    model structure: a second call reuses it).

    This is the one-model case of the loop that
    :func:`jaxtransfer.transfer.fine_tune_many` runs for T copies at once
    (:func:`jaxtransfer.models.run_epochs`).

    Args:
      model: an NNX module whose ``taps(x)["logits"]`` (or ``model(x)``) are the outputs.
      inputs: [N, ...] array.
      targets: [N] int labels, or [N] / [N, k] float targets.
      epochs, batch_size, learning_rate, weight_decay, seed: the optimisation.
      wrt: NNX filter of the variables to train (``nnx.Param`` for all); for
        example ``nnx.PathContains("head")`` retrains only the head.
      progress: progress bar over epochs; ``None`` shows it on a terminal.

    Returns:
      ``(trained_model, TrainHistory)``.

    Raises:
      ValueError: mismatched or empty inputs, labels out of range, bad sizes.
    """
    x = np.asarray(inputs)
    trained = nnx.clone(model)
    y = _training_targets(trained, x, np.asarray(targets), epochs, batch_size)
    graphdef, params, rest = nnx.split(trained, wrt, ...)
    fns = trainer(graphdef, learning_rate=learning_rate, weight_decay=weight_decay)
    bar = progress_bar(epochs, progress, "train", unit="epoch")
    try:
        params, history = run_epochs(
            fns, params, rest, x, y, epochs=epochs, batch_size=min(batch_size, x.shape[0]), seed=seed, bar=bar
        )
    finally:
        bar.close()
    nnx.update(trained, params)
    return trained, history


def _flat_state(state: Any) -> list[tuple[str, Any]]:
    return [("/".join(map(str, path)), var) for path, var in nnx.to_flat_state(state)]


def save(path: str | os.PathLike, model: nnx.Module) -> Path:
    """Write ``model`` (a :class:`SmallCNN` or :class:`MLP`) to one ``.npz``, without pickle.

    Returns:
      the path written (``.npz`` is appended when missing).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, str) or json.loads(config).get("class") not in _MODELS:
        raise TypeError(f"model must be one of {sorted(_MODELS)}, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {key: np.asarray(get_value(var)) for key, var in _flat_state(nnx.state(model))}
    return write_npz(path, {_CONFIG_KEY: np.array(config), **arrays})


def load(path: str | os.PathLike) -> nnx.Module:
    """Read a model written by :func:`save`. Nothing in the file is executed.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a model file, an unknown class, or arrays that do not
        match the architecture (names, shapes, dtypes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    arrays = read_npz(path, what="model file")
    try:
        config = json.loads(str(arrays.pop(_CONFIG_KEY)))
        cls = _MODELS[config.pop("class")]
        model = cls(**config)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} does not describe a SmallCNN or MLP model ({err!r})") from None
    state = nnx.state(model)
    flat = _flat_state(state)
    expected = {key for key, _ in flat}
    if set(arrays) != expected:
        extra, missing = sorted(set(arrays) - expected), sorted(expected - set(arrays))
        raise ValueError(
            f"{path}: arrays do not match the architecture (unexpected {extra}, missing {missing})"
        )
    for key, var in flat:
        value = arrays[key]
        current = get_value(var)
        if value.shape != current.shape or value.dtype != current.dtype:
            raise ValueError(
                f"{path}: {key} has shape {value.shape} {value.dtype}, "
                f"expected {current.shape} {current.dtype}"
            )
        set_value(var, jnp.asarray(value))
    nnx.update(model, state)
    return model
