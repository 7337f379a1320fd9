"""The zoo's ImageNet backbones: the documented name of :mod:`jaxtransfer.models.zoo` (see there)."""

from .models.zoo import EfficientNetLite as EfficientNetLite
from .models.zoo import InvertedResidualNet as InvertedResidualNet
from .models.zoo import MobileNetV2 as MobileNetV2
from .models.zoo import Preprocess as Preprocess
from .models.zoo import UnsafeFileError as UnsafeFileError
from .models.zoo import WeightsUnavailableError as WeightsUnavailableError
from .models.zoo import ZooSpec as ZooSpec
from .models.zoo import available as available
from .models.zoo import cache_dir as cache_dir
from .models.zoo import get_spec as get_spec
from .models.zoo import imagenet_class_names as imagenet_class_names
from .models.zoo import load as load
from .models.zoo import read_torch_state_dict as read_torch_state_dict
from .models.zoo import torch_weights as torch_weights

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
