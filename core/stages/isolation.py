"""Isolation stage: keep the object the cameras look at, drop the table it stands on and the room behind it.

1. "Up" is the mean of the cameras' image-up directions (people hold cameras upright; around an orbit the sideways
   parts cancel), refined to the table's normal once the table is found.
2. The focus is the point nearest, in least squares, to all optical axes: the cameras converge on the product.
3. The support plane is the largest RANSAC plane whose normal agrees with up, with the cameras above it and the focus
   not below it; its inliers and everything under it go. When the dense cloud holds no table (stereo searched only
   inside trusted product masks), the plane the masks stage found in the sparse points stands in.
4. The background is whatever lies farther from the vertical axis through the focus than the cameras' views allow for
   an object in frame (a cylinder sized from the camera distance and field of view).
5. What is left is clustered (DBSCAN on a thinned copy); the cluster nearest the focus is the product, together with
   any cluster at least a fifth of its size (products in several pieces). Small clusters are floaters and go.

When the cut would leave almost nothing (not a product on a table: a façade, a room), the whole cloud is kept and a
warning says so: a model with its surroundings is more use than none. Writes ``RUN/isolation/points.ply`` (the
product's points, or all of them when the cut was not made) and ``frame.json`` (up, focus, support plane).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d

from core import advice
from core.artifacts import ISOLATION_FRAME, ISOLATION_POINTS
from core.config import IsolationConfig
from core.geometry import cameras_focus, cameras_up, narrowest_half_view, support_plane
from core.manifest import Finding
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.stages.fusion import FusedCloud

logger = logging.getLogger(__name__)

_OBJECT_FRAME_SHARE = 0.8
"""The product is assumed to fill at most this share of the narrower half field of view."""
_CLUSTER_POINTS = 40_000
"""Clustering runs on a thinned copy of about this many points (DBSCAN cost grows quickly with density)."""
_MIN_PRODUCT_POINTS = 500
_MIN_PRODUCT_SHARE = 0.01
"""Below this many points (or share of the cloud) the cut is taken to have failed and everything is kept."""
_NORMAL_NEIGHBOURS = 16
"""Neighbours in each normal's plane fit."""
_KEEP_CLUSTER_SHARE = 0.2
"""Clusters at least this share of the product cluster are kept too."""


@dataclass
class IsolatedCloud(FusedCloud):
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    """Unit world direction pointing away from the table."""
    focus: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Where the cameras' optical axes converge."""
    plane: np.ndarray | None = None
    """Support plane (a, b, c, d) with a x + b y + c z + d = 0 and (a, b, c) = up; None when none was found."""


def run_isolation(cloud: FusedCloud, scene: SparseScene, run_dir: Path, config: IsolationConfig,
                  progress: StageProgress = no_progress) -> IsolatedCloud:
    """Cut the product out of the fused cloud; writes ``RUN/isolation/points.ply`` and ``frame.json``."""
    start = time.perf_counter()
    cameras = scene.cameras
    up = cameras_up(cameras)
    focus = cameras_focus(cameras)
    n_in = len(cloud.points)
    if not cloud.ok or n_in == 0:
        return IsolatedCloud(ok=False, failure=cloud.failure or advice.ISOLATION_NOTHING, up=up, focus=focus)
    if not config.enabled:
        return _result(cloud, np.ones(n_in, dtype=bool), run_dir, up, focus, None,
                       {"points_in": n_in, "points_out": n_in, "isolated": 0}, [], start)
    if cloud.silhouettes:
        # The visual hull already cut the product out: the silhouettes exclude the table and the room, and the
        # hull stands on the support plane the masks stage found.
        plane = cloud.support
        up = plane[:3] if plane is not None else up
        focus = cloud.focus if cloud.focus is not None else focus
        return _result(cloud, np.ones(n_in, dtype=bool), run_dir, up, focus, plane,
                       {"points_in": n_in, "points_out": n_in, "isolated": 1, "by_silhouettes": 1,
                        "support_plane_found": int(plane is not None)}, [], start, refine_normals=True)

    progress(0.1, "finding the table")
    pts = cloud.points
    distance = float(np.median([np.linalg.norm(c.center - focus) for c in cameras]))
    tolerance = max(3.0 * cloud.voxel_size, 0.004 * distance)
    plane = support_plane(pts, cameras, up, focus, tolerance)
    from_sparse = plane is None and cloud.support is not None
    if from_sparse:
        # Stereo searched only inside trusted product masks, so the dense cloud holds no table: the plane the masks
        # stage found in the sparse points is the table (cracker box, balanced: without it the base was left to
        # Poisson, which ballooned it, mesh precision at 0.5% 0.82 instead of 0.9+).
        plane = np.asarray(cloud.support, dtype=np.float64)
    keep = np.ones(n_in, dtype=bool)
    findings: list[Finding] = []
    if plane is not None:
        up = plane[:3]
        height = pts @ up + plane[3]
        on_plane = height < 1.5 * tolerance  # the table and anything under it (its reflection, noise)
        keep &= ~on_plane
        # Put the focus on the axis at table height: the product rises from there.
        focus = focus - (focus @ up + plane[3]) * up
    else:
        on_plane = np.zeros(n_in, dtype=bool)
        findings.append(advice.ISOLATION_NO_TABLE)

    progress(0.4, "removing the background")
    radius = distance * narrowest_half_view(cameras) * _OBJECT_FRAME_SHARE
    offset = pts - focus
    radial = np.linalg.norm(offset - np.outer(offset @ up, up), axis=1)
    background = keep & (radial > radius)
    keep &= ~background

    progress(0.6, "clustering")
    small = np.zeros(n_in, dtype=bool)
    if keep.sum() > 0:
        labels = _cluster(pts[keep], cloud.voxel_size, tolerance)
        kept_idx = np.flatnonzero(keep)
        product_labels = _product_clusters(pts[kept_idx], labels, focus, up)
        small[kept_idx[~np.isin(labels, product_labels)]] = True
        keep &= ~small

    n_out = int(keep.sum())
    metrics = {
        "points_in": n_in,
        "removed_support_plane": int(on_plane.sum()),
        "removed_background": int(background.sum()),
        "removed_small_clusters": int(small.sum()),
        "points_out": n_out,
        "support_plane_found": int(plane is not None),
        "support_plane_from_sparse": int(from_sparse),
        "object_radius": radius,
        "isolated": 1,
    }
    if n_out < max(_MIN_PRODUCT_POINTS, _MIN_PRODUCT_SHARE * n_in):
        # Better a model with its surroundings than none: keep everything and say so.
        metrics.update({"points_out": n_in, "isolated": 0})
        findings.append(advice.ISOLATION_KEPT_ALL)
        return _result(cloud, np.ones(n_in, dtype=bool), run_dir, up, focus, plane, metrics, findings, start)
    if n_out > advice.ALMOST_ALL_KEPT * n_in:
        findings.append(advice.ISOLATION_LITTLE_AROUND)
    logger.info("isolation: kept %d of %d points (plane %d, background %d, clusters %d)", n_out, n_in,
                metrics["removed_support_plane"], metrics["removed_background"], metrics["removed_small_clusters"])
    progress(0.8, "orienting normals")
    return _result(cloud, keep, run_dir, up, focus, plane, metrics, findings, start, refine_normals=True)


