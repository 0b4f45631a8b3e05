"""Depth stage: a dense depth and confidence map for every placed photo (multi-view stereo on the CPU).

Per photo the stage picks source photos (shared sparse points, triangulation angle), a depth range (the photo's
sparse points) and runs the plane sweep (``sweep.py``). Photos run two at a time (OpenCV and numpy release the GIL),
which is what two cores give.

Every photo's map is written as ``RUN/depth/maps/<stem>.npz`` holding float32 ``depth`` (camera z, NaN = unknown),
float32 ``confidence`` in [0, 1], the uint8 RGB ``image`` at the depth map's resolution, the camera and the photo's
identity; read it back with :func:`load_depth_map`.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core import advice
from core.artifacts import DEPTH_MAPS
from core.config import DepthConfig
from core.geometry import PinholeCamera, cameras_focus
from core.photos import Photo
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.stages import StageOutput
from core.stages.depth.sweep import plane_sweep

logger = logging.getLogger(__name__)

_CENTRE_RADIUS = 0.2
"""Coverage verdicts look at a disc this share of the shorter image side around where the cameras converge."""
_BEST_ANGLE_DEG = 10.0
"""Triangulation angle that source selection prefers (wider is more precise, narrower matches more easily)."""


@dataclass(frozen=True)
class DepthMap:
    """One photo's depth map as the later stages read it."""

    photo: Photo
    camera: PinholeCamera
    """The camera at the depth map's resolution."""
    depth: np.ndarray
    """(H, W) float32 camera z; NaN where unknown."""
    confidence: np.ndarray
    """(H, W) float32 in [0, 1]."""
    image: np.ndarray
    """(H, W, 3) uint8 RGB at the depth map's resolution."""


@dataclass
class DepthMapRecord:
    """Where one photo's depth map lives and how it was made."""

    photo: Photo
    camera: PinholeCamera
    path: Path
    """The .npz file (read it with ``load_depth_map``)."""
    source_views: list[int]
    """Indices (into the scene's photos) of the source photos that were matched."""
    depth_range: tuple[float, float]


@dataclass
class DepthMaps(StageOutput):
    maps: list[DepthMapRecord] = field(default_factory=list)


def save_depth_map(depth_map: DepthMap, path: Path) -> Path:
    """Write a depth map in the stage's .npz layout (used by the depth stages and by tests that inject maps)."""
    cam, photo = depth_map.camera, depth_map.photo
    np.savez_compressed(
        path, depth=depth_map.depth.astype(np.float32), confidence=depth_map.confidence.astype(np.float32),
        image=depth_map.image.astype(np.uint8), K=cam.K, R=cam.R, t=cam.t, size=np.array([cam.width, cam.height]),
        photo_index=np.array(photo.index), photo_name=np.array(photo.name), photo_working=np.array(photo.working))
    return path


def load_depth_map(path: Path) -> DepthMap:
    """Read a depth map written by :func:`save_depth_map`."""
    with np.load(path) as data:
        width, height = (int(v) for v in data["size"])
        camera = PinholeCamera(data["K"], data["R"], data["t"], width, height)
        photo = Photo(int(data["photo_index"]), str(data["photo_name"]), str(data["photo_working"]))
        return DepthMap(photo, camera, data["depth"], data["confidence"], data["image"])


def run_depth(scene: SparseScene, run_dir: Path, config: DepthConfig,
              progress: StageProgress = no_progress) -> DepthMaps:
    """Estimate a depth and confidence map for every photo of ``scene``; writes ``RUN/depth/maps/``."""
    out_dir = DEPTH_MAPS.path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(scene) < 2:
        return DepthMaps(ok=False, failure=advice.DEPTH_NO_PHOTOS)
    start = time.perf_counter()
    progress(0.0, "loading photos")
    cameras, images, greys = _load_views(scene, config.max_side)
    sources = _select_sources(scene, config.num_source_views)
    ranges = [_depth_range(scene, i) for i in range(len(scene))]
    device = _gpu_device()
    focus = cameras_focus(scene.cameras)
    logger.info("plane sweep on %s", device or "the CPU (OpenCV)")

    def run_view(i: int) -> tuple[int, DepthMapRecord | None, dict[str, float]]:
        t0 = time.perf_counter()
        if not sources[i] or ranges[i] is None:
            return i, None, {"valid_fraction": 0.0, "centre_valid_fraction": 0.0, "median_confidence": 0.0,
                             "seconds": 0.0}
        depth, conf = plane_sweep(greys[i], cameras[i], [greys[j] for j in sources[i]],
                                  [cameras[j] for j in sources[i]], ranges[i], config.num_depth_planes, device)
        photo = scene.photos[i]
        path = save_depth_map(DepthMap(photo, cameras[i], depth, conf, images[i]), out_dir / f"{photo.stem}.npz")
        valid = np.isfinite(depth)
        centre = _central_disc(cameras[i], focus)
        stats = {"valid_fraction": float(valid.mean()),
                 "centre_valid_fraction": float(valid[centre].mean()) if centre.any() else 0.0,
                 "median_confidence": float(np.median(conf[valid])) if valid.any() else 0.0,
                 "seconds": round(time.perf_counter() - t0, 3)}
        return i, DepthMapRecord(photo, cameras[i], path.resolve(), sources[i], ranges[i]), stats

    records: list[DepthMapRecord | None] = [None] * len(scene)
    per_photo: list[dict[str, float]] = [{}] * len(scene)
    # On the CPU two photos at a time: OpenCV and numpy release the GIL, so this keeps both cores busy.
    workers = 1 if device else max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (i, record, stats) in enumerate(pool.map(run_view, range(len(scene))), start=1):
            records[i], per_photo[i] = record, stats
            progress(done / len(scene), f"depth map {done}/{len(scene)}")
    maps = [r for r in records if r is not None]
    fractions = np.array([s["valid_fraction"] for s in per_photo])
    centre_fractions = [s["centre_valid_fraction"] for s in per_photo]
    metrics = {
        "photos": len(scene),
        "photos_with_depth": len(maps),
        "width": cameras[0].width,
        "height": cameras[0].height,
        "num_depth_planes": config.num_depth_planes,
        "gpu": int(device is not None),
        "valid_fraction": float(fractions.mean()),
        "centre_valid_fraction": float(np.mean(centre_fractions)),
        "median_confidence": float(np.median([s["median_confidence"] for s in per_photo])),
        "seconds": round(time.perf_counter() - start, 2),
        "seconds_per_photo": round((time.perf_counter() - start) / len(scene), 3),
        "per_photo": {scene.photos[i].name: per_photo[i] for i in range(len(scene))},
    }
    findings = advice.depth_findings(scene.names, centre_fractions)
    if not maps:
        return DepthMaps(ok=False, metrics=metrics, findings=findings, failure=advice.DEPTH_NOTHING)
    logger.info("depth maps: %d photos, %.0f%% valid, %.1f s", len(maps), 100 * fractions.mean(), metrics["seconds"])
    return DepthMaps(metrics=metrics, findings=findings, artifacts=[DEPTH_MAPS], maps=maps)


