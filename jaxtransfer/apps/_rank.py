"""The main job: rank candidate sources for a target dataset, and check the estimators against transfer.

For a target dataset (images and one or more label columns, each a target
task) and candidate sources (the zoo's backbones, layers of them, or models
saved with :func:`jaxtransfer.sources.save`):

1. extract each source's features (and, with a head, its predictions) on the
   target images — one pass per model, however many of its layers are used;
2. score every source against every target task with every applicable
   estimator through :func:`jaxtransfer.score_matrix`;
3. optionally measure actual transfer by head retraining
   (:func:`jaxtransfer.transfer.head_retrain`, all targets of a source in one
   vmapped run);
4. judge each estimator against it (:func:`jaxtransfer.evaluation.evaluate`),
   pooled and within target, with bootstrap intervals;
5. report: a ranked table, JSON and CSV files, a PNG per estimator (score
   against actual transfer) and a summary PNG.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import evaluation, features, models, transfer
from .._io import read_npz
from .._progress import progress_bar
from ..datasets import digits_attribute_tasks, load_digits
from ..estimators import MAX_INFERRED_CLASSES, available_estimators, get_estimator, score_matrix

__all__ = [
    "NotComputedWarning",
    "RankResult",
    "SourceSpec",
    "default_dataset",
    "load_dataset",
    "rank",
    "ranking_estimators",
]


class NotComputedWarning(RuntimeWarning):
    """An estimator could not be computed for some sources; its scores there are NaN."""


@dataclass(frozen=True)
class SourceSpec:
    """A candidate source: a zoo backbone or a saved model file, and which layer (None: penultimate)."""

    model: str
    layer: str | None = None

    @property
    def name(self) -> str:
        return self.model if self.layer is None else f"{self.model}:{self.layer}"

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        model, _, layer = text.partition(":") if not Path(text).exists() else (text, "", "")
        if not model:
            raise ValueError(f"source {text!r}: expected NAME, NAME:LAYER, FILE.npz or FILE.npz:LAYER")
        return cls(model, layer or None)


@dataclass
class RankResult:
    """Everything the job computed.

    Attributes:
      sources, targets: names, in the order of the matrices' axes.
      scores: estimator -> [S, T] scores (higher = predicted better).
      actual: [S, T] test accuracy after head retraining, or None.
      log_likelihood: [S, T] test log-likelihood after head retraining, or None.
      evaluation: estimator -> statistic -> (value, low, high).
      timings: stage -> seconds.
      not_computed: estimator -> source -> why its scores are NaN (a layer
        or a model without a head has no predictions for ``leep``/``nce``; an
        estimator that returned NaN or infinity). Every requested estimator
        is in ``scores``, computed or not.
      estimator_seconds: estimator -> seconds of its scores stage.
    """

    sources: list[str]
    targets: list[str]
    scores: dict[str, np.ndarray]
    actual: np.ndarray | None
    log_likelihood: np.ndarray | None
    evaluation: dict[str, dict[str, tuple[float, float, float]]]
    timings: dict[str, float]
    not_computed: dict[str, dict[str, str]] = field(default_factory=dict)
    estimator_seconds: dict[str, float] = field(default_factory=dict)


def _check_dataset(images, labels, names, what):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype == object or labels.dtype == object:
        raise ValueError(f"{what}: images and labels must be numeric arrays")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise ValueError(f"{what}: images must be [N, H, W] or [N, H, W, 1 or 3], got shape {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{what}: the dataset is empty (0 images)")
    if not (images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{what}: images must be uint8 (0…255) or floats (0…1), got dtype {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{what}: images hold NaN or infinite values; expected floats in [0, 1]")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{what}: float images must hold values in [0, 1] (or be uint8, 0…255), "
                f"got values from {low:g} to {high:g}"
            )
    if labels.ndim == 1:
        labels = labels[None]
    elif labels.ndim == 2 and labels.shape[0] == images.shape[0] and labels.shape[1] != images.shape[0]:
        labels = labels.T  # [N, T] columns -> [T, N]
    if labels.ndim != 2 or labels.shape[1] != images.shape[0]:
        raise ValueError(
            f"{what}: labels must be [N] or [N, T] for N={images.shape[0]} images, "
            f"got shape {np.shape(labels)}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"{what}: labels must be non-negative integers, got dtype {labels.dtype}")
    names = list(names) if names is not None else [f"task{i}" for i in range(labels.shape[0])]
    if len(names) != labels.shape[0]:
        raise ValueError(f"{what}: {len(names)} task names for {labels.shape[0]} label columns")
    for name, row in zip(names, labels, strict=True):
        if np.unique(row).size < 2:
            raise ValueError(f"{what}: task {name!r} has a single class; there is nothing to transfer to")
        if row.max() >= MAX_INFERRED_CLASSES:
            raise ValueError(
                f"{what}: task {name!r} has the label {int(row.max())}, which would make "
                f"{int(row.max()) + 1:,} classes (at most {MAX_INFERRED_CLASSES:,}); "
                "labels must be class indices 0..C-1"
            )
    return images, labels.astype(np.int32), names


def load_dataset(path: str | Path, *, what: str = "path") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a target dataset from ``.npz`` (no pickle): ``images`` [N, H, W(, C)], ``labels`` [N] or [N, T].

    An optional ``names`` array of strings names the label columns. Errors
    start with ``what``, the name the caller gave the path (``--data`` on the
    command line).

    Raises:
      ValueError: unreadable file, missing arrays, wrong shapes or dtypes,
        labels that don't match the images, an empty dataset, a single class.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: no such file: {path}")
    try:
        arrays = read_npz(path, what=".npz file")
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(f"{what}: {path} needs arrays 'images' and 'labels'; it has {sorted(arrays)}")
    names = arrays.get("names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise ValueError(
            f"{what}: {path}: 'names' must be a 1-D array of strings, got shape {names.shape} {names.dtype}"
        )
    names = None if names is None else [str(s) for s in names]
    return _check_dataset(arrays["images"], arrays["labels"], names, f"{what} {path}")


def default_dataset(max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's handwritten digits (8×8, floats in [0, 1]) and their 20 attribute tasks.

    The first ``max_samples`` of the 1,797 images (all when None).
    """
    images, _ = load_digits()
    tasks = digits_attribute_tasks()
    images = (images / 16.0).astype(np.float32)
    labels = np.asarray(tasks.labels)
    if max_samples is not None:
        images, labels = images[:max_samples], labels[:, :max_samples]
    return _check_dataset(images, labels, tasks.names, "digits")


