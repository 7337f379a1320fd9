"""Entropies from counts, with 0·log 0 = 0 and finite gradients everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["conditional_entropy_from_counts", "entropy_from_counts"]


def _safe_xlogx_over(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num · log(den / num)`` with 0 where ``num == 0`` (double-where: finite grads)."""
    pos = num > 0
    safe_num = jnp.where(pos, num, 1)
    safe_den = jnp.where(pos, den, 1)
    return jnp.where(pos, num * (jnp.log(safe_den) - jnp.log(safe_num)), 0)


def entropy_from_counts(counts: jax.Array, axis: int = -1) -> jax.Array:
    """Shannon entropy in nats of the distribution proportional to ``counts``.

    ``H = Σ_c (n_c / N) log(N / n_c)`` with ``N = Σ_c n_c`` and 0·log 0 = 0. Each
    term is non-negative, so nothing cancels. An all-zero row gives 0.

    Args:
      counts: [..., C] non-negative counts (integer or float).
      axis: the class axis.

    Returns:
      [...] float entropy (the default float dtype for integer counts).
    """
    c = jnp.asarray(counts)
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(jnp.result_type(float))
    total = jnp.sum(c, axis=axis, keepdims=True)
    safe_total = jnp.where(total > 0, total, 1)
    return jnp.sum(_safe_xlogx_over(c, total), axis=axis) / jnp.squeeze(safe_total, axis)


def conditional_entropy_from_counts(joint: jax.Array) -> jax.Array:
    """Conditional entropy H(Y|Z) in nats from a joint count table.

    ``H(Y|Z) = Σ_{z,y} (n_{zy} / N) log(n_z / n_{zy})`` with ``n_z = Σ_y n_{zy}``.
    Every term is non-negative (no ``H(Y,Z) − H(Z)`` cancellation); empty cells
    and empty rows contribute 0.

    Args:
      joint: [..., Cz, Cy] counts, source classes on the second-to-last axis.

    Returns:
      [...] float conditional entropy.
    """
    c = jnp.asarray(joint)
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(jnp.result_type(float))
    rows = jnp.sum(c, axis=-1, keepdims=True)
    total = jnp.sum(c, axis=(-2, -1))
    safe_total = jnp.where(total > 0, total, 1)
    return jnp.sum(_safe_xlogx_over(c, rows), axis=(-2, -1)) / safe_total
