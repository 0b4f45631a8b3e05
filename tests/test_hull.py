"""The visual hull: carved from exact silhouettes of a box, it contains the box, hugs it and stands on the plane."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.geometry import PinholeCamera, intrinsics_from_fov, look_at
from core.stages.fusion.hull import (
    DEEP_SHARE,
    MAX_STEREO_CUT,
    Silhouettes,
    carve_hull,
    depth_below_sides,
    fuse_with_hull,
    shading_follows_camera,
    signed_distance_px,
    stereo_votes,
)

BOX = np.array([0.12, 0.07, 0.18])
"""Width, depth, height of the box (metres), standing on z = 0, centred on the z axis."""


def _corners() -> np.ndarray:
    lo, hi = np.array([-BOX[0] / 2, -BOX[1] / 2, 0.0]), np.array([BOX[0] / 2, BOX[1] / 2, BOX[2]])
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _orbit(count: int, elevations: tuple[float, ...] = (25.0, 40.0), size: tuple[int, int] = (320, 240)
           ) -> list[PinholeCamera]:
    K = intrinsics_from_fov(*size, 50.0)
    cameras = []
    for ring, elevation in enumerate(elevations):
        for k in range(count // len(elevations)):
            azimuth = 2 * np.pi * (k + 0.5 * ring) / (count // len(elevations)) + 0.3
            el = np.radians(elevation)
            eye = 0.6 * np.array([np.cos(el) * np.cos(azimuth), np.cos(el) * np.sin(azimuth), np.sin(el)])
            R, t = look_at(eye, np.array([0.0, 0.0, BOX[2] / 2]))
            cameras.append(PinholeCamera(K, R, t, *size))
    return cameras


def _silhouette(camera: PinholeCamera) -> np.ndarray:
    """Exact mask of the box: the filled convex hull of its projected corners (pixel centres inside)."""
    uv, _ = camera.project(_corners())
    mask = np.zeros((camera.height, camera.width), np.uint8)
    outline = cv2.convexHull(np.round((uv - 0.5) * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, outline, 1, shift=4)
    return mask.astype(bool)


@pytest.fixture(scope="module")
def hull():
    cameras = _orbit(24)
    masks = [_silhouette(c) for c in cameras]
    return carve_hull(cameras, masks, np.array([-0.2, -0.2, -0.05]), np.array([0.2, 0.2, 0.3]), 96,
                      plane=np.array([0.0, 0.0, 1.0, 0.0]))


def test_signed_distance_is_positive_inside() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    sd = signed_distance_px(mask)
    assert sd[10, 10] > 4 and sd[0, 0] < -4
    assert abs(sd[5, 10]) <= 1 and abs(sd[4, 10]) <= 1  # the outline lies between the rows 4 and 5


def test_hull_contains_the_box_and_hugs_it(hull) -> None:
    rng = np.random.default_rng(0)
    inside = (rng.random((4000, 3)) - 0.5) * BOX * np.array([0.98, 0.98, 0.0]) + np.array([0, 0, 1]) * (
        rng.random(4000)[:, None] * BOX[2] * 0.98 + 0.001 * BOX[2])
    # Every point of the box is inside the hull (exact silhouettes only ever carve empty space).
    assert (hull.sample(inside) > -0.5 * hull.voxel).all()
    # Not much more than the box: 24 views from 25-40 degrees leave a roof over the top and slight bulges on the
    # sides (measured here: +13 % of the box's volume).
    volume = float(np.prod(BOX))
    assert volume < hull.volume() < 1.2 * volume
    points, normals = hull.surface()
    lo, hi = points.min(0), points.max(0)
    assert lo[2] == pytest.approx(0.0, abs=0.5 * hull.voxel)  # the plane closes it from below: a flat base
    assert np.all(hi[:2] - BOX[:2] / 2 < 0.01) and np.all(lo[:2] + BOX[:2] / 2 > -0.01)
    assert hi[2] < BOX[2] + 0.2 * BOX[1]  # the roof: at most about half the depth times tan(elevation)
    # Normals point outwards: away from the box's centre.
    centre = np.array([0.0, 0.0, BOX[2] / 2])
    assert np.mean(((points - centre) * normals).sum(1) > 0) > 0.99


def test_a_view_that_does_not_see_a_voxel_does_not_carve_it() -> None:
    cameras = _orbit(12)
    masks = [_silhouette(c) for c in cameras]
    masks[0][:] = False  # one view shows nothing ...
    cameras[0] = PinholeCamera(cameras[0].K, cameras[0].R, cameras[0].t + np.array([5.0, 0, 0]), 320, 240)
    # ... and, moved aside, sees none of the box: the others still carve it.
    hull = carve_hull(cameras, masks, np.array([-0.2, -0.2, -0.05]), np.array([0.2, 0.2, 0.3]), 64,
                      plane=np.array([0.0, 0.0, 1.0, 0.0]))
    assert hull.volume() > float(np.prod(BOX))


def _face(camera: PinholeCamera, corners: np.ndarray) -> np.ndarray:
    """Pixels inside the projection of a flat convex face (its corners, world)."""
    uv, _ = camera.project(corners)
    mask = np.zeros((camera.height, camera.width), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round((uv - 0.5) * 16).astype(np.int32)), 1, shift=4)
    return mask.astype(bool)


def test_the_hull_fills_only_where_no_photo_has_confirmed_stereo(hull) -> None:
    """Stereo confirmed the box's top in every photo: the hull's roof over it is not added, its sides are."""
    cameras = _orbit(24)
    top = _corners()[_corners()[:, 2] > 0]
    confirmed = [_face(c, top) for c in cameras]
    images = [np.full((c.height, c.width, 3), 128, np.uint8) for c in cameras]
    none = np.empty((0, 3))
    without = fuse_with_hull(none, none, np.empty((0, 3), np.uint8), hull, cameras, images, 0.002)
    with_stereo = fuse_with_hull(none, none, np.empty((0, 3), np.uint8), hull, cameras, images, 0.002,
                                 confirmed=confirmed)
    roof = BOX[2] + hull.voxel  # the hull's roof over the top: the photos see stereo's top there
    assert (without.points[:, 2] > roof).sum() > 200  # without stereo's word the roof is filled in
    assert (with_stereo.points[:, 2] > roof).sum() < 0.02 * (without.points[:, 2] > roof).sum()
    sides = (without.points[:, 2] > 0.2 * BOX[2]) & (without.points[:, 2] < 0.8 * BOX[2])
    kept_sides = (with_stereo.points[:, 2] > 0.2 * BOX[2]) & (with_stereo.points[:, 2] < 0.8 * BOX[2])
    assert kept_sides.sum() == sides.sum()  # where stereo has nothing the hull stays
    assert with_stereo.stats["hull_points_under_stereo"] > 200


def _box_surface(count: int) -> np.ndarray:
    """Points on the box's four sides and top (what stereo sees of a textured box)."""
    rng = np.random.default_rng(1)
    points = (rng.random((count, 3)) - np.array([0.5, 0.5, 0.0])) * BOX
    face = rng.integers(0, 5, count)
    for k, (axis, value) in enumerate([(0, -BOX[0] / 2), (0, BOX[0] / 2), (1, -BOX[1] / 2), (1, BOX[1] / 2),
                                       (2, BOX[2])]):
        points[face == k, axis] = value
    return points


