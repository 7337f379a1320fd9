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

import csv
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .. import estimators, evaluation, features, models, transfer
from .._io import check_output_folder, read_npz
from .._progress import progress_bar
from ..datasets import digits_attribute_tasks, load_digits
from ..estimators import MAX_INFERRED_CLASSES, score_matrix

__all__ = [
    "NotComputedWarning",
    "RankResult",
    "SourceSpec",
    "default_dataset",
    "load_dataset",
    "rank",
    "write_outputs",
]

FEATURE_ESTIMATORS = ("logme", "linear_mse", "hscore", "shrinkage_hscore", "transrate", "gbc", "nleep")
PREDICTION_ESTIMATORS = ("leep", "nce")


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
    """

    sources: list[str]
    targets: list[str]
    scores: dict[str, np.ndarray]
    actual: np.ndarray | None
    log_likelihood: np.ndarray | None
    evaluation: dict[str, dict[str, tuple[float, float, float]]]
    timings: dict[str, float]
    not_computed: dict[str, dict[str, str]] = field(default_factory=dict)


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


def load_dataset(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a target dataset from ``.npz`` (no pickle): ``images`` [N, H, W(, C)], ``labels`` [N] or [N, T].

    An optional ``names`` array of strings names the label columns.

    Raises:
      ValueError: unreadable file, missing arrays, wrong shapes or dtypes,
        labels that don't match the images, an empty dataset, a single class.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data: no such file: {path}")
    try:
        arrays = read_npz(path, what=".npz file")
    except ValueError as err:
        raise ValueError(f"--data: {err}") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(f"--data: {path} needs arrays 'images' and 'labels'; it has {sorted(arrays)}")
    names = arrays.get("names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise ValueError(
            f"--data: {path}: 'names' must be a 1-D array of strings, got shape {names.shape} {names.dtype}"
        )
    names = None if names is None else [str(s) for s in names]
    return _check_dataset(arrays["images"], arrays["labels"], names, f"--data {path}")


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


def estimator_call(name: str, seed: int) -> tuple[Callable, dict]:
    options: dict[str, Any] = {}
    if name == "nleep":
        options["key"] = jax.random.key(seed)
    if name == "linear_mse":
        options["l2"] = 1.0
    return estimators.get_estimator(name), options


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
      sources: :class:`SourceSpec` list; layers of one model share one pass.
      estimators: names to use (default: every applicable one).
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
    if not sources:
        raise ValueError("sources: give at least one source")
    if image_size is not None and not (_is_int(image_size) and image_size >= 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if not (_is_int(num_bootstrap) and num_bootstrap >= 0):
        raise ValueError(f"num_bootstrap must be an int >= 0 (0: no intervals), got {num_bootstrap!r}")
    wanted = list(estimators) if estimators else list(FEATURE_ESTIMATORS + PREDICTION_ESTIMATORS)
    unknown = [e for e in wanted if e not in FEATURE_ESTIMATORS + PREDICTION_ESTIMATORS]
    if unknown:
        raise ValueError(
            f"estimators {unknown} do not apply to ranking sources on labelled targets; "
            f"choose from {', '.join(FEATURE_ESTIMATORS + PREDICTION_ESTIMATORS)}"
        )
    timings: dict[str, float] = {}
    by_model: dict[str, list[SourceSpec]] = {}
    for spec in sources:
        by_model.setdefault(spec.model, []).append(spec)

    # 1. features, one pass per model
    start = time.perf_counter()
    feats: dict[str, np.ndarray] = {}
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
            logits = np.asarray(out.logits)
            if any(e in PREDICTION_ESTIMATORS for e in wanted):
                _check_outputs(logits, model_name, "head's predictions", centre=True)
            preds[model_name] = (np.asarray(out.probabilities), np.asarray(out.labels))
        print_fn(f"  features: {model_name} {tuple(out.features.shape)} in {time.perf_counter() - t0:.1f} s")
    timings["features"] = time.perf_counter() - start

    # 2. scores, every source against all targets at once per estimator
    start = time.perf_counter()
    source_names = [s.name for s in sources]
    scores = {e: np.full((len(sources), len(names)), np.nan) for e in wanted}
    not_computed: dict[str, dict[str, str]] = {}  # estimator -> source -> why its scores are NaN
    warned: set[str] = set()
    onehot = np.eye(labels.max() + 1, dtype=np.float32)[labels] if "linear_mse" in wanted else None
    bar = progress_bar(len(sources) * len(wanted), progress, "scores", unit="score")
    for i, spec in enumerate(sources):
        for est in wanted:
            bar.update(1)
            bar.set_postfix_str(f"{spec.name} {est}")
            fn, options = estimator_call(est, seed)
            if est in PREDICTION_ESTIMATORS:
                if spec.layer is not None or spec.model not in preds:
                    why = (
                        "a layer has no predictions" if spec.layer else "the model has no classification head"
                    )
                    not_computed.setdefault(est, {})[spec.name] = why
                    continue
                probs, argmax = preds[spec.model]
                source = probs if est == "leep" else argmax
                if est == "nce":
                    options["num_source_classes"] = probs.shape[1]
            else:
                source = feats[spec.name]
            if est == "linear_mse":
                # ridge on one-hot labels; padding every task to the largest class count adds zero
                # columns, which add nothing to the objective, so one factorisation serves all tasks
                row = np.asarray(score_matrix(fn, source[None], onehot, **options))[0]
            else:
                row = np.asarray(score_matrix(fn, source[None], labels, **options))[0]
            failed = ~np.isfinite(row)
            if failed.any():
                on = [names[j] for j in np.flatnonzero(failed)]
                why = (
                    f"it returned {row[failed][0]} on {len(on)} of {len(names)} targets ({', '.join(on[:5])}"
                )
                why += ", …)" if len(on) > 5 else ")"
                not_computed.setdefault(est, {})[spec.name] = why
                warned.add(est)
                warnings.warn(
                    f"{est} could not be computed for source {spec.name}: {why}; "
                    "those scores are NaN in the outputs",
                    NotComputedWarning,
                    stacklevel=2,
                )
                row = np.where(failed, np.nan, row)
            scores[est][i] = row
    bar.close()
    for est in wanted:
        if np.isnan(scores[est]).all() and est not in warned:
            reasons = "; ".join(sorted(set(not_computed[est].values())))
            warnings.warn(
                f"{est} could not be computed for any source ({reasons}); its scores are NaN in the outputs",
                NotComputedWarning,
                stacklevel=2,
            )
    timings["scores"] = time.perf_counter() - start
    print_fn(f"  scores: {len(scores)} estimators × {len(sources)} sources × {len(names)} targets")

    # 3. ground truth
    actual = loglik = None
    if ground_truth:
        start = time.perf_counter()
        result = transfer.head_retrain_matrix(
            [feats[s] for s in source_names], labels, seed=seed, progress=progress
        )
        actual, loglik = result.accuracy, result.log_likelihood
        timings["ground_truth"] = time.perf_counter() - start

    # 4. evaluation
    report: dict[str, dict[str, tuple[float, float, float]]] = {}
    if actual is not None and len(sources) >= 2:
        start = time.perf_counter()
        for est, mat in scores.items():
            rows = np.isfinite(mat).all(axis=1)
            if rows.sum() < 2:
                continue  # listed by evaluation_table as not evaluated
            stats = evaluation.evaluate(mat[rows], actual[rows], num_bootstrap=num_bootstrap, seed=seed)
            report[est] = {k: tuple(v) for k, v in stats.items()}
        timings["evaluation"] = time.perf_counter() - start
    return RankResult(source_names, names, scores, actual, loglik, report, timings, not_computed)


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


def ranked_table(result: RankResult) -> str:
    """Sources ranked by actual transfer (or by the first estimator), with each estimator's mean rank."""
    ests = list(result.scores)
    s = len(result.sources)

    def mean_rank(mat):  # 1 = best for every target, averaged over targets; NaN for unscored sources
        order = np.argsort(np.argsort(-np.nan_to_num(mat, nan=-np.inf), axis=0), axis=0) + 1.0
        scored = ~np.isnan(mat).all(axis=1)
        out = np.full(s, np.nan)
        out[scored] = order[scored].mean(axis=1)
        return out

    key = result.actual.mean(axis=1) if result.actual is not None else -mean_rank(result.scores[ests[0]])
    rows = np.argsort(-key)
    width = max(len(n) for n in result.sources) + 2
    head = f"{'#':>2}  {'source':{width}s}" + ("  accuracy" if result.actual is not None else "")
    head += "".join(f" {e[:12]:>12s}" for e in ests)
    lines = [head, "-" * len(head)]
    ranks = {e: mean_rank(result.scores[e]) for e in ests}
    for place, i in enumerate(rows, 1):
        line = f"{place:2d}  {result.sources[i]:{width}s}"
        if result.actual is not None:
            line += f"  {result.actual[i].mean():8.4f}"
        line += "".join(f" {ranks[e][i]:12.2f}" if np.isfinite(ranks[e][i]) else f" {'—':>12s}" for e in ests)
        lines.append(line)
    lines.append("(estimator columns: mean rank of the source over the target tasks, 1 = picked first)")
    for est, by_source in result.not_computed.items():  # — in the table, NaN in the files
        for why in dict.fromkeys(by_source.values()):
            listed = ", ".join(s for s, w in by_source.items() if w == why)
            lines.append(f"— {est} not computed for {listed}: {why}")
    return "\n".join(lines)