def _gpu_device() -> str | None:
    """'cuda' when torch sees a GPU (the sweep then runs there), else None (OpenCV on the CPU)."""
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


def _central_disc(camera: PinholeCamera, focus: np.ndarray) -> np.ndarray:
    """Pixels within a fifth of the shorter image side of where the focus projects (the product's middle)."""
    uv, z = camera.project(focus[None])
    if z[0] <= 0:
        return np.zeros((camera.height, camera.width), dtype=bool)
    v, u = np.mgrid[0:camera.height, 0:camera.width] + 0.5
    radius = _CENTRE_RADIUS * min(camera.width, camera.height)
    return (u - uv[0, 0]) ** 2 + (v - uv[0, 1]) ** 2 < radius**2


def _load_views(scene: SparseScene, max_side: int) -> tuple[list[PinholeCamera], list[np.ndarray], list[np.ndarray]]:
    """Cameras, RGB images and grey float images at the working resolution (only ever downscaled)."""
    cameras, images, greys = [], [], []
    for path, camera in zip(scene.image_paths, scene.cameras, strict=True):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        if bgr.shape[:2] != (camera.height, camera.width):
            raise ValueError(f"{path} is {bgr.shape[1]}x{bgr.shape[0]}, its camera says {camera.width}x{camera.height}")
        factor = min(1.0, max_side / max(camera.width, camera.height))
        cam = camera.scaled(factor) if factor < 1.0 else camera
        if factor < 1.0:
            bgr = cv2.resize(bgr, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        cameras.append(cam)
        images.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        greys.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0)
    return cameras, images, greys


def _select_sources(scene: SparseScene, count: int) -> list[list[int]]:
    """Per photo, the ``count`` photos that share the most well-triangulated sparse points with it.

    Each shared point scores by its triangulation angle: a Gaussian around ``_BEST_ANGLE_DEG``, steep below (tiny
    baselines give imprecise depth) and gentle above (wide baselines still help until perspective distorts the window).
    """
    n = len(scene)
    centers = np.array([c.center for c in scene.cameras])
    members = [set(v.tolist()) for v in scene.visibility]
    scores = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            shared = np.fromiter(members[i] & members[j], dtype=np.int64)
            if len(shared) == 0:
                continue
            p = scene.points[shared]
            a = centers[i] - p
            b = centers[j] - p
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
            sigma = np.where(angle < _BEST_ANGLE_DEG, 4.0, 15.0)
            weight = np.exp(-((angle - _BEST_ANGLE_DEG) ** 2) / (2 * sigma**2))
            scores[i, j] = scores[j, i] = weight.sum()
    sources = []
    for i in range(n):
        order = [j for j in np.argsort(-scores[i]) if scores[i, j] > 1.0]
        sources.append([int(j) for j in order[:count]])
    return sources


def _depth_range(scene: SparseScene, index: int) -> tuple[float, float] | None:
    """Depth interval of the photo's sparse points (robust quantiles) with a margin; None when it sees too few."""
    camera = scene.cameras[index]
    idx = scene.visibility[index]
    z = camera.world_to_cam(scene.points[idx])[:, 2] if len(idx) else np.empty(0)
    z = z[z > 0]
    if len(z) < 10:
        # Too few observations: fall back to every sparse point in front of the camera.
        z = camera.world_to_cam(scene.points)[:, 2]
        z = z[z > 0]
        if len(z) < 10:
            return None
    near, far = np.quantile(z, [0.01, 0.99])
    # Margins: sparse points rarely reach the nearest edge of the product or the farthest visible table.
    return float(near * 0.8), float(far * 1.25)
