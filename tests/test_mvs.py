"""Plane-sweep depth maps on a small rendered capture, checked against the renderer's ground-truth depth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.synthetic import CaptureGroundTruth, CaptureSpec, ground_truth_scene, render_capture
from core.config import DepthConfig
from core.scene import SparseScene
from core.stages.depth import DepthMaps, load_depth_map, run_depth


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    spec = CaptureSpec(num_views=12, width=240, height=180, image_format="png")
    return render_capture(spec, tmp_path_factory.mktemp("capture"))


@pytest.fixture(scope="module")
def depth_maps(capture: CaptureGroundTruth, tmp_path_factory: pytest.TempPathFactory) -> DepthMaps:
    config = DepthConfig(max_side=240, num_source_views=4, num_depth_planes=64, method="sweep")
    return run_depth(ground_truth_scene(capture), tmp_path_factory.mktemp("depth"), config)


def test_depth_matches_ground_truth(capture: CaptureGroundTruth, depth_maps: DepthMaps) -> None:
    assert depth_maps.ok, depth_maps.failure
    assert len(depth_maps.maps) == len(capture.image_names)
    errors, coverage = [], []
    for record in depth_maps.maps:
        view = load_depth_map(record.path)
        assert view.photo == record.photo
        truth = capture.load_depth(record.photo.name)
        assert view.depth.shape == truth.shape and view.image.shape == truth.shape + (3,)
        assert view.depth.dtype == np.float32 and view.confidence.dtype == np.float32
        assert float(view.confidence.min()) >= 0.0 and float(view.confidence.max()) <= 1.0
        both = np.isfinite(view.depth) & np.isfinite(truth)
        near, far = record.depth_range
        errors.append(np.median(np.abs(view.depth[both] - truth[both])) / (far - near))
        product = capture.load_mask(record.photo.name)
        coverage.append((both & product).sum() / product.sum())
    # Measured on such captures: median error 0.1% of the depth range; 80-85% of the product's pixels get a depth
    # (the plain backdrop gets almost none, rightly).
    assert np.median(errors) < 0.01
    assert np.median(coverage) > 0.6
    per_view = depth_maps.metrics["per_photo"]
    assert set(per_view) == set(capture.image_names)
    assert all({"valid_fraction", "centre_valid_fraction", "median_confidence", "seconds"} <= set(v)
               for v in per_view.values())
    # A richly textured product: the coverage verdict (taken in the middle of the photos) raises no warning.
    assert depth_maps.metrics["centre_valid_fraction"] > 0.6
    assert not [f for f in depth_maps.findings if f.level == "warning"]


def test_confidence_ranks_errors(capture: CaptureGroundTruth, depth_maps: DepthMaps) -> None:
    """Confident depths are more often right than unconfident ones (what fusion's threshold relies on)."""
    confident, doubtful = [], []
    for record in depth_maps.maps:
        view = load_depth_map(record.path)
        truth = capture.load_depth(record.photo.name)
        both = np.isfinite(view.depth) & np.isfinite(truth)
        wrong = np.abs(view.depth[both] - truth[both]) > 0.02 * truth[both]
        conf = view.confidence[both]
        confident.append(wrong[conf >= 0.3])
        doubtful.append(wrong[conf < 0.1])
    assert np.concatenate(confident).mean() < np.concatenate(doubtful).mean()


def test_sources_are_orbit_neighbours(capture: CaptureGroundTruth, depth_maps: DepthMaps) -> None:
    centers = np.array([c.center for c in capture.camera_list()])
    for index, record in enumerate(depth_maps.maps):
        assert len(record.source_views) == 4 and index not in record.source_views
        distance = np.linalg.norm(centers - centers[index], axis=1)
        nearest = set(np.argsort(distance)[1:7].tolist())  # neighbours on the same ring and on the other ring
        assert len(nearest & set(record.source_views)) >= 3


def test_single_view_fails_with_reason(capture: CaptureGroundTruth, tmp_path: Path) -> None:
    scene = ground_truth_scene(capture)
    one = SparseScene(scene.photos[:1], scene.image_paths[:1], scene.cameras[:1], scene.points, scene.colors,
                      scene.visibility[:1])
    result = run_depth(one, tmp_path, DepthConfig(max_side=240, method="sweep"))
    assert not result.ok and "photos" in result.failure


def _first_view_sweep(capture: CaptureGroundTruth) -> tuple[tuple, list]:
    """The plane sweep's arguments for the capture's first photo (240 px), and the scaled cameras."""
    from core.stages import depth

    scene = ground_truth_scene(capture)
    cameras, _, greys = depth._load_views(scene, 240)
    sources = depth._select_sources(scene, 4)[0]
    args = (greys[0], cameras[0], [greys[j] for j in sources], [cameras[j] for j in sources],
            depth._depth_range(scene, 0), 48)
    return args, cameras


def test_torch_costs_match_opencv(capture: CaptureGroundTruth) -> None:
    """The GPU path (torch) computes the same sweep as the CPU path; checked here with torch on the CPU."""
    import torch

    from core.stages.depth.sweep import plane_sweep

    args, cameras = _first_view_sweep(capture)
    depth_cv, conf_cv = plane_sweep(*args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's CPU thread pool crawls on a busy two-core machine; a GPU is what it is for
    try:
        depth_torch, conf_torch = plane_sweep(*args, device="cpu")
    finally:
        torch.set_num_threads(threads)
    both = np.isfinite(depth_cv) & np.isfinite(depth_torch)
    assert both.sum() > 0.9 * min(np.isfinite(depth_cv).sum(), np.isfinite(depth_torch).sum())
    # OpenCV interpolates with 1/32-pixel weights, torch exactly: sub-plane depths differ slightly (a plane step
    # here is about 2% of the depth).
    assert np.mean(np.abs(depth_cv[both] - depth_torch[both]) < 0.01 * depth_cv[both]) > 0.95
    assert np.median(np.abs(conf_cv - conf_torch)) < 0.02


def test_coverage_verdicts() -> None:
    from core.advice import depth_findings

    names = [f"IMG_{i}.jpg" for i in range(12)]
    assert not depth_findings(names, [0.8] * 12)
    plain = depth_findings(names, [0.16] * 12)  # measured on a render of a plain box: 16% of the product area
    assert len(plain) == 1 and plain[0].level == "warning" and "16%" in plain[0].message
    one_bad = depth_findings(names, [0.85] * 11 + [0.1])
    assert len(one_bad) == 1 and one_bad[0].level == "info" and "IMG_11.jpg" in one_bad[0].message


def test_a_per_pixel_depth_range_narrows_the_search(capture: CaptureGroundTruth) -> None:
    """depth_min / depth_max (from a prior) keep the winner inside; a range that misses the truth finds nothing."""
    from core.stages.depth.sweep import plane_sweep

    args, cameras = _first_view_sweep(capture)
    truth = cv2.resize(capture.load_depth(capture.image_names[0]), (cameras[0].width, cameras[0].height),
                       interpolation=cv2.INTER_NEAREST)
    around, conf_around = plane_sweep(*args, depth_min=0.97 * truth, depth_max=1.03 * truth)
    found = np.isfinite(around) & np.isfinite(truth)  # where the truth is NaN (no surface) nothing is constrained
    assert found.sum() > 100
    assert np.all(np.abs(around[found] / truth[found] - 1) <= 0.035)  # never outside the range (+ sub-plane step)
    off, _ = plane_sweep(*args, depth_min=1.3 * truth, depth_max=1.4 * truth)
    on_product = np.isfinite(truth) & (truth < np.nanmedian(truth))
    # The true surface is outside the range: at most stray matches, never the bulk of the near surface.
    assert np.isfinite(off[on_product]).mean() < 0.1 * max(found[on_product].mean(), 1e-6) + 0.02


def test_shading_is_no_detail_print_is() -> None:
    """On a turntable only detail that turns with the product gets a depth (patchmatch.detailed): a shading ramp
    and a soft highlight with sensor noise do not pass, a print does."""
    from core.stages.depth.patchmatch import detailed

    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:240, 0:320].astype(np.float32)
    shading = 0.3 + 0.5 * u / 320 + 0.3 * np.exp(-((u - 200) ** 2 + (v - 100) ** 2) / (2 * 30.0**2))
    noisy = (shading + rng.normal(0, 0.002, shading.shape)).astype(np.float32)
    assert detailed(noisy).mean() < 0.01
    printed = noisy.copy()
    printed[60:180, 80:240] += 0.15 * (((u[60:180, 80:240] // 6) + (v[60:180, 80:240] // 6)) % 2)
    detail = detailed(printed)
    assert detail[70:170, 90:230].mean() > 0.95 and detail[:40].mean() < 0.01

