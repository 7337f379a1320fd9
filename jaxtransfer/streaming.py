"""Streaming estimators: the documented name of :mod:`jaxtransfer.estimators`' streamed statistics.

Each estimator whose sufficient statistics add is four pure, jit-compatible
functions over a pytree of statistics — ``init``, ``update``, ``merge``,
``finalize`` — so that scores can be accumulated batch by batch, across
devices (:func:`all_reduce`) and hosts, or inside a jitted training step::

    from jaxtransfer import streaming

    stats = streaming.logme.init(d, num_target_classes=10)
    for features, labels in batches:
        stats = streaming.logme.update(stats, features, labels)
    score = streaming.logme.finalize(stats)

LEEP takes two passes (``streaming.leep.second_pass`` between them). The
maths, the shifts and the precision of each closed form against the
whole-array estimators are in the module docstring of
``jaxtransfer/estimators/_streaming.py``.
"""

from .estimators import ClassGramStats as ClassGramStats
from .estimators import ClassStats as ClassStats
from .estimators import CountStats as CountStats
from .estimators import LeepStats as LeepStats
from .estimators import LinearStats as LinearStats
from .estimators import Streaming as Streaming
from .estimators import TwoPassStreaming as TwoPassStreaming
from .estimators import all_reduce as all_reduce
from .estimators import merge as merge
from .estimators import stream_conditional_entropy as conditional_entropy
from .estimators import stream_gbc as gbc
from .estimators import stream_hardness as hardness
from .estimators import stream_hscore as hscore
from .estimators import stream_label_mse as label_mse
from .estimators import stream_leep as leep
from .estimators import stream_linear_mse as linear_mse
from .estimators import stream_logme as logme
from .estimators import stream_nce as nce
from .estimators import stream_shrinkage_hscore as shrinkage_hscore
from .estimators import stream_transrate as transrate

__all__ = [
    "ClassGramStats",
    "ClassStats",
    "CountStats",
    "LeepStats",
    "LinearStats",
    "Streaming",
    "TwoPassStreaming",
    "all_reduce",
    "conditional_entropy",
    "gbc",
    "hardness",
    "hscore",
    "label_mse",
    "leep",
    "linear_mse",
    "logme",
    "merge",
    "nce",
    "shrinkage_hscore",
    "transrate",
]
