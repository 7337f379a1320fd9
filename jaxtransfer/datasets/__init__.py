"""Datasets that install offline: attribute tasks on digits (scikit-learn, MNIST) and rendered sprites.

Every dataset here returns its tasks as :class:`AttributeTasks` (names,
labels [T, n], class counts, descriptions); :mod:`jaxtransfer.sprites` is the
documented name of the sprite renderer.
"""

from ._digits import digit_attribute_tasks as digit_attribute_tasks
from ._digits import digits_attribute_tasks as digits_attribute_tasks
from ._digits import load_digits as load_digits
from ._mnist import load_mnist as load_mnist
from ._sprites import COLOUR_NAMES as COLOUR_NAMES
from ._sprites import KEYPOINT_NAMES as KEYPOINT_NAMES
from ._sprites import SHAPE_NAMES as SHAPE_NAMES
from ._sprites import Sprites as Sprites
from ._sprites import attribute_tasks as sprite_attribute_tasks
from ._sprites import boundary_radius as boundary_radius
from ._sprites import render as render
from ._tasks import AttributeTasks as AttributeTasks
from ._tasks import tasks_from_rows as tasks_from_rows

__all__ = [
    "COLOUR_NAMES",
    "KEYPOINT_NAMES",
    "SHAPE_NAMES",
    "AttributeTasks",
    "Sprites",
    "boundary_radius",
    "digit_attribute_tasks",
    "digits_attribute_tasks",
    "load_digits",
    "load_mnist",
    "render",
    "sprite_attribute_tasks",
    "tasks_from_rows",
]
