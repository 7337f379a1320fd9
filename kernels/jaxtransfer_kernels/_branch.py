"""Run-time branches that stay branches when many sources are batched with ``vmap``.

``lax.cond`` with a predicate that varies along a ``vmap`` axis is lowered to
a select: *both* branches run for every member of the batch. The kernels
choose a factorisation per source at run time (a Cholesky factor or the
spectrum; the Gram eigendecomposition or the SVD), so a chunk of several
sources would pay for every route.

:func:`branch` is ``lax.cond`` everywhere, except inside
``with uniform_batch(axis_name):`` around a ``vmap(..., axis_name=axis_name)``
(what :func:`jaxtransfer.score_matrix` does with a chunk of sources). There
the predicate is reduced over the batch with ``pmin``/``pmax``, which gives an
unbatched value, so the chunk takes

* the true branch alone when every member's predicate is true,
* the false branch alone when every member's is false,
* both, selected per member, only when the chunk is mixed (what ``vmap``
  would have done anyway).

Values are identical to ``lax.cond`` per member; only the work differs. The
context is read while tracing (a Python context variable), so it changes
the compiled program, never the result.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["branch", "uniform_batch"]

_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxtransfer_uniform_axis", default=None)


@contextlib.contextmanager
def uniform_batch(axis_name: str):
    """Inside ``vmap(..., axis_name=axis_name)``, while tracing: :func:`branch` takes one route per batch."""
    token = _AXIS.set(axis_name)
    try:
        yield
    finally:
        _AXIS.reset(token)


def branch(pred, true_fn, false_fn, operand):
    """``lax.cond(pred, true_fn, false_fn, operand)``; inside :func:`uniform_batch`, one route per batch.

    Args:
      pred: scalar bool (per member of the batch).
      true_fn, false_fn: functions of ``operand`` with matching output structures.
      operand: a pytree.

    Returns:
      The taken branch's output.
    """
    axis = _AXIS.get()
    if axis is None:
        return lax.cond(pred, true_fn, false_fn, operand)
    flag = jnp.asarray(pred).astype(jnp.int32)
    all_true = lax.pmin(flag, axis) == 1  # unbatched along the named axis
    any_true = lax.pmax(flag, axis) == 1

    def mixed(x):
        a, b = true_fn(x), false_fn(x)
        return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)

    def not_all_true(x):
        return lax.cond(any_true, mixed, false_fn, x)

    return lax.cond(all_true, true_fn, not_all_true, operand)
