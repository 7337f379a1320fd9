"""Procedural sprites with known factors and named keypoints, rendered in JAX.

A test bed that installs offline for the two protocols jaxtransfer grew from:
*attribute* tasks defined on the same images (Tran, Nguyen & Hassner, ICCV
2019) from each sprite's independent factors, and *keypoint regression* tasks
(Nguyen et al., UAI 2023), one 2-D regression task per named keypoint.

Each image holds one sprite on a dark noisy background. A sprite is a filled
polygon described in its own frame by its boundary radius R(φ) at angle φ
(clockwise from the sprite's "north"), scaled by a radius ``s`` in pixels,
rotated by θ and centred at (cx, cy):

* shapes: ``circle``, ``triangle``, ``square``, ``pentagon``, ``star`` (five
  points, inner radius 0.45), each a polygon with one vertex at north, stored
  as 60 boundary points 6° apart (the vertices of every shape fall on them),
  so R(φ) between two stored points is the straight edge joining them:
  R(φ) = r₁r₂ sin(a₂ − a₁) / (r₁ sin(φ − a₁) + r₂ sin(a₂ − φ));
* an orientation mark in a second colour — the part of the sprite within 20°
  of north and beyond half its radius — so that every keypoint can be read
  from the image, even for the circle;
* colour: one of six saturated hues; background grey level 0…0.3 plus
  Gaussian noise σ = 0.03; the edge is anti-aliased over one pixel.

Keypoints (pixel coordinates x right, y down, origin at the image's top-left
corner): ``centre`` and the boundary points in the eight compass directions of
the sprite's own frame, ``north`` … ``north_west`` — for the triangle
``north`` is its tip, for the square ``north``, ``east``... are its corners.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._tasks import AttributeTasks, tasks_from_rows

__all__ = [
    "COLOUR_NAMES",
    "KEYPOINT_NAMES",
    "SHAPE_NAMES",
    "Sprites",
    "attribute_tasks",
    "boundary_radius",
    "render",
]

SHAPE_NAMES = ("circle", "triangle", "square", "pentagon", "star")
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
_COLOURS = np.array(
    [
        [0.9, 0.15, 0.1],
        [0.15, 0.8, 0.2],
        [0.2, 0.35, 0.95],
        [0.95, 0.85, 0.1],
        [0.85, 0.2, 0.85],
        [0.1, 0.85, 0.9],
    ],
    np.float32,
)
KEYPOINT_NAMES = (
    "centre", "north", "north_east", "east", "south_east", "south", "south_west", "west", "north_west",
)  # fmt: skip
_POINTS = 60  # boundary points 6° apart; multiples of 120°, 90°, 72° and 36°
_STEP = 2 * np.pi / _POINTS
_MARK_HALF_ANGLE = np.deg2rad(20.0)
_MARK_INNER = 0.5


def _polygon_radius(phi: np.ndarray, vertex_angles: np.ndarray, vertex_radii: np.ndarray) -> np.ndarray:
    """Radius of a star-shaped polygon at angles ``phi``, from its vertices (angles increasing from 0)."""
    a = np.append(vertex_angles, 2 * np.pi)
    r = np.append(vertex_radii, vertex_radii[0])
    j = np.searchsorted(a, phi, side="right") - 1
    a1, a2, r1, r2 = a[j], a[j + 1], r[j], r[j + 1]
    return r1 * r2 * np.sin(a2 - a1) / (r1 * np.sin(phi - a1) + r2 * np.sin(a2 - phi))


def _shape_table() -> np.ndarray:
    """R at the 60 stored angles for every shape: float32 [5, 60]."""
    phi = np.arange(_POINTS) * _STEP
    rows = [np.ones(_POINTS)]
    for n in (3, 4, 5):
        angles = np.arange(n) * 2 * np.pi / n
        rows.append(_polygon_radius(phi, angles, np.ones(n)))
    angles = np.arange(10) * np.pi / 5
    rows.append(_polygon_radius(phi, angles, np.where(np.arange(10) % 2 == 0, 1.0, 0.45)))
    return np.stack(rows).astype(np.float32)


_TABLE = _shape_table()


def boundary_radius(shape, phi) -> jax.Array:
    """R(φ): the boundary radius of ``shape`` (index into :data:`SHAPE_NAMES`) at angle φ (radians).

    Args:
      shape: int array; phi: float array (broadcast together).

    Returns:
      radii in units of the sprite's radius (1 at the vertices).
    """
    table = jnp.asarray(_TABLE)
    phi = jnp.mod(jnp.asarray(phi, jnp.float32), 2 * np.pi)
    j = jnp.clip(jnp.floor(phi / _STEP).astype(jnp.int32), 0, _POINTS - 1)
    r1, r2 = table[shape, j], table[shape, (j + 1) % _POINTS]
    t = phi - j * _STEP
    return r1 * r2 * np.sin(_STEP) / (r1 * jnp.sin(t) + r2 * jnp.sin(_STEP - t))


def _render_one(size, shape, colour, radius, theta, cx, cy, background):
    """One sprite: float32 [size, size, 3] in [0, 1] before noise."""
    centres = jnp.arange(size, dtype=jnp.float32) + 0.5
    dx = centres[None, :] - cx
    dy = centres[:, None] - cy
    rho = jnp.hypot(dx, dy)
    phi = jnp.mod(jnp.arctan2(dx, -dy) - theta, 2 * np.pi)
    edge = radius * boundary_radius(shape, phi)
    cover = jnp.clip(edge - rho + 0.5, 0.0, 1.0)
    from_north = jnp.minimum(phi, 2 * np.pi - phi)
    mark = (from_north < _MARK_HALF_ANGLE) & (rho > _MARK_INNER * edge)
    ink = jnp.where(mark[..., None], 1.0 - 0.8 * colour[None, None, :], colour[None, None, :])
    return background * (1 - cover[..., None]) + ink * cover[..., None]


_render_batch = jax.jit(jax.vmap(_render_one, in_axes=(None, 0, 0, 0, 0, 0, 0, 0)), static_argnums=0)


class Sprites(NamedTuple):
    """Rendered sprites and everything known about them.

    Attributes:
      images: uint8 [n, size, size, 3].
      keypoints: float32 [n, 9, 2] pixel coordinates (x, y) of :data:`KEYPOINT_NAMES`.
      shape: int32 [n] index into :data:`SHAPE_NAMES`.
      colour: int32 [n] index into :data:`COLOUR_NAMES`.
      radius: float32 [n] pixels.
      rotation: float32 [n] radians in [0, 2π), clockwise; 0 = north up.
      centre: float32 [n, 2] pixels (x, y).
    """

    images: np.ndarray
    keypoints: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    radius: np.ndarray
    rotation: np.ndarray
    centre: np.ndarray


def render(n: int, *, size: int = 64, seed: int = 0, batch_size: int = 512) -> Sprites:
    """Render ``n`` sprites with independent random factors from ``numpy.random.default_rng(seed)``.

    Factors: shape and colour uniform over their names; radius uniform in
    [0.16, 0.3]·size; rotation uniform; centre uniform over the positions that
    keep the whole sprite in the image. The same ``(n, size, seed)`` always
    gives the same sprites.

    Args:
      n: number of images (>= 1).
      size: image side in pixels (>= 16; static: changing it recompiles).
      seed: the factors' and noise's seed.
      batch_size: images rendered per compiled call (bounds memory).

    Returns:
      :class:`Sprites`.

    Raises:
      ValueError: n < 1 or size < 16.

    Example:
      >>> s = render(4, size=32)
      >>> s.images.shape, s.keypoints.shape, KEYPOINT_NAMES[1]
      ((4, 32, 32, 3), (4, 9, 2), 'north')
    """
    for name, value, low in (("n", n, 1), ("size", size, 16), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    rng = np.random.default_rng(seed)
    shape = rng.integers(0, len(SHAPE_NAMES), n).astype(np.int32)
    colour = rng.integers(0, len(COLOUR_NAMES), n).astype(np.int32)
    radius = (rng.uniform(0.16, 0.3, n) * size).astype(np.float32)
    rotation = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    margin = radius + 1.0
    centre = np.stack([rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)], axis=1)
    centre = centre.astype(np.float32)
    background = rng.uniform(0, 0.3, n).astype(np.float32)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    images = np.empty((n, size, size, 3), np.uint8)
    noise_rng = np.random.default_rng(noise_seed)
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        clean = _render_batch(
            size, shape[sl], _COLOURS[colour[sl]], radius[sl], rotation[sl],
            centre[sl, 0], centre[sl, 1], background[sl, None, None, None],
        )  # fmt: skip
        noisy = np.asarray(clean) + noise_rng.normal(0, 0.03, clean.shape).astype(np.float32)
        images[sl] = np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    return Sprites(
        images, _keypoints(shape, radius, rotation, centre), shape, colour, radius, rotation, centre
    )


def _keypoints(shape, radius, rotation, centre) -> np.ndarray:
    directions = np.arange(8) * np.pi / 4  # north, north-east, ... clockwise
    r = np.asarray(boundary_radius(shape[:, None], np.broadcast_to(directions, (shape.size, 8))))
    angle = rotation[:, None] + directions[None, :]
    dist = radius[:, None] * r
    points = np.stack(
        [centre[:, None, 0] + dist * np.sin(angle), centre[:, None, 1] - dist * np.cos(angle)], -1
    )
    return np.concatenate([centre[:, None, :], points], axis=1).astype(np.float32)


def attribute_tasks(sprites: Sprites) -> AttributeTasks:
    """Attribute tasks from the sprites' factors: 15 tasks, binary to 6-class.

    Shape (5 classes; circle; star; an odd number of corners), colour (6
    classes; warm hues: red, yellow, magenta; primary hues: red, green, blue),
    size (3 tertiles; larger than the median), position (right half; lower
    half; quadrant), and where the orientation mark points (4 quadrants; up).
    Tasks built on different factors are independent by construction; tasks
    on the same factor are nested.

    Returns:
      :class:`jaxtransfer.datasets.AttributeTasks`.
    """
    size = sprites.images.shape[1]
    s, c = sprites.shape, sprites.colour
    tertile = np.searchsorted(np.quantile(sprites.radius, [1 / 3, 2 / 3]), sprites.radius, side="right")
    right = sprites.centre[:, 0] > size / 2
    lower = sprites.centre[:, 1] > size / 2
    heading = (np.floor((sprites.rotation + np.pi / 4) / (np.pi / 2)) % 4).astype(np.int32)
    tasks = [
        ("shape", s, 5, "the shape (circle, triangle, square, pentagon, star)"),
        ("circle", s == 0, 2, "the shape is a circle"),
        ("star", s == 4, 2, "the shape is a star"),
        (
            "odd_corners",
            np.isin(s, (1, 3, 4)),
            2,
            "an odd number of outer corners (triangle, pentagon, star)",
        ),
        ("colour", c, 6, "the hue (red, green, blue, yellow, magenta, cyan)"),
        ("warm", np.isin(c, (0, 3, 4)), 2, "a warm hue (red, yellow, magenta)"),
        ("primary", np.isin(c, (0, 1, 2)), 2, "a primary hue (red, green, blue)"),
        ("size", tertile, 3, "radius tertile"),
        ("large", sprites.radius > np.median(sprites.radius), 2, "radius above the median"),
        ("right", right, 2, "centre in the right half"),
        ("lower", lower, 2, "centre in the lower half"),
        ("quadrant", 2 * lower + right, 4, "the image quadrant of the centre"),
        ("heading", heading, 4, "where the mark points (up, right, down, left)"),
        ("up", heading == 0, 2, "the mark points up (within 45°)"),
        ("horizontal", heading % 2 == 1, 2, "the mark points left or right"),
    ]
    return tasks_from_rows(tasks)
