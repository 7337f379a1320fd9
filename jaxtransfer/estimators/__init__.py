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
from ._heldout import HeldoutDetails as HeldoutDetails
from ._heldout import heldout_label_mse as heldout_label_mse
from ._heldout import heldout_linear_mse as heldout_linear_mse
from ._heldout import heldout_linear_mse_details as heldout_linear_mse_details
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
from ._source_stream import SourceScores as SourceScores
from ._source_stream import score_sources as score_sources
from ._streaming import ClassGramStats as ClassGramStats
from ._streaming import ClassStats as ClassStats
from ._streaming import CountStats as CountStats
from ._streaming import LeepStats as LeepStats
from ._streaming import LinearStats as LinearStats
from ._streaming import Streaming as Streaming
from ._streaming import TwoPassStreaming as TwoPassStreaming
from ._streaming import all_reduce as all_reduce
from ._streaming import merge as merge
from ._streaming import stream_conditional_entropy as stream_conditional_entropy
from ._streaming import stream_gbc as stream_gbc
from ._streaming import stream_hardness as stream_hardness
from ._streaming import stream_hscore as stream_hscore
from ._streaming import stream_label_mse as stream_label_mse
from ._streaming import stream_leep as stream_leep
from ._streaming import stream_linear_mse as stream_linear_mse
from ._streaming import stream_logme as stream_logme
from ._streaming import stream_nce as stream_nce
from ._streaming import stream_shrinkage_hscore as stream_shrinkage_hscore
from ._streaming import stream_transrate as stream_transrate
from ._transrate import transrate as transrate

__all__ = [
    "MAX_INFERRED_CLASSES",
    "MAX_TABLE_CELLS",
    "ClassGramStats",
    "ClassStats",
    "CountStats",
    "EstimatorInfo",
    "HeldoutDetails",
    "LeepStats",
    "LinearStats",
    "LogMEDetails",
    "PrecisionWarning",
    "SourceScores",
    "Streaming",
    "TwoPassStreaming",
    "all_reduce",
    "available_estimators",
    "conditional_entropy",
    "gbc",
    "get_estimator",
    "hardness",
    "heldout_label_mse",
    "heldout_linear_mse",
    "heldout_linear_mse_details",
    "hscore",
    "label_mse",
    "leep",
    "linear_mse",
    "logme",
    "logme_details",
    "merge",
    "nce",
    "nleep",
    "score_matrix",
    "score_sources",
    "shrinkage_hscore",
    "soft_nce",
    "stream_conditional_entropy",
    "stream_gbc",
    "stream_hardness",
    "stream_hscore",
    "stream_label_mse",
    "stream_leep",
    "stream_linear_mse",
    "stream_logme",
    "stream_nce",
    "stream_shrinkage_hscore",
    "stream_transrate",
    "transrate",
]
