"""The apps built on the library: the main job ``rank``, ``reproduce``, the digits ``demo``, reports.

* :func:`rank` — which source should I transfer from? Extract features from
  every candidate source, score them with every applicable estimator, measure
  actual transfer and evaluate the estimators (``jaxtransfer rank``);
* :mod:`jaxtransfer.apps.reproduce` — the seed papers' protocols as
  estimator-quality benchmarks (``jaxtransfer reproduce``);
* :func:`run_demo` — NCE between the digits' attribute tasks (``jaxtransfer demo``).
"""

from . import reproduce as reproduce
from ._demo import run_demo as run_demo
from ._rank import NotComputedWarning as NotComputedWarning
from ._rank import RankResult as RankResult
from ._rank import SourceSpec as SourceSpec
from ._rank import default_dataset as default_dataset
from ._rank import load_dataset as load_dataset
from ._rank import rank as rank
from ._report import evaluation_table as evaluation_table
from ._report import ranked_table as ranked_table
from ._report import write_outputs as write_outputs

__all__ = [
    "NotComputedWarning",
    "RankResult",
    "SourceSpec",
    "default_dataset",
    "evaluation_table",
    "load_dataset",
    "rank",
    "ranked_table",
    "reproduce",
    "run_demo",
    "write_outputs",
]
