"""``jaxtransfer demo``: NCE between every pair of attribute tasks on handwritten digits.

This is the setting of Tran, Nguyen & Hassner (ICCV 2019) — many attribute
tasks labelled on the same images, transferability between every pair of tasks
measured by NCE from their labels, and each task's hardness by H(Y) — on
scikit-learn's bundled digits, so it needs no download.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from .. import estimators as jt
from ..datasets import digits_attribute_tasks

__all__ = ["run_demo"]


def _matrix_text(names: list[str], matrix: np.ndarray) -> str:
    width = max(6, max(len(n) for n in names))
    head = " " * (width + 1) + " ".join(f"{n[:6]:>6}" for n in names)
    rows = [head]
    for name, row in zip(names, matrix, strict=True):
        rows.append(f"{name:>{width}} " + " ".join(f"{v if abs(v) >= 5e-4 else 0.0:6.3f}" for v in row))
    return "\n".join(rows)


def run_demo(print_fn=print) -> dict:
    """Score NCE between every pair of digit attribute tasks and rank them.

    Prints the source × target NCE matrix, each task's hardness (ranked) and,
    for each target, its three most transferable sources, with the time each
    stage took. Returns the numbers as a dict (also what ``--format json``
    writes).
    """
    timings = {}
    t0 = time.perf_counter()
    tasks = digits_attribute_tasks()
    timings["load_tasks_s"] = time.perf_counter() - t0
    labels = tasks.labels
    n_tasks, n = labels.shape
    classes = max(tasks.num_classes)

    t0 = time.perf_counter()
    matrix = jax.block_until_ready(
        jt.score_matrix(jt.nce, labels, labels, num_source_classes=classes, num_target_classes=classes)
    )
    timings["nce_matrix_first_call_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    matrix = np.asarray(
        jax.block_until_ready(
            jt.score_matrix(jt.nce, labels, labels, num_source_classes=classes, num_target_classes=classes)
        )
    )
    timings["nce_matrix_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hard = np.asarray(jt.hardness(labels, num_target_classes=classes))
    timings["hardness_s"] = time.perf_counter() - t0

    print_fn(
        f"Attribute transfer on scikit-learn digits: {n_tasks} tasks on the same {n} images "
        "(Tran, Nguyen & Hassner, ICCV 2019 setting)."
    )
    print_fn(
        "\nNCE = -H(target | source) in nats, higher is more transferable (rows: source, columns: target)"
    )
    print_fn(_matrix_text(tasks.names, matrix))
    order = np.argsort(-hard)
    print_fn("\nHardness H(Y) in nats, hardest first")
    for rank, t in enumerate(order, 1):
        print_fn(f"{rank:3d}. {tasks.names[t]:>7}  {hard[t]:.4f}  {tasks.descriptions[t]}")
    print_fn("\nBest sources for each target (excluding the target itself)")
    best = {}
    for t, name in enumerate(tasks.names):
        scores = matrix[:, t].copy()
        scores[t] = -np.inf
        top = np.argsort(-scores, kind="stable")[:3]
        best[name] = [(tasks.names[s], float(scores[s])) for s in top]
        listed = ", ".join(f"{tasks.names[s]} ({scores[s] + 0.0:.3f})" for s in top)
        print_fn(f"{name:>7} <- {listed}")
    print_fn(
        "\nTimings: "
        + ", ".join(f"{k[:-2].replace('_', ' ')} {v * 1e3:.1f} ms" for k, v in timings.items())
        + f" ({n_tasks * n_tasks} pairs in one call)"
    )
    return {
        "tasks": tasks.names,
        "descriptions": tasks.descriptions,
        "num_classes": tasks.num_classes,
        "n": n,
        "nce": matrix.tolist(),
        "hardness": hard.tolist(),
        "best_sources": best,
        "timings_s": timings,
    }
