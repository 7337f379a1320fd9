"""Building blocks shared by the zoo's backbones, and the torch-to-NNX weight mapping.

Both backbones are chains of *inverted residual* blocks (Sandler et al., CVPR
2018): a 1×1 expansion, a k×k depthwise convolution, a linear 1×1 projection,
each followed by batch normalisation, with ReLU6 after the first two and a
skip connection when the block keeps its shape.

Weights are kept in the torch layout in the cache (so the converted file can be
compared tensor for tensor with the original); :func:`assign_torch_weights`
transposes them into the modules on load: conv kernels ``[out, in/g, kh, kw]``
become ``[kh, kw, in/g, out]`` and linear weights ``[out, in]`` become ``[in, out]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..._nnx import set_value


class ConvBN(nnx.Module):
    """Convolution without bias, batch normalisation, optional ReLU6.

    Args:
      padding: ``"SAME"`` for TensorFlow-trained weights (asymmetric padding at
        stride 2, as XLA's SAME), or ``"TORCH"`` for PyTorch's symmetric
        ``kernel // 2`` padding.
    """

    def __init__(
        self, cin, cout, kernel, *, stride=1, groups=1, padding="TORCH", eps=1e-5, act=True, rngs: nnx.Rngs
    ):
        pad = "SAME" if padding == "SAME" else ((kernel // 2, kernel // 2),) * 2
        self.conv = nnx.Conv(
            cin,
            cout,
            (kernel, kernel),
            strides=stride,
            padding=pad,
            feature_group_count=groups,
            use_bias=False,
            rngs=rngs,
        )
        self.bn = nnx.BatchNorm(cout, epsilon=eps, momentum=0.9, use_running_average=True, rngs=rngs)
        self.act = act

    def __call__(self, x):
        y = self.bn(self.conv(x))
        return jax.nn.relu6(y) if self.act else y


class InvertedResidual(nnx.Module):
    """Expand (1×1, skipped when ``expand == 1``), depthwise k×k, project (1×1, linear)."""

    def __init__(self, cin, cout, *, kernel, stride, expand, padding, eps, rngs: nnx.Rngs):
        hidden = cin * expand
        self.expand = ConvBN(cin, hidden, 1, padding=padding, eps=eps, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN(
            hidden, hidden, kernel, stride=stride, groups=hidden, padding=padding, eps=eps, rngs=rngs
        )
        self.project = ConvBN(hidden, cout, 1, padding=padding, eps=eps, act=False, rngs=rngs)
        self.skip = stride == 1 and cin == cout

    def __call__(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.skip else y


class InvertedResidualNet(nnx.Module):
    """Stem, inverted residual blocks in stages, 1×1 head, pooling, linear classifier.

    Subclasses build ``stem``, ``blocks``, ``stage_ends`` (index of each stage's
    last block), ``head`` and ``classifier``. Named taps: ``stem``, ``stage1`` …
    ``stageN``, ``head``; every tap is the activation pooled to ``[B, C]``.
    ``model(x)`` returns the logits for NHWC images already normalised.
    """

    feature_dim = 1280

    @property
    def layer_names(self) -> tuple[str, ...]:
        return ("stem", *(f"stage{i + 1}" for i in range(len(self.stage_ends))), "head")

    def taps(self, x: jax.Array) -> dict[str, jax.Array]:
        """Every named layer pooled to ``[B, C]``, plus ``features`` (= ``head``) and ``logits``.

        Under ``jit`` the taps nobody reads are removed by dead-code elimination.
        """
        out = {}
        y = self.stem(x)
        out["stem"] = global_pool(y)
        for i, block in enumerate(self.blocks):
            y = block(y)
            if i in self.stage_ends:
                out[f"stage{self.stage_ends.index(i) + 1}"] = global_pool(y)
        features = global_pool(self.head(y))
        out["head"] = features
        out["features"] = features
        out["logits"] = self.classifier(features)
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.taps(x)["logits"]


def global_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC activation: ``[B, H, W, C] -> [B, C]``."""
    return jnp.mean(x, axis=(1, 2))


def assign_torch_weights(
    model: nnx.Module, weights: Mapping[str, np.ndarray], pairs: list[tuple[object, str]]
) -> None:
    """Copy torch-layout tensors into ``model``'s ConvBN and Linear submodules.

    Args:
      model: the module whose variables are overwritten in place.
      weights: torch state-dict names -> arrays.
      pairs: ``(submodule, torch_prefix)``; a ConvBN's prefix is a pair
        ``(conv_prefix, bn_prefix)``.

    Raises:
      ValueError: a tensor is missing, has the wrong shape, or a float tensor of
        ``weights`` is left unused (the architecture does not match the file).
    """
    used = set()

    def take(key, shape):
        if key not in weights:
            raise ValueError(f"the weight file has no tensor {key!r}; it does not match this architecture")
        value = np.asarray(weights[key])
        if value.shape != tuple(shape):
            raise ValueError(
                f"tensor {key!r} has shape {value.shape}, the architecture expects {tuple(shape)}"
            )
        used.add(key)
        return jnp.asarray(value)

    for module, prefix in pairs:
        if isinstance(module, ConvBN):
            conv, bn = prefix
            kernel = module.conv.kernel
            kh, kw, cin_g, cout = kernel.shape
            set_value(kernel, take(f"{conv}.weight", (cout, cin_g, kh, kw)).transpose(2, 3, 1, 0))
            for ours, theirs in (
                ("scale", "weight"),
                ("bias", "bias"),
                ("mean", "running_mean"),
                ("var", "running_var"),
            ):
                var = getattr(module.bn, ours)
                set_value(var, take(f"{bn}.{theirs}", var.shape))
            used.add(f"{bn}.num_batches_tracked")
        elif isinstance(module, nnx.Linear):
            cin, cout = module.kernel.shape
            set_value(module.kernel, take(f"{prefix}.weight", (cout, cin)).T)
            set_value(module.bias, take(f"{prefix}.bias", (cout,)))
        else:  # pragma: no cover - programming error
            raise TypeError(f"cannot assign torch weights to {type(module).__name__}")
    unused = sorted(k for k in weights if k not in used)
    if unused:
        raise ValueError(
            f"the weight file has {len(unused)} tensors this architecture does not use, e.g. {unused[0]!r}"
        )
