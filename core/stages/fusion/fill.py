"""Planar completion of plain faces between confident stereo, checked by the other views and the visual hull.

Stereo finds a plain box's edges (shading steps, the outline) but nothing on its faces, and the visual hull is not
exact there either: from cameras 25-40 degrees above the table the hull over a box's top is a roof 4-7 % of the
box's diagonal high, and its sides bulge by 1-3 % between the 24 views (measured on renders). What the edges do
give is the outline of every face, and a flat face is the plane through its outline: in each photo the confident
product points (the fused cloud, seen from this camera) are triangulated (Delaunay, in the image) and the plain
pixels inside each triangle get the depth of the triangle's plane (inverse depth is affine in the image for a
plane, so this is exact for flat faces).

Wrong triangles (spanning two faces, or a chord across a round bottle) are thrown out by two checks:

* **the other photos**: a completed depth must agree with what at least ``MIN_AGREEING`` neighbouring photos
  completed or measured there (the forward-backward check of fusion); two wrong triangles rarely agree;
* **the hull**: the completed point must lie inside the visual hull, and no deeper inside it than ``MAX_DEPTH_SHARE``
  of the product's size (the chord across a bottle lies deep inside a hull that is exact around it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry import PinholeCamera

logger = logging.getLogger(__name__)

SAMPLE_CELL = 3
"""One confident sample per cell of this many pixels is triangulated (the nearest): enough to follow an edge."""
MIN_AGREEING = 2
"""Completed depths must be confirmed by at least this many neighbouring photos."""
MAX_RELATIVE_DEPTH = 0.004
"""Two photos agree when their completed depths differ by less than this fraction (fusion's 1 % let chords across
a box's corners through)."""
MAX_DEPTH_SHARE = 0.04
"""Completed points deeper inside the hull than this share of the hull's diagonal are rejected (a chord)."""
OCCLUSION_STEPS = (3.0, 6.0, 12.0, 24.0)
"""Hull voxels towards the camera at which a cloud point's line of sight is probed."""
OCCLUSION_DEPTH = 2.0
"""A line of sight deeper inside the hull than this many voxels runs through the product: the point is hidden."""


@dataclass
class CompletionView:
    """What the completion needs of one photo."""

    camera: PinholeCamera
    depth: np.ndarray
    """(H, W) float32 stereo depth after the confidence floor (NaN unknown)."""
    mask: np.ndarray
    """(H, W) bool product mask at the depth map's size."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB at the depth map's size."""


def visible_samples(camera: PinholeCamera, points: np.ndarray, mask: np.ndarray, hull,
                    cell: int = SAMPLE_CELL) -> tuple[np.ndarray, np.ndarray]:
    """Image positions (N, 2) and depths (N,) of the cloud points the camera sees, the nearest per cell.

    Seen: inside the mask, and not behind the product: the hull's field along the ray towards the camera stays
    shallow (a point on the far side looks through the product's inside; an edge on the outline does not).
    """
    uv, z = camera.project(points)
    h, w = mask.shape
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (z > 0) & (col >= 0) & (row >= 0) & (col < w) & (row < h)
    ok[ok] = mask[row[ok], col[ok]]
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return np.empty((0, 2)), np.empty(0)
    idx = idx[in_sight(points[idx], camera, hull)]
    uv, z, col, row = uv[idx], z[idx], col[idx], row[idx]
    if len(z) == 0:
        return np.empty((0, 2)), np.empty(0)
    # The nearest point per cell (what the camera sees there).
    cells = (row // cell) * (w // cell + 1) + col // cell
    order = np.lexsort((z, cells))
    first = np.ones(len(order), bool)
    first[1:] = cells[order][1:] != cells[order][:-1]
    pick = order[first]
    return uv[pick], z[pick]


def in_sight(points: np.ndarray, camera: PinholeCamera, hull) -> np.ndarray:
    """(N,) bool: the line of sight from each point to the camera stays shallow in the hull (not through the
    product's inside: a point on the far side is hidden, one on the outline is not)."""
    towards = camera.center - points
    towards /= np.maximum(np.linalg.norm(towards, axis=1, keepdims=True), 1e-12)
    deepest = np.full(len(points), -np.inf, np.float32)
    for step in OCCLUSION_STEPS:
        np.maximum(deepest, hull.sample(points + step * hull.voxel * towards), out=deepest)
    return deepest < OCCLUSION_DEPTH * hull.voxel


def complete_view(view: CompletionView, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The view's depth with plain mask pixels filled from the Delaunay triangles of the samples (NaN elsewhere)."""
    h, w = view.mask.shape
    filled = np.full((h, w), np.nan, np.float32)
    if len(z) < 3:
        return filled
    subdiv = cv2.Subdiv2D((0, 0, w, h))
    lookup: dict[tuple[float, float], int] = {}
    points = np.stack([np.clip(uv[:, 0], 0, w - 1e-3), np.clip(uv[:, 1], 0, h - 1e-3)], 1).astype(np.float32)
    for k, (u, v) in enumerate(points):
        key = (float(u), float(v))
        if key in lookup:
            continue
        subdiv.insert(key)
        lookup[key] = k
    triangles = subdiv.getTriangleList().reshape(-1, 3, 2).astype(np.float32)
    keep_tri, corners = [], []
    for tri in triangles:
        ids = [lookup.get((float(u), float(v)), -1) for u, v in tri]
        if min(ids) < 0:  # a corner of Subdiv2D's outer bounding triangle
            continue
        corners.append(ids)
        keep_tri.append(tri)
    if not keep_tri:
        return filled
    tris = np.array(keep_tri)
    corners_arr = np.array(corners)
    # A triangle must lie on the product: its corners, edge midpoints and centroid inside the mask.
    checks = np.concatenate([tris, (tris + np.roll(tris, 1, axis=1)) / 2, tris.mean(1, keepdims=True)], axis=1)
    cols = np.clip(np.floor(checks[..., 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(checks[..., 1]).astype(np.int64), 0, h - 1)
    on_product = view.mask[rows, cols].all(1)
    tris, corners_arr = tris[on_product], corners_arr[on_product]
    index = np.full((h, w), -1, np.int32)
    for k, tri in enumerate(tris):
        # Corners are at continuous coordinates; fillConvexPoly covers pixel indices (centre = index + 0.5).
        cv2.fillConvexPoly(index, np.round(tri - 0.5).astype(np.int32), int(k))
    target = (index >= 0) & view.mask & ~np.isfinite(view.depth)
    rows, cols = np.nonzero(target)
    if len(rows) == 0:
        return filled
    k = index[rows, cols]
    a, b, c = (points[corners_arr[k, i]].astype(np.float64) for i in range(3))
    p = np.stack([cols + 0.5, rows + 0.5], axis=1)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-9
    wb = np.where(ok, (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / np.where(ok, den, 1), 0)
    wc = np.where(ok, (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / np.where(ok, den, 1), 0)
    wa = 1 - wb - wc
    inv = wa / z[corners_arr[k, 0]] + wb / z[corners_arr[k, 1]] + wc / z[corners_arr[k, 2]]
    ok &= inv > 0
    filled[rows[ok], cols[ok]] = (1.0 / inv[ok]).astype(np.float32)
    return filled


def planar_completion(views: list[CompletionView], points: np.ndarray, normals: np.ndarray, hull,
                      neighbours: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Completed points confirmed by the other photos and the hull: (points, normals, colours, stats)."""
    from core.stages.fusion.consistency import _pixels_to_world, _project, depth_normals

    filled = []
    for view in views:
        uv, z = visible_samples(view.camera, points, view.mask, hull)
        filled.append(complete_view(view, uv, z))
    combined = [np.where(np.isfinite(v.depth), v.depth, f) for v, f in zip(views, filled, strict=True)]
    lo, hi = hull.bounds
    deepest = MAX_DEPTH_SHARE * float(np.linalg.norm(hi - lo))
    out_pts, out_nrm, out_rgb = [], [], []
    counts = {"completed": 0, "confirmed": 0, "inside_hull": 0}
    for i, view in enumerate(views):
        rows, cols = np.nonzero(np.isfinite(filled[i]))
        if len(rows) == 0:
            continue
        z = filled[i][rows, cols].astype(np.float64)
        world = _pixels_to_world(view.camera, cols + 0.5, rows + 0.5, z)
        agree = np.zeros(len(z), np.int32)
        for j in neighbours[i]:
            cam = views[j].camera
            pu, pv, pz = _project(cam, world)
            c, r = np.floor(pu).astype(np.int64), np.floor(pv).astype(np.int64)
            inside = (pz > 0) & (c >= 0) & (r >= 0) & (c < cam.width) & (r < cam.height)
            idx = np.flatnonzero(inside)
            other = combined[j][r[idx], c[idx]]
            ok = np.isfinite(other) & (np.abs(other - pz[idx]) < MAX_RELATIVE_DEPTH * pz[idx])
            agree[idx[ok]] += 1
        confirmed = agree >= MIN_AGREEING
        pts = np.stack(world, axis=1)[confirmed]
        value = hull.sample(pts)
        good = (value >= -1.5 * hull.voxel) & (value <= deepest)
        counts["completed"] += len(z)
        counts["confirmed"] += int(confirmed.sum())
        counts["inside_hull"] += int(good.sum())
        if not good.any():
            continue
        normal_map = depth_normals(view.camera, combined[i].astype(np.float32))
        r, c = rows[confirmed][good], cols[confirmed][good]
        out_pts.append(pts[good])
        out_nrm.append(normal_map[r, c])
        out_rgb.append(view.image[r, c])
    stats = {f"completion_{k}": float(v) for k, v in counts.items()}
    if not out_pts:
        return np.empty((0, 3)), np.empty((0, 3)), np.empty((0, 3), np.uint8), stats
    return np.concatenate(out_pts), np.concatenate(out_nrm), np.concatenate(out_rgb), stats
