"""The main job: rank candidate sources for a target dataset, and check the estimators against transfer.

For a target dataset (images and one or more label columns, each a target
task) and candidate sources (the zoo's backbones, layers of them, or models
saved with :func:`jaxtransfer.sources.save`):

1. extract each source's features (and, with a head, its predictions) on the
   target images — one pass per model, however many of its layers are used,
   the batches split over every local device;
2. score every source against every target task with every applicable
   estimator through :func:`jaxtransfer.score_matrix`, or, when nothing needs
   the [N, d] features (``keep_features``), from statistics streamed during
   the extraction for all targets at once (:func:`jaxtransfer.features.extract`);
3. optionally measure actual transfer by head retraining
   (:func:`jaxtransfer.transfer.head_retrain`, all targets of a source in one
   vmapped run);
4. judge each estimator against it (:func:`jaxtransfer.evaluation.evaluate`),
   pooled and within target, with bootstrap intervals;
5. report: a ranked table, JSON and CSV files, a PNG per estimator (score
   against actual transfer) and a summary PNG.

In a multi-process program (after ``jax.distributed.initialize()``) every
process calls :func:`rank` with the same arguments. The sources are split by
model: model ``k``, in order of first appearance, and all its layers go to
process ``k % P``, which alone loads it and runs stages 1 to 3 and the picks'
rescoring for its sources (:mod:`jaxtransfer._hosts`). The per-source rows are
gathered, so every process returns the same :class:`RankResult`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from .. import _hosts as hosts
from .. import evaluation, features, models, transfer
from .._io import read_npz
from .._progress import progress_bar
from ..datasets import digits_attribute_tasks, load_digits
from ..estimators import MAX_INFERRED_CLASSES, available_estimators, get_estimator, score_matrix

__all__ = [
    "PICK_PREFERENCE",
    "FewPairsWarning",
    "NotComputedWarning",
    "Pick",
    "RankResult",
    "SourceSpec",
    "as_sources",
    "default_dataset",
    "load_dataset",
    "rank",
    "ranking_estimators",
    "subsample",
]


class NotComputedWarning(RuntimeWarning):
    """An estimator could not be computed for some sources; its scores there are NaN."""


@dataclass(frozen=True)
class SourceSpec:
    """A candidate source: a zoo backbone, a saved model file or a module, and its layer (None: penultimate).

    ``model`` names it (a zoo name, a file path, or the name given to an
    in-memory ``module``); ``module`` is the Flax NNX module itself when the
    source is not loaded by name.
    """

    model: str
    layer: str | None = None
    module: Any = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.model if self.layer is None else f"{self.model}:{self.layer}"

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``NAME``, ``NAME:LAYER``, ``FILE.npz`` or ``FILE.npz:LAYER`` (an existing path is never split)."""
        if not isinstance(text, str):
            raise TypeError(f"source: expected a string NAME[:LAYER], got {type(text).__name__}")
        model, _, layer = text.partition(":") if not Path(text).exists() else (text, "", "")
        if not model:
            raise ValueError(f"source {text!r}: expected NAME, NAME:LAYER, FILE.npz or FILE.npz:LAYER")
        return cls(model, layer or None)


def as_sources(sources) -> list[SourceSpec]:
    """``sources`` as :class:`SourceSpec`: each a spec, a string (:meth:`SourceSpec.parse`), a path,
    a Flax NNX module (named by its ``name`` attribute or its class), or a ``(name, module)`` pair.

    Raises:
      TypeError: an item of none of these kinds.
      ValueError: no sources, or two sources with the same name.
    """
    if isinstance(sources, (str, Path, nnx.Module, SourceSpec)):
        sources = [sources]
    specs = []
    for item in sources:
        if isinstance(item, SourceSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(SourceSpec.parse(item))
        elif isinstance(item, Path):
            specs.append(SourceSpec(str(item)))
        elif isinstance(item, nnx.Module):
            specs.append(SourceSpec(str(getattr(item, "name", None) or type(item).__name__), module=item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], nnx.Module):
            specs.append(SourceSpec(str(item[0]), module=item[1]))
        else:
            raise TypeError(
                "sources: each source must be a zoo name or 'NAME:LAYER', a saved-model path, a Flax NNX "
                f"module or a (name, module) pair; got {type(item).__name__}"
            )
    if not specs:
        raise ValueError("sources: give at least one source")
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"sources: two sources share the name {twice[0]!r}; give modules as (name, module)")
    return specs


