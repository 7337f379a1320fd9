"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov, Chen, CVPR 2018) in Flax NNX.

The layout follows torchvision's ImageNet-1k model (width 1.0, 224×224 input):
a 3×3 stride-2 stem of 32 channels, seventeen inverted residual blocks in seven
stages (expansion t, channels c, repeats n, first stride s below), a 1×1 head
of 1280 channels, global average pooling and a linear classifier. PyTorch's
symmetric padding and batch-norm ε = 1e-5.
"""

from __future__ import annotations

from flax import nnx

from ..._nnx import module_list
from ._layers import ConvBN, InvertedResidual, InvertedResidualNet, assign_torch_weights

#: (expansion t, output channels c, repeats n, first stride s) per stage.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(InvertedResidualNet):
    """MobileNetV2 with named taps: ``stem``, ``stage1`` … ``stage7``, ``head``.

    ``model(x)`` returns the 1000 ImageNet logits for NHWC images already
    normalised; :meth:`taps` returns every named activation, pooled to ``[B, C]``,
    with ``features`` (the 1280-d penultimate layer) and ``logits``.
    """

    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
        self.stem = ConvBN(3, 32, 3, stride=2, rngs=rngs)
        blocks, stage_ends, cin = [], [], 32
        for t, c, n, s in STAGES:
            for i in range(n):
                blocks.append(
                    InvertedResidual(
                        cin,
                        c,
                        kernel=3,
                        stride=s if i == 0 else 1,
                        expand=t,
                        padding="TORCH",
                        eps=1e-5,
                        rngs=rngs,
                    )
                )
                cin = c
            stage_ends.append(len(blocks) - 1)
        self.blocks, self.stage_ends = module_list(blocks), tuple(stage_ends)
        self.head = ConvBN(cin, self.feature_dim, 1, rngs=rngs)
        self.classifier = nnx.Linear(self.feature_dim, num_classes, rngs=rngs)

    def load_torch_weights(self, weights) -> None:
        """Assign a torchvision ``mobilenet_v2`` state dict (torch layout)."""
        pairs = [(self.stem, ("features.0.0", "features.0.1"))]
        for i, block in enumerate(self.blocks):
            p = f"features.{i + 1}.conv"
            if block.expand is None:
                pairs += [(block.depthwise, (f"{p}.0.0", f"{p}.0.1")), (block.project, (f"{p}.1", f"{p}.2"))]
            else:
                pairs += [
                    (block.expand, (f"{p}.0.0", f"{p}.0.1")),
                    (block.depthwise, (f"{p}.1.0", f"{p}.1.1")),
                    (block.project, (f"{p}.2", f"{p}.3")),
                ]
        last = len(self.blocks) + 1
        pairs += [
            (self.head, (f"features.{last}.0", f"features.{last}.1")),
            (self.classifier, "classifier.1"),
        ]
        assign_torch_weights(self, weights, pairs)
