"""Multi-view consistency of depth maps and the point arithmetic of fusion.

A pixel's depth is confirmed by a neighbouring photo when its 3D point projects into the neighbour onto a depth within
``MAX_RELATIVE_DEPTH`` of the neighbour's own depth, and the neighbour's point projects back within
``MAX_REPROJECTION_PX`` of the pixel (the forward-backward check of COLMAP's fusion).
"""

from __future__ import annotations

import cv2
import numpy as np

from core.geometry import PinholeCamera, pixel_grid
from core.stages.depth import DepthMap

MIN_CONFIDENCE = 0.1
"""Depths below this confidence are not fused (on renders 97% of the rest lie within 2% of the true depth)."""
MAX_RELATIVE_DEPTH = 0.01
"""Two views agree when their depths differ by less than this fraction..."""
MAX_REPROJECTION_PX = 1.0
"""...and the neighbour's point lands within this many pixels of where it started."""
MAX_NORMAL_ANGLE_DEG = 30.0
"""...and, where both views have stereo normals (PatchMatch), their normals differ by less than this angle."""
MAX_NEIGHBOURS = 8
"""Views checked for agreement with each view (the ones looking most the same way)."""
MAX_AXIS_ANGLE_DEG = 75.0
"""Views whose optical axes differ by more than this rarely see the same surface from the same side."""



def neighbours(cameras: list[PinholeCamera]) -> list[list[int]]:
    """Per view, up to ``MAX_NEIGHBOURS`` other views whose optical axes are closest to its own."""
    axes = np.array([c.viewing_direction for c in cameras])
    angles = np.degrees(np.arccos(np.clip(axes @ axes.T, -1, 1)))
    result = []
    for i in range(len(cameras)):
        order = [int(j) for j in np.argsort(angles[i]) if j != i and angles[i, j] < MAX_AXIS_ANGLE_DEG]
        result.append(order[:MAX_NEIGHBOURS])
    return result


def consistent_depth(camera: PinholeCamera, depth: np.ndarray, others: list[DepthMap],
                     normal: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the depth averaged with the views that agree with it, and how many views agree.

    With ``normal`` (H, W, 3 camera-frame stereo normals), a neighbour with stereo normals must also agree on the
    normal (within ``MAX_NORMAL_ANGLE_DEG``).
    """
    h, w = depth.shape
    valid = np.isfinite(depth)
    u, v = pixel_grid(w, h)
    u, v, z = u[valid], v[valid], depth[valid].astype(np.float64)
    world = _pixels_to_world(camera, u, v, z)
    min_cos = np.cos(np.radians(MAX_NORMAL_ANGLE_DEG))
    own_normal = None if normal is None else normal[valid] @ camera.R.astype(np.float32)  # camera -> world
    agree = np.zeros(len(z), dtype=np.int32)
    depth_sum = z.copy()
    for other in others:
        cam = other.camera
        pu, pv, z_other = _project(cam, world)
        col = np.floor(pu).astype(np.int64)
        row = np.floor(pv).astype(np.int64)
        inside = (z_other > 0) & (col >= 0) & (row >= 0) & (col < cam.width) & (row < cam.height)
        idx = np.flatnonzero(inside)
        d_other = other.depth[row[idx], col[idx]].astype(np.float64)
        ok = np.isfinite(d_other) & (other.confidence[row[idx], col[idx]] >= MIN_CONFIDENCE)
        ok &= np.abs(d_other - z_other[idx]) < MAX_RELATIVE_DEPTH * z_other[idx]
        if own_normal is not None and other.normal is not None:
            other_normal = other.normal[row[idx], col[idx]] @ cam.R.astype(np.float32)
            cos = (own_normal[idx] * other_normal).sum(1)
            ok &= ~(cos < min_cos)  # NaN (no normal there) does not veto
        idx, d_other = idx[ok], d_other[ok]
        # Forward-backward: the neighbour's own point at that pixel must project back onto our pixel.
        back = _pixels_to_world(cam, col[idx] + 0.5, row[idx] + 0.5, d_other)
        bu, bv, z_back = _project(camera, back)
        ok = (np.hypot(bu - u[idx], bv - v[idx]) < MAX_REPROJECTION_PX) & (z_back > 0)
        idx = idx[ok]
        agree[idx] += 1
        depth_sum[idx] += z_back[ok]
    fused = np.full((h, w), np.nan, dtype=np.float32)
    fused[valid] = depth_sum / (agree + 1)
    counts = np.zeros((h, w), dtype=np.int32)
    counts[valid] = agree
    return fused, counts


# Points travel as three coordinate arrays: (N, 3) @ (3, 3) products go through BLAS, which is many times slower
# than plain element-wise arithmetic for such thin matrices on a busy two-core machine (measured: 50 ms vs 5 ms).
def _project(camera: PinholeCamera, world: tuple[np.ndarray, np.ndarray, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) and depth of world points given as (x, y, z) arrays."""
    R, t, K = camera.R, camera.t, camera.K
    x, y, z = world
    cx = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0]
    cy = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1]
    cz = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]
    inv = 1.0 / np.where(np.abs(cz) < 1e-12, 1e-12, cz)
    return K[0, 0] * cx * inv + K[0, 2], K[1, 1] * cy * inv + K[1, 2], cz