def test_a_mask_that_cuts_off_confirmed_stereo_does_not_carve() -> None:
    cameras = _orbit(24)
    masks = [_silhouette(c) for c in cameras]
    ys, xs = np.nonzero(masks[5])
    masks[5][ys.min() + (ys.max() - ys.min()) // 2:, :xs.min() + (xs.max() - xs.min()) // 2] = False  # a bite
    silhouettes = Silhouettes([f"{k}.png" for k in range(24)], cameras, masks, np.array([0.0, 0.0, 1.0, 0.0]),
                              np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), 0.2)
    points = _box_surface(5000)
    allowed, cuts = stereo_votes(points, silhouettes, spacing=0.001)
    assert allowed[points[:, 2] > 0.01].all()  # one wrong mask does not drop confirmed stereo...
    assert not allowed[points[:, 2] < 0.002].any()  # ...but what touches the table is table
    assert cuts[5] > MAX_STEREO_CUT
    assert np.delete(cuts, 5).max() < 0.25 * MAX_STEREO_CUT  # exact masks cut nothing (outline tolerance)


def _side_points(count: int, rng: np.random.Generator) -> np.ndarray:
    """Points on the box's four vertical faces (between 10 % and 90 % of its height)."""
    face = rng.integers(0, 4, count)
    along, up = rng.random(count) - 0.5, 0.1 + 0.8 * rng.random(count)
    x = np.where(face < 2, np.where(face == 0, -0.5, 0.5), along) * BOX[0]
    y = np.where(face < 2, along, np.where(face == 2, -0.5, 0.5)) * BOX[1]
    return np.stack([x, y, up * BOX[2]], axis=1)


