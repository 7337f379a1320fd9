"""Label histograms: hard joint counts of two labelings, and LEEP's soft joint.

Two algorithms give the same integer counts:

* ``"onehot"``: an int8 one-hot matrix product with int32 accumulation. It does
  ``n·(Cz-1)·(Cy-1)`` multiply-adds per pair (the last class of each side is
  recovered from the marginals), each one a SIMD lane, so it wins while the
  class counts are small.
* ``"scatter"``: a scatter-add of ones at ``z·Cy + y``, all pairs in one flat
  ``.at[].add`` (the scatter primitive behind ``jax.ops.segment_sum``; a
  ``vmap`` of ``segment_sum`` over pairs measured 2.5× slower on CPU). It does
  ``n`` memory updates per pair plus ``Cz·Cy`` zeroing, so it wins when the
  class counts are large.

``method="auto"`` picks ``"onehot"`` when ``(Cz-1)·(Cy-1) <= ONEHOT_MAX_CELLS``
and ``"scatter"`` otherwise. The threshold was measured on a 2-core x86-64 CPU
(``bench/bench_speed.py``): one int8 multiply-add in the product costs about
1/400 of one scatter update there.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from ._spectrum import matmul, sample_weights

__all__ = [
    "ONEHOT_MAX_CELLS",
    "choose_histogram_method",
    "joint_histogram",
    "joint_histograms",
    "label_counts",
    "soft_joint_histogram",
]

ONEHOT_MAX_CELLS = 256
_METHODS = ("auto", "onehot", "scatter")


def choose_histogram_method(num_z: int, num_y: int, method: str = "auto") -> str:
    """Resolve ``method`` for class counts ``num_z`` × ``num_y`` (see module docs)."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method != "auto":
        return method
    return "onehot" if (num_z - 1) * (num_y - 1) <= ONEHOT_MAX_CELLS else "scatter"


