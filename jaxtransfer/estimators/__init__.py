"""The estimators, their registry and ``score_matrix``: the library's engine.

Each estimator is written in two traceable halves, ``prepare`` (source-only
work) and ``finish`` (per target), with its metadata and input checks in an
:class:`EstimatorInfo` (``_base.py``); ``score_matrix`` runs ``prepare`` once
per source and batches ``finish`` over targets. One file per estimator family;
the numerical kernels they share live in :mod:`jaxtransfer_kernels`. Import
from :mod:`jaxtransfer`, which re-exports all of this.
"""

from ._base import EstimatorInfo as EstimatorInfo
from ._base import PrecisionWarning as PrecisionWarning
from ._base import available_estimators as available_estimators
from ._base import get_estimator as get_estimator
from ._checks import MAX_INFERRED_CLASSES as MAX_INFERRED_CLASSES
from ._checks import MAX_TABLE_CELLS as MAX_TABLE_CELLS
from ._entropy import conditional_entropy as conditional_entropy
from ._entropy import hardness as hardness
from ._entropy import nce as nce
from ._gbc import gbc as gbc
from ._hscore import hscore as hscore
from ._hscore import shrinkage_hscore as shrinkage_hscore
from ._leep import leep as leep
from ._linear_mse import label_mse as label_mse
from ._linear_mse import linear_mse as linear_mse
from ._logme import LogMEDetails as LogMEDetails
from ._logme import logme as logme
from ._logme import logme_details as logme_details
from ._nleep import nleep as nleep
from ._score_matrix import score_matrix as score_matrix
from ._soft_nce import soft_nce as soft_nce
from ._transrate import transrate as transrate

__all__ = [
    "MAX_INFERRED_CLASSES",
    "MAX_TABLE_CELLS",
    "EstimatorInfo",
    "LogMEDetails",
    "PrecisionWarning",
    "available_estimators",
    "conditional_entropy",
    "gbc",
    "get_estimator",
    "hardness",
    "hscore",
    "label_mse",
    "leep",
    "linear_mse",
    "logme",
    "logme_details",
    "nce",
    "nleep",
    "score_matrix",
    "shrinkage_hscore",
    "soft_nce",
    "transrate",
]
