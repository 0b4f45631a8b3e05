"""Fusion stage: keep depths that other views confirm, merge them into one coloured, oriented point cloud.

A pixel's depth survives when at least ``config.min_consistent_views`` neighbouring views agree with it: its 3D point
projects into the neighbour onto a depth within ``MAX_RELATIVE_DEPTH`` of the neighbour's own depth, and the
neighbour's point projects back within ``MAX_REPROJECTION_PX`` of the pixel (the forward-backward check of COLMAP's
fusion). A view that disagrees with the rest (a moved product, a wrong pose) therefore loses its points, and it cannot
confirm anyone else's. Surviving depths are averaged with the agreeing ones, back-projected, merged on a voxel grid of
about one pixel's footprint, and given normals that face the cameras (what screened Poisson needs): PatchMatch's
stereo normals where the maps have them (then neighbours must agree on the normal too), else from the depth
gradient. The checks and the point arithmetic are in ``consistency.py``.

With trusted product masks the stereo of the product's plain pixels (no fine detail) is first checked against the
silhouettes (``hull.shading_follows_camera``): under lights that turn with the camera (a turntable in a lightbox)
it matched shading that stayed put in the frame and lies deep inside the hull's sides; it is then dropped and the
hull, exact around curved sides, gives those surfaces.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d

from core import advice
from core.artifacts import FUSION_POINTS
from core.config import FusionConfig
from core.geometry import PinholeCamera
from core.progress import StageProgress, no_progress
from core.stages import StageOutput
from core.stages.depth import DepthMaps, load_depth_map
from core.stages.depth.patchmatch import detailed
from core.stages.fusion.consistency import (
    MIN_CONFIDENCE,
    backproject,
    consistent_depth,
    depth_normals,
    neighbours,
    voxel_merge,
    voxel_size,
)
from core.stages.fusion.hull import (
    MAX_STEREO_COVERAGE,
    Silhouettes,
    masks_at_views,
    shading_follows_camera,
    silhouette_fusion,
    stereo_coverage,
)

logger = logging.getLogger(__name__)


@dataclass
class FusedCloud(StageOutput):
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    """(N, 3) float64 world coordinates."""
    colors: np.ndarray = field(default_factory=lambda: np.empty((0, 3), dtype=np.uint8))
    """(N, 3) uint8 RGB."""
    normals: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    """(N, 3) unit normals, each facing the cameras that saw the point."""
    cameras: list[PinholeCamera] = field(default_factory=list)
    """The cameras of the fused depth maps."""
    voxel_size: float = 0.0
    """Spacing of the merged cloud (about one pixel's footprint on the surface)."""
    silhouettes: bool = False
    """The cloud was constrained by the visual hull: it holds the product only, closed (base on ``support``)."""
    from_hull: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """(N,) True for points that only the hull gave (no stereo, no completed face near them)."""
    support: np.ndarray | None = None
    """The support plane the masks stage found in the sparse points (a, b, c, d), (a, b, c) = up, which the hull
    stands on; None when there was none (or no masks)."""
    focus: np.ndarray | None = None
    """Where the cameras look (on the plane), when the silhouettes said so."""


def _normals(view, fused: np.ndarray) -> np.ndarray:
    """(H, W, 3) world normals: the stereo ones (PatchMatch) where known, else from the fused depth's gradient."""
    from_depth = depth_normals(view.camera, fused)
    if view.normal is None:
        return from_depth
    stereo = view.normal @ view.camera.R.astype(np.float32)  # camera -> world
    return np.where(np.isfinite(stereo).all(-1, keepdims=True), stereo, from_depth)


def run_fusion(depth_maps: DepthMaps, run_dir: Path, config: FusionConfig,
               progress: StageProgress = no_progress, silhouettes: Silhouettes | None = None) -> FusedCloud:
    """Fuse ``depth_maps`` into one point cloud written to ``RUN/fusion/points.ply``.

    With ``silhouettes`` (trusted product masks, ``hull.Silhouettes``), stereo points outside the visual hull are
    dropped, plain faces are completed between confident edges and what stereo still misses comes from the hull
    (``hull.py``, ``fill.py``): the cloud is then the product alone, closed. ``config.silhouettes`` says when:
    ``on``, ``off``, or ``auto``: where stereo confirms less than ``MAX_STEREO_COVERAGE`` of the product's pixels
    (a plain product; a textured one keeps its stereo cloud as it is).
    """
    start = time.perf_counter()
    views = [load_depth_map(r.path) for r in depth_maps.maps]
    if len(views) < 2:
        return FusedCloud(ok=False, failure=advice.FUSION_TOO_FEW_MAPS)
    needed = min(config.min_consistent_views, len(views) - 1)
    nearest = neighbours([v.camera for v in views])

    points, colors, normals, confirmed = [], [], [], []
    counts = {"depths": 0, "low_confidence": 0, "inconsistent": 0, "kept": 0}
    per_photo_kept: dict[str, float] = {}
    for i, view in enumerate(views):
        depth = np.where(view.confidence >= MIN_CONFIDENCE, view.depth, np.nan).astype(np.float32)
        n_valid = int(np.isfinite(view.depth).sum())
        n_confident = int(np.isfinite(depth).sum())
        fused, agreeing = consistent_depth(view.camera, depth, [views[j] for j in nearest[i]], view.normal)
        keep = agreeing >= needed
        counts["depths"] += n_valid
        counts["low_confidence"] += n_valid - n_confident
        counts["inconsistent"] += n_confident - int(keep.sum())
        counts["kept"] += int(keep.sum())
        per_photo_kept[view.photo.name] = round(float(keep.sum()) / max(n_valid, 1), 4)
        confirmed.append(keep)
        if keep.any():
            points.append(backproject(view.camera, fused, keep))
            colors.append(view.image[keep])
            normals.append(_normals(view, fused)[keep])
        progress(0.8 * (i + 1) / len(views), f"checked photo {i + 1}/{len(views)}")

    metrics: dict = {"views": len(views), "min_consistent_views": needed, "input_depths": counts["depths"],
                     "dropped_low_confidence": counts["low_confidence"], "dropped_inconsistent": counts["inconsistent"],
                     "kept_depths": counts["kept"], "per_photo_kept_fraction": per_photo_kept}
    kept_share = counts["kept"] / max(counts["depths"], 1)
    findings = advice.fusion_findings(per_photo_kept, kept_share)
    if counts["kept"] == 0:
        metrics["seconds"] = round(time.perf_counter() - start, 2)
        return FusedCloud(ok=False, metrics=metrics, findings=findings, failure=advice.FUSION_NOTHING)

    use_hull = silhouettes is not None and config.silhouettes != "off"
    shading_follows = False
    points, colors, normals = np.concatenate(points), np.concatenate(colors), np.concatenate(normals)
    if silhouettes is not None and use_hull:
        progress(0.8, "checking the plain surfaces' stereo against the silhouettes")
        from_plain = np.concatenate([~detailed(cv2.cvtColor(v.image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)[k]
                                     for v, k in zip(views, confirmed, strict=True)])
        shading = shading_follows_camera(points, from_plain, silhouettes)
        shading_follows = shading.follows
        metrics["plain_stereo_deep_in_hull"] = round(shading.deep_share, 4)
        metrics["detail_stereo_deep_in_hull"] = round(shading.detail_share, 4)
        if shading.follows:  # that stereo is the lights' doing: the hull says where those surfaces are
            drop = from_plain | shading.deep
            metrics["plain_stereo_dropped"] = int(drop.sum())
            counts_per_view = np.cumsum([int(k.sum()) for k in confirmed])[:-1]
            for keep, dropped in zip(confirmed, np.split(drop, counts_per_view), strict=True):
                keep[keep] = ~dropped
            points, colors, normals = points[~drop], colors[~drop], normals[~drop]
    progress(0.8, "merging points")
    voxel = voxel_size(views)
    pts, rgb, nrm = voxel_merge(points, colors, normals, voxel)
    rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    from_hull = np.zeros(len(pts), bool)
    carved = None
    if silhouettes is not None and use_hull:
        coverage = stereo_coverage(confirmed, masks_at_views(silhouettes, views))
        metrics["stereo_coverage"] = round(coverage, 4)
        if config.silhouettes == "auto" and coverage >= MAX_STEREO_COVERAGE:
            use_hull = False
            metrics["hull_not_needed"] = 1
            metrics["hull_reason"] = (f"confirmed stereo depth covers {coverage:.0%} of the product's pixels, "
                                      f"enough on its own (the hull fills in below {MAX_STEREO_COVERAGE:.0%})")
    if silhouettes is not None and use_hull:
        progress(0.85, "carving the visual hull")
        carved = silhouette_fusion(pts, nrm, rgb, voxel, silhouettes, views, config.hull_resolution, confirmed,
                                   complete_planes=not shading_follows)
        if carved is None:
            metrics["hull_reason"] = "fewer than 3 photos have a product mask that agrees with the stereo"
        else:
            pts, nrm, rgb, from_hull = carved.points, carved.normals, carved.colors, carved.from_hull
            metrics.update({k: v for k, v in carved.stats.items()})
            # What isolation and mesh need of the hull, kept in the record so that a resumed run rebuilds it.
            metrics.update({"silhouettes": 1, "focus": [float(v) for v in silhouettes.focus]})
    support = silhouettes.plane if silhouettes is not None else None
    if support is not None:  # kept in the record so that a resumed run rebuilds it
        metrics["support"] = [float(v) for v in support]
    findings += advice.silhouette_findings(metrics)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / 255.0)
    cloud.normals = o3d.utility.Vector3dVector(nrm)
    path = FUSION_POINTS.path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    o3d.io.write_point_cloud(str(path), cloud)
    metrics.update({"points": len(pts), "voxel_size": voxel, "seconds": round(time.perf_counter() - start, 2)})
    logger.info("fusion: %d points (voxel %.4g) from %d confirmed depths", len(pts), voxel, counts["kept"])
    progress(1.0, "fused")
    return FusedCloud(
        metrics=metrics, findings=findings, artifacts=[FUSION_POINTS], points=pts, colors=rgb, normals=nrm,
        cameras=[v.camera for v in views], voxel_size=voxel, silhouettes=carved is not None, from_hull=from_hull,
        support=support, focus=silhouettes.focus if carved is not None and silhouettes is not None else None)
