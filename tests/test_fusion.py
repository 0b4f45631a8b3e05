"""Depth fusion on ground-truth depth maps: agreement keeps the surface, a view that disagrees is rejected."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from benchmarks.synthetic import CaptureGroundTruth, CaptureSpec, render_capture
from core.config import FusionConfig
from core.photos import Photo
from core.stages.depth import DepthMap, DepthMapRecord, DepthMaps, save_depth_map
from core.stages.fusion import run_fusion

OUTLIER = 3


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    spec = CaptureSpec(num_views=8, width=200, height=150, image_format="png", backdrop="none")
    return render_capture(spec, tmp_path_factory.mktemp("capture"))


def _depth_maps(capture: CaptureGroundTruth, out: Path, scale: dict[int, float] | None = None,
                noise: float = 0.0) -> DepthMaps:
    """True depth maps as a DepthMaps stage result; view i's depth multiplied by scale[i] (a wrong view)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    records = []
    for i, name in enumerate(capture.image_names):
        depth = capture.load_depth(name) * (scale or {}).get(i, 1.0)
        depth = (depth * (1 + noise * rng.standard_normal(depth.shape))).astype(np.float32)
        image = cv2.cvtColor(cv2.imread(str(capture.image_dir / name)), cv2.COLOR_BGR2RGB)
        confidence = np.where(np.isfinite(depth), 0.8, 0.0).astype(np.float32)
        camera = capture.cameras[name]
        photo = Photo(i, name, f"{i:03d}_{Path(name).stem}.jpg")  # the working copy's name differs
        path = save_depth_map(DepthMap(photo, camera, depth, confidence, image), out / f"{photo.stem}.npz")
        records.append(DepthMapRecord(photo, camera, path, [], (0.1, 10.0)))
    return DepthMaps(maps=records)


def test_fusion_keeps_the_surface_and_rejects_an_outlier_view(capture: CaptureGroundTruth, tmp_path: Path) -> None:
    maps = _depth_maps(capture, tmp_path / "depth", scale={OUTLIER: 1.06}, noise=0.001)
    result = run_fusion(maps, tmp_path / "run", FusionConfig(min_consistent_views=2))
    assert result.ok, result.failure
    kept = result.metrics["per_photo_kept_fraction"]
    outlier_name = capture.image_names[OUTLIER]
    assert kept[outlier_name] < 0.02
    assert min(v for k, v in kept.items() if k != outlier_name) > 0.5
    assert result.metrics["dropped_inconsistent"] > 0
    assert any(outlier_name in f.message for f in result.findings)  # the user's name, written by the stage itself
    assert not any(f"{OUTLIER:03d}_" in f.message for f in result.findings)

    # Every fused point lies on the true surface: it projects onto a matching true depth in some view.
    best = np.full(len(result.points), np.inf)
    for name in capture.image_names:
        camera, truth = capture.cameras[name], capture.load_depth(name)
        uv, z = camera.project(result.points)
        col, row = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (z > 0) & (col >= 0) & (row >= 0) & (col < camera.width) & (row < camera.height)
        rel = np.full(len(z), np.inf)
        rel[inside] = np.abs(truth[row[inside], col[inside]] - z[inside]) / z[inside]
        best = np.minimum(best, np.nan_to_num(rel, nan=np.inf))
    assert np.mean(best < 0.005) > 0.97

    # Normals face the cameras that saw the points: positive towards the nearest camera for nearly all points.
    centers = np.array([c.center for c in result.cameras])
    nearest = centers[np.argmin(np.linalg.norm(result.points[:, None] - centers[None], axis=2), axis=1)]
    assert np.mean(((nearest - result.points) * result.normals).sum(1) > 0) > 0.95
    assert np.allclose(np.linalg.norm(result.normals, axis=1), 1, atol=1e-6)

    cloud = o3d.io.read_point_cloud(str(result.artifacts[0].path(tmp_path / "run")))
    assert len(cloud.points) == len(result.points) and cloud.has_colors() and cloud.has_normals()


def test_without_the_outlier_nothing_is_flagged(capture: CaptureGroundTruth, tmp_path: Path) -> None:
    result = run_fusion(_depth_maps(capture, tmp_path / "depth"), tmp_path / "run", FusionConfig())
    assert result.ok and not result.findings
    # True depths: what is lost is surface seen by fewer than three of the eight views (measured 78%).
    assert result.metrics["kept_depths"] > 0.7 * result.metrics["input_depths"]


def test_no_agreement_fails_with_reason(capture: CaptureGroundTruth, tmp_path: Path) -> None:
    # Every view scaled differently: no depth is confirmed by another view.
    scales = {i: 1.0 + 0.05 * i for i in range(len(capture.image_names))}
    result = run_fusion(_depth_maps(capture, tmp_path / "depth", scale=scales), tmp_path / "run", FusionConfig())
    assert not result.ok
    assert "overlap" in result.failure and result.metrics["kept_depths"] == 0
