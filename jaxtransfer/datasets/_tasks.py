"""Labelled attribute tasks on one set of images: the form every dataset here returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["AttributeTasks", "tasks_from_rows"]


class AttributeTasks(NamedTuple):
    """T labelled tasks on the same n images."""

    names: list[str]
    labels: np.ndarray  # int32 [T, n]
    num_classes: list[int]
    descriptions: list[str]


def tasks_from_rows(tasks: Sequence[tuple[str, np.ndarray, int, str]]) -> AttributeTasks:
    """Stack ``(name, labels [n], num_classes, description)`` rows into :class:`AttributeTasks`."""
    return AttributeTasks(
        [t[0] for t in tasks],
        np.stack([np.asarray(t[1]).astype(np.int32) for t in tasks]),
        [t[2] for t in tasks],
        [t[3] for t in tasks],
    )