@dataclass(frozen=True)
class Pick:
    """The recommended source for one target task.

    Attributes:
      target: the target task's name.
      source: the recommended source (the highest ``estimator`` score).
      estimator: the estimator whose scores ranked the sources.
      runner_up: the second-best source by that estimator (None with one source).
      margin: the pick's score less the runner-up's, in the estimator's units.
      support: the share of random subsamples of 80% of the images (the
        estimator recomputed on each) that keep this pick; NaN without
        resamples.
      agree: how many estimators also score this source highest.
      voters: how many estimators scored at least two sources on this target.
      best: the source with the highest measured transfer (None without
        ground truth).
      regret: best's accuracy less the pick's (0 when the pick was right;
        NaN without ground truth).
    """

    target: str
    source: str
    estimator: str
    runner_up: str | None
    margin: float
    support: float
    agree: int
    voters: int
    best: str | None = None
    regret: float = float("nan")

    @property
    def right(self) -> bool | None:
        """Whether the pick had the highest measured transfer (None without ground truth)."""
        return None if self.best is None else self.regret <= 0


@dataclass
class RankResult:
    """Everything the job computed.

    Attributes:
      sources, targets: names, in the order of the matrices' axes.
      scores: estimator -> [S, T] scores (higher = predicted better).
      actual: [S, T] test accuracy after head retraining, or None.
      log_likelihood: [S, T] test log-likelihood after head retraining, or None.
      evaluation: estimator -> statistic -> (value, low, high).
      timings: stage -> seconds. With several processes, ``features``,
        ``scores`` and ``ground_truth`` are the slowest process's, ``gather``
        this process's time in gathering the sources' rows (waiting for the
        others included), the rest this process's.
      not_computed: estimator -> source -> why its scores are NaN (a layer
        or a model without a head has no predictions for ``leep``/``nce``; an
        estimator that returned NaN or infinity). Every requested estimator
        is in ``scores``, computed or not.
      estimator_seconds: estimator -> seconds of its scores stage (the slowest
        process's, with several).
      picks: the answer, one :class:`Pick` per target (empty when the
        ranking estimator scored fewer than one source).
      pick_by: the estimator that ranked the sources for :attr:`picks`.
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
    picks: list[Pick] = field(default_factory=list)
    pick_by: str | None = None


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


def subsample(images, targets, max_samples: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified sample of ``max_samples`` images and their labels ([T, N] -> [T, m]).

    The strata are the distinct label combinations over all T tasks. Each
    keeps its share of the sample (largest remainders for the rounding), and
    at least one image while the sample has room for every stratum, so that
    rare classes are not lost the way they are in the first N rows. Images
    keep their original order. With ``max_samples >= N``, everything is
    returned unchanged.
    """
    n = images.shape[0]
    if max_samples >= n:
        return images, targets
    _, stratum = np.unique(targets.T, axis=0, return_inverse=True)
    stratum = stratum.ravel()
    sizes = np.bincount(stratum)
    share = sizes * max_samples / n
    take = np.floor(share).astype(int)
    if len(sizes) <= max_samples:
        take = np.maximum(take, 1)
    while take.sum() < max_samples:  # largest remainders first, never beyond a stratum's size
        room = np.flatnonzero(take < sizes)
        room = room[np.argsort(-(share[room] - take[room]), kind="stable")]
        take[room[: max_samples - int(take.sum())]] += 1
    while take.sum() > max_samples:  # the minimum of one pushed the total over: trim the largest
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    keep = np.concatenate([
        rng.choice(np.flatnonzero(stratum == g), size=k, replace=False) for g, k in enumerate(take) if k
    ])  # fmt: skip
    keep.sort()
    return images[keep], targets[:, keep]


