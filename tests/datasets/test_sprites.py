"""The sprite renderer: boundary radii against hand-worked polygons, keypoints on the drawn sprite, tasks."""

import numpy as np
import pytest

from jaxtransfer import sprites

# Hand-worked radii (units of the sprite radius) along the compass directions of the sprite's frame.
# Every shape has a vertex at north. Square: corners N/E/S/W, edge midpoints at 45° (cos 45°).
# Pentagon (vertices every 72°): south is the midpoint of an edge, cos 36°. Triangle: south is the
# midpoint of the base, cos 60°.
# Star: tips every 72°, inner vertices 0.45 at 36° + k·72°, so south (180°) is an inner vertex.
# Circle: a 60-gon, so 45° (between 42° and 48°) is an edge midpoint, cos 3°.
_C3, _C36, _C45 = np.cos(np.pi / 60), np.cos(np.pi / 5), np.cos(np.pi / 4)
CASES = [
    ("circle", 0.0, 1.0), ("circle", np.pi / 4, _C3), ("square", 0.0, 1.0), ("square", np.pi / 4, _C45),
    ("square", np.pi / 2, 1.0), ("pentagon", np.pi, _C36), ("pentagon", 2 * np.pi / 5, 1.0),
    ("triangle", 0.0, 1.0), ("triangle", np.pi, 0.5), ("triangle", 2 * np.pi / 3, 1.0),
    ("star", 0.0, 1.0), ("star", np.pi, 0.45), ("star", np.pi / 5, 0.45), ("star", 2 * np.pi / 5, 1.0),
]  # fmt: skip


def _ray_polygon(vertices_polar, phi):
    """Independent reference: intersect the ray at angle phi with the polygon's edges (Cartesian)."""
    pts = np.array([(r * np.sin(a), r * np.cos(a)) for r, a in vertices_polar])
    d = np.array([np.sin(phi), np.cos(phi)])
    best = np.inf
    for p, q in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        m = np.array([d, p - q]).T  # t·d = p + u·(q − p)
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        t, u = np.linalg.solve(m, p)
        if t > 0 and -1e-9 <= u <= 1 + 1e-9:
            best = min(best, t)
    return best


@pytest.mark.parametrize(("shape", "phi", "expected"), CASES)
def test_boundary_radius_hand_worked(shape, phi, expected):
    got = float(sprites.boundary_radius(sprites.SHAPE_NAMES.index(shape), phi))
    assert got == pytest.approx(expected, abs=2e-6)


def test_boundary_radius_matches_ray_intersection():
    star = [(1.0 if k % 2 == 0 else 0.45, k * np.pi / 5) for k in range(10)]
    polygons = {"triangle": 3, "square": 4, "pentagon": 5}
    phis = np.linspace(0, 2 * np.pi, 97, endpoint=False) + 0.013
    for name, verts in [(n, [(1.0, 2 * np.pi * k / v) for k in range(v)]) for n, v in polygons.items()] + [
        ("star", star)
    ]:
        got = np.asarray(sprites.boundary_radius(sprites.SHAPE_NAMES.index(name), phis))
        ref = np.array([_ray_polygon(verts, p) for p in phis])
        np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=name)


def test_render_is_deterministic_and_keypoints_sit_on_the_sprite():
    s = sprites.render(40, size=64, seed=5)
    again = sprites.render(40, size=64, seed=5)
    np.testing.assert_array_equal(s.images, again.images)
    assert s.images.shape == (40, 64, 64, 3) and s.images.dtype == np.uint8
    assert s.keypoints.shape == (40, 9, 2) and len(sprites.KEYPOINT_NAMES) == 9
    assert np.all((s.keypoints >= 0) & (s.keypoints <= 64))
    np.testing.assert_allclose(s.keypoints[:, 0], s.centre)
    img = s.images.astype(float) / 255
    for i in range(40):
        cx, cy = s.centre[i]
        background = np.median(img[i, :3, :3].reshape(-1, 3), axis=0)
        for k in range(1, 9):
            x, y = s.keypoints[i, k]
            ux, uy = (x - cx, y - cy) / np.hypot(x - cx, y - cy)
            inside = img[i, int(y - 2.5 * uy), int(x - 2.5 * ux)]
            outside = (x + 2.5 * ux, y + 2.5 * uy)
            if 0 <= outside[0] < 64 and 0 <= outside[1] < 64:
                out_px = img[i, int(outside[1]), int(outside[0])]
                assert np.abs(out_px - background).max() < 0.15, (i, k)
            assert np.abs(inside - background).max() > 0.2, (i, k)


def test_north_keypoint_is_the_tip_of_a_triangle_and_follows_rotation():
    s = sprites.render(200, size=64, seed=1)
    tri = np.flatnonzero(s.shape == sprites.SHAPE_NAMES.index("triangle"))
    i = tri[0]
    north = s.keypoints[i, 1] - s.centre[i]
    np.testing.assert_allclose(np.hypot(*north), s.radius[i], rtol=1e-5)  # a vertex: radius 1
    theta = s.rotation[i]
    np.testing.assert_allclose(north / s.radius[i], [np.sin(theta), -np.cos(theta)], atol=1e-5)


def test_attribute_tasks():
    s = sprites.render(300, size=32, seed=2)
    tasks = sprites.attribute_tasks(s)
    assert tasks.labels.shape == (15, 300) and len(tasks.names) == 15
    for row, c in zip(tasks.labels, tasks.num_classes, strict=True):
        assert row.min() >= 0 and row.max() < c
    by = dict(zip(tasks.names, tasks.labels, strict=True))
    np.testing.assert_array_equal(by["shape"], s.shape)
    np.testing.assert_array_equal(by["quadrant"], 2 * by["lower"] + by["right"])
    np.testing.assert_array_equal(by["up"], by["heading"] == 0)


@pytest.mark.parametrize(("kw", "match"), [({"n": 0}, "n must be"), ({"n": 4, "size": 8}, "size must be")])
def test_render_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        sprites.render(**kw)
