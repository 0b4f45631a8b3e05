"""Relief stage, single photo -> 3D relief: depth for every pixel (a supplied depth map, or the monocular model),
back-projected through the photo's camera, meshed as a grid that is cut at depth discontinuities, coloured by the photo.

The result is a relief (the side of the product the photo sees), not a closed model. Its scale is honest: relative
(the nearest point at distance 1, with an assumed depth extent) unless a metric depth map was supplied.

World frame of the relief: z up, the camera at the origin looking along +y (x right). So the mesh stands upright in
the same kind of frame the synthetic captures use; the camera pose is recorded in ``ReliefResult.camera``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

from core import advice
from core.artifacts import RELIEF_DEPTH, RELIEF_GLB, RELIEF_OBJ, RELIEF_PLY
from core.config import CaptureConfig, DepthPriorConfig, ReliefConfig
from core.geometry import PinholeCamera, find_plane, intrinsics_from_fov, pixel_grid
from core.manifest import Finding
from core.progress import StageProgress, no_progress
from core.stages import StageOutput
from core.stages import depth_prior as dp
from core.stages.capture import inspect_photo

logger = logging.getLogger(__name__)

ASSUMED_FOV_DEG = 60.0
"""Field of view across the longer side assumed when the photo has no EXIF focal length (a phone's main camera
is about 65-70 degrees, a 50 mm-equivalent lens about 40)."""
RELATIVE_FAR_OVER_NEAR = 1.6
"""Relative depth only: the farthest (98th percentile) point is put this many times farther than the nearest (2nd)."""
PRODUCT_DEPTH_OVER_WIDTH = 0.5
"""Relative depth with the background removed: the product's visible depth is taken as this share of its width
(a cylinder or a box seen corner-on shows about half its width in depth)."""
GRAZING_COS = 0.1
"""Triangles seen at more than ~84 degrees from their normal are cut: they bridge a depth discontinuity."""
SUPPORT_MAX_TILT_DEG = 60.0
"""A plane counts as the table when its normal is within this angle of the image's up direction."""
SUPPORT_MIN_SHARE = 0.08
"""...and holds at least this share of the pixels."""
MIN_PRODUCT_SHARE = 0.01
"""The product must cover at least this share of the photo, or the background is kept."""
# cam_from_world for a camera at the origin looking along world +y with world z up (x_cam = x, y_cam = -z, z_cam = y).
_R_CAM_FROM_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class ReliefResult(StageOutput):
    """A depth relief made from one photo."""

    scale: Literal["relative", "metric"] = "relative"
    """'metric': the mesh is in metres (from a metric depth map); 'relative': proportions only."""
    depth_source: str = ""
    """'file' (a supplied depth map), 'model' (monocular depth) or '' when none was found."""
    camera: PinholeCamera | None = None
    """The photo's camera (assumed or from EXIF) at the relief's working resolution, in the relief's world frame."""
    depth: np.ndarray | None = field(default=None, repr=False)
    """(H, W) float32 depth used (NaN unknown or removed background)."""


@dataclass
class GridMesh:
    """A triangle mesh as arrays."""

    vertices: np.ndarray
    """(V, 3) float64."""
    triangles: np.ndarray
    """(F, 3) int64, counter-clockwise seen from the camera."""
    colors: np.ndarray
    """(V, 3) uint8 RGB."""
    cut_faces: int = 0
    """Grid triangles dropped at discontinuities."""


def _read_photo(photo: Path, max_side: int) -> tuple[np.ndarray, float]:
    """EXIF-oriented RGB at most ``max_side`` on the longer side, and the downscale factor applied."""
    with Image.open(photo) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    factor = min(1.0, max_side / max(rgb.size))
    if factor < 1.0:
        rgb = rgb.resize((round(rgb.width * factor), round(rgb.height * factor)), Image.Resampling.LANCZOS)
    return np.asarray(rgb), factor