def _pixels_to_world(camera: PinholeCamera, u: np.ndarray, v: np.ndarray, z: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K, R, t = camera.K, camera.R, camera.t
    cx = (u - K[0, 2]) / K[0, 0] * z - t[0]
    cy = (v - K[1, 2]) / K[1, 1] * z - t[1]
    cz = z - t[2]
    # x_world = R^T (x_cam - t)
    return (R[0, 0] * cx + R[1, 0] * cy + R[2, 0] * cz,
            R[0, 1] * cx + R[1, 1] * cy + R[2, 1] * cz,
            R[0, 2] * cx + R[1, 2] * cy + R[2, 2] * cz)


def backproject(camera: PinholeCamera, depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    u, v = pixel_grid(depth.shape[1], depth.shape[0])
    return np.stack(_pixels_to_world(camera, u[mask], v[mask], depth[mask].astype(np.float64)), axis=1)


def depth_normals(camera: PinholeCamera, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) world normals from a smoothed depth map, each facing the camera; the viewing ray where unknown."""
    h, w = depth.shape
    valid = np.isfinite(depth).astype(np.float32)
    # Normalised box smoothing (ignores unknown pixels): pixel-level depth noise would tilt normals by tens of degrees.
    smooth = cv2.blur(np.nan_to_num(depth), (5, 5)) / np.maximum(cv2.blur(valid, (5, 5)), 1e-6)
    smooth[valid == 0] = np.nan
    u, v = pixel_grid(w, h)
    K = camera.K
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1).astype(np.float32)
    pts = rays * smooth[..., None]
    du = np.zeros_like(pts)
    dv = np.zeros_like(pts)
    du[:, 2:-2] = pts[:, 4:] - pts[:, :-4]
    dv[2:-2] = pts[4:] - pts[:-4]
    n = np.cross(du, dv)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    toward = -rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    good = np.isfinite(norm) & (norm > 0)
    n = np.where(good, n / np.where(good, norm, 1), toward)
    n = np.where(((n * toward).sum(-1) < 0)[..., None], -n, n)
    return n @ camera.R.astype(np.float32)  # camera -> world (rows times R = R^T applied)


def voxel_merge(points: np.ndarray, colors: np.ndarray, normals: np.ndarray,
                 voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average positions, colours and normals per voxel (numpy; Open3D's hash map is several times slower here)."""
    keys = np.floor((points - points.min(0)) / voxel).astype(np.int64)
    dims = keys.max(0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(inverse, values[:, k], len(counts)) for k in range(3)], axis=1) / counts[:, None]

    nrm = mean(normals.astype(np.float64))  # several views' normals per voxel: less noise
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    return mean(points), mean(colors.astype(np.float64)), nrm


def voxel_size(depth_maps: list[DepthMap]) -> float:
    """About one pixel's footprint at the typical depth of the views."""
    footprints = []
    for view in depth_maps:
        d = view.depth[np.isfinite(view.depth)]
        if len(d):
            footprints.append(float(np.median(d)) / float(view.camera.K[0, 0]))
    return float(np.median(footprints)) if footprints else 1e-3