def _load_source_model(name: str):
    if name in models.zoo.available():
        return models.zoo.load(name)
    path = Path(name)
    if path.suffix == ".npz" or path.exists():
        return models.load(path)
    raise ValueError(
        f"source {name!r} is neither a zoo backbone ({', '.join(models.zoo.available())}) nor a model file"
    )


def ranking_estimators() -> list[str]:
    """The registered estimators that score a source model's outputs (features, probabilities or
    predicted labels) for labelled targets: feature-based ones first, each group by name."""
    names = [n for n in available_estimators() if get_estimator(n).info.scores_sources]
    return sorted(names, key=lambda n: (get_estimator(n).info.source != "features", n))


def rank(
    images,
    labels,
    task_names: Sequence[str] | None,
    sources: Sequence[SourceSpec],
    *,
    estimators: Sequence[str] | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    ground_truth: bool = True,
    num_bootstrap: int = 1000,
    seed: int = 0,
    progress: bool | None = None,
    print_fn: Callable[..., None] = print,
) -> RankResult:
    """Rank ``sources`` on a target dataset; see the module notes for the stages.

    Args:
      images: [N, H, W(, C)] uint8 or float in [0, 1].
      labels: [N] or [N, T] integer labels (T target tasks).
      task_names: names of the T tasks, or None.
      sources: :class:`SourceSpec` list (or ``"NAME[:LAYER]"`` strings); layers of
        one model share one pass.
      estimators: names to use (default: every applicable one,
        :func:`ranking_estimators`).
      image_size: resize the images to this side for the zoo's backbones
        (default: each backbone's own input size).
      batch_size: extraction batch size.
      ground_truth: measure actual transfer by head retraining (needed to
        evaluate the estimators).
      num_bootstrap: bootstrap resamples for the intervals.
      seed: split, bootstrap and NLEEP seed.
      progress: progress bars (None: when stderr is a terminal).
      print_fn: where stage messages go.

    Raises:
      ValueError: bad data or options; unknown sources, layers or
        estimators; a source whose features or predictions on the images are
        NaN, infinite or the same for every image.

    Warns:
      NotComputedWarning: an estimator could not be computed for some sources (it
        returned NaN or infinity, or no source has the predictions it needs);
        its scores there are NaN and :attr:`RankResult.not_computed` says why.
    """
    images, labels, names = _check_dataset(images, labels, task_names, "data")
    sources = [SourceSpec.parse(s) if isinstance(s, str) else s for s in sources]
    wanted = _check_rank_options(sources, estimators, image_size, num_bootstrap)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    feats, probs = _extract(images, sources, wanted, image_size, batch_size, progress, print_fn)
    timings["features"] = time.perf_counter() - start

    start = time.perf_counter()
    scores, not_computed, per_estimator = _score(feats, probs, labels, names, sources, wanted, seed, progress)
    timings["scores"] = time.perf_counter() - start
    print_fn(
        f"  scores: {len(wanted)} estimators × {len(sources)} sources × {len(names)} targets in "
        f"{timings['scores']:.1f} s (" + ", ".join(f"{e} {t:.1f} s" for e, t in per_estimator.items()) + ")"
    )

    actual = loglik = None
    if ground_truth:
        start = time.perf_counter()
        result = transfer.head_retrain_matrix(
            [feats[s.name] for s in sources], labels, seed=seed, progress=progress
        )
        actual, loglik = result.accuracy, result.log_likelihood
        timings["ground_truth"] = time.perf_counter() - start

    report: dict[str, dict[str, tuple[float, float, float]]] = {}
    if actual is not None and len(sources) >= 2:
        start = time.perf_counter()
        report = _evaluate(scores, actual, num_bootstrap, seed)
        timings["evaluation"] = time.perf_counter() - start
    return RankResult(
        [s.name for s in sources], names, scores, actual, loglik, report, timings, not_computed, per_estimator
    )


