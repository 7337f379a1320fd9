"""Eager input and option checks shared by every estimator.

Each check takes the argument's public name and raises ``TypeError`` (wrong
kind of value) or ``ValueError`` (wrong shape or values) with a message that
names the argument, what was received and what was expected. Values are only
inspected when they are concrete; inside ``jit``/``vmap``/``grad`` only static
properties (shapes, dtypes, class counts) are checked. Inputs are never
modified: conversions make new arrays.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "MAX_INFERRED_CLASSES",
    "MAX_TABLE_CELLS",
    "as_features",
    "as_labels",
    "as_mask",
    "check_cells",
    "check_same_samples",
    "choice",
    "concrete",
    "host_copy",
    "is_concrete",
    "nonnegative_values",
    "num_classes_arg",
    "static_int",
    "take_options",
    "to_array",
]


def is_concrete(x: Any) -> bool:
    """True unless ``x`` is a tracer (inside jit, vmap or grad)."""
    return not isinstance(x, jax.core.Tracer)


def to_array(name: str, x: Any) -> Any:
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, (str, bytes, dict, set)) or x is None:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name} must be an array, got {type(x).__name__} ({err})") from None
    if arr.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an object array (ragged or mixed input?)")
    if not arr.dtype.isnative:  # big-endian data from a file, say: the same values, native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def concrete(fn, *args):
    """``fn(*args)`` evaluated now on concrete arrays, also while an outer ``jit`` is tracing
    (a check of a closed-over array must give a value, not a tracer)."""
    with jax.ensure_compile_time_eval():
        return fn(*args)


@jax.jit
def _all_finite(x):
    """Whether every entry of a float array is finite, as one float reduction: x·0 is 0 where x is
    finite and NaN where it is ±inf or NaN, so the sum is 0 or NaN. (``any(~isfinite(x))`` made XLA
    on a CPU write a boolean array of the input's size first: 0.25× a float32 input, measured.)"""
    return jnp.isfinite(jnp.sum(x * 0))


_HOST_SLICE = 1 << 18
"""Entries per slice of a check on a NumPy array: its temporaries stay at 256 KB."""


def _host_all_finite(x: np.ndarray) -> bool:
    """Whether every entry of a NumPy array is finite, checked a slice at a time (no temporary of
    the input's size; a non-contiguous view is read in place)."""
    if x.size == 0:
        return True
    if x.ndim == 0:
        return bool(np.isfinite(x))
    row = x[0].size
    if x.ndim > 1 and row > _HOST_SLICE:
        return all(_host_all_finite(r) for r in x)
    step = max(1, _HOST_SLICE // max(row, 1))
    return all(bool(np.isfinite(x[i : i + step]).all()) for i in range(0, x.shape[0], step))


@jax.jit
def _min_max(x):
    """[min, max] of labels, one array: one fetch."""
    return jnp.stack([jnp.min(x), jnp.max(x)])


@jax.jit
def _mask_facts_device(x):
    """[all entries 0/1, fewest kept samples of any row] of a mask [..., n], one array: one fetch."""
    kept = jnp.sum(x != 0, axis=-1)
    binary = jnp.all((x == 0) | (x == 1)) if x.dtype != bool else jnp.ones((), bool)
    return jnp.stack([binary.astype(kept.dtype), jnp.min(kept)])


def _mask_facts(x):
    """(all entries 0/1, fewest kept samples of any row) of a mask [..., n], where it lives."""
    if not isinstance(x, np.ndarray):
        return tuple(np.asarray(concrete(_mask_facts_device, x)).tolist())
    binary = bool(np.all((x == 0) | (x == 1))) if x.dtype != bool else True
    return binary, int(np.min(np.sum(x != 0, axis=-1)))


def _host(x, dtype) -> np.ndarray:
    """A NumPy array as it will be on the device: ``dtype`` as JAX stores it (float64 becomes
    float32 unless x64 is enabled), with no copy when it already is."""
    return np.asarray(x).astype(jax.dtypes.canonicalize_dtype(dtype), copy=False)


def _device(x, dtype) -> jax.Array:
    """``x`` as a ``jax.Array`` of ``dtype``: a NumPy array is put on the default device once; a
    ``jax.Array`` stays where it is, with its sharding (a cast runs there)."""
    if isinstance(x, jax.Array):
        return x if x.dtype == dtype else x.astype(dtype)
    # device_put copies once (jnp.asarray of a large host array held two copies on a CPU, measured);
    # evaluated now, so that a closed-over array stays a constant inside an outer jit
    return concrete(jax.device_put, _host(x, dtype))


def host_copy(x) -> np.ndarray:
    """A host copy of a small array, also of a global array spread over several processes
    (for error messages and small label arrays; never called on features in the normal path)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _check_stack(name: str, arr: Any, lead: int) -> None:
    """A stacked argument (``lead`` leading axes) must have at least one entry per stack axis."""
    if lead and arr.ndim >= lead and 0 in arr.shape[:lead]:
        raise ValueError(
            f"{name} is empty: its stack axis has length 0 (shape {tuple(arr.shape)}); "
            "score at least one source against at least one target"
        )


def _shape_text(lead: int, core: str) -> str:
    return "[" + ", ".join([*["S/T"] * lead, core]) + "]" if lead else f"[{core}]"


MAX_INFERRED_CLASSES = 2**16
"""Largest class count read from the data (max label + 1); pass the count explicitly for more."""

MAX_TABLE_CELLS = 2**31
"""Largest count or probability table (class pairs, samples × classes…) an estimator will build."""


def check_cells(what: str, cells: int) -> None:
    """Refuse a table of more than :data:`MAX_TABLE_CELLS` cells before it is allocated."""
    if cells > MAX_TABLE_CELLS:
        raise ValueError(
            f"{what} would need {cells:,} cells, more than the limit of {MAX_TABLE_CELLS:,} "
            f"({MAX_TABLE_CELLS * 4 / 2**30:.0f} GiB of float32); labels must be class indices "
            "0..C-1 with C the number of classes, and class counts passed explicitly no larger than needed"
        )


def static_int(name: str, value: Any, minimum: int, what: str = "static") -> int:
    """A static integer option (it shapes arrays or loops): a Python int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a Python int ({what}), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def num_classes_arg(name: str, value: Any) -> int | None:
    """Validate a static class count argument (``None`` means infer)."""
    return None if value is None else static_int(name, value, 1, "a static class count")


def as_labels(
    name: str, x: Any, *, num_classes: int | None, class_arg: str, lead: int = 0
) -> tuple[jax.Array, int]:
    """Integer labels of shape [*lead, n]; returns (int32 array, class count).

    The class count is ``num_classes`` when given (labels must lie below it),
    else inferred as ``max + 1`` from concrete labels.
    """
    arr = to_array(name, x)
    _check_stack(name, arr, lead)
    if not (jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool):
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {arr.dtype}"
            + (
                " (pass probabilities or logits to an estimator that takes them)"
                if arr.ndim > lead + 1
                else ""
            )
        )
    if arr.ndim != lead + 1:
        raise ValueError(f"{name} must have shape {_shape_text(lead, 'n')}, got shape {tuple(arr.shape)}")
    if arr.shape[-1] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {arr.shape[-1]}")
    num_classes = num_classes_arg(class_arg, num_classes)
    if is_concrete(arr):
        if isinstance(arr, np.ndarray):
            lo, hi = int(arr.min()), int(arr.max())
        else:  # a reduction on the devices where the labels live, one fetch
            lo, hi = (int(v) for v in np.asarray(concrete(_min_max, arr)))
        if lo < 0:
            raise ValueError(f"{name} contains the negative label {lo}; labels must be class indices >= 0")
        if num_classes is None:
            if hi >= MAX_INFERRED_CLASSES:
                host = host_copy(arr)
                where = tuple(int(i[0]) for i in np.nonzero(host == hi))
                second = int(np.max(host[host != hi])) if np.any(host != hi) else None
                raise ValueError(
                    f"{name} contains the label {hi} (at index {where}), which would make "
                    f"{hi + 1:,} classes; class counts read from the data are limited to "
                    f"{MAX_INFERRED_CLASSES:,}"
                    + (f" (the next largest label is {second})" if second is not None else "")
                    + f". Labels must be class indices 0..C-1; if {hi + 1:,} classes are meant, "
                    f"pass {class_arg}={hi + 1}"
                )
            num_classes = hi + 1
        elif hi >= num_classes:
            raise ValueError(
                f"{name} contains the label {hi}, but {class_arg}={num_classes}; "
                f"labels must lie in [0, {num_classes})"
            )
        if hi >= 2**31 - 1:
            raise ValueError(f"{name} contains the label {hi}, too large for int32 class indices")
        return _device(arr, jnp.int32), num_classes
    if num_classes is None:
        raise TypeError(
            f"{name} is traced (inside jit, vmap or grad), so its class count cannot be read "
            f"from the data: pass {class_arg}=<int> as a static argument"
        )
    return arr.astype(jnp.int32), num_classes


def as_features(
    name: str, x: Any, *, lead: int = 0, allow_vector: bool = False, what: str = "d"
) -> jax.Array:
    """Real-valued samples of shape [*lead, n, d] (or [*lead, n] when ``allow_vector``).

    Integer and boolean inputs are promoted to the default float dtype. A
    vector input is returned as a single column [*lead, n, 1].
    """
    arr = to_array(name, x)
    _check_stack(name, arr, lead)
    if jnp.issubdtype(arr.dtype, jnp.complexfloating) or not (
        jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool
    ):
        raise TypeError(f"{name} must be a real-valued array, got dtype {arr.dtype}")
    if allow_vector and arr.ndim == lead + 1:
        arr = arr[..., None]
    if arr.ndim != lead + 2:
        expected = _shape_text(lead, f"n, {what}")
        if allow_vector:
            expected += f" or {_shape_text(lead, 'n')}"
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(np.shape(x))}")
    if arr.shape[-2] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {arr.shape[-2]}")
    if arr.shape[-1] < 1:
        raise ValueError(f"{name} has no columns (shape {tuple(np.shape(x))})")
    default = jnp.result_type(float)  # float32, or float64 with jax_enable_x64
    if not jnp.issubdtype(arr.dtype, jnp.floating) or jnp.finfo(arr.dtype).bits < jnp.finfo(default).bits:
        # integers, booleans, float16 and bfloat16 (common in training code) compute in the default dtype
        arr = arr.astype(default)
    if is_concrete(arr):
        if isinstance(arr, np.ndarray):
            # one copy to the device, which runs in the background while the host checks the values
            # it copies (in their device dtype: a float64 value beyond float32's range becomes inf)
            host = _host(arr, arr.dtype)
            arr = concrete(jax.device_put, host)
            finite = _host_all_finite(host)
        else:  # a reduction where the array lives (no data moved), one scalar fetched
            host = None
            finite = bool(concrete(_all_finite, arr))
        if not finite:
            host = host_copy(arr) if host is None else host
            where = tuple(int(i[0]) for i in np.nonzero(~np.isfinite(host)))
            raise ValueError(f"{name} contains a non-finite value ({host[where]}) at index {where}")
    return arr


