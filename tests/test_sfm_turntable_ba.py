"""Turntable bundle adjustment: a synthetic turntable whose photos come unordered and unevenly turned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config import SfmConfig
from core.geometry import PinholeCamera, compare_poses
from core.stages.sfm import FixedCamera, trusted_model
from core.stages.sfm import turntable_ba as tb
from core.stages.sfm.trust import TrustReport, check_facing, model_cameras

FOCAL, WIDTH, HEIGHT = 800.0, 640, 480


def _scene(seed: int = 3, distance: float = 0.6, noise_px: float = 0.3
           ) -> tuple[tb.FeatureTracks, np.ndarray, np.ndarray, np.ndarray]:
    """Points on a textured cylinder turning in front of a fixed camera at 30° elevation; 20 photos at uneven,
    shuffled angles; ``noise_px`` noise and 5% gross outliers. Returns (tracks, true angles, true R, true t)."""
    rng = np.random.default_rng(seed)
    azimuth = rng.uniform(0, 2 * np.pi, 400)
    points = np.stack([0.08 * np.cos(azimuth), 0.08 * np.sin(azimuth), rng.uniform(-0.1, 0.1, 400)], 1)
    normals = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros(400)], 1)
    gaps = rng.uniform(12.0, 24.0, 20)
    angles = np.radians(np.cumsum(gaps / gaps.sum() * 360.0))
    angles = angles[rng.permutation(20)]  # file order says nothing about the turn
    R, t = tb.look_at_ring(np.radians(30.0), distance=distance)
    centre = -R.T @ t
    keypoints, observations = [], []
    for i, theta in enumerate(angles):
        turned, turned_normals = points @ tb.rot_z(theta).T, normals @ tb.rot_z(theta).T
        cam = turned @ R.T + t
        uv = FOCAL * cam[:, :2] / cam[:, 2:] + [WIDTH / 2, HEIGHT / 2]
        facing = np.einsum("ij,ij->i", turned_normals, centre - turned) > 0.3 * np.linalg.norm(centre - turned, axis=1)
        seen = np.flatnonzero(facing)
        uv = uv[seen] + rng.normal(0, noise_px, (len(seen), 2))
        outliers = rng.random(len(seen)) < 0.05
        uv[outliers] = rng.uniform([0, 0], [WIDTH, HEIGHT], (int(outliers.sum()), 2))
        keypoints.append(uv)
        observations += [(i, k, p) for k, p in enumerate(seen)]
    obs = np.array(observations)
    obs = obs[np.argsort(obs[:, 2], kind="stable")]
    _, track = np.unique(obs[:, 2], return_inverse=True)
    obs[:, 2] = track
    seen_by = np.zeros((20, track.max() + 1))
    seen_by[obs[:, 0], obs[:, 2]] = 1
    pair_inliers = (seen_by @ seen_by.T).astype(int)
    np.fill_diagonal(pair_inliers, 0)
    pair_inliers[pair_inliers < 15] = 0  # only pairs SIFT would verify
    tracks = tb.FeatureTracks([f"photo_{i:02d}.jpg" for i in range(20)], list(range(1, 21)), keypoints, obs,
                              int(track.max() + 1), pair_inliers,
                              {"model": "SIMPLE_RADIAL", "width": WIDTH, "height": HEIGHT,
                               "params": np.array([FOCAL, WIDTH / 2, HEIGHT / 2, 0.0])})
    return tracks, angles, R, t


@pytest.fixture(scope="module")
def solved() -> tuple[tb.FeatureTracks, tb.TurntableSolution, np.ndarray, np.ndarray, np.ndarray]:
    tracks, angles, R, t = _scene()
    ring_of = np.zeros(len(tracks.names), dtype=int)
    solution = tb.solve(tracks, ring_of, tb.default_starts(tracks, ring_of), fix_intrinsics=True)
    return tracks, solution, angles, R, t


def test_the_true_turns_are_recovered_from_unordered_photos(solved) -> None:
    tracks, solution, angles, _, _ = solved
    # Angles are known up to one turn of the whole table (the gauge): compare turns relative to the first photo.
    true_turns = np.degrees(np.angle(np.exp(1j * (angles - angles[0]))))
    found_turns = np.degrees(np.angle(np.exp(1j * (solution.angles - solution.angles[0]))))
    assert np.max(np.abs(np.angle(np.exp(1j * np.radians(found_turns - true_turns))))) < np.radians(0.5)
    assert tb.tilt_std_deg(tracks, solution) < tb.TILT_STD_MAX_DEG
    assert len(tb.placed_images(tracks, solution)) == 20


def test_the_solution_is_a_reconstruction_with_the_true_cameras(solved) -> None:
    tracks, solution, angles, R, t = solved
    model = tb.to_reconstruction(tracks, solution)
    assert model.num_reg_images() == 20
    assert model.num_points3D() > 300
    cameras = model_cameras(model)
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    truth = [PinholeCamera(K, R @ tb.rot_z(a), t, WIDTH, HEIGHT) for a in angles]
    errors = compare_poses([cameras[n] for n in tracks.names], truth)
    assert errors.rotation_deg.max() < 1.0
    report = TrustReport()
    check_facing(model, report)
    assert report.ok, report.problems


def test_points_on_the_far_side_of_the_product_are_caught(solved) -> None:
    import pycolmap

    tracks, solution, _, _, _ = solved
    model = tb.to_reconstruction(tracks, solution)
    mirrored = pycolmap.Reconstruction(model)
    for point_id, point in model.points3D.items():
        xyz = point.xyz.copy()
        mirrored.points3D[point_id].xyz = np.array([-xyz[0], -xyz[1], xyz[2]])  # across the axis
    report = TrustReport()
    check_facing(mirrored, report)
    assert set(report.problems) == set(tracks.names)
    assert all(found == ["facing_away"] for found in report.problems.values())


def test_spectral_angles_put_photos_in_turn_order() -> None:
    truth = np.radians(np.arange(0, 360, 20.0))[np.random.default_rng(1).permutation(18)]
    gap = np.abs(np.angle(np.exp(1j * (truth[:, None] - truth[None]))))
    weights = np.where(gap < np.radians(50), 100 * np.cos(gap), 0.0)
    np.fill_diagonal(weights, 0)
    found = tb.circular_angles(weights)
    # Up to a turn and a mirror, the order round the circle is the true one.
    order_true, order_found = np.argsort(truth), np.argsort(found)
    shifts = [np.roll(order_found, k) for k in range(18)]
    assert any(np.array_equal(s, order_true) or np.array_equal(s[::-1], order_true) for s in shifts)


def _database(tracks: tb.FeatureTracks, path: Path) -> Path:
    """A COLMAP database holding the scene's keypoints and, per pair, its matches (what matching would write)."""
    import pycolmap

    db = pycolmap.Database.open(str(path))
    camera = pycolmap.Camera(model="SIMPLE_RADIAL", width=WIDTH, height=HEIGHT, params=tracks.camera["params"],
                             camera_id=1)
    db.write_camera(camera, use_camera_id=True)
    key_of = []
    for i, name in enumerate(tracks.names):
        db.write_image(pycolmap.Image(name=name, camera_id=1, image_id=tracks.image_ids[i]), use_image_id=True)
        db.write_keypoints(tracks.image_ids[i], tracks.keypoints[i].astype(np.float32))
        rows = tracks.observations[tracks.observations[:, 0] == i]
        key_of.append(dict(zip(rows[:, 2].tolist(), rows[:, 1].tolist(), strict=True)))
    for i in range(len(tracks.names)):
        for j in range(i + 1, len(tracks.names)):
            if tracks.pair_inliers[i, j]:
                shared = sorted(set(key_of[i]) & set(key_of[j]))
                geometry = pycolmap.TwoViewGeometry()
                geometry.config = pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
                geometry.inlier_matches = np.array([[key_of[i][p], key_of[j][p]] for p in shared], dtype=np.uint32)
                db.write_two_view_geometry(tracks.image_ids[i], tracks.image_ids[j], geometry)
    db.close()
    return path


