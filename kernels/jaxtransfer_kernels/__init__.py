"""Low-level jitted kernels of jaxtransfer: histograms, entropies, spectra, ridge.

Imports only jax and numpy. Everything here is pure and works under ``jit``,
``vmap`` and ``grad``; input validation lives in :mod:`jaxtransfer`.
"""

from ._branch import branch as branch
from ._branch import uniform_batch as uniform_batch
from ._entropy import conditional_entropy_from_counts as conditional_entropy_from_counts
from ._entropy import entropy_from_counts as entropy_from_counts
from ._histogram import ONEHOT_MAX_CELLS as ONEHOT_MAX_CELLS
from ._histogram import choose_histogram_method as choose_histogram_method
from ._histogram import joint_histogram as joint_histogram
from ._histogram import joint_histograms as joint_histograms
from ._histogram import label_counts as label_counts
from ._histogram import soft_joint_histogram as soft_joint_histogram
from ._linalg import safe_eigh as safe_eigh
from ._linalg import safe_svd as safe_svd
from ._ridge import CrossStats as CrossStats
from ._ridge import RidgeFactor as RidgeFactor
from ._ridge import SourceStats as SourceStats
from ._ridge import add_stats as add_stats
from ._ridge import cross_stats as cross_stats
from ._ridge import ridge_factor as ridge_factor
from ._ridge import ridge_objective as ridge_objective
from ._ridge import ridge_objective_from_stats as ridge_objective_from_stats
from ._ridge import source_stats as source_stats
from ._ridge_cv import CV_METHODS as CV_METHODS
from ._ridge_cv import RidgeCV as RidgeCV
from ._ridge_cv import ridge_cv_curve as ridge_cv_curve
from ._ridge_cv import ridge_cv_factor as ridge_cv_factor
from ._spectrum import GRAM_RESOLUTION as GRAM_RESOLUTION
from ._spectrum import Scaled as Scaled
from ._spectrum import Spectrum as Spectrum
from ._spectrum import centre_and_scale as centre_and_scale
from ._spectrum import gram as gram
from ._spectrum import half_logdet_identity_plus as half_logdet_identity_plus
from ._spectrum import matmul as matmul
from ._spectrum import power_of_two_scale as power_of_two_scale
from ._spectrum import sample_weights as sample_weights
from ._spectrum import spectrum as spectrum
from ._spectrum import unresolved_band as unresolved_band

__all__ = [
    "CV_METHODS",
    "GRAM_RESOLUTION",
    "ONEHOT_MAX_CELLS",
    "CrossStats",
    "RidgeCV",
    "RidgeFactor",
    "Scaled",
    "SourceStats",
    "Spectrum",
    "add_stats",
    "branch",
    "centre_and_scale",
    "choose_histogram_method",
    "conditional_entropy_from_counts",
    "cross_stats",
    "entropy_from_counts",
    "gram",
    "half_logdet_identity_plus",
    "joint_histogram",
    "joint_histograms",
    "label_counts",
    "matmul",
    "power_of_two_scale",
    "ridge_cv_curve",
    "ridge_cv_factor",
    "ridge_factor",
    "ridge_objective",
    "ridge_objective_from_stats",
    "safe_eigh",
    "safe_svd",
    "sample_weights",
    "soft_joint_histogram",
    "source_stats",
    "spectrum",
    "uniform_batch",
    "unresolved_band",
]