def _result(cloud: FusedCloud, keep: np.ndarray, run_dir: Path, up: np.ndarray, focus: np.ndarray,
            plane: np.ndarray | None, metrics: dict, findings: list[Finding], start: float,
            refine_normals: bool = False) -> IsolatedCloud:
    """The kept points as the stage's result, written with the frame they stand in."""
    points, colors, normals = cloud.points[keep], cloud.colors[keep], cloud.normals[keep]
    product = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    product.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    if refine_normals:
        # Fusion's normals come from smoothed depth maps; a local plane fit over neighbours is cleaner, and the fused
        # normals (which face the cameras) give it its orientation. Done here, on the product only, because it is slow.
        product.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(_NORMAL_NEIGHBOURS))
        fitted = np.asarray(product.normals).copy()
        fitted[(fitted * normals).sum(1) < 0] *= -1
        normals = fitted
    product.normals = o3d.utility.Vector3dVector(normals)
    path = ISOLATION_POINTS.path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    o3d.io.write_point_cloud(str(path), product)
    frame = {"up": up.tolist(), "focus": focus.tolist(), "plane": None if plane is None else plane.tolist()}
    ISOLATION_FRAME.path(run_dir).write_text(json.dumps(frame, indent=1), encoding="utf-8")
    metrics.update({"focus": [round(float(x), 6) for x in focus], "up": [round(float(x), 6) for x in up],
                    "seconds": round(time.perf_counter() - start, 2)})
    return IsolatedCloud(metrics=metrics, findings=findings, artifacts=[ISOLATION_POINTS, ISOLATION_FRAME],
                         points=points, colors=colors, normals=normals, cameras=cloud.cameras,
                         voxel_size=cloud.voxel_size, up=up, focus=focus, plane=plane,
                         silhouettes=cloud.silhouettes, support=cloud.support,
                         from_hull=cloud.from_hull[keep] if len(cloud.from_hull) == len(keep) else cloud.from_hull[:0])


def _cluster(points: np.ndarray, voxel: float, tolerance: float) -> np.ndarray:
    """DBSCAN labels (-1 = noise) for every point, computed on a thinned copy and spread to the rest."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    extent = np.linalg.norm(points.max(0) - points.min(0))
    # Thin to about _CLUSTER_POINTS points on a surface: spacing ~ extent / sqrt(count).
    step = max(voxel, extent / np.sqrt(_CLUSTER_POINTS))
    thin = cloud.voxel_down_sample(step)
    labels_thin = np.asarray(thin.cluster_dbscan(eps=max(2.5 * step, tolerance), min_points=4))
    if len(thin.points) == len(points):
        return labels_thin
    index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(np.asarray(thin.points)))
    index.knn_index()
    nearest, _ = index.knn_search(o3d.core.Tensor(points), 1)
    return labels_thin[nearest.numpy()[:, 0]]


def _product_clusters(points: np.ndarray, labels: np.ndarray, focus: np.ndarray, up: np.ndarray) -> list[int]:
    """Labels of the product: the cluster nearest the focus axis, plus any cluster a fifth of its size or more."""
    ids = [int(i) for i in np.unique(labels) if i >= 0]
    if not ids:
        return []
    offset = points - focus
    radial = np.linalg.norm(offset - np.outer(offset @ up, up), axis=1)
    sizes = {i: int((labels == i).sum()) for i in ids}
    # Nearest = smallest 5th-percentile distance to the axis (robust to a few stray points).
    nearest = min(ids, key=lambda i: (np.quantile(radial[labels == i], 0.05), -sizes[i]))
    return [i for i in ids if i == nearest or sizes[i] >= _KEEP_CLUSTER_SHARE * sizes[nearest]]
