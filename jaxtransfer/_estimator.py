"""What every estimator shares: its metadata, the one-pair runner, the registry.

An estimator is written as two pure, traceable halves (DESIGN.md, "sufficient
statistics, then finalize"):

* ``prepare(source, mask, **options) -> state``: everything that depends on the
  source alone (one-hot source labels, a centred Gram matrix and its
  factorisation, source log-probabilities);
* ``finish(state, target, mask, **options) -> score``: the target-dependent rest.

A one-pair call is ``finish(prepare(source), target)`` under one ``jit``;
:func:`jaxtransfer.score_matrix` calls ``prepare`` once per source and
``vmap``\\ s ``finish`` over the targets. The public estimator is a plain
function with this metadata attached as ``fn.info``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax

from ._validation import as_mask

__all__ = [
    "Checked",
    "EstimatorInfo",
    "available_estimators",
    "get_estimator",
    "one_source_per_step",
    "register",
    "run_pair",
]


class Checked(NamedTuple):
    """Validated inputs: converted arrays, the sample count and the options."""

    source: jax.Array
    target: jax.Array
    n: int
    static: dict[str, Any]  # hashable options that shape arrays (recompile on change)
    dynamic: dict[str, Any]  # array options (traced)


@dataclasses.dataclass(frozen=True, eq=False)
class EstimatorInfo:
    """Metadata and the two halves of an estimator.

    Attributes:
      name: registry name (``"nce"``, ``"linear_mse"``...).
      task: ``"classification"`` or ``"regression"``.
      source: what the source input is: ``"labels"``, ``"probabilities"``,
        ``"features"``, ``"predictions"`` or ``"none"``.
      target: ``"labels"`` or ``"values"``.
      orientation: ``"higher_is_better"`` for transferability scores,
        ``"lower_is_better"`` for ``conditional_entropy`` (NCE is its
        negative), ``"higher_is_harder"`` for hardness.
      reference: the paper.
      check: eager validation ``(source, target, options, lead) -> Checked``;
        ``lead`` is the number of leading batch axes (0 one pair, 1 stacked).
      prepare, finish: the pure halves (module docstring).
      matrix: optional all-pairs kernel ``(sources, targets, source_mask,
        target_mask, **options) -> [S, T]`` used by ``score_matrix`` instead of
        ``vmap`` when the maths allows one fused operation.
      default_batch: ``(S, T, static) -> int``, sources per step of
        ``score_matrix`` when the caller gives no ``batch_size``.
    """

    name: str
    task: str
    source: str
    target: str
    orientation: str
    reference: str
    check: Callable[..., Checked]
    prepare: Callable[..., Any]
    finish: Callable[..., Any]
    matrix: Callable[..., Any] | None = None
    default_batch: Callable[[int, int, dict], int] | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.orientation == "higher_is_better"


def one_source_per_step(s: int, t: int, static: dict) -> int:
    """``default_batch`` for estimators with a factorisation per source: memory
    stays at one source's work, and data-dependent branches stay real branches."""
    return 1


_REGISTRY: dict[str, Callable] = {}


def register(info: EstimatorInfo) -> Callable[[Callable], Callable]:
    """Attach ``info`` to a public estimator function and list it by name."""

    def wrap(fn: Callable) -> Callable:
        fn.info = info  # type: ignore[attr-defined]
        _REGISTRY[info.name] = fn
        return fn

    return wrap


def available_estimators() -> list[str]:
    """Names of the registered estimators."""
    return sorted(_REGISTRY)


def get_estimator(estimator: str | Callable) -> Callable:
    """Look up an estimator by name, or check that a function is one."""
    if isinstance(estimator, str):
        try:
            return _REGISTRY[estimator]
        except KeyError:
            raise ValueError(
                f"unknown estimator {estimator!r}; expected one of {', '.join(available_estimators())}"
            ) from None
    if callable(estimator) and isinstance(getattr(estimator, "info", None), EstimatorInfo):
        return estimator
    raise TypeError(f"estimator must be a jaxtransfer estimator or its name, got {type(estimator).__name__}")


@partial(jax.jit, static_argnames=("info", "static"))
def _pair(source, target, mask, dynamic, *, info, static):
    opts = {**dict(static), **dynamic}
    return info.finish(info.prepare(source, mask, **opts), target, mask, **opts)


def run_pair(info: EstimatorInfo, source, target, mask, options: dict) -> jax.Array:
    """Validate one pair eagerly, then run ``finish(prepare(...))`` jitted."""
    checked = info.check(source, target, options, 0)
    m = as_mask("mask", mask, (checked.n,))
    return _pair(
        checked.source,
        checked.target,
        m,
        checked.dynamic,
        info=info,
        static=tuple(sorted(checked.static.items())),
    )
