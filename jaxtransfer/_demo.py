"""The main job on an embedded default: attribute transfer on handwritten digits.

This is the setting of Tran, Nguyen & Hassner (ICCV 2019) — many attribute
tasks labelled on the same images, transferability between every pair of tasks
measured by NCE from their labels, and each task's hardness by H(Y) — on
scikit-learn's bundled 8×8 handwritten digits (1,797 images), so it needs no
download.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

__all__ = ["AttributeTasks", "digit_attribute_tasks", "digits_attribute_tasks", "run_demo"]


class AttributeTasks(NamedTuple):
    """T labelled tasks on the same n images."""

    names: list[str]
    labels: np.ndarray  # int32 [T, n]
    num_classes: list[int]
    descriptions: list[str]


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise RuntimeError(
            "the demo data come from scikit-learn's bundled digits: pip install 'jaxtransfer[demo]'"
        ) from None
    data = load_digits()
    return np.asarray(data.images, dtype=np.float64), np.asarray(data.target, dtype=np.int64)


def digits_attribute_tasks() -> AttributeTasks:
    """Attribute tasks on scikit-learn's digits: :func:`digit_attribute_tasks` of its 1,797 images."""
    return digit_attribute_tasks(*_load_digits())


def digit_attribute_tasks(images: np.ndarray, digit: np.ndarray) -> AttributeTasks:
    """20 attribute tasks, binary to 10-class, on images of handwritten digits [n, H, W] and their labels [n].

    Label-defined attributes (digit k vs rest, odd, ≥ 5, prime, has a closed
    loop, has a curve, digit mod 3, the digit itself) and image-defined ones
    computed from the pixels (more ink than the median image, more ink in the
    left half than the right, more ink in the top half than the bottom).
    """
    images = np.asarray(images, dtype=np.float64)
    digit = np.asarray(digit, dtype=np.int64)
    half_h, half_w = images.shape[1] // 2, images.shape[2] // 2
    tasks: list[tuple[str, np.ndarray, int, str]] = []
    for k in range(10):
        tasks.append((f"is_{k}", digit == k, 2, f"digit is {k}"))
    tasks += [
        ("odd", digit % 2 == 1, 2, "digit is odd"),
        ("ge5", digit >= 5, 2, "digit is 5 or more"),
        ("prime", np.isin(digit, (2, 3, 5, 7)), 2, "digit is prime"),
        ("loop", np.isin(digit, (0, 4, 6, 8, 9)), 2, "digit has a closed loop"),
        ("curve", np.isin(digit, (0, 2, 3, 5, 6, 8, 9)), 2, "digit has a curved stroke"),
        ("mod3", digit % 3, 3, "digit modulo 3"),
        ("digit", digit, 10, "the digit itself"),
    ]
    ink = images.sum(axis=(1, 2))
    left = images[:, :, :half_w].sum(axis=(1, 2))
    top = images[:, :half_h, :].sum(axis=(1, 2))
    tasks += [
        ("heavy", ink > np.median(ink), 2, "more ink than the median image"),
        ("left", left > images[:, :, -half_w:].sum(axis=(1, 2)), 2, "more ink on the left half"),
        ("top", top > images[:, -half_h:, :].sum(axis=(1, 2)), 2, "more ink on the top half"),
    ]
    names = [t[0] for t in tasks]
    labels = np.stack([t[1].astype(np.int32) for t in tasks])
    return AttributeTasks(names, labels, [t[2] for t in tasks], [t[3] for t in tasks])


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
    import jax

    import jaxtransfer as jt

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
