"""Low-level jitted kernels of jaxtransfer: histograms, entropies, spectral ridge.

Imports only jax and numpy. Everything here is pure and works under ``jit``,
``vmap`` and ``grad``; input validation lives in :mod:`jaxtransfer`.
"""

from ._entropy import conditional_entropy_from_counts as conditional_entropy_from_counts
from ._entropy import entropy_from_counts as entropy_from_counts
from ._histogram import ONEHOT_MAX_CELLS as ONEHOT_MAX_CELLS
from ._histogram import choose_histogram_method as choose_histogram_method
from ._histogram import joint_histogram as joint_histogram
from ._histogram import joint_histograms as joint_histograms
from ._histogram import label_counts as label_counts
from ._histogram import soft_joint_histogram as soft_joint_histogram
from ._ridge import CrossStats as CrossStats
from ._ridge import RidgeFactor as RidgeFactor
from ._ridge import SourceStats as SourceStats
from ._ridge import add_stats as add_stats
from ._ridge import cross_stats as cross_stats
from ._ridge import ridge_factor as ridge_factor
from ._ridge import ridge_objective as ridge_objective
from ._ridge import ridge_objective_from_stats as ridge_objective_from_stats
from ._ridge import source_stats as source_stats

__all__ = [
    "ONEHOT_MAX_CELLS",
    "CrossStats",
    "RidgeFactor",
    "SourceStats",
    "add_stats",
    "choose_histogram_method",
    "conditional_entropy_from_counts",
    "cross_stats",
    "entropy_from_counts",
    "joint_histogram",
    "joint_histograms",
    "label_counts",
    "ridge_factor",
    "ridge_objective",
    "ridge_objective_from_stats",
    "soft_joint_histogram",
]
