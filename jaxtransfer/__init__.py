"""jaxtransfer: transferability estimation in JAX.

Scores how well a source model or source task will transfer to a target task,
before any fine-tuning, for one pair or for thousands of pairs in one call.
"""

from ._entropy import conditional_entropy as conditional_entropy
from ._entropy import hardness as hardness
from ._entropy import nce as nce
from ._estimator import EstimatorInfo as EstimatorInfo
from ._estimator import PrecisionWarning as PrecisionWarning
from ._estimator import available_estimators as available_estimators
from ._estimator import get_estimator as get_estimator
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
from ._transrate import transrate as transrate

__version__ = "0.1.0"

# Flax-based submodules load on first use, so `import jaxtransfer` stays light.
_SUBMODULES = ("evaluation", "features", "sources", "sprites", "transfer", "zoo")


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "rank":  # the main job, see `jaxtransfer rank`
        from ._rank import rank

        return rank
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
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
    "transrate",
]
