"""Attribute tasks on handwritten digits (the setting of Tran, Nguyen & Hassner, ICCV 2019).

Many tasks labelled on the same images: from the digit (digit k or not, odd,
≥ 5, prime, closed loop, curved stroke, mod 3, the digit itself) and from the
pixels (ink). scikit-learn's bundled 8×8 digits (1,797 images) need no
download.
"""

from __future__ import annotations

import numpy as np

from ._tasks import AttributeTasks, tasks_from_rows

__all__ = ["digit_attribute_tasks", "digits_attribute_tasks", "load_digits"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits: images float64 [1797, 8, 8] in 0…16, labels [1797]."""
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
    return digit_attribute_tasks(*load_digits())


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
    return tasks_from_rows(tasks)
