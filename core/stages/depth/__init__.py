"""Depth stage: a dense depth and confidence map for every placed photo (multi-view stereo on the CPU).

Per photo the stage picks source photos (shared sparse points, triangulation angle), a depth range (the photo's
sparse points) and runs ``config.method``:

* ``"patchmatch"`` (``patchmatch.py``): a depth and a normal per pixel (slanted windows), initialised from a
  half-resolution plane sweep, refined by checkerboard propagation at half and full resolution, then once more with
  the other photos' maps (geometric consistency). Only the product's pixels (its dilated mask) are searched when
  masks are given. Photos run one at a time, torch using the run's cores.
* ``"sweep"`` (``sweep.py``): fronto-parallel planes; photos run two at a time (OpenCV and numpy release the GIL).

Every photo's map is written as ``RUN/depth/maps/<stem>.npz`` holding float32 ``depth`` (camera z, NaN = unknown),
float32 ``confidence`` in [0, 1], the uint8 RGB ``image`` at the depth map's resolution, the camera, the photo's
identity and, from PatchMatch, float32 ``normal`` (H, W, 3; camera frame, facing the camera; NaN = unknown); read it
back with :func:`load_depth_map`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core import advice
from core.artifacts import DEPTH_MAPS
from core.config import DepthConfig, cpu_budget
from core.geometry import PinholeCamera, cameras_focus
from core.photos import Photo
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.stages import StageOutput
from core.stages.depth.sweep import plane_sweep

logger = logging.getLogger(__name__)

_CENTRE_RADIUS = 0.2
"""Coverage verdicts look at a disc this share of the shorter image side around where the cameras converge."""
_MIN_MASK_SHARE = 0.005
"""A mask covering less of the photo than this is taken as a segmentation failure: the whole photo is searched."""
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
    normal: np.ndarray | None = None
    """(H, W, 3) float32 camera-frame unit normals facing the camera (NaN unknown); None when the method gives none."""


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


def save_depth_map(depth_map: DepthMap, path: Path, source_views: list[int] | None = None,
                   depth_range: tuple[float, float] | None = None) -> Path:
    """Write a depth map in the stage's .npz layout (used by the depth stages and by tests that inject maps).

    ``source_views`` and ``depth_range`` (how the map was made) are kept so ``load_depth_record`` can rebuild the
    stage's record from the file alone when a run resumes.
    """
    cam, photo = depth_map.camera, depth_map.photo
    made = {} if depth_range is None else {"source_views": np.array(source_views or [], dtype=np.int64),
                                           "depth_range": np.array(depth_range, dtype=np.float64)}
    if depth_map.normal is not None:
        made["normal"] = depth_map.normal.astype(np.float32)
    np.savez_compressed(
        path, depth=depth_map.depth.astype(np.float32), confidence=depth_map.confidence.astype(np.float32),
        image=depth_map.image.astype(np.uint8), K=cam.K, R=cam.R, t=cam.t, size=np.array([cam.width, cam.height]),
        photo_index=np.array(photo.index), photo_name=np.array(photo.name), photo_working=np.array(photo.working),
        **made)
    return path


def load_depth_map(path: Path) -> DepthMap:
    """Read a depth map written by :func:`save_depth_map`."""
    with np.load(path) as data:
        width, height = (int(v) for v in data["size"])
        camera = PinholeCamera(data["K"], data["R"], data["t"], width, height)
        photo = Photo(int(data["photo_index"]), str(data["photo_name"]), str(data["photo_working"]))
        normal = data["normal"] if "normal" in data.files else None  # older files and the sweep have none
        return DepthMap(photo, camera, data["depth"], data["confidence"], data["image"], normal)


def load_depth_record(path: Path) -> DepthMapRecord:
    """The stage's record of a depth map file written with ``source_views`` and ``depth_range`` (a resumed run)."""
    with np.load(path) as data:
        if "depth_range" not in data.files:
            raise ValueError(f"{path.name} does not say how it was made (written by an older studio)")
        width, height = (int(v) for v in data["size"])
        camera = PinholeCamera(data["K"], data["R"], data["t"], width, height)
        photo = Photo(int(data["photo_index"]), str(data["photo_name"]), str(data["photo_working"]))
        low, high = (float(v) for v in data["depth_range"])
        return DepthMapRecord(photo, camera, Path(path).resolve(), [int(v) for v in data["source_views"]],
                              (low, high))