def _check_rank_options(sources, estimators, image_size, num_bootstrap) -> list[str]:
    """The estimators to run; ValueError for options out of range."""
    if not sources:
        raise ValueError("sources: give at least one source")
    if image_size is not None and not (_is_int(image_size) and image_size >= 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if not (_is_int(num_bootstrap) and num_bootstrap >= 0):
        raise ValueError(f"num_bootstrap must be an int >= 0 (0: no intervals), got {num_bootstrap!r}")
    applicable = ranking_estimators()
    wanted = list(estimators) if estimators else applicable
    unknown = [e for e in wanted if e not in applicable]
    if unknown:
        raise ValueError(
            f"estimators {unknown} do not apply to ranking sources on labelled targets; "
            f"choose from {', '.join(applicable)}"
        )
    return wanted


def _extract(images, sources, wanted, image_size, batch_size, progress, print_fn):
    """Features of every source and the head's probabilities of every model, one pass per model."""
    by_model: dict[str, list[SourceSpec]] = {}
    for spec in sources:
        by_model.setdefault(spec.model, []).append(spec)
    needs_head = any(get_estimator(e).info.source != "features" for e in wanted)
    feats: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    for model_name, specs in by_model.items():
        model = _load_source_model(model_name)
        layers = tuple(s.layer for s in specs if s.layer is not None)
        known = getattr(model, "layer_names", ())
        bad = [layer for layer in layers if layer not in known]
        if bad:
            raise ValueError(f"source {model_name}: no layer {bad[0]!r}; it has {', '.join(known) or 'none'}")
        pre = getattr(model, "preprocess", None)
        if pre is not None and image_size is not None:
            pre = pre._replace(size=image_size, resize=image_size)
        t0 = time.perf_counter()
        out = features.extract(
            model, images, batch_size=batch_size, layers=layers, preprocess=pre, progress=progress
        )
        for spec in specs:
            feats[spec.name] = np.asarray(out.features if spec.layer is None else out.layers[spec.layer])
            _check_outputs(feats[spec.name], spec.name, "features")
        if out.logits is not None and any(s.layer is None for s in specs):
            if needs_head:
                _check_outputs(np.asarray(out.logits), model_name, "head's predictions", centre=True)
            probs[model_name] = np.asarray(out.probabilities)
        print_fn(f"  features: {model_name} {tuple(out.features.shape)} in {time.perf_counter() - t0:.1f} s")
    return feats, probs


def _score(feats, probs, labels, names, sources, wanted, seed, progress):
    """Every estimator on every source and target: one ``score_matrix`` call per estimator and kind
    of source input (sources of one width are stacked), all targets at once.

    Returns (scores {estimator: [S, T]}, not_computed, seconds per estimator).
    """
    scores = {e: np.full((len(sources), len(names)), np.nan) for e in wanted}
    not_computed: dict[str, dict[str, str]] = {}
    seconds: dict[str, float] = {}
    num_classes = int(labels.max()) + 1
    bar = progress_bar(len(wanted), progress, "scores", unit="estimator")
    for est in wanted:
        bar.set_postfix_str(est)
        t0 = time.perf_counter()
        fn = get_estimator(est)
        info = fn.info
        groups: dict[tuple, list[int]] = {}
        inputs: dict[int, np.ndarray] = {}
        for i, spec in enumerate(sources):
            p = probs.get(spec.model) if spec.layer is None else None
            x = info.source_input(features=feats[spec.name], probabilities=p)
            if x is None:
                why = "a layer has no predictions" if spec.layer else "the model has no classification head"
                not_computed.setdefault(est, {})[spec.name] = why
                continue
            inputs[i] = x
            width = None if p is None else p.shape[-1]  # a source class count for predicted labels
            groups.setdefault((x.shape, str(x.dtype), width), []).append(i)
        targets = info.targets_from_labels(labels, num_classes)
        for (_, _, width), rows in groups.items():
            options = info.caller_options(seed=seed, num_source_classes=width)
            block = np.asarray(score_matrix(fn, np.stack([inputs[i] for i in rows]), targets, **options))
            for i, row in zip(rows, block, strict=True):
                scores[est][i] = _finite_or_reported(row, est, sources[i].name, names, not_computed)
        seconds[est] = time.perf_counter() - t0
        bar.update(1)
    bar.close()
    for est in wanted:
        if np.isnan(scores[est]).all() and est in not_computed:
            reasons = "; ".join(sorted(set(not_computed[est].values())))
            if not any("returned" in r for r in not_computed[est].values()):
                warnings.warn(
                    f"{est} could not be computed for any source ({reasons}); "
                    "its scores are NaN in the outputs",
                    NotComputedWarning,
                    stacklevel=3,
                )
    return scores, not_computed, seconds


def _finite_or_reported(row, est, source, names, not_computed):
    """``row`` with non-finite scores as NaN, each such source reported (a warning and ``not_computed``)."""
    failed = ~np.isfinite(row)
    if not failed.any():
        return row
    on = [names[j] for j in np.flatnonzero(failed)]
    why = f"it returned {row[failed][0]} on {len(on)} of {len(names)} targets ({', '.join(on[:5])}"
    why += ", …)" if len(on) > 5 else ")"
    not_computed.setdefault(est, {})[source] = why
    warnings.warn(
        f"{est} could not be computed for source {source}: {why}; those scores are NaN in the outputs",
        NotComputedWarning,
        stacklevel=4,
    )
    return np.where(failed, np.nan, row)


def _evaluate(scores, actual, num_bootstrap, seed):
    """Each estimator against actual transfer, over the sources it scored (at least two)."""
    report = {}
    for est, mat in scores.items():
        rows = np.isfinite(mat).all(axis=1)
        if rows.sum() < 2:
            continue  # listed by evaluation_table as not evaluated
        stats = evaluation.evaluate(mat[rows], actual[rows], num_bootstrap=num_bootstrap, seed=seed)
        report[est] = {k: tuple(v) for k, v in stats.items()}
    return report


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_outputs(x: np.ndarray, source: str, what: str, *, centre: bool = False) -> None:
    """Refuse a source whose outputs on the target images ([N, d]) are non-finite or the same for every image.

    Either makes every estimator return its no-information value (or NaN), so
    ranking such a source would silently be wrong. ``centre``: compare rows
    less their mean (logits that differ by a constant give the same softmax).
    """
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(
            f"source {source}: its {what} are NaN or infinite on {int(bad.sum())} of {len(x)} images; "
            "expected finite values (are the model's weights NaN or infinite?)"
        )
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    tol = 8 * np.finfo(np.result_type(x.dtype, np.float32)).eps * np.abs(x).max(axis=0)
    if np.all(np.ptp(x, axis=0) <= tol):  # each column against its own scale
        raise ValueError(
            f"source {source}: its {what} are the same for all {len(x)} images (every one of the "
            f"{x.shape[1]} columns is constant); expected outputs that vary with the image "
            "(are the model's weights zero, or its units dead?)"
        )