def test_a_capture_incremental_mapping_could_not_place_is_recovered_as_a_turntable(tmp_path: Path) -> None:
    tracks, angles, R, t = _scene()
    database = _database(tracks, tmp_path / "database.db")
    fixed = FixedCamera(0.9, [list(tracks.names)])
    model, report, how = trusted_model(None, database, tmp_path, tmp_path, 2, SfmConfig(), fixed)
    assert how == "turntable", report.turntable
    assert report.ok and report.turntable["accepted"]
    cameras = model_cameras(model)
    assert len(cameras) == 20
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    truth = [PinholeCamera(K, R @ tb.rot_z(a), t, WIDTH, HEIGHT) for a in angles]
    assert compare_poses([cameras[n] for n in tracks.names], truth).rotation_deg.max() < 1.0


def test_a_turntable_whose_camera_height_is_loose_is_not_kept(tmp_path: Path) -> None:
    # A small product seen from far (3 m, 2 px noise): the turns are found but the tilt is not determined.
    tracks, _, _, _ = _scene(distance=3.0, noise_px=2.0)
    database = _database(tracks, tmp_path / "database.db")
    fixed = FixedCamera(0.9, [list(tracks.names)])
    model, report, how = trusted_model(None, database, tmp_path, tmp_path, 2, SfmConfig(), fixed)
    assert model is None and how == "none found"
    assert not report.turntable["accepted"]
    assert "camera height" in report.turntable["reason"]
    assert report.turntable["tilt_std_deg"] > tb.TILT_STD_MAX_DEG


