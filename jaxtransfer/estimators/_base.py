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
import inspect
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import as_mask, is_concrete

__all__ = [
    "Checked",
    "EstimatorInfo",
    "PrecisionWarning",
    "available_estimators",
    "get_estimator",
    "one_source_per_step",
    "register",
    "run_pair",
    "warn_unresolved",
]


class PrecisionWarning(UserWarning):
    """The working precision cannot resolve the features to the documented accuracy.

    Raised (as a warning) by eager calls when a source's singular values
    reach below about 100·eps of the largest (a condition number beyond
    ~1e5 in float32) and the estimator depends on those directions (the
    H-score's pseudo-inverse, least squares with a small penalty, TransRate
    when κ·σ² is not negligible there). Enable float64 with
    ``jax.config.update("jax_enable_x64", True)``.
    """


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
      unresolved: optional ``(state, **options) -> bool[]`` on ``prepare``'s
        output: true when the working precision cannot resolve this source to
        the documented accuracy (eager calls then warn, see
        :class:`PrecisionWarning`).
      options: the keyword options the public function accepts (set by
        :func:`register` from its signature; ``mask`` excluded).

    Callers ask the registry rather than hard-coding per-estimator rules:
    :meth:`source_input` picks the source input a caller has,
    :meth:`targets_from_labels` encodes class labels the way the estimator
    takes targets, :meth:`caller_options` supplies a PRNG key or a source
    class count where the estimator takes one.
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
    unresolved: Callable[..., Any] | None = None
    options: tuple[str, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return self.orientation == "higher_is_better"

    @property
    def scores_sources(self) -> bool:
        """A transferability score of a source model's outputs (features, probabilities or labels)."""
        return self.higher_is_better and self.source in ("features", "probabilities", "labels")

    def source_input(self, *, features=None, probabilities=None):
        """The source input this estimator takes, from what a caller has for one source.

        ``"labels"`` estimators get the argmax of ``probabilities``. Returns
        None when the caller lacks it (a layer has no probabilities).
        """
        if self.source == "features":
            return features
        if self.source in ("probabilities", "labels") and probabilities is not None:
            return probabilities if self.source == "probabilities" else np.argmax(probabilities, axis=-1)
        return None

    def targets_from_labels(self, labels, num_target_classes: int | None = None):
        """Class labels [..., n] as this estimator's targets: the labels, or one-hot values [..., n, C]
        for an estimator of real-valued targets (ridge on one-hot labels; zero columns of absent classes
        add nothing, so every task can share the largest class count). ``num_target_classes`` is C
        (default: the largest label + 1)."""
        labels = np.asarray(labels)
        if self.target == "labels":
            return labels
        classes = int(labels.max()) + 1 if num_target_classes is None else num_target_classes
        return np.eye(classes, dtype=np.float32)[labels]

    def caller_options(self, *, seed: int = 0, num_source_classes: int | None = None) -> dict[str, Any]:
        """Options a caller must supply: a PRNG key from ``seed`` and the source class count, where taken."""
        out: dict[str, Any] = {}
        if "key" in self.options:
            out["key"] = jax.random.key(seed)
        if "num_source_classes" in self.options and num_source_classes is not None:
            out["num_source_classes"] = num_source_classes
        return out


def one_source_per_step(s: int, t: int, static: dict) -> int:
    """``default_batch`` for estimators with a factorisation per source: memory
    stays at one source's work, and data-dependent branches stay real branches."""
    return 1


_REGISTRY: dict[str, Callable] = {}


def register(info: EstimatorInfo) -> Callable[[Callable], Callable]:
    """Attach ``info`` to a public estimator function and list it by name."""

    def wrap(fn: Callable) -> Callable:
        params = inspect.signature(fn).parameters
        options = tuple(
            k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "mask"
        )
        fn.info = dataclasses.replace(info, options=options)  # type: ignore[attr-defined]
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


def unresolved_flag(info: EstimatorInfo, state, opts: dict) -> jax.Array:
    """``info.unresolved`` of a prepared source, or False for estimators without one."""
    if info.unresolved is None:
        return jnp.zeros((), bool)
    return info.unresolved(state, **opts)


def warn_unresolved(info: EstimatorInfo, flags, *, what: str = "the features", stacklevel: int = 3) -> None:
    """Warn once per call site when concrete ``flags`` say a source is beyond the working precision."""
    if flags is None or not is_concrete(flags):
        return
    hit = np.asarray(flags)
    if not hit.any():
        return
    where = "" if hit.ndim == 0 else f" (sources {', '.join(map(str, np.flatnonzero(hit)[:10]))})"
    dtype = np.dtype(jnp.result_type(float)).name
    warnings.warn(
        f"{info.name}: {what}{where} have singular values below about 100·eps of the largest "
        f"(condition number beyond ~{0.01 / np.finfo(dtype).eps:.0e}), which {dtype} cannot resolve; "
        "the score may be off by more than 1e-3. Enable float64 with "
        'jax.config.update("jax_enable_x64", True).',
        PrecisionWarning,
        stacklevel=stacklevel,
    )


@partial(jax.jit, static_argnames=("info", "static", "finish"))
def _pair(source, target, mask, dynamic, *, info, static, finish):
    opts = {**dict(static), **dynamic}
    state = info.prepare(source, mask, **opts)
    return finish(state, target, mask, **opts), unresolved_flag(info, state, opts)


def run_pair(info: EstimatorInfo, source, target, mask, options: dict, *, finish=None) -> Any:
    """Validate one pair eagerly, then run ``finish(prepare(...))`` jitted.

    ``finish`` replaces ``info.finish`` for a richer result of the same pair
    (``logme_details``). Warns (:class:`PrecisionWarning`) when the source is
    beyond the working precision; that needs the flag on the host, so an
    eager call waits for its result.
    """
    checked = info.check(source, target, options, 0)
    m = as_mask("mask", mask, (checked.n,))
    result, flag = _pair(
        checked.source,
        checked.target,
        m,
        checked.dynamic,
        info=info,
        static=tuple(sorted(checked.static.items())),
        finish=info.finish if finish is None else finish,
    )
    warn_unresolved(info, flag, stacklevel=4)
    return result