def relative_to_depth(disparity: np.ndarray, far_over_near: float = RELATIVE_FAR_OVER_NEAR,
                      region: np.ndarray | None = None) -> np.ndarray | None:
    """Depth (nearest ~1) from affine-invariant inverse depth; None when the prediction holds no depth variation.

    The 2nd-98th percentiles of ``disparity`` (over ``region`` when given) are put at depths 1 and ``far_over_near``.
    """
    valid = np.isfinite(disparity)
    reference = valid if region is None else valid & region
    if reference.sum() < 16:
        return None
    lo, hi = np.percentile(disparity[reference], [2, 98])
    if not hi - lo > 1e-6 * max(abs(hi), abs(lo), 1e-12):
        return None
    t = (disparity - lo) / (hi - lo)
    inverse = 1.0 / far_over_near + t * (1.0 - 1.0 / far_over_near)
    # Beyond the far percentile inverse depth keeps falling; stop at a tenth of the near one (far, not infinite).
    inverse = np.maximum(inverse, 0.1)
    return np.where(valid, 1.0 / inverse, np.nan).astype(np.float32)


@dataclass
class Isolation:
    """What background removal found in a single photo."""

    mask: np.ndarray | None
    """Product pixels, or None when the background was kept."""
    support_share: float = 0.0
    """Share of the pixels on the support plane (0 when none was found)."""
    reason: str = ""
    """Why the background was kept (empty when it was removed)."""


def _support_plane(points: np.ndarray, tolerance: float) -> np.ndarray | None:
    """(a, b, c, d) of the table plane (normal towards the camera) among camera-frame points, or None."""

    def towards_camera(plane: np.ndarray) -> np.ndarray:
        return -plane if plane[3] < 0 else plane  # the camera (origin) on the positive side

    def is_table(plane: np.ndarray) -> bool:
        # Image up is -y in the camera frame; a table seen from above has its normal tilted towards it.
        normal = towards_camera(plane)[:3]
        return bool(np.degrees(np.arccos(np.clip(-normal[1], -1, 1))) <= SUPPORT_MAX_TILT_DEG)

    # The largest plane may be the backdrop; try a few.
    plane = find_plane(points, tolerance, is_table, candidates=3, min_share=SUPPORT_MIN_SHARE, iterations=300)
    return None if plane is None else towards_camera(plane)


def foreground_mask(depth: np.ndarray, camera: PinholeCamera) -> Isolation:
    """The product's pixels: drop the support plane and what lies under it, cut at depth edges, keep the central,
    near region (plus pieces at the same depth that do not touch the border)."""
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    if valid.sum() < 100:
        return Isolation(None, reason="too few pixels with depth")
    u, v = pixel_grid(w, h)
    K = camera.K
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)
    keep = valid.copy()
    # Plane tolerance ~1 % of depth: monocular depth is smooth but not exact; tighter would leave the table in bits.
    tolerance = 0.01 * float(np.percentile(depth[valid], 25))
    stride = max(1, int(np.sqrt(valid.sum() / 40_000)))  # a thinned copy is plenty for RANSAC
    sample = cam[::stride, ::stride][valid[::stride, ::stride]]
    plane = _support_plane(sample.astype(np.float64), tolerance)
    support_share = 0.0
    if plane is not None:
        distance = np.nan_to_num(cam @ plane[:3] + plane[3], nan=-1.0)
        support = valid & (distance <= 0.01 * depth)  # on the table, or under it (away from the camera)
        support_share = float(support.mean())
        keep &= ~support
    keep &= ~dp.prior_edges(np.where(valid, depth, np.nan))  # cut at depth discontinuities
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(keep.astype(np.uint8), connectivity=4)
    min_area = MIN_PRODUCT_SHARE * h * w
    candidates = [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area]
    if not candidates:
        return Isolation(None, support_share, "nothing stands out from the background")
    inverse = {k: float(np.median(1.0 / depth[labels == k])) for k in candidates}
    nearest = max(inverse.values())
    half_diagonal = 0.5 * np.hypot(w, h)

    def score(k: int) -> float:
        centrality = 1.0 - np.hypot(*(centroids[k] - (w / 2, h / 2))) / half_diagonal
        return centrality + inverse[k] / nearest

    best = max(candidates, key=score)
    mask = labels == best
    for k in candidates:  # other pieces of the product: as near, not running off the photo
        x, y, bw, bh = stats[k, :4]
        inside = x > 0 and y > 0 and x + bw < w and y + bh < h
        if k != best and inside and 0.8 <= inverse[k] / inverse[best] <= 1.25:
            mask |= labels == k
    if mask.sum() >= 0.98 * valid.sum():
        return Isolation(None, support_share, "no table or depth edge separates the product from its surroundings")
    return Isolation(mask, support_share)