@pytest.fixture(scope="module")
def fine_silhouettes() -> Silhouettes:
    """The box's exact masks from 24 photos of 640 x 480 (a pixel is 0.8 mm on the box, as in the benchmark's)."""
    cameras = _orbit(24, size=(640, 480))
    return Silhouettes([f"{k}.png" for k in range(24)], cameras, [_silhouette(c) for c in cameras],
                       np.array([0.0, 0.0, 1.0, 0.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]), 0.15)


def test_depth_below_the_sides_says_where_the_hull_is_exact(fine_silhouettes: Silhouettes) -> None:
    """The ring's photos graze a box's vertical faces: the hull hugs them, so a point there lies at ~0 depth below
    a side, a point on the box's axis deep below one; under the top (a roof in the hull) nothing is judged."""
    up = np.array([0.0, 0.0, 1.0])
    s = fine_silhouettes
    hull = carve_hull(s.cameras, s.masks, np.array([-0.2, -0.2, -0.05]), np.array([0.2, 0.2, 0.3]), 96, s.plane)
    sides = depth_below_sides(_side_points(500, np.random.default_rng(1)), hull, up)
    judged = np.isfinite(sides)
    assert judged.mean() > 0.6 and np.median(sides[judged]) < DEEP_SHARE
    # Off the axis of symmetry, where the field's gradient points to one side (on it the two sides cancel).
    axis = depth_below_sides(np.array([[0.0, 0.01, z] for z in np.linspace(0.3, 0.7, 5) * BOX[2]]), hull, up)
    assert np.all(axis > 4 * DEEP_SHARE)
    under_top = depth_below_sides(np.array([[0.0, 0.0, BOX[2] - 0.005]]), hull, up)
    assert np.isnan(under_top[0])


def test_stereo_of_shading_that_turns_with_the_camera_is_found(fine_silhouettes: Silhouettes) -> None:
    """Plain stereo near the turntable's axis (shading that stayed put in the frame) is flagged, with each deep
    point; plain stereo on the product's sides (shading attached to the product) is not."""
    silhouettes = fine_silhouettes
    rng = np.random.default_rng(2)
    on_sides = _side_points(3000, rng)
    plain = np.ones(len(on_sides), bool)
    attached = shading_follows_camera(on_sides, plain, silhouettes)
    assert not attached.follows and attached.deep_share < 0.1
    near_axis = rng.normal(0, 0.01, (3000, 3)) * np.array([1, 1, 0]) + np.array([0, 0.01, 0]) + np.array([0, 0, 1]) * (
        BOX[2] * (0.2 + 0.6 * rng.random(3000)))[:, None]
    mixed = np.concatenate([on_sides[:1000], near_axis])
    turned = shading_follows_camera(mixed, np.ones(len(mixed), bool), silhouettes)
    assert turned.follows and turned.deep_share > 0.6
    assert turned.deep[1000:].mean() > 0.9 and turned.deep[:1000].mean() < 0.1
    # Detail (print) is never the measure: the same points, none of them plain, are not judged.
    assert not shading_follows_camera(mixed, np.zeros(len(mixed), bool), silhouettes).follows
