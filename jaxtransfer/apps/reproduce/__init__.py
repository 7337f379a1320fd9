"""``jaxtransfer reproduce``: the seed papers' protocols, offline, as estimator-quality benchmarks.

* :func:`run_attributes` — attribute transfer (Tran, Nguyen & Hassner, ICCV
  2019) on digits, MNIST and sprites;
* :func:`run_keypoints` — keypoint regression (Nguyen et al., UAI 2023) on
  sprites.

Actual transfer is measured with several seeds (``--seeds``, default
:data:`DEFAULT_SEEDS`; one with ``--quick``): the ground truth is their mean,
and their agreement is reported as the noise ceiling of each kind of transfer.
Pairs of a task with itself are missing pairs of the evaluation, not
transfers. Each report records the code that produced it (:func:`code_version`: the
jaxtransfer version and the git commit) beside its configuration and machine.
"""

from ._attributes import QUICK as ATTRIBUTES_QUICK
from ._attributes import AttributeConfig as AttributeConfig
from ._attributes import run_attributes as run_attributes
from ._common import DEFAULT_SEEDS as DEFAULT_SEEDS
from ._common import code_version as code_version
from ._keypoints import QUICK as KEYPOINTS_QUICK
from ._keypoints import KeypointConfig as KeypointConfig
from ._keypoints import run_keypoints as run_keypoints

__all__ = [
    "ATTRIBUTES_QUICK",
    "DEFAULT_SEEDS",
    "KEYPOINTS_QUICK",
    "AttributeConfig",
    "KeypointConfig",
    "code_version",
    "run_attributes",
    "run_keypoints",
]