def grid_mesh(depth: np.ndarray, image: np.ndarray, camera: PinholeCamera, step: int,
              grazing_cos: float | None = None) -> GridMesh:
    """Mesh every ``step``-th pixel centre; triangles with an unknown corner or seen edge-on are cut."""
    grazing_cos = GRAZING_COS if grazing_cos is None else grazing_cos
    h, w = depth.shape
    rows = np.arange(step // 2, h, step)
    cols = np.arange(step // 2, w, step)
    z = depth[np.ix_(rows, cols)].astype(np.float64)
    u, v = pixel_grid(w, h)
    uu, vv = u[np.ix_(rows, cols)], v[np.ix_(rows, cols)]
    K = camera.K
    cam = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], axis=-1).reshape(-1, 3)
    valid = (np.isfinite(z) & (z > 0)).ravel()
    gh, gw = z.shape
    idx = np.arange(gh * gw).reshape(gh, gw)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    # (a, c, b) and (b, c, d): counter-clockwise seen from the camera (normals point back at it).
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    keep = valid[tris].all(1)
    tris = tris[keep]
    p0, p1, p2 = (np.nan_to_num(cam[tris[:, k]]) for k in range(3))
    normal = np.cross(p1 - p0, p2 - p0)
    centroid = (p0 + p1 + p2) / 3
    cos = np.abs((normal * centroid).sum(1)) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(centroid, axis=1)
                                                + 1e-30)
    edge_on = cos < grazing_cos
    cut = int(edge_on.sum())
    tris = tris[~edge_on]
    used = np.unique(tris)
    remap = np.full(len(cam), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    world = (cam[used] - camera.t) @ camera.R  # camera frame -> the relief's world frame
    colors = image[np.ix_(rows, cols)].reshape(-1, 3)[used]
    return GridMesh(world, remap[tris], colors.astype(np.uint8), cut)


def grid_step(width: int, height: int, target_faces: int) -> int:
    """Pixel step of the grid so that a full grid has at most about ``target_faces`` triangles."""
    return max(1, int(np.ceil(np.sqrt(2.0 * width * height / max(target_faces, 1)))))


def _to_open3d(mesh: GridMesh) -> Any:
    import open3d as o3d

    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                    o3d.utility.Vector3iVector(mesh.triangles.astype(np.int32)))
    out.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64) / 255.0)
    out.compute_vertex_normals()
    return out


def _fail(reason: str, findings: list[Finding] | None = None, **extra: Any) -> ReliefResult:
    return ReliefResult(ok=False, failure=reason, findings=findings or [], **extra)


