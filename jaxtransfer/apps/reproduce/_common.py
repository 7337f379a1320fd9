"""Shared machinery of the estimator-quality protocols (``jaxtransfer reproduce``).

Both protocols score every source task against every other target task on the
same images, measure actual transfer, and judge each estimator by
:func:`jaxtransfer.evaluation.evaluate`. Pairs of a task with itself are left
out: each target is ranked over the S − 1 other sources, so a matrix [S, S] is
judged as the [S − 1, S] matrix of its off-diagonal entries, column by column.
(The bootstrap then resamples the S − 1 positions of each column with one
draw for every target.)

This module holds what the two share: the model cache, the evaluation of a set
of estimators against several ground truths with a "target only" baseline and
the share of variance the target alone explains, and the reports (JSON,
Markdown with tables, PNG plots), all written by the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ... import models
from ..._io import read_npz, write_npz
from ...evaluation import evaluate

__all__ = [
    "INTERVAL_NOTE",
    "ModelCache",
    "cell",
    "environment",
    "judge",
    "markdown_table",
    "off_diagonal",
    "scatter_grid",
    "source_model",
    "summary_bars",
    "target_variance_share",
    "write_report",
]

STAT_COLUMNS = (
    ("pearson_pooled", "Pearson pooled"),
    ("spearman_pooled", "Spearman pooled"),
    ("kendall_pooled", "Kendall pooled"),
    ("weighted_tau_pooled", "weighted τ pooled"),
    ("pearson_within", "Pearson within"),
    ("spearman_within", "Spearman within"),
    ("kendall_within", "Kendall within"),
    ("weighted_tau_within", "weighted τ within"),
    ("top1_hit", "top-1 hit"),
    ("regret", "regret"),
)


INTERVAL_NOTE = (
    "Percentile intervals of the hit rate and the regret need not contain the point value: a resample "
    "repeats some sources and drops others, which changes which source is best."
)


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """[S, S] → [S − 1, S]: column t holds the entries of the sources s ≠ t, in order."""
    m = np.asarray(matrix)
    s = m.shape[0]
    if m.shape[:2] != (s, s):
        raise ValueError(f"expected a square [S, S] matrix, got shape {m.shape}")
    keep = ~np.eye(s, dtype=bool)
    return m.T[keep.T].reshape(s, s - 1).T


def target_variance_share(actual: np.ndarray) -> float:
    """Share of the variance of actual transfer [S', T] that the target alone explains (one-way R²)."""
    a = np.asarray(actual, float)
    total = np.sum((a - a.mean()) ** 2)
    between = a.shape[0] * np.sum((a.mean(axis=0) - a.mean()) ** 2)
    return float(between / total) if total > 0 else float("nan")


def judge(
    scores: dict[str, np.ndarray], truths: dict[str, np.ndarray], *, num_bootstrap: int, seed: int
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Every estimator [S, S] against every ground truth [S, S], off the diagonal.

    Returns:
      ``{truth: {estimator: {statistic: [value, low, high]}}}``. Statistics that
      are undefined (within-target correlations of a score constant within each
      target, such as the target-only baseline) are NaN.
    """
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for truth, actual in truths.items():
        a = off_diagonal(actual)
        out[truth] = {}
        for name, mat in scores.items():
            stats = evaluate(off_diagonal(mat), a, num_bootstrap=num_bootstrap, seed=seed)
            out[truth][name] = {k: [v.value, v.low, v.high] for k, v in stats.items()}
    return out


def _hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


class ModelCache:
    """Trained source models and measured transfer on disk, keyed by configuration, so a run can resume.

    Models are written with :func:`jaxtransfer.sources.save` (``.npz`` + JSON,
    no pickle) under ``root/<protocol>-<hash of the configuration>/``; measured
    results (arrays) with the package's safe ``.npz`` writer beside them.
    """

    def __init__(self, root: str | os.PathLike | None, protocol: str, config: dict):
        if root is None:
            base = os.environ.get("JAXTRANSFER_CACHE") or Path.home() / ".cache" / "jaxtransfer"
            root = Path(base) / "reproduce"
        self.folder = Path(root) / f"{protocol}-{_hash(config)}"
        self.hits = 0
        self.result_hits = 0

    def get_or_train(self, name: str, train: Callable[[], Any]):
        path = self.folder / f"{name}.npz"
        if path.is_file():
            try:
                model = models.load(path)
                self.hits += 1
                return model
            except ValueError:
                path.unlink()  # a stale or partial file: train again
        model = train()
        self.folder.mkdir(parents=True, exist_ok=True)
        models.save(path, model)
        return model

    def get_or_compute(self, name: str, config: dict, compute: Callable[[], dict]) -> dict[str, np.ndarray]:
        """Arrays ``compute()`` returns, or their copy stored under ``name`` and the hash of ``config``."""
        path = self.folder / f"{name}-{_hash(config)}.npz"
        if path.is_file():
            try:
                arrays = read_npz(path, what="cached results")
                self.result_hits += 1
                return arrays
            except ValueError:
                path.unlink()
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_npz(path, arrays)
        return arrays


def source_model(cache: ModelCache, name: str, num_outputs: int, arch: dict, x, y, *, config, seed: int):
    """A :class:`jaxtransfer.sources.SmallCNN` trained on ``(x, y)`` with ``config``'s epochs, batch
    size and learning rate and the given seed (initialisation and batches) — or its cached copy."""

    def fit():
        model = models.SmallCNN(num_outputs, seed=seed, **arch)
        trained, _ = models.train(
            model, x, y, epochs=config.source_epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate, seed=seed, progress=False,
        )  # fmt: skip
        return trained

    return cache.get_or_train(name, fit)


def environment() -> dict[str, str]:
    return {
        "jax": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "date": time.strftime("%Y-%m-%d"),
    }


def cell(v: list[float]) -> str:
    value, low, high = v
    if not np.isfinite(value):
        return "—"
    if low == high:
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def markdown_table(evaluation: dict[str, dict[str, list[float]]], names: dict[str, str] | None = None) -> str:
    """One row per estimator: the statistics of :data:`STAT_COLUMNS` with their intervals."""
    names = names or {}
    head = "| estimator | " + " | ".join(label for _, label in STAT_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(STAT_COLUMNS) + 1)]
    for est, stats in evaluation.items():
        cells = " | ".join(cell(stats[key]) for key, _ in STAT_COLUMNS)
        lines.append(f"| {names.get(est, est)} | {cells} |")
    return "\n".join(lines)


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)


def scatter_grid(
    path: Path,
    scores: dict[str, np.ndarray],
    actual: np.ndarray,
    target_names: list[str],
    ylabel: str,
    title: str,
) -> Path:
    """A panel per estimator: score against actual transfer per off-diagonal pair, a colour per target."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), dpi=90, squeeze=False)
    cmap = plt.get_cmap("tab20")
    a = off_diagonal(actual)
    for ax, name in zip(axes.flat, names, strict=False):
        s = off_diagonal(scores[name])
        for t in range(a.shape[1]):
            ax.plot(s[:, t], a[:, t], "o", ms=3, color=cmap(t % 20), label=target_names[t])
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, ncol=min(10, len(labels)), loc="lower center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    _atomic_write(path, buf.getvalue())
    return path


def summary_bars(path: Path, evaluation: dict[str, dict[str, list[float]]], title: str) -> Path:
    """Pooled Pearson and within-target Spearman of each estimator, with their intervals."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ests = list(evaluation)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(ests) + 2), 4), dpi=90)
    x = np.arange(len(ests))
    for offset, (stat, label) in enumerate(
        (("pearson_pooled", "Pearson, pooled"), ("spearman_within", "Spearman, within target"))
    ):
        vals = np.array([evaluation[e][stat] for e in ests], float)
        shown = np.nan_to_num(vals)
        err = np.abs(shown[:, 1:].T - shown[:, 0])
        ax.bar(x + (offset - 0.5) * 0.38, shown[:, 0], 0.38, yerr=err, capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, ests, rotation=35, ha="right", fontsize=7)
    ax.set(ylabel="correlation with actual transfer", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    _atomic_write(path, buf.getvalue())
    return path


def write_report(out: Path, results: dict, markdown: str) -> list[Path]:
    """``results.json`` and ``report.md`` in ``out`` (each written whole, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "results.json", json.dumps(_jsonable(results), indent=1, allow_nan=True))
    _atomic_write(out / "report.md", markdown)
    return [out / "results.json", out / "report.md"]


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.floating | np.integer | np.bool_):
        return x.item()
    return x