def run_depth(scene: SparseScene, run_dir: Path, config: DepthConfig,
              progress: StageProgress = no_progress, masks: list[np.ndarray | None] | None = None) -> DepthMaps:
    """Estimate a depth and confidence map for every photo of ``scene``; writes ``RUN/depth/maps/``.

    ``masks`` (per photo of the scene, at its undistorted size; None = no mask) limit PatchMatch to the product's
    pixels (dilated by ``config.mask_margin``): the rest of the photo gets no depth.
    """
    out_dir = DEPTH_MAPS.path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(scene) < 2:
        return DepthMaps(ok=False, failure=advice.DEPTH_NO_PHOTOS)
    if config.method not in ("patchmatch", "sweep"):
        raise ValueError(f"unknown depth method {config.method!r}; choose 'patchmatch' or 'sweep'")
    start = time.perf_counter()
    progress(0.0, "loading photos")
    cameras, images, greys = _load_views(scene, config.max_side)
    sources = _select_sources(scene, config.num_source_views)
    ranges = [_depth_range(scene, i) for i in range(len(scene))]
    device = _gpu_device()
    focus = cameras_focus(scene.cameras)
    records: list[DepthMapRecord | None] = [None] * len(scene)
    empty = {"valid_fraction": 0.0, "centre_valid_fraction": 0.0, "median_confidence": 0.0, "seconds": 0.0}
    per_photo: list[dict[str, float]] = [dict(empty) for _ in range(len(scene))]

    def finish_view(i: int, depth: np.ndarray, conf: np.ndarray, normal: np.ndarray | None, seconds: float) -> None:
        photo = scene.photos[i]
        path = save_depth_map(DepthMap(photo, cameras[i], depth, conf, images[i], normal),
                              out_dir / f"{photo.stem}.npz", sources[i], ranges[i])
        valid = np.isfinite(depth)
        centre = _central_disc(cameras[i], focus)
        per_photo[i] = {"valid_fraction": float(valid.mean()),
                        "centre_valid_fraction": float(valid[centre].mean()) if centre.any() else 0.0,
                        "median_confidence": float(np.median(conf[valid])) if valid.any() else 0.0,
                        "seconds": round(seconds, 3)}
        records[i] = DepthMapRecord(photo, cameras[i], path.resolve(), sources[i], ranges[i])

    todo = [i for i in range(len(scene)) if sources[i] and ranges[i] is not None]
    if config.method == "patchmatch":
        logger.info("PatchMatch on %s", device or "the CPU (torch)")
        active = [_active_pixels(None if masks is None else masks[i], cameras[i], config.mask_margin)
                  for i in range(len(scene))]
        _patchmatch_views(todo, cameras, greys, sources, ranges, active, config, device, progress, finish_view)
    else:
        logger.info("plane sweep on %s", device or "the CPU (OpenCV)")

        def run_view(i: int) -> None:
            t0 = time.perf_counter()
            depth, conf = plane_sweep(greys[i], cameras[i], [greys[j] for j in sources[i]],
                                      [cameras[j] for j in sources[i]], ranges[i], config.num_depth_planes, device)
            finish_view(i, depth, conf, None, time.perf_counter() - t0)

        # On the CPU two photos at a time: OpenCV and numpy release the GIL, so this keeps both cores busy (within
        # the cores the run is given, not the machine's).
        workers = 1 if device else max(1, min(2, cpu_budget()))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done, _ in enumerate(pool.map(run_view, todo), start=1):
                progress(done / len(todo), f"depth map {done}/{len(todo)}")
    maps = [r for r in records if r is not None]
    fractions = np.array([s["valid_fraction"] for s in per_photo])
    centre_fractions = [s["centre_valid_fraction"] for s in per_photo]
    metrics = {
        "photos": len(scene),
        "photos_with_depth": len(maps),
        "method": config.method,
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


def _patchmatch_views(todo: list[int], cameras: list[PinholeCamera], greys: list[np.ndarray],
                      sources: list[list[int]], ranges: list, active: list[np.ndarray], config: DepthConfig,
                      device: str | None, progress: StageProgress, finish_view) -> None:
    """PatchMatch on every photo in ``todo``: the photometric pass on all, then the geometric pass with their maps."""
    import torch

    from core.stages.depth import patchmatch as pm

    settings = pm.PatchMatchSettings(config.coarse_iterations, config.iterations, config.geometric_iterations,
                                     config.num_depth_planes, config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_budget())  # the run's cores, not the machine's
    steps = len(todo) * (2 if config.geometric_iterations > 0 else 1)
    seconds: dict[int, float] = {}
    plane_maps: dict[int, pm.PlaneMap] = {}
    # Only pixels that can keep a depth (``finish``) are searched: a plain product's faces cost nothing (plain box
    # turntable, 6 photos: 170 -> 105 CPU s, the same depths; propagation crosses what is left of the mask).
    textured = {i: pm.textured(greys[i]) for i in todo}
    try:
        for done, i in enumerate(todo, start=1):
            t0 = time.perf_counter()
            plane_maps[i] = pm.patchmatch_photometric(
                greys[i], cameras[i], [greys[j] for j in sources[i]], [cameras[j] for j in sources[i]], ranges[i],
                active[i] & textured[i], settings, device or "cpu", seed=config.seed + i)
            seconds[i] = time.perf_counter() - t0
            progress(done / steps, f"depth map {done}/{len(todo)}")
        finished = {i: pm.finish(plane_maps[i], textured[i]) for i in todo}
        if config.geometric_iterations > 0:
            geometric: dict[int, pm.PlaneMap] = {}
            for done, i in enumerate(todo, start=len(todo) + 1):
                t0 = time.perf_counter()
                src_depths = [finished[j][0] if j in finished else np.full(greys[j].shape, np.nan, np.float32)
                              for j in sources[i]]
                geometric[i] = pm.patchmatch_geometric(
                    plane_maps[i], greys[i], cameras[i], [greys[j] for j in sources[i]],
                    [cameras[j] for j in sources[i]], src_depths, ranges[i], settings, device or "cpu",
                    seed=config.seed + i)
                seconds[i] += time.perf_counter() - t0
                progress(done / steps, f"consistency {done - len(todo)}/{len(todo)}")
            finished = {i: pm.finish(geometric[i], textured[i]) for i in todo}
    finally:
        torch.set_num_threads(threads)
    for i in todo:
        depth, normal, conf = finished[i]
        finish_view(i, depth, conf, normal, seconds[i])


def _active_pixels(mask: np.ndarray | None, camera: PinholeCamera, margin: float) -> np.ndarray:
    """The pixels PatchMatch searches: the product mask at the camera's size, dilated by ``margin`` of the longer
    side; every pixel without a mask (or when the mask is all but empty)."""
    everything = np.ones((camera.height, camera.width), bool)
    if mask is None:
        return everything
    small = cv2.resize(mask.astype(np.uint8), (camera.width, camera.height), interpolation=cv2.INTER_NEAREST)
    if small.mean() < _MIN_MASK_SHARE:
        return everything
    radius = max(1, round(margin * max(camera.width, camera.height)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(small, kernel) > 0


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
