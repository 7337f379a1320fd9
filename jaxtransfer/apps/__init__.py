"""The apps built on the library: the main job ``rank``, ``reproduce``, the digits ``demo``, reports.

* :func:`rank` — which source should I transfer from? Extract features from
  every candidate source, score them with every applicable estimator, measure
  actual transfer and evaluate the estimators (``jaxtransfer rank``);
* :mod:`jaxtransfer.apps.reproduce` — the seed papers' protocols as
  estimator-quality benchmarks (``jaxtransfer reproduce``);
* :func:`run_demo` — NCE between the digits' attribute tasks (``jaxtransfer demo``);
* :func:`microbench` — ``score_matrix`` timed at chosen sizes on the current
  devices (``jaxtransfer bench``), with the timing helpers the bench/ scripts share.
"""

from . import reproduce as reproduce
from ._demo import run_demo as run_demo
from ._microbench import compile_timed as compile_timed
from ._microbench import flop_model as flop_model
from ._microbench import matmul_rate as matmul_rate
from ._microbench import microbench as microbench
from ._microbench import microbench_table as microbench_table
from ._microbench import time_call as time_call
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
    "compile_timed",
    "default_dataset",
    "evaluation_table",
    "flop_model",
    "load_dataset",
    "matmul_rate",
    "microbench",
    "microbench_table",
    "rank",
    "ranked_table",
    "reproduce",
    "run_demo",
    "subsample",
    "time_call",
    "wide_report",
    "write_outputs",
]