def as_mask(name: str, x: Any, shape: tuple[int, ...]) -> jax.Array | None:
    """A boolean sample mask of exactly ``shape`` (True keeps a sample)."""
    if x is None:
        return None
    arr = to_array(name, x)
    if not (arr.dtype == bool or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a boolean array (True keeps a sample), got dtype {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got shape {list(arr.shape)}")
    if is_concrete(arr):
        binary, fewest = _mask_facts(arr)
        if not binary:
            raise ValueError(f"{name} must hold only 0/1 or True/False values")
        if fewest < 2:
            raise ValueError(f"{name} keeps {int(fewest)} sample(s) of some pair; at least 2 are needed")
        return _device(arr, bool)
    return arr.astype(bool)


def check_same_samples(name_a: str, n_a: int, name_b: str, n_b: int) -> None:
    """Both arguments must describe the same n inputs."""
    if n_a != n_b:
        raise ValueError(
            f"{name_a} has {n_a} samples but {name_b} has {n_b}; "
            "both must describe the same inputs (pad and pass a mask if they differ)"
        )


# ----------------------------------------------------------------------------- options
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


def check_probability_rows(name: str, probs, hint: str = "") -> None:
    """Rows of ``probs`` must be non-negative and sum to 1, to √eps plus Cz·eps (eps at least
    float32's, so that float32 probabilities upcast to float64 pass); ``hint`` ends each message.
    A ``jax.Array`` is checked where it lives (one array of two values fetched)."""
    eps = max(float(np.finfo(probs.dtype).eps), float(np.finfo(np.float32).eps))
    tol = float(np.sqrt(eps)) + probs.shape[-1] * eps
    low, dev = np.asarray(concrete(_row_facts, probs)).tolist()
    if low >= -tol and dev <= tol:
        return
    host = host_copy(probs)
    if low < -tol:
        where = tuple(int(i) for i in np.unravel_index(np.argmin(host), host.shape))
        raise ValueError(f"{name} must hold probabilities, but entry {where} is {low:.4g}{hint}")
    sums = host.sum(axis=-1, dtype=np.float64)
    row = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(sums - 1)), sums.shape))
    raise ValueError(f"{name} rows must sum to 1, but row {row} sums to {sums[row]:.6g}{hint}")


@jax.jit
def _row_facts(p):
    """[smallest entry, largest |row sum − 1|] of probabilities [..., Cz], row sums in float32 or
    wider; one array, one fetch."""
    wide = jnp.promote_types(p.dtype, jnp.float32)
    return jnp.stack([jnp.min(p).astype(wide), jnp.max(jnp.abs(jnp.sum(p.astype(wide), axis=-1) - 1))])