def _indicators(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    """[..., n] labels -> [..., num_classes - 1, n] indicators of the first classes."""
    classes = jnp.arange(num_classes - 1, dtype=jnp.int32)
    classes = classes.reshape((1,) * (labels.ndim - 1) + (num_classes - 1, 1))
    return (labels.astype(jnp.int32)[..., None, :] == classes).astype(dtype)


def _onehot(labels: jax.Array, num_classes: int) -> jax.Array:
    """[..., n] labels -> [..., n, num_classes] booleans."""
    # int32 on both sides: small label dtypes (uint8) would wrap the class list
    classes = jnp.arange(num_classes, dtype=jnp.int32).reshape((1,) * labels.ndim + (num_classes,))
    return labels.astype(jnp.int32)[..., None] == classes


@partial(jax.jit, static_argnames=("num_classes",))
def label_counts(labels: jax.Array, *, num_classes: int, mask: jax.Array | None = None) -> jax.Array:
    """Count each class: ``counts[c] = #{i : labels[i] = c, mask[i]}``.

    Args:
      labels: int [..., n], values in ``[0, num_classes)``.
      num_classes: static: changing it recompiles.
      mask: optional bool [n] (or broadcastable to ``labels``); False drops a sample.

    Returns:
      int32 [..., num_classes].
    """
    labels = jnp.asarray(labels)
    w = sample_weights(labels.shape[-1], mask, jnp.int32)
    w = jnp.broadcast_to(w, labels.shape)
    return jnp.sum(_onehot(labels, num_classes).astype(jnp.int32) * w[..., None], axis=-2)


def _assemble(inner, rows, cols, total):
    """Full [.., Cz, Cy] table from the [.., Cz-1, Cy-1] block and partial marginals.

    ``rows`` [.., Cz-1] counts z = c and ``cols`` [.., Cy-1] counts y = d over the
    kept samples, ``total`` [..] counts them; the last row and column follow.
    """
    row_last = rows - jnp.sum(inner, axis=-1)  # z = c < Cz-1, y = Cy-1
    col_last = cols - jnp.sum(inner, axis=-2)  # z = Cz-1, y = d < Cy-1
    corner = total - jnp.sum(inner, axis=(-2, -1)) - jnp.sum(row_last, -1) - jnp.sum(col_last, -1)
    top = jnp.concatenate([inner, row_last[..., :, None]], axis=-1)
    bottom = jnp.concatenate([col_last, corner[..., None]], axis=-1)
    return jnp.concatenate([top, bottom[..., None, :]], axis=-2)


def _onehot_pairs(zs, ys, wz, wy, num_z, num_y, source_mask, target_mask):
    """All-pairs counts [S, T, Cz, Cy] by one int8 matrix product.

    The left matrix stacks the indicators of source classes 0..Cz-2 (weighted by
    the source mask) over the source weights; the right one likewise for the
    targets. Their product holds the joint counts of the first Cz-1 × Cy-1
    classes, both partial marginals and the kept-sample counts, from which
    :func:`_assemble` recovers the last row and column. A side without a mask
    contributes one row of ones instead of one weight row per labeling.
    """
    s, n = zs.shape
    t = ys.shape[0]
    wz, wy = wz.astype(jnp.int8), wy.astype(jnp.int8)
    zi = _indicators(zs, num_z, jnp.int8)  # [S, Cz-1, n]
    yi = _indicators(ys, num_y, jnp.int8)  # [T, Cy-1, n]
    if source_mask is not None:
        zi = zi * wz[:, None, :]
    if target_mask is not None:
        yi = yi * wy[:, None, :]
    zw = wz if source_mask is not None else jnp.ones((1, n), jnp.int8)  # [a, n]
    yw = wy if target_mask is not None else jnp.ones((1, n), jnp.int8)  # [b, n]
    left = jnp.concatenate([zi.reshape(s * (num_z - 1), n), zw])
    right = jnp.concatenate([yi.reshape(t * (num_y - 1), n), yw])
    prod = lax.dot_general(left, right, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    sz, ty = s * (num_z - 1), t * (num_y - 1)
    a, b = zw.shape[0], yw.shape[0]
    inner = prod[:sz, :ty].reshape(s, num_z - 1, t, num_y - 1).transpose(0, 2, 1, 3)
    rows = jnp.broadcast_to(prod[:sz, ty:].reshape(s, num_z - 1, b).transpose(0, 2, 1), (s, t, num_z - 1))
    cols = jnp.broadcast_to(prod[sz:, :ty].reshape(a, t, num_y - 1), (s, t, num_y - 1))
    total = jnp.broadcast_to(prod[sz:, ty:], (s, t))
    return _assemble(inner, rows, cols, total)


def _scatter_pairs(zs, ys, wz, wy, num_z, num_y):
    """All-pairs counts [S, T, Cz, Cy] by one flat scatter-add."""
    s = zs.shape[0]
    t = ys.shape[0]
    cells = num_z * num_y
    offsets = (jnp.arange(s * t, dtype=jnp.int32) * cells).reshape(s, t, 1)
    keys = zs[:, None, :].astype(jnp.int32) * num_y + ys[None, :, :].astype(jnp.int32) + offsets
    w = wz[:, None, :].astype(jnp.int32) * wy[None, :, :].astype(jnp.int32)
    flat = (
        jnp.zeros((s * t * cells,), jnp.int32)
        .at[keys.reshape(-1)]
        .add(w.reshape(-1), indices_are_sorted=False, unique_indices=False, mode="promise_in_bounds")
    )
    return flat.reshape(s, t, num_z, num_y)


@partial(jax.jit, static_argnames=("num_z", "num_y", "method"))
def joint_histograms(
    source_labels: jax.Array,
    target_labels: jax.Array,
    *,
    num_z: int,
    num_y: int,
    source_mask: jax.Array | None = None,
    target_mask: jax.Array | None = None,
    method: str = "auto",
) -> jax.Array:
    """Joint label counts of every source labeling with every target labeling.

    ``counts[s, t, z, y] = #{i : source_labels[s, i] = z, target_labels[t, i] = y}``
    over the samples that both masks keep. The work is one matrix product or one
    scatter for all S·T pairs (see the module docstring for how ``method`` picks).

    Args:
      source_labels: int [S, n], values in ``[0, num_z)``.
      target_labels: int [T, n], values in ``[0, num_y)``.
      num_z, num_y: class counts; static: changing them recompiles.
      source_mask: optional bool [S, n] or [n].
      target_mask: optional bool [T, n] or [n].
      method: ``"auto"``, ``"onehot"`` or ``"scatter"``; static.

    Returns:
      int32 [S, T, num_z, num_y]. Counts are exact for n < 2**31.

    Notes:
      Labels outside the class range are not checked here (the kernels are for
      traced code); the estimators in ``jaxtransfer`` validate eager inputs.
    """
    zs = jnp.asarray(source_labels)
    ys = jnp.asarray(target_labels)
    n = zs.shape[-1]
    wz = jnp.broadcast_to(sample_weights(n, source_mask, jnp.int32), zs.shape)
    wy = jnp.broadcast_to(sample_weights(n, target_mask, jnp.int32), ys.shape)
    if choose_histogram_method(num_z, num_y, method) == "onehot":
        return _onehot_pairs(zs, ys, wz, wy, num_z, num_y, source_mask, target_mask)
    return _scatter_pairs(zs, ys, wz, wy, num_z, num_y)


def joint_histogram(
    source_labels: jax.Array,
    target_labels: jax.Array,
    *,
    num_z: int,
    num_y: int,
    mask: jax.Array | None = None,
    method: str = "auto",
) -> jax.Array:
    """Joint label counts of one pair: int32 [num_z, num_y].

    ``counts[z, y] = #{i : source_labels[i] = z, target_labels[i] = y, mask[i]}``.
    The single-pair case of :func:`joint_histograms`; same arguments without
    the leading batch axis.
    """
    return joint_histograms(
        jnp.asarray(source_labels)[None],
        jnp.asarray(target_labels)[None],
        num_z=num_z,
        num_y=num_y,
        source_mask=None if mask is None else jnp.asarray(mask)[None],
        method=method,
    )[0, 0]


@partial(jax.jit, static_argnames=("num_y",))
def soft_joint_histogram(
    probs: jax.Array, target_labels: jax.Array, *, num_y: int, mask: jax.Array | None = None
) -> jax.Array:
    """LEEP's soft joint mass ``θᵀ · onehot(y)``: ``out[z, y] = Σ_{i: yᵢ=y} θ_z(xᵢ)``.

    Args:
      probs: float [n, Cz], rows of source-class probabilities.
      target_labels: int [n] in ``[0, num_y)``.
      num_y: static: changing it recompiles.
      mask: optional bool [n].

    Returns:
      [Cz, num_y] in the dtype of ``probs`` (unnormalised: divide by n for P̂).
    """
    probs = jnp.asarray(probs)
    y = jnp.asarray(target_labels)
    onehot = _onehot(y, num_y).astype(probs.dtype)
    if mask is not None:
        onehot = onehot * jnp.asarray(mask).astype(probs.dtype)[:, None]
    return matmul(probs.T, onehot)
