"""Benchmark maths: F-score, pose evaluation, camera file readers, and the whole chain on a rendered capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.evaluate import (
    SHARED_DATA,
    GroundTruthSurface,
    crop_to_box,
    evaluate_poses,
    read_middlebury_par,
    read_strecha_camera,
    sample_mesh,
)
from core.geometry import PinholeCamera, Similarity, backproject_depth, intrinsics_from_fov, look_at

DATA = SHARED_DATA


def _unit_cube() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


@pytest.fixture(scope="module")
def cube() -> GroundTruthSurface:
    v, f = _unit_cube()
    return GroundTruthSurface.from_arrays(v, f, num_samples=20_000)


def test_identical_surface_scores_one(cube: GroundTruthSurface) -> None:
    report = cube.evaluate(cube.samples.copy())
    assert report.fscore == [1.0, 1.0]
    assert report.accuracy < 1e-6 and report.completeness == 0.0
    # An independent dense sampling of the same surface also scores (nearly) 1.
    dense = cube.evaluate(sample_mesh(cube.vertices, cube.triangles, 100_000, seed=1))
    assert dense.fscore[1] > 0.98


def test_shifted_surface_drops_as_expected(cube: GroundTruthSurface) -> None:
    points = sample_mesh(cube.vertices, cube.triangles, 40_000, seed=1)
    diag = cube.diagonal
    # Shift along x by 0.75 % of the diagonal: the x faces move off by that much, the others slide within the plane.
    shifted = points + np.array([0.0075 * diag, 0, 0])
    report = cube.evaluate(shifted)
    # Two of six faces (a third of the area) are 0.75 % away: beyond tau = 0.5 %, within tau = 1 %.
    assert report.precision[0] == pytest.approx(2 / 3, abs=0.03)
    assert report.precision[1] > 0.97
    assert report.fscore[0] < 0.8 < report.fscore[1]
    far = cube.evaluate(points + np.array([0.03 * diag, 0.03 * diag, 0.03 * diag]))
    assert far.fscore[1] < 0.2


def test_alignment_is_applied_before_scoring(cube: GroundTruthSurface) -> None:
    points = cube.samples.copy()
    R, _ = look_at(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    sim = Similarity(2.5, R, np.array([0.3, -1.0, 4.0]))
    # points in an "SfM" frame = inverse similarity of the truth
    moved = (points - sim.t) @ sim.R / sim.scale
    assert cube.evaluate(moved, sim).fscore[0] > 0.99
    assert cube.evaluate(moved).fscore[1] < 0.1


def test_crop_to_enlarged_box() -> None:
    pts = np.array([[0.5, 0.5, 0.5], [1.02, 0.5, 0.5], [1.04, 0.5, 0.5], [-0.5, 0, 0]])
    kept = crop_to_box(pts, np.zeros(3), np.ones(3), enlarge=0.05)
    assert len(kept) == 2


def _ring(n: int = 8) -> dict[str, PinholeCamera]:
    K = intrinsics_from_fov(640, 480, 50)
    cams = {}
    for i in range(n):
        a = 2 * np.pi * i / n
        R, t = look_at(np.array([np.cos(a), np.sin(a), 0.5]), np.zeros(3))
        cams[f"img{i}.jpg"] = PinholeCamera(K, R, t, 640, 480)
    return cams


def test_pose_evaluation_ignores_the_gauge_and_missing_photos() -> None:
    truth = _ring()
    R, _ = look_at(np.array([0.3, -2.0, 1.0]), np.zeros(3))
    sim = Similarity(0.2, R, np.array([5.0, 1.0, -2.0]))
    estimated = {n: sim.apply_to_camera(c) for n, c in truth.items() if n != "img3.jpg"}
    report = evaluate_poses(estimated, truth, scale_reference=1.0)
    assert report.num_registered == 7 and report.num_images == 8
    assert report.median_rotation_deg < 1e-6
    assert report.median_center_error < 1e-9
    assert report.num_correct == 7 and report.to_dict()["num_correct"] == 7
    assert evaluate_poses({}, truth).num_registered == 0


def test_a_flipped_photo_is_placed_but_not_correctly_placed() -> None:
    """A camera turned 180° about its view axis keeps its centre (the alignment does not move) but is wrong."""
    truth = _ring()
    flip = np.diag([-1.0, -1.0, 1.0])  # image x and y reversed: the camera is upside down
    estimated = dict(truth)
    estimated["img2.jpg"] = PinholeCamera(truth["img2.jpg"].K, flip @ truth["img2.jpg"].R, flip @ truth["img2.jpg"].t,
                                          640, 480)
    report = evaluate_poses(estimated, truth)
    assert report.num_registered == 8 and report.num_correct == 7
    assert report.to_dict()["max_rotation_deg"] > 170


def test_rendered_depth_as_fake_dense_points(tmp_path: Path) -> None:
    """The chain the benchmark uses: a reconstruction in an arbitrary frame, aligned through its cameras, scores 1."""
    from benchmarks.synthetic import CaptureSpec, render_capture

    gt = render_capture(CaptureSpec(object="procedural-box", num_views=6, width=160, height=120,
                                    image_format="png", elevations_deg=(30.0,)), tmp_path / "cap")
    R, _ = look_at(np.array([1.0, 0.4, -0.3]), np.zeros(3))
    to_sfm = Similarity(3.7, R, np.array([0.5, 2.0, -1.0]))  # ground truth -> a made-up SfM frame
    sfm_cameras = {n: to_sfm.apply_to_camera(c) for n, c in gt.cameras.items()}
    # Depth scales with the frame: a camera moved by the similarity sees every point scale times farther.
    points = np.concatenate([backproject_depth(gt.load_depth(n) * to_sfm.scale, sfm_cameras[n], gt.load_mask(n))
                             for n in gt.image_names])
    poses = evaluate_poses(sfm_cameras, gt.cameras, gt.object_diagonal)
    assert poses.num_registered == 6 and poses.median_rotation_deg < 1e-4
    surface = GroundTruthSurface.from_mesh(gt.mesh_path, gt.camera_list(), num_samples=20_000)
    report = surface.evaluate(points, poses.alignment)
    assert report.precision[0] > 0.99
    assert report.accuracy < 1e-4
    # The visible surface of 6 low-resolution views is covered, not perfectly: recall is high but below 1.
    assert report.recall[1] > 0.8


@pytest.mark.skipif(not (DATA / "middlebury_templeSparseRing").exists(), reason="Middlebury data not present")
def test_middlebury_par_reader() -> None:
    cams = read_middlebury_par(DATA / "middlebury_templeSparseRing" / "templeSR_par.txt")
    assert len(cams) == 16
    centres = np.array([c.center for c in cams.values()])
    # Cameras on a ring ~0.5-0.65 m around the temple, all looking at it.
    assert np.all((np.linalg.norm(centres, axis=1) > 0.4) & (np.linalg.norm(centres, axis=1) < 0.8))
    for cam in cams.values():
        assert cam.project(np.array([[0.0, 0.0, 0.05]]))[1][0] > 0


@pytest.mark.skipif(not (DATA / "strecha_Herz-Jesus-P8").exists(), reason="Strecha data not present")
def test_strecha_camera_reader() -> None:
    cam = read_strecha_camera(DATA / "strecha_Herz-Jesus-P8" / "cameras" / "0000.jpg.camera")
    np.testing.assert_allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-4)
    np.testing.assert_allclose(cam.center, [-6.71999, -14.2551, 0.279539], atol=1e-5)
    assert (cam.width, cam.height) == (1536, 1024)


def test_report_and_merge(tmp_path: Path) -> None:
    from benchmarks.run import merge_results, write_report

    machine = {"date": "today", "cpu_count": 2, "cpu": "x86_64", "ram_gb": 8.0, "load_avg_at_start": [1.0],
               "platform": "Linux", "python": "3.11", "git": "abc"}
    surface = {"num_points": 10, "faces": 0, "precision": [0.5, 0.9], "recall": [0.4, 0.8], "fscore": [0.44, 0.85],
               "accuracy": 0.001, "completeness": 0.002}
    run = {"preset": "preview", "status": "done", "wall_s": 12.0, "peak_rss_mb": 300.0, "stages": {"sfm": 3.0},
           "poses": {"num_images": 4, "num_registered": 4, "median_rotation_deg": 0.1,
                     "median_center_error_rel": 0.002}, "isolation.points": surface,
           "dense_points": surface}  # a surface under an artefact name of older results.json files
    old = {"command": "a", "machine": machine, "captures": [
        {"name": "x", "description": "d", "runs": [run]},
        {"name": "gone", "skipped": "no data", "runs": []}]}
    new = {"command": "b", "machine": machine, "captures": [
        {"name": "x", "description": "d", "runs": [{**run, "preset": "balanced", "failure_reason": "boom",
                                                    "masks": {"iou_mean": 0.97, "iou_min": 0.9},
                                                    "fusion_hull": "yes (stereo coverage 0.47)"}]}]}
    merged = merge_results(old, new)
    assert [r["preset"] for r in merged["captures"][0]["runs"]] == ["preview", "balanced"]
    write_report(merged, tmp_path / "R.md", tmp_path / "r.json")
    text = (tmp_path / "R.md").read_text()
    assert "| preview | done | 12 | 300 | 4/4 | – |" in text  # results from before "correctly placed" was counted
    assert "| preview | dense_points | 10 |" in text  # older surfaces are not dropped when the report is rewritten
    assert "| preview | isolation.points | 10 |" in text and "Skipped: no data" in text and "balanced: boom" in text
    assert "| balanced | 0.970 | 0.900 | yes (stereo coverage 0.47) |" in text  # the masks and the hull gate