def test_photos_left_out_of_a_trusted_solution_are_placed_on_its_turntable(solved, tmp_path: Path) -> None:
    from core.stages.sfm import drop_images

    tracks, solution, angles, R, t = solved
    database = _database(tracks, tmp_path / "database.db")
    left_out = tracks.names[:5]
    partial = drop_images(tb.to_reconstruction(tracks, solution), left_out)
    fixed = FixedCamera(0.9, [list(tracks.names)])
    model, report, how = trusted_model(partial, database, tmp_path, tmp_path, 2, SfmConfig(), fixed)
    assert how == "turntable" and report.ok, report.turntable
    cameras = model_cameras(model)
    assert set(left_out) <= set(cameras)
    K = np.array([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]])
    truth = [PinholeCamera(K, R @ tb.rot_z(a), t, WIDTH, HEIGHT) for a in angles]
    assert compare_poses([cameras[n] for n in tracks.names], truth).rotation_deg.max() < 1.0


def test_photos_without_matches_fail_with_the_reason(tmp_path: Path) -> None:
    # A plain product that is the same from every side: every frame alike, nothing verified between them.
    tracks, _, _, _ = _scene()
    tracks.pair_inliers[:] = 0
    database = _database(tracks, tmp_path / "database.db")
    fixed = FixedCamera(1.0, [list(tracks.names)])
    model, report, how = trusted_model(None, database, tmp_path, tmp_path, 2, SfmConfig(), fixed)
    assert model is None and how == "none found"
    assert report.turntable["reason"].startswith("only 0 photos share verified matches")


def test_a_turntable_solved_without_the_lens_focal_length_warns_that_proportions_may_be_off() -> None:
    """The turns do not measure the focal length: without EXIF the solution's proportions rest on an assumed lens."""
    from core.advice import TURNTABLE_FOCAL_ASSUMED, sfm_findings

    metrics = {"photos_usable": 20, "photos_registered": 20, "registered_fraction": 1.0, "trust_recovery": "turntable",
               "turntable": {"accepted": True, "placed": 20, "tilt_std_deg": 0.2}}
    assumed = sfm_findings({**metrics, "focal_from_photos": 0})
    assert TURNTABLE_FOCAL_ASSUMED in assumed and TURNTABLE_FOCAL_ASSUMED.level == "warning"
    assert TURNTABLE_FOCAL_ASSUMED not in sfm_findings({**metrics, "focal_from_photos": 1})
    assert TURNTABLE_FOCAL_ASSUMED not in sfm_findings({**metrics, "focal_from_photos": 0, "trust_recovery": ""})