def evaluation_table(result: RankResult) -> str:
    """Each estimator's correlations with actual transfer, pooled and within target, with intervals."""
    if not result.evaluation:
        return "(no evaluation: needs ground truth and at least two sources with every estimator's scores)"
    cols = ("pearson_pooled", "spearman_pooled", "pearson_within", "spearman_within", "kendall_within",
            "weighted_tau_within", "top1_hit", "regret")  # fmt: skip
    head = f"{'estimator':18s}" + "".join(f" {c:>22s}" for c in cols)
    lines = [head, "-" * len(head)]
    for est, stats in result.evaluation.items():
        cells = "".join(f" {stats[c][0]:6.3f} [{stats[c][1]:6.3f},{stats[c][2]:6.3f}]" for c in cols)
        lines.append(f"{est:18s}{cells}")
    missing = [e for e in result.scores if e not in result.evaluation]
    if missing:
        lines.append(f"not evaluated (fewer than two sources with finite scores): {', '.join(missing)}")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_outputs(result: RankResult, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``scores.json``, ``scores.csv``, ``evaluation.json``, ``evaluation.csv`` and PNG plots.

    Every file is written to a temporary name and renamed when complete.

    Raises:
      ValueError: ``out`` is an existing file, or cannot be created.
    """
    out = check_output_folder(out, what="out")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    doc = {
        "sources": result.sources,
        "targets": result.targets,
        "scores": {e: m.tolist() for e, m in result.scores.items()},
        "actual_accuracy": None if result.actual is None else result.actual.tolist(),
        "actual_log_likelihood": None if result.log_likelihood is None else result.log_likelihood.tolist(),
        "not_computed": result.not_computed,
        "timings_s": result.timings,
    }
    _write_text(out / "scores.json", json.dumps(doc, indent=1, allow_nan=True))
    written.append(out / "scores.json")
    rows = []
    for i, s in enumerate(result.sources):
        for j, t in enumerate(result.targets):
            row = {"source": s, "target": t}
            if result.actual is not None:
                row["actual_accuracy"] = result.actual[i, j]
                row["actual_log_likelihood"] = result.log_likelihood[i, j]
            row.update({e: m[i, j] for e, m in result.scores.items()})
            rows.append(row)
    _write_csv(out / "scores.csv", rows)
    written.append(out / "scores.csv")
    _write_text(out / "evaluation.json", json.dumps(result.evaluation, indent=1, allow_nan=True))
    written.append(out / "evaluation.json")
    erows = [
        {"estimator": e, "statistic": k, "value": v[0], "low": v[1], "high": v[2]}
        for e, stats in result.evaluation.items()
        for k, v in stats.items()
    ]
    _write_csv(out / "evaluation.csv", erows)
    written.append(out / "evaluation.csv")
    if plots and result.actual is not None:
        written += _plots(result, out)
    return written


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)


def _plots(result: RankResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    cmap = plt.get_cmap("tab20")
    for est, mat in result.scores.items():
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        for j, target in enumerate(result.targets):
            ok = ~np.isnan(mat[:, j])
            ax.plot(mat[ok, j], result.actual[ok, j], "o", ms=4, color=cmap(j % 20), label=target)
        stats = result.evaluation.get(est)
        title = est
        if stats:
            title += (
                f"   pooled Pearson {stats['pearson_pooled'][0]:.2f}, "
                f"within-target Spearman {stats['spearman_within'][0]:.2f}"
            )
        ax.set(xlabel=f"{est} score", ylabel="test accuracy after head retraining", title=title)
        ax.title.set_fontsize(9)
        if len(result.targets) <= 20:
            ax.legend(fontsize=6, ncol=2, loc="best")
        fig.tight_layout()
        path = out / f"{est}.png"
        tmp = out / f".{est}.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    if result.evaluation:
        ests = list(result.evaluation)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        x = np.arange(len(ests))
        for offset, (stat, label) in enumerate(
            (("pearson_pooled", "Pearson, pooled"), ("spearman_within", "Spearman, within target"))
        ):
            vals = np.array([result.evaluation[e][stat] for e in ests])
            err = np.abs(vals[:, 1:].T - vals[:, 0])
            ax.bar(x + (offset - 0.5) * 0.38, vals[:, 0], 0.38, yerr=err, capsize=3, label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, ests, rotation=30, ha="right")
        ax.set(
            ylabel="correlation with actual transfer", title="estimators vs head-retraining accuracy (95% CI)"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = out / ".summary.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(out / "summary.png")
        paths.append(out / "summary.png")
    return paths
