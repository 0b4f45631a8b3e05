"""Geometry conventions: projection, back-projection and similarity alignment against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from core.geometry import (
    PinholeCamera,
    Similarity,
    backproject_depth,
    boundary_cycles,
    boundary_edges,
    compare_poses,
    intrinsics_from_fov,
    look_at,
    rotation_angle_deg,
    triangulate_polygon,
    umeyama_similarity,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_look_at_points_the_optical_axis_at_the_target_with_image_y_down() -> None:
    eye, target = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    R, t = look_at(eye, target)
    cam = PinholeCamera(intrinsics_from_fov(640, 480, 60), R, t, 640, 480)
    uv, depth = cam.project(target[None])
    assert np.allclose(uv, [[320, 240]]) and depth[0] == pytest.approx(np.linalg.norm(eye))
    assert np.allclose(cam.center, eye)
    above, _ = cam.project(np.array([[0, 0, 0.1]]))
    assert above[0, 1] < 240  # world up appears higher in the image (smaller row)


def test_backprojected_depth_reprojects_to_its_pixels() -> None:
    rng = np.random.default_rng(0)
    R, t = look_at(np.array([0.3, -1.0, 0.4]), np.zeros(3))
    cam = PinholeCamera(intrinsics_from_fov(64, 48, 50), R, t, 64, 48)
    depth = rng.uniform(0.5, 2.0, (48, 48 * 64 // 48))
    points = backproject_depth(depth, cam)
    uv, z = cam.project(points)
    v, u = np.mgrid[0:48, 0:64]
    assert np.allclose(uv, np.stack([u.ravel() + 0.5, v.ravel() + 0.5], 1), atol=1e-9)
    assert np.allclose(z, depth.ravel())
    assert cam.scaled(0.5).K[0, 2] == pytest.approx(16)


def test_umeyama_recovers_a_similarity_and_compare_poses_is_zero_for_a_moved_copy() -> None:
    rng = np.random.default_rng(1)
    truth = Similarity(2.5, random_rotation(rng), rng.normal(size=3))
    source = rng.normal(size=(30, 3))
    fitted = umeyama_similarity(source, truth.apply(source))
    assert fitted.scale == pytest.approx(2.5) and np.allclose(fitted.R, truth.R) and np.allclose(fitted.t, truth.t)

    K = intrinsics_from_fov(100, 100, 60)
    gt = [PinholeCamera(K, *look_at(np.array([np.cos(a), np.sin(a), 0.3]) * 2, np.zeros(3)), 100, 100)
          for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    inverse = Similarity(1 / 2.5, truth.R.T, -truth.R.T @ truth.t / 2.5)  # the world as SfM might see it
    estimated = [inverse.apply_to_camera(c) for c in gt]
    errors = compare_poses(estimated, gt)
    assert errors.rotation_deg.max() < 1e-4 and errors.center_error.max() < 1e-9  # arccos noise near 0
    assert rotation_angle_deg(random_rotation(rng)) <= 180


def test_ear_clipping_covers_a_non_convex_outline_in_its_winding() -> None:
    angle = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    star = np.c_[np.cos(angle), np.sin(angle)] * (1 + 0.4 * np.sin(7 * angle))[:, None]  # 7 deep notches
    for outline in (star, star[::-1]):
        triangles = triangulate_polygon(outline)
        assert triangles.shape == (len(outline) - 2, 3)
        t = outline[triangles]
        signed = 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                        - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
        x, y = outline[:, 0], outline[:, 1]
        area = 0.5 * (x @ np.roll(y, -1) - np.roll(x, -1) @ y)
        assert np.all(np.sign(signed) == np.sign(area))  # no flipped (overlapping) triangle
        assert signed.sum() == pytest.approx(area)
    # Collinear points along a straight rim are clipped too (the cut of a box's side).
    assert triangulate_polygon(np.array([[0, 0], [1, 0], [2, 0], [2, 1], [0, 1.0]])).shape == (3, 3)


def test_boundary_cycles_follow_the_rim_across_a_flipped_face() -> None:
    fan = np.array([[0, 1, 2], [0, 3, 2], [0, 3, 4]])  # the middle face is wound the other way
    (cycle, forward), = boundary_cycles(boundary_edges(fan))
    assert sorted(cycle.tolist()) == [0, 1, 2, 3, 4] and forward.sum() == 4
    two_holes = np.array([[0, 1, 2], [3, 4, 5]])
    assert len(boundary_cycles(boundary_edges(two_holes))) == 2
