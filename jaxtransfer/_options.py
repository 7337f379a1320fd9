"""Parsing of estimator keyword options (shared by every ``check``)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ._validation import is_concrete


def take_options(estimator: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Options with defaults filled in; unknown names are a ``TypeError``."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(
            f"{estimator} got unexpected option(s) {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(defaults)) or 'none'}"
        )
    return {**defaults, **options}


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def nonnegative_values(name: str, value: Any, dtype) -> jnp.ndarray:
    """A scalar or 1-D array of finite values >= 0 (e.g. ridge penalties)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number or a 1-D array of numbers, got {value!r}")
    arr = value if not isinstance(value, (list, tuple, int, float)) else np.asarray(value, dtype=float)
    if not jnp.issubdtype(jnp.asarray(arr).dtype, jnp.number) or jnp.iscomplexobj(arr):
        raise TypeError(f"{name} must be real numbers, got dtype {jnp.asarray(arr).dtype}")
    if jnp.ndim(arr) > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {jnp.shape(arr)}")
    if jnp.ndim(arr) == 1 and jnp.shape(arr)[0] == 0:
        raise ValueError(f"{name} is empty; give at least one value")
    if is_concrete(arr):
        host = np.asarray(arr, dtype=float)
        if not np.isfinite(host).all() or (host < 0).any():
            raise ValueError(f"{name} must be finite and >= 0, got {host.tolist()}")
    return jnp.asarray(arr, dtype)
