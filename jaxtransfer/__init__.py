"""jaxtransfer: transferability estimation in JAX.

Scores how well a source model or source task will transfer to a target task,
before any fine-tuning, for one pair or for thousands of pairs in one call.
"""

from .estimators import EstimatorInfo as EstimatorInfo
from .estimators import HeldoutDetails as HeldoutDetails
from .estimators import LogMEDetails as LogMEDetails
from .estimators import PrecisionWarning as PrecisionWarning
from .estimators import SourceScores as SourceScores
from .estimators import available_estimators as available_estimators
from .estimators import conditional_entropy as conditional_entropy
from .estimators import gbc as gbc
from .estimators import get_estimator as get_estimator
from .estimators import hardness as hardness
from .estimators import heldout_label_mse as heldout_label_mse
from .estimators import heldout_linear_mse as heldout_linear_mse
from .estimators import heldout_linear_mse_details as heldout_linear_mse_details
from .estimators import hscore as hscore
from .estimators import label_mse as label_mse
from .estimators import leep as leep
from .estimators import linear_mse as linear_mse
from .estimators import logme as logme
from .estimators import logme_details as logme_details
from .estimators import nce as nce
from .estimators import nleep as nleep
from .estimators import score_matrix as score_matrix
from .estimators import score_sources as score_sources
from .estimators import shrinkage_hscore as shrinkage_hscore
from .estimators import soft_nce as soft_nce
from .estimators import transrate as transrate

__version__ = "0.1.0"

# The layers above the estimators load on first use, so `import jaxtransfer` stays light (no Flax):
# the library (models, datasets, features, transfer, evaluation; `sources`, `sprites` and `zoo` are
# their documented names) and the apps (the main job `rank`, `reproduce`, reports).
_SUBMODULES = (
    "apps",
    "datasets",
    "evaluation",
    "features",
    "metrics",
    "models",
    "sources",
    "sprites",
    "streaming",
    "transfer",
    "zoo",
)


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "rank":  # the main job, see `jaxtransfer rank`
        return importlib.import_module(f"{__name__}.apps").rank
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EstimatorInfo",
    "HeldoutDetails",
    "LogMEDetails",
    "PrecisionWarning",
    "SourceScores",
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
    "nce",
    "nleep",
    "score_matrix",
    "score_sources",
    "shrinkage_hscore",
    "soft_nce",
    "transrate",
]
