"""Procedural sprites with known factors and named keypoints, rendered in JAX.

The documented name of the sprite renderer in :mod:`jaxtransfer.datasets`
(see there for the factors, keypoints and tasks).
"""

from .datasets import COLOUR_NAMES as COLOUR_NAMES
from .datasets import KEYPOINT_NAMES as KEYPOINT_NAMES
from .datasets import SHAPE_NAMES as SHAPE_NAMES
from .datasets import Sprites as Sprites
from .datasets import boundary_radius as boundary_radius
from .datasets import render as render
from .datasets import sprite_attribute_tasks as attribute_tasks

__all__ = [
    "COLOUR_NAMES",
    "KEYPOINT_NAMES",
    "SHAPE_NAMES",
    "Sprites",
    "attribute_tasks",
    "boundary_radius",
    "render",
]
