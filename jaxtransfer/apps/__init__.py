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
from ._rank import PICK_PREFERENCE as PICK_PREFERENCE
from ._rank import FewPairsWarning as FewPairsWarning
from ._rank import NotComputedWarning as NotComputedWarning
from ._rank import Pick as Pick
from ._rank import RankResult as RankResult
from ._rank import SourceSpec as SourceSpec
from ._rank import as_sources as as_sources
from ._rank import default_dataset as default_dataset
from ._rank import load_dataset as load_dataset
from ._rank import rank as rank
from ._rank import subsample as subsample
from ._report import answer_table as answer_table
from ._report import compact_evaluation as compact_evaluation
from ._report import evaluation_table as evaluation_table
from ._report import ranked_table as ranked_table
from ._report import wide_report as wide_report
from ._report import write_outputs as write_outputs

__all__ = [
    "PICK_PREFERENCE",
    "FewPairsWarning",
    "NotComputedWarning",
    "Pick",
    "RankResult",
    "SourceSpec",
    "answer_table",
    "as_sources",
    "compact_evaluation",
    "default_dataset",
    "evaluation_table",
    "load_dataset",
    "rank",
    "ranked_table",
    "reproduce",
    "run_demo",
    "subsample",
    "wide_report",
    "write_outputs",
]