def default_dataset(
    max_samples: int | None = None, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's handwritten digits (8×8, floats in [0, 1]) and their 20 attribute tasks.

    A seeded stratified sample of ``max_samples`` of the 1,797 images
    (:func:`subsample`; all when None).
    """
    images, _ = load_digits()
    tasks = digits_attribute_tasks()
    images = (images / 16.0).astype(np.float32)
    labels = np.asarray(tasks.labels)
    if max_samples is not None:
        images, labels = subsample(images, labels, max_samples, seed=seed)
    return _check_dataset(images, labels, tasks.names, "digits")


def _load_source_model(spec: SourceSpec):
    if spec.module is not None:
        return spec.module
    name = spec.model
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


PICK_PREFERENCE = (
    "logme",
    "leep",
    "nce",
    "nleep",
    "gbc",
    "transrate",
    "shrinkage_hscore",
    "hscore",
    "linear_mse",
)
"""The estimator that picks a source when ``pick_by`` is not given: the first of these that ran.

LogME comes first because it is the one estimator in the leading group of both
reproduced protocols by within-target correlation with actual transfer
(``bench/results/quality/{attributes,keypoints}/report.md``): on the keypoints
level with the best (the held-out Linear MSE) within target after head
retraining and half and full fine-tuning; on the attributes, after
head retraining, second to the shrinkage H-score on digits and MNIST with
overlapping intervals and level with it on sprites, and after fine-tuning no
estimator is ahead. It needs only features, so it scores layers and headless
models. LEEP and NCE come next, then the estimators the reports rank lower or
do not cover."""

SUBSAMPLE = 0.8
"""The share of the images in each of the picks' subsamples (:attr:`Pick.support`)."""

FEW_SOURCES = 5
FEW_TARGETS = 3


class FewPairsWarning(UserWarning):
    """Too few sources or targets for the evaluation's intervals to mean much."""


def rank(
    images,
    targets,
    target_names: Sequence[str] | None = None,
    sources: Sequence[Any] = (),
    *,
    estimators: Sequence[str] | None = None,
    pick_by: str | None = None,
    pick_resamples: int = 20,
    image_size: int | None = None,
    batch_size: int = 64,
    ground_truth: bool = True,
    num_bootstrap: int = 1000,
    seed: int = 0,
    keep_features: bool | None = None,
    devices: int | Sequence[Any] | None = None,
    progress: bool | None = False,
    print_fn: Callable[..., None] | None = None,
) -> RankResult:
    """Which source should I transfer from? Rank ``sources`` for each target task of a dataset.

    The stages are in the module notes. The answer is :attr:`RankResult.picks`:
    for each target, the source with the highest ``pick_by`` score, its margin
    over the runner-up, the share of ``pick_resamples`` random subsamples of
    80% of the images (the estimator recomputed on each) that keep it, how many
    estimators agree, and, with ground truth, whether it was right and its
    regret.

    Args:
      images: [N, H, W(, C)] uint8 or float in [0, 1].
      targets: [N] or [N, T] integer class labels (T target tasks).
      target_names: names of the T tasks, or None (``task0``, ``task1``, …).
      sources: zoo names or ``"NAME:LAYER"``, saved-model paths
        (``"cnn.npz"``, ``"cnn.npz:conv2"``), Flax NNX modules (named by their
        ``name`` attribute or class), ``(name, module)`` pairs, or
        :class:`SourceSpec`. Layers of one model share one pass.
      estimators: names to use (default: every applicable one,
        :func:`ranking_estimators`).
      pick_by: the estimator that picks (default: the first of
        :data:`PICK_PREFERENCE` that runs).
      pick_resamples: random subsamples of 80% of the images for the picks'
        support (0: none). Each recomputes ``pick_by`` for the sources that
        rank in some target's top three.
      image_size: resize the images to this side for the zoo's backbones
        (default: each backbone's own input size).
      batch_size: extraction batch size.
      ground_truth: measure actual transfer by head retraining (needed to
        evaluate the estimators and to judge the picks).
      num_bootstrap: bootstrap resamples of the sources for the evaluation's
        intervals.
      seed: split, bootstrap and NLEEP seed.
      keep_features: hold each source's [N, d] features in memory. ``None``
        (the default): only when something needs them — the ground truth
        (head retraining), an estimator that does not stream (NLEEP), or the
        picks' support when the picking estimator scores features (it is
        recomputed on subsamples of the images). Otherwise the feature
        estimators (Linear MSE, LogME, the H-scores, TransRate, GBC) are
        finalised from statistics accumulated during the extraction, for
        every target in the same pass, and no [N, d] array is made; the
        head's logits [N, Cz] are kept when LEEP, NCE or soft NCE run. Scores
        from statistics take the Gram-matrix route
        (:mod:`jaxtransfer.streaming`'s precision notes): in float32 they can
        differ from the whole-array scores in the last digits, more on
        ill-conditioned features. ``True``: always keep them (whole-array
        scores). ``False``: never; then ``ground_truth`` must be False,
        ``pick_resamples`` 0 unless ``pick_by`` scores predictions, and
        NLEEP is left out of the default estimators (asked for, it is
        refused).
      devices: the devices each extraction splits its batches over (None:
        every local device; an int: the first that many; or a sequence of
        devices). See :func:`jaxtransfer.features.extract`.
      progress: progress on stderr: True a bar, None a bar on a terminal and
        plain lines otherwise, False (the default) nothing.
      print_fn: where stage messages go (default: nowhere).

    Several processes: after ``jax.distributed.initialize()``, every process
    calls ``rank`` with the same arguments and gets the same result. Model
    ``k`` (in order of first appearance in ``sources``) and its layers go to
    process ``k % P``, which alone loads it, extracts its features on its
    local devices (``devices``), scores it against every target, retrains
    heads on it and rescores it for the picks' support; the rows are
    gathered, and the evaluation and picks computed from them on every
    process. The result equals the one-process result (up to rounding in
    the last digits where sources were stacked differently). A source that
    fails a check raises in every process, the others with its message and
    the process that raised it. :attr:`RankResult.timings` of the split stages
    are the slowest process's. Warnings about one source are raised by the
    process that scored it.

    Raises:
      ValueError: bad data or options; unknown sources, layers or
        estimators; a model that cannot take the images (checked for every
        source before any extraction); a source whose features or
        predictions on the images are NaN, infinite or the same for every
        image.
      TypeError: a source of an unsupported kind.

    Warns:
      NotComputedWarning: an estimator could not be computed for some sources (it
        returned NaN or infinity, or no source has the predictions it needs);
        its scores there are NaN and :attr:`RankResult.not_computed` says why.
      FewPairsWarning: fewer than 5 sources or 3 targets with ground truth:
        the evaluation's intervals mean little.
    """
    say = print_fn or (lambda *a, **k: None)
    images, labels, names = _check_dataset(images, targets, target_names, "data")
    sources = as_sources(sources)
    wanted, pick_by = _check_rank_options(estimators, pick_by, pick_resamples, image_size, num_bootstrap)
    keep = _keep_features(keep_features, estimators, wanted, pick_by, pick_resamples, ground_truth)
    if keep_features is False and not estimators:
        wanted = [e for e in wanted if _streams(e) or get_estimator(e).info.source != "features"]
    index, count = jax.process_index(), jax.process_count()
    owner = hosts.by_group([s.model for s in sources], count)  # model k on process k % count
    rows = hosts.local_rows(owner, index)
    mine = [sources[i] for i in rows]
    with hosts.fail_together():  # a bad source raises on every process, before any extraction
        loaded = _load_and_check_models(images, mine, image_size)
    if ground_truth and (len(sources) < FEW_SOURCES or len(names) < FEW_TARGETS):
        warnings.warn(
            f"{len(sources)} sources × {len(names)} targets: the evaluation's intervals (bootstrap over "
            f"sources) mean little with fewer than {FEW_SOURCES} sources or {FEW_TARGETS} targets",
            FewPairsWarning,
            stacklevel=2,
        )
    timings: dict[str, float] = {}

    with hosts.fail_together():
        start = time.perf_counter()
        feats, probs, stats = _extract(
            images, mine, loaded, wanted, image_size, batch_size, progress, say,
            labels=None if keep else labels, devices=devices,
        )  # fmt: skip
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        inputs = _Inputs(feats, probs, mine, labels, stats, rows=rows, streamed=not keep)
        scores, not_computed, per_estimator = _score(inputs, names, wanted, seed, progress, say)
        timings["scores"] = time.perf_counter() - start
        say(
            f"  scores: {len(wanted)} estimators × {len(mine)} sources × {len(names)} targets in "
            f"{timings['scores']:.1f} s ("
            + ", ".join(f"{e} {t:.1f} s" for e, t in per_estimator.items())
            + ")"
        )

        actual = loglik = None
        if ground_truth:
            start = time.perf_counter()
            say(f"  ground truth: head retraining, {len(mine)} sources × {len(names)} targets")
            actual, loglik = _ground_truth([feats[s.name] for s in mine], labels, seed, progress)
            timings["ground_truth"] = time.perf_counter() - start

    if count > 1:
        start = time.perf_counter()
        scores, actual, loglik, not_computed, per_estimator, stage_times = _gather_sources(
            owner, sources, wanted, scores, actual, loglik, not_computed, per_estimator, timings
        )
        timings.update(stage_times)
        timings["gather"] = time.perf_counter() - start
    _warn_uncomputed(wanted, scores, not_computed)

    report: dict[str, dict[str, tuple[float, float, float]]] = {}
    if actual is not None and len(sources) >= 2:
        start = time.perf_counter()
        report = _evaluate(scores, actual, num_bootstrap, seed)
        timings["evaluation"] = time.perf_counter() - start

    start = time.perf_counter()
    pick_by = _pick_estimator(pick_by, wanted, scores)
    picks = []
    if pick_by is not None:
        say(f"  picks: by {pick_by}, {pick_resamples} resamples of the images")
        support = _pick_support(inputs, pick_by, scores[pick_by], pick_resamples, seed, progress, owner)
        picks = _picks(scores, pick_by, support, [s.name for s in sources], names, actual)
    timings["picks"] = time.perf_counter() - start
    return RankResult(
        [s.name for s in sources], names, scores, actual, loglik, report, timings, not_computed,
        per_estimator, picks, pick_by,
    )  # fmt: skip


def _ground_truth(feats: list[np.ndarray], labels, seed, progress) -> tuple[np.ndarray, np.ndarray]:
    """[s, T] accuracy and log-likelihood (float64) after head retraining on each of ``feats``."""
    if not feats:
        return np.zeros((0, len(labels))), np.zeros((0, len(labels)))
    result = transfer.head_retrain_matrix(feats, labels, seed=seed, progress=progress)
    return np.asarray(result.accuracy, np.float64), np.asarray(result.log_likelihood, np.float64)


def _gather_sources(owner, sources, wanted, scores, actual, loglik, not_computed, per_estimator, timings):
    """Every process's rows of the scores (and ground truth) in source order, the reasons for NaN scores
    merged, and the slowest process's seconds of the split stages; the same on every process."""
    local = [scores[e] for e in wanted] + ([] if actual is None else [actual, loglik])
    every = hosts.gather_rows(np.stack(local, axis=1), owner)  # [S, E (+ 2), T]
    scores = {e: every[:, k] for k, e in enumerate(wanted)}
    if actual is not None:
        actual, loglik = every[:, len(wanted)], every[:, len(wanted) + 1]
    parts = hosts.gather_json([not_computed, per_estimator, timings])
    merged: dict[str, dict[str, str]] = {}
    for est in wanted:
        reasons = {k: v for part, _, _ in parts for k, v in part.get(est, {}).items()}
        if reasons:
            merged[est] = {s.name: reasons[s.name] for s in sources if s.name in reasons}
    seconds = {e: max(part[e] for _, part, _ in parts) for e in per_estimator}
    stages = {k: max(part[k] for _, _, part in parts) for k in timings}
    return scores, actual, loglik, merged, seconds, stages


def _warn_uncomputed(wanted, scores, not_computed) -> None:
    """Warn of each estimator that no source could give the inputs it needs (its scores all NaN)."""
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


def _check_rank_options(estimators, pick_by, pick_resamples, image_size, num_bootstrap):
    """The estimators to run and the picking one (None: chosen later); ValueError for bad options."""
    if image_size is not None and not (_is_int(image_size) and image_size >= 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if not (_is_int(num_bootstrap) and num_bootstrap >= 0):
        raise ValueError(f"num_bootstrap must be an int >= 0 (0: no intervals), got {num_bootstrap!r}")
    if not (_is_int(pick_resamples) and pick_resamples >= 0):
        raise ValueError(f"pick_resamples must be an int >= 0 (0: no support figure), got {pick_resamples!r}")
    applicable = ranking_estimators()
    if isinstance(estimators, str):
        estimators = [estimators]
    wanted = list(estimators) if estimators else applicable
    unknown = [e for e in wanted if e not in applicable]
    if unknown:
        raise ValueError(
            f"estimators {unknown} do not apply to ranking sources on labelled targets; "
            f"choose from {', '.join(applicable)}"
        )
    if pick_by is not None and pick_by not in wanted:
        raise ValueError(f"pick_by: {pick_by!r} is not among the estimators that run ({', '.join(wanted)})")
    return wanted, pick_by


def _streams(est: str) -> bool:
    """Whether ``est`` scores features and can be finalised from statistics streamed in extraction."""
    return est in features.STREAMED_ESTIMATORS and get_estimator(est).info.source == "features"


def _keep_features(keep_features, estimators, wanted, pick_by, pick_resamples, ground_truth) -> bool:
    """Whether the [N, d] features are kept (``rank``'s ``keep_features``); ValueError for a conflict."""
    if keep_features is not None and not isinstance(keep_features, bool):
        raise TypeError(f"keep_features must be None, True or False, got {keep_features!r}")
    if keep_features:
        return True
    picker = pick_by or next((e for e in PICK_PREFERENCE if e in wanted), wanted[0])
    needs = []
    if ground_truth:
        needs.append("the ground truth (head retraining; pass ground_truth=False)")
    fixed = [e for e in wanted if get_estimator(e).info.source == "features" and not _streams(e)]
    if fixed and (keep_features is None or estimators):
        needs.append(f"{', '.join(fixed)} (not streamed; leave it out of estimators)")
    if pick_resamples and get_estimator(picker).info.source == "features":
        needs.append(f"the picks' support ({picker} on subsamples of the images; pass pick_resamples=0)")
    if keep_features is None:
        return bool(needs)
    if needs:
        raise ValueError(f"keep_features=False, but these need the [N, d] features: {'; '.join(needs)}")
    return False


def _load_and_check_models(images, sources, image_size) -> dict[str, Any]:
    """Every source's model, loaded and checked against the images before any extraction starts.

    Raises ValueError for unknown layers and for a model that cannot take
    the images (for example, a 1-channel model and RGB images), naming the
    source.
    """
    loaded = {}
    for spec in sources:
        if spec.model in loaded:
            model = loaded[spec.model]
        else:
            model = loaded[spec.model] = _load_source_model(spec)
        known = getattr(model, "layer_names", ())
        if spec.layer is not None and spec.layer not in known:
            raise ValueError(
                f"source {spec.model}: no layer {spec.layer!r}; it has {', '.join(known) or 'none'}"
            )
    for name, model in loaded.items():
        try:
            features.check_input(model, images, preprocess=_preprocess(model, image_size))
        except ValueError as err:
            raise ValueError(f"source {name}: {err}") from None
    return loaded


def _preprocess(model, image_size):
    pre = getattr(model, "preprocess", None)
    if pre is not None and image_size is not None:
        pre = pre._replace(size=image_size, resize=image_size)
    return pre


def _extract(images, sources, loaded, wanted, image_size, batch_size, progress, say, *, labels, devices):
    """Features of every source and the head's probabilities of every model, one pass per model.

    With ``labels`` ([T, N]), the features are not kept: the streamed
    statistics of every feature estimator in ``wanted`` against the T targets
    are, per source. Returns (features, probabilities, statistics), each by name.
    """
    by_model: dict[str, list[SourceSpec]] = {}
    for spec in sources:
        by_model.setdefault(spec.model, []).append(spec)
    needs_head = any(get_estimator(e).info.source != "features" for e in wanted)
    streamed = tuple(e for e in wanted if _streams(e))
    feats: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    stats: dict[str, features.StreamedStats] = {}
    for k, (model_name, specs) in enumerate(by_model.items(), 1):
        model = loaded[model_name]
        layers = tuple(s.layer for s in specs if s.layer is not None)
        say(f"  features: model {k} of {len(by_model)}, {model_name} ({len(images)} images)")
        t0 = time.perf_counter()
        options: dict[str, Any] = {}
        if labels is not None:
            head = needs_head and any(s.layer is None for s in specs)
            options = dict(keep=("logits",) if head else (), targets=list(labels), estimators=streamed)
        out = features.extract(
            model,
            images,
            batch_size=batch_size,
            layers=layers,
            preprocess=_preprocess(model, image_size),
            devices=devices,
            progress=progress,
            **options,
        )
        for spec in specs:
            if labels is None:
                feats[spec.name] = np.asarray(out.features if spec.layer is None else out.layers[spec.layer])
                _check_outputs(feats[spec.name], spec.name, "features")
            else:
                stats[spec.name] = out.stats if spec.layer is None else out.layer_stats[spec.layer]
                _check_moments(stats[spec.name], spec.name)
        if out.logits is not None and any(s.layer is None for s in specs):
            if needs_head:
                _check_outputs(np.asarray(out.logits), model_name, "head's predictions", centre=True)
            probs[model_name] = np.asarray(out.probabilities)
        width = out.stats.features.shift.shape[0] if out.features is None else out.features.shape[1]
        what = "statistics of" if out.features is None else "features"
        say(f"  features: {model_name} {what} ({out.count}, {width}) in {time.perf_counter() - t0:.1f} s")
    return feats, probs, stats


@dataclass
class _Inputs:
    """What the estimators are applied to: each source's features and probabilities, and the labels [T, N]."""

    feats: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]
    sources: list[SourceSpec]
    labels: np.ndarray
    stats: dict[str, features.StreamedStats] = field(default_factory=dict)
    rows: np.ndarray | None = None  # each source's row in the global order (None: 0, 1, ...)
    streamed: bool = False  # the feature estimators are finalised from ``stats``, no features kept

    def __post_init__(self):
        if self.rows is None:
            self.rows = np.arange(len(self.sources))

    def groups(self, est: str) -> tuple[list[tuple[list[int], np.ndarray, int | None]], dict[str, str]]:
        """``est``'s source inputs stacked by shape: [(source rows, [s, N, ...], source classes)],
        and the sources it cannot score, with why."""
        info = get_estimator(est).info
        missing: dict[str, str] = {}
        groups: dict[tuple, list[int]] = {}
        stacked: dict[int, np.ndarray] = {}
        for i, spec in enumerate(self.sources):
            p = self.probs.get(spec.model) if spec.layer is None else None
            x = info.source_input(features=self.feats.get(spec.name), probabilities=p)
            if x is None:
                missing[spec.name] = (
                    "a layer has no predictions" if spec.layer else "the model has no classification head"
                )
                continue
            stacked[i] = x
            width = None if p is None else p.shape[-1]  # a source class count for predicted labels
            groups.setdefault((x.shape, str(x.dtype), width), []).append(i)
        return [(rows, np.stack([stacked[i] for i in rows]), key[2]) for key, rows in groups.items()], missing

    def score(self, est: str, groups, seed: int, samples: np.ndarray | None = None) -> np.ndarray:
        """[S, T] scores of ``est`` (NaN for sources it cannot score), on ``samples`` (rows; None: all).

        From the streamed statistics when the features were not kept.
        """
        if not self.sources:  # a process with no sources of its own
            return np.zeros((0, len(self.labels)))
        if self.streamed and _streams(est) and samples is None:
            return np.stack([np.asarray(self.stats[s.name].score(est), np.float64) for s in self.sources])
        fn = get_estimator(est)
        info = fn.info
        labels = self.labels if samples is None else self.labels[:, samples]
        out = np.full((len(self.sources), labels.shape[0]), np.nan)
        for cols in self._target_sets(info):
            targets = info.targets_from_labels(labels[cols], int(self.labels.max()) + 1)
            for rows, x, width in groups:
                x = x if samples is None else x[:, samples]
                options = info.caller_options(seed=seed, num_source_classes=width)
                out[np.ix_(rows, cols)] = np.asarray(score_matrix(fn, x, targets, **options))
        return out

    def _target_sets(self, info) -> list[np.ndarray]:
        """Targets scored together: those of one class count for an estimator of class labels (an
        absent class adds nothing to the score but costs as much as a present one), else all."""
        if info.target != "labels":
            return [np.arange(len(self.labels))]
        classes = self.labels.max(axis=1)
        return [np.flatnonzero(classes == c) for c in np.unique(classes)]


def _score(inputs: _Inputs, names, wanted, seed, progress, say):
    """Every estimator on every source and target: one ``score_matrix`` call per estimator and kind
    of source input (sources of one width are stacked), all targets at once.

    Returns (scores {estimator: [S, T]}, not_computed, seconds per estimator), S the sources of
    ``inputs``.
    """
    scores: dict[str, np.ndarray] = {}
    not_computed: dict[str, dict[str, str]] = {}
    seconds: dict[str, float] = {}
    bar = progress_bar(len(wanted), progress, "scores", unit="estimator")
    for est in wanted:
        bar.set_postfix_str(est)
        t0 = time.perf_counter()
        groups, missing = ([], {}) if inputs.streamed and _streams(est) else inputs.groups(est)
        if missing:
            not_computed[est] = dict(missing)
        raw = inputs.score(est, groups, seed)
        scores[est] = np.full_like(raw, np.nan)
        for i, spec in enumerate(inputs.sources):
            if spec.name not in missing:
                scores[est][i] = _finite_or_reported(raw[i], est, spec.name, names, not_computed)
        seconds[est] = time.perf_counter() - t0
        bar.update(1)
    bar.close()
    return scores, not_computed, seconds


def _pick_estimator(pick_by, wanted, scores) -> str | None:
    """``pick_by``, or the first of :data:`PICK_PREFERENCE` (then of ``wanted``) that scored a source."""
    if pick_by is not None:
        return pick_by if np.isfinite(scores[pick_by]).any() else None
    order = [e for e in PICK_PREFERENCE if e in wanted] + [e for e in wanted if e not in PICK_PREFERENCE]
    return next((e for e in order if np.isfinite(scores[e]).any()), None)


def _pick_support(inputs: _Inputs, est: str, mat: np.ndarray, resamples: int, seed: int, progress, owner):
    """[T] share of ``resamples`` random subsamples of the images whose ``est`` scores keep each
    target's pick (NaN when ``resamples`` is 0).

    Each subsample holds :data:`SUBSAMPLE` of the images, drawn without
    replacement. A bootstrap (n draws with replacement) would not do here:
    its duplicated images inflate the fit of high-dimensional features more
    than that of low-dimensional ones, so it moved LogME's picks
    systematically (on the demo, most picks were kept by 0 of 20 bootstrap
    resamples, whatever their margin). Subsamples without replacement keep
    every image distinct; the sources are compared on the same subsample.

    Only sources in some target's top three are rescored: the others would
    have to overtake three sources to change a pick, and are counted as never
    doing so. With several processes, ``mat`` [S, T] is the gathered matrix,
    every process draws the same subsamples, rescores its own top sources
    (``inputs``; ``owner`` [S] says which process holds which source) and the
    rescored rows are gathered before the comparison.
    """
    if resamples == 0 or (inputs.streamed and get_estimator(est).info.source == "features"):
        return np.full(mat.shape[1], np.nan)  # no resamples, or no features to resample
    filled = np.nan_to_num(mat, nan=-np.inf)
    pick = np.argmax(filled, axis=0)
    top = np.unique(np.argsort(-filled, axis=0)[:3].ravel())
    top = top[np.isfinite(filled[top]).any(axis=1)]
    rescored = set(np.flatnonzero(np.isin(inputs.rows, top)).tolist())  # this process's top sources
    groups, _ = inputs.groups(est)
    groups = [
        ([i for i in rows if i in rescored], x[[k for k, i in enumerate(rows) if i in rescored]], w)
        for rows, x, w in groups
        if any(i in rescored for i in rows)
    ]
    rng = np.random.default_rng(seed)
    n = inputs.labels.shape[1]
    again = np.full((len(inputs.sources), resamples, mat.shape[1]), np.nan)
    bar = progress_bar(resamples, progress, f"picks ({est})", unit="resample")
    for r in range(resamples):
        samples = np.sort(rng.choice(n, size=max(2, round(SUBSAMPLE * n)), replace=False))
        again[:, r] = inputs.score(est, groups, seed, samples)
        bar.update(1)
    bar.close()
    again = np.nan_to_num(hosts.gather_rows(again, owner), nan=-np.inf)  # [S, R, T]
    return (np.argmax(again, axis=0) == pick).sum(axis=0) / resamples


def _picks(scores, pick_by, support, sources, names, actual) -> list[Pick]:
    """One :class:`Pick` per target from the scores (and the measured transfer, when there is one)."""
    mat = np.nan_to_num(scores[pick_by], nan=-np.inf)
    picks = []
    for j, target in enumerate(names):
        order = np.argsort(-mat[:, j], kind="stable")
        first = int(order[0])
        second = int(order[1]) if len(order) > 1 and np.isfinite(mat[order[1], j]) else None
        voters = agree = 0
        for m in scores.values():
            col = m[:, j]
            if np.isfinite(col).sum() >= 2:
                voters += 1
                agree += int(np.nanargmax(col) == first)
        best = regret = None
        if actual is not None:
            b = int(np.argmax(actual[:, j]))
            best, regret = sources[b], float(actual[b, j] - actual[first, j])
        picks.append(
            Pick(
                target=target,
                source=sources[first],
                estimator=pick_by,
                runner_up=None if second is None else sources[second],
                margin=float("nan") if second is None else float(mat[first, j] - mat[second, j]),
                support=float(support[j]),
                agree=agree,
                voters=voters,
                best=best,
                regret=float("nan") if regret is None else regret,
            )
        )
    return picks


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


def _check_moments(stats, source: str) -> None:
    """:func:`_check_outputs` for features seen only through their streamed moments: refuse non-finite
    sums, and features whose every column has zero spread (its centred sum of squares)."""
    f = stats.features
    n = float(f.count)
    total, shift, diag = np.asarray(f.total), np.asarray(f.shift), np.diagonal(np.asarray(f.gram))
    if not (np.isfinite(total).all() and np.isfinite(diag).all()):
        raise ValueError(
            f"source {source}: its features are NaN or infinite on some of the {n:.0f} images; "
            "expected finite values (are the model's weights NaN or infinite?)"
        )
    spread = np.sqrt(np.maximum(diag - total**2 / max(n, 1), 0) / max(n, 1))
    mean = np.abs(shift + total / max(n, 1))
    if np.all(spread <= 8 * np.finfo(np.result_type(diag.dtype, np.float32)).eps * mean):
        raise ValueError(
            f"source {source}: its features are the same for all {n:.0f} images (every one of the "
            f"{diag.shape[0]} columns is constant); expected outputs that vary with the image "
            "(are the model's weights zero, or its units dead?)"
        )


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