def run_relief(photo: Path, run_dir: Path, config: ReliefConfig, prior: DepthPriorConfig, capture: CaptureConfig,
               progress: StageProgress = no_progress, depth_file: Path | None = None,
               name: str | None = None) -> ReliefResult:
    """Turn one photo (the stored original, EXIF intact) into a coloured relief mesh in ``RUN/relief/``.

    Depth comes from ``depth_file`` (a supplied depth map), else from the monocular model; ``name`` is the user's
    name of the photo. Expected problems (unreadable photo, no depth source) come back as ``ok=False`` with a
    reason.
    """
    started = time.perf_counter()
    photo = Path(photo)
    name = name or photo.name
    prior_config = prior
    findings: list[Finding] = []
    progress(0.0, "reading the photo")
    check = inspect_photo(photo, capture, name)
    if not check.accepted:
        return _fail(check.reason)
    image, factor = _read_photo(photo, capture.working_max_side)
    height, width = image.shape[:2]

    # Camera: EXIF focal length when there is one, else an assumed field of view (said out loud).
    if check.focal_px:
        focal = check.focal_px * factor
        K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
        focal_note = f"EXIF focal length ({check.focal_px * factor:.0f} px)"
    else:
        K = intrinsics_from_fov(max(width, height), max(width, height), ASSUMED_FOV_DEG)
        K[:2, 2] = (width / 2, height / 2)
        focal_note = f"a {ASSUMED_FOV_DEG:.0f} degree field of view across the longer side"
        findings.append(advice.relief_assumed_focal(focal_note))
    camera = PinholeCamera(K, _R_CAM_FROM_WORLD.copy(), np.zeros(3), width, height)

    # Depth: a supplied map first, then the model.
    progress(0.1, "estimating depth")
    scale: Literal["relative", "metric"] = "relative"
    depth: np.ndarray | None
    relative_prediction: np.ndarray | None = None
    if depth_file is not None:
        try:
            depth = dp.read_depth_file(Path(depth_file), (width, height))
        except (ValueError, OSError) as exc:
            return _fail(advice.relief_unreadable_depth(name, str(exc)))
        depth = np.where(depth > 0, depth, np.nan).astype(np.float32)
        source, scale = "file", "metric"
        unit = "millimetres (16-bit PNG)" if Path(depth_file).suffix.lower() == ".png" else "metres (assumed for .npy)"
        findings.append(advice.relief_supplied_depth(name, unit))
    else:
        if not prior_config.enabled:
            return _fail(advice.RELIEF_NO_PRIOR)
        lookup = dp.find_model(prior_config)
        if lookup.location is None:
            return _fail(advice.relief_no_depth(lookup.how_to_enable), [Finding("info", lookup.message)])
        model = dp.load_depth_model(lookup.location)
        prediction = dp.predict_relative_depth(model, [image], prior_config.input_size)[0]
        source = "model"
        if model.kind == "metric":
            depth = np.where(prediction > 0, prediction, np.nan).astype(np.float32)
            scale = "metric"
            findings.append(advice.relief_metric_model(model.location.name))
        else:
            relative_prediction = prediction
            depth = relative_to_depth(prediction)
            if depth is None:
                return _fail(advice.relief_flat_prediction(model.location.name))
    assert depth is not None

    progress(0.6, "removing the background")
    removed, support_share = False, 0.0
    if config.remove_background:
        isolation = foreground_mask(depth, camera)
        support_share = isolation.support_share
        if isolation.mask is None:
            findings.append(advice.relief_background_kept(isolation.reason))
        else:
            depth = np.where(isolation.mask, depth, np.nan).astype(np.float32)
            removed = True
    if relative_prediction is not None:
        depth_note = f"the far side set {RELATIVE_FAR_OVER_NEAR}x farther than the near side"
        if removed:
            # The whole-photo mapping squeezes the product against the backdrop; give it its own, shape-based extent.
            cols = np.nonzero(np.isfinite(depth))[1]
            width_px = float(np.percentile(cols, 98) - np.percentile(cols, 2))
            # Depth extent (far - 1) = k * width, the width measured at the middle depth (1 + far) / 2.
            half = min(0.45, 0.5 * PRODUCT_DEPTH_OVER_WIDTH * width_px / float(K[0, 0]))
            ratio = (1.0 + half) / (1.0 - half)
            redone = relative_to_depth(relative_prediction, ratio, np.isfinite(depth))
            if redone is not None:
                depth = np.where(np.isfinite(depth), redone, np.nan).astype(np.float32)
                depth_note = f"the product taken to be {PRODUCT_DEPTH_OVER_WIDTH:.1f} times as deep as it is wide"
        findings.append(advice.relief_relative_depth(depth_note))

    progress(0.7, "meshing")
    step = grid_step(width, height, config.target_faces)
    mesh = grid_mesh(depth, image, camera, step)
    if len(mesh.triangles) == 0:
        return _fail(advice.RELIEF_EMPTY, findings)

    progress(0.85, "exporting")
    from core.stages.mesh import export_mesh

    artifacts = export_mesh(_to_open3d(mesh), run_dir, (RELIEF_PLY, RELIEF_GLB, RELIEF_OBJ))
    np.save(RELIEF_DEPTH.path(run_dir), depth)
    artifacts.append(RELIEF_DEPTH)
    finite = np.isfinite(depth)
    metrics = {
        "width": width, "height": height, "grid_step": step,
        "vertices": len(mesh.vertices), "faces": len(mesh.triangles), "cut_faces": mesh.cut_faces,
        "focal_px": round(float(K[0, 0]), 2), "focal_assumed": float(not check.focal_px),
        "depth_from_file": float(source == "file"), "metric_scale": float(scale == "metric"),
        "background_removed": float(removed), "support_share": round(support_share, 3),
        "covered_fraction": float(finite.mean()),
        "depth_range": [float(np.nanmin(depth)), float(np.nanmax(depth))] if finite.any() else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("relief: %d vertices, %d faces from %s depth (%s), camera from %s", len(mesh.vertices),
                len(mesh.triangles), source, scale, focal_note)
    progress(1.0, "relief done")
    return ReliefResult(metrics=metrics, findings=findings, artifacts=artifacts, scale=scale, depth_source=source,
                        camera=camera, depth=depth)
