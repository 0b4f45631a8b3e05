"""Product isolation: keep the object the cameras look at, drop the table it stands on and the room behind it.

1. "Up" is the mean of the cameras' image-up directions (people hold cameras upright; around an orbit the sideways
   parts cancel), refined to the table's normal once the table is found.
2. The focus is the point nearest, in least squares, to all optical axes: the cameras converge on the product.
3. The support plane is the largest RANSAC plane whose normal agrees with up, with the cameras above it and the focus
   not below it; its inliers and everything under it go.
4. The background is whatever lies farther from the vertical axis through the focus than the cameras' views allow for
   an object in frame (a cylinder sized from the camera distance and field of view).
5. What is left is clustered (DBSCAN on a thinned copy); the cluster nearest the focus is the product, together with
   any cluster at least a fifth of its size (products in several pieces). Small clusters are floaters and go.

When the cut would leave almost nothing (not a product on a table: a façade, a room), the whole cloud is kept and a
warning says so: a model with its surroundings is more use than none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d

from core.config import DenseConfig
from core.fusion import FusedCloud
from core.geometry import PinholeCamera
from core.manifest import Finding
from core.mvs import cameras_focus
from core.scene import SparseScene
from core.stage import ProgressFn, no_progress

logger = logging.getLogger(__name__)

_MAX_PLANE_TILT_DEG = 30.0
"""A support plane's normal lies within this angle of the cameras' up."""
_PLANE_CANDIDATES = 4
"""RANSAC planes tried before giving up on finding the table."""
_MIN_PLANE_SHARE = 0.05
"""A plane must hold this share of the points to count as the table."""
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


def isolate_product(cloud: FusedCloud, scene: SparseScene, out_dir: Path, config: DenseConfig,
                    progress: ProgressFn = no_progress) -> IsolatedCloud:
    """Cut the product out of the fused cloud; writes ``out_dir/product_points.ply``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cameras = scene.cameras
    artifacts = dict(cloud.artifacts)
    if "dense_points" in artifacts:
        artifacts["dense_points_full"] = artifacts["dense_points"]
    up = _camera_up(cameras)
    focus = cameras_focus(cameras)
    base = {"points": cloud.points, "colors": cloud.colors, "normals": cloud.normals, "cameras": cloud.cameras,
            "voxel_size": cloud.voxel_size}
    n_in = len(cloud.points)
    if not cloud.ok or n_in == 0:
        return IsolatedCloud(ok=False, failure=cloud.failure or "There are no 3D points to cut the product from.",
                             up=up, focus=focus, **base)
    if not config.isolate_product:
        return IsolatedCloud(metrics={"points_in": n_in, "points_out": n_in, "isolated": 0}, artifacts=artifacts,
                             up=up, focus=focus, **base)

    progress(0.1, "finding the table")
    pts = cloud.points
    distance = float(np.median([np.linalg.norm(c.center - focus) for c in cameras]))
    tolerance = max(3.0 * cloud.voxel_size, 0.004 * distance)
    plane = _support_plane(pts, cameras, up, focus, tolerance)
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
        findings.append(Finding(
            "info", "No table surface was found under the product, so only the background was removed.",
            "This is fine for hanging or hand-held products; otherwise place the product on a flat, patterned mat."))

    progress(0.4, "removing the background")
    radius = distance * _narrowest_half_view(cameras) * _OBJECT_FRAME_SHARE
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
        "focus": [round(float(x), 6) for x in focus],
        "up": [round(float(x), 6) for x in up],
        "object_radius": radius,
        "isolated": 1,
    }
    if n_out < max(_MIN_PRODUCT_POINTS, _MIN_PRODUCT_SHARE * n_in):
        # Better a model with its surroundings than none: keep everything and say so.
        metrics.update({"points_out": n_in, "isolated": 0, "seconds": round(time.perf_counter() - start, 2)})
        findings.append(Finding(
            "warning", "The product could not be separated from the table and background; the model keeps them.",
            "Keep the product in the middle of every photo and walk all the way around it; a patterned mat under "
            "it helps find the table."))
        return IsolatedCloud(metrics=metrics, findings=findings, artifacts=dict(cloud.artifacts), up=up,
                             focus=focus, plane=plane, **base)
    product = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[keep]))
    product.colors = o3d.utility.Vector3dVector(cloud.colors[keep].astype(np.float64) / 255.0)
    # Fusion's normals come from smoothed depth maps; a local plane fit over neighbours is cleaner, and the fused
    # normals (which face the cameras) give it its orientation. Done here, on the product only, because it is slow.
    product.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(_NORMAL_NEIGHBOURS))
    normals = np.asarray(product.normals).copy()
    normals[(normals * cloud.normals[keep]).sum(1) < 0] *= -1
    product.normals = o3d.utility.Vector3dVector(normals)
    path = out_dir / "product_points.ply"
    o3d.io.write_point_cloud(str(path), product)
    artifacts["dense_points"] = path.resolve()
    if n_out > 0.9 * n_in:
        findings.append(Finding("info", "Almost every point was kept as product: little table or background showed.",
                                "Nothing to do if the model looks right."))
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    logger.info("isolation: kept %d of %d points (plane %d, background %d, clusters %d)", n_out, n_in,
                metrics["removed_support_plane"], metrics["removed_background"], metrics["removed_small_clusters"])
    progress(1.0, "product isolated")
    return IsolatedCloud(
        metrics=metrics, findings=findings, artifacts=artifacts, points=pts[keep], colors=cloud.colors[keep],
        normals=normals, cameras=cloud.cameras, voxel_size=cloud.voxel_size, up=up, focus=focus,
        plane=plane)


def _camera_up(cameras: list[PinholeCamera]) -> np.ndarray:
    """Mean image-up direction (-y of each camera) in world coordinates."""
    up = -np.array([c.R[1] for c in cameras]).sum(0)
    return up / max(np.linalg.norm(up), 1e-12)


def _narrowest_half_view(cameras: list[PinholeCamera]) -> float:
    """tan of the smallest half field of view among the cameras."""
    return float(min(min(c.width / (2 * c.K[0, 0]), c.height / (2 * c.K[1, 1])) for c in cameras))


def _support_plane(points: np.ndarray, cameras: list[PinholeCamera], up: np.ndarray, focus: np.ndarray,
                   tolerance: float) -> np.ndarray | None:
    """The table: a large plane facing up, under the focus, with the cameras above it; normal oriented up."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    if len(points) > 200_000:  # RANSAC needs no more than this
        cloud = cloud.random_down_sample(200_000 / len(points))
    centers = np.array([c.center for c in cameras])
    min_inliers = _MIN_PLANE_SHARE * len(cloud.points)
    o3d.utility.random.seed(0)
    for _ in range(_PLANE_CANDIDATES):
        if len(cloud.points) < 100:
            break
        model, inliers = cloud.segment_plane(distance_threshold=tolerance, ransac_n=3, num_iterations=500)
        if len(inliers) < min_inliers:
            break
        plane = np.asarray(model, dtype=np.float64)
        plane /= np.linalg.norm(plane[:3])
        if plane[:3] @ up < 0:
            plane = -plane
        cameras_above = np.mean(centers @ plane[:3] + plane[3] > 0)
        tilt = np.degrees(np.arccos(np.clip(plane[:3] @ up, -1, 1)))
        if tilt < _MAX_PLANE_TILT_DEG and cameras_above > 0.8 and focus @ plane[:3] + plane[3] > -tolerance:
            return plane
        cloud = cloud.select_by_index(inliers, invert=True)  # a wall or the backdrop: try the next plane
    return None


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
