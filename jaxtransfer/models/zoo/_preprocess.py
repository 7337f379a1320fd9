"""Image preprocessing for the zoo: resize, centre crop, normalise, in JAX.

Runs inside the jitted extraction step, so raw ``uint8`` batches go to the
device once and are resized there.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Preprocess(NamedTuple):
    """Resize the shorter side to ``resize``, centre-crop ``size``×``size``, normalise.

    ``mean`` and ``std`` are per channel on the [0, 1] scale. Inputs are NHWC (or
    NHW for greyscale, which is repeated to three channels): ``uint8`` in 0…255
    or floats in [0, 1]. Resizing is bilinear with antialiasing, like
    torchvision's ``Resize`` on tensors.
    """

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    method: str = "bilinear"

    def __call__(self, images: jax.Array) -> jax.Array:
        x = jnp.asarray(images)
        scale = 255.0 if x.dtype == jnp.uint8 else 1.0
        x = x.astype(jnp.float32) / scale
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        b, h, w, c = x.shape
        short = min(h, w)
        nh, nw = (
            max(self.size, round(h * self.resize / short)),
            max(self.size, round(w * self.resize / short)),
        )
        if (nh, nw) != (h, w):
            x = jax.image.resize(x, (b, nh, nw, c), method=self.method, antialias=True)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[:, top : top + self.size, left : left + self.size, :]
        mean = jnp.asarray(self.mean, x.dtype).reshape(1, 1, 1, 3)
        std = jnp.asarray(self.std, x.dtype).reshape(1, 1, 1, 3)
        return (x - mean) / std
