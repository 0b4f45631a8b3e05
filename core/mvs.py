"""Per-view dense depth on the CPU: a multi-view plane sweep with ZNCC, best-k source aggregation and confidence.

For each reference view the sweep tests fronto-parallel planes, sampled uniformly in inverse depth inside the depth
range the view's sparse points span. Every source view is warped onto each plane with one homography
(``cv2.warpPerspective``), compared with the reference by zero-mean normalised cross-correlation over a small window
(box filters), and the best ``k`` of the source costs are averaged so a surface hidden in some sources still matches
in the others. Winner-take-all picks a plane per pixel, a parabola through the neighbouring costs gives a sub-plane
depth, and the confidence comes from how good and how unique the best match is. Views run two at a time (OpenCV and
numpy release the GIL), which is what two cores give. With a CUDA GPU the per-plane costs are computed by torch there.

Tried and measured against ground truth, not kept: filling unmatched pixels from half- and quarter-resolution sweeps
(a plain sugar box: product coverage 65% -> 77-98%, but mesh F-score at 1% fell 0.88 -> 0.84: coarse depths are
biased the same way in neighbouring views, so fusion keeps them).

Every view is written as ``<out_dir>/<index>_<stem>.npz`` holding float32 ``depth`` (camera z, NaN = unknown),
float32 ``confidence`` in [0, 1], the uint8 RGB ``image`` at the working resolution and the scaled camera; read them
back with :func:`load_depth_view`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core.config import DenseConfig
from core.geometry import PinholeCamera
from core.manifest import Finding
from core.scene import SparseScene
from core.stage import ProgressFn, StageOutput, no_progress

logger = logging.getLogger(__name__)

_WINDOW = 7
"""ZNCC window (pixels) at the working resolution."""
_MIN_TEXTURE_STD = 0.006
"""Reference windows with a grey-level std below this (images in [0, 1]) are too plain to match."""
_MIN_CONFIDENCE = 0.05
"""Depths whose confidence falls below this are stored as NaN."""
_CENTRE_RADIUS = 0.2
"""Coverage verdicts look at a disc this share of the shorter image side around where the cameras converge."""
_LOW_CENTRE_COVERAGE = 0.6
"""Warn when less than this share of that disc gets a depth (on renders: 75-90% for textured products)."""
_BEST_ANGLE_DEG = 10.0
"""Triangulation angle that source selection prefers (wider is more precise, narrower matches more easily)."""
_BEST_K_SHARE = 0.5
"""Share of the source views whose costs are averaged per plane (the best ones: occlusion robustness)."""
_INVALID_COST = 2.0
"""Cost of a source that does not see the pixel on this plane (1 - ZNCC lies in [0, 2])."""
_OUTSIDE = -10.0
"""Value the warp writes outside a source image (grey images lie in [0, 1])."""


@dataclass(frozen=True)
class DepthView:
    """One view's depth map as the later stages read it."""

    name: str
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
    """Where one view's depth map lives and how it was made."""

    name: str
    camera: PinholeCamera
    path: Path
    """The .npz written by this stage (read it with ``load_depth_view``)."""
    source_views: list[int]
    """Indices (into the scene's views) of the source views that were matched."""
    depth_range: tuple[float, float]


@dataclass
class DepthMaps(StageOutput):
    views: list[DepthMapRecord] = field(default_factory=list)


def save_depth_view(view: DepthView, path: Path) -> Path:
    """Write a depth view in the stage's .npz layout (used by this stage and by tests that inject depth maps)."""
    cam = view.camera
    np.savez_compressed(
        path, depth=view.depth.astype(np.float32), confidence=view.confidence.astype(np.float32),
        image=view.image.astype(np.uint8), K=cam.K, R=cam.R, t=cam.t, size=np.array([cam.width, cam.height]),
        name=np.array(view.name))
    return path


def load_depth_view(path: Path) -> DepthView:
    """Read a depth map written by :func:`estimate_depth_maps`."""
    with np.load(path) as data:
        width, height = (int(v) for v in data["size"])
        camera = PinholeCamera(data["K"], data["R"], data["t"], width, height)
        return DepthView(str(data["name"]), camera, data["depth"], data["confidence"], data["image"])


def estimate_depth_maps(scene: SparseScene, out_dir: Path, config: DenseConfig,
                        progress: ProgressFn = no_progress) -> DepthMaps:
    """Estimate a depth and confidence map for every view of ``scene`` and write them to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(scene) < 2:
        return DepthMaps(ok=False, failure="Dense depth needs at least two placed photos; add photos that overlap.")
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
        depth, conf = _sweep(greys[i], cameras[i], [greys[j] for j in sources[i]], [cameras[j] for j in sources[i]],
                             ranges[i], config.num_depth_planes, device)
        stem = Path(scene.image_names[i]).stem
        path = save_depth_view(DepthView(scene.image_names[i], cameras[i], depth, conf, images[i]),
                               out_dir / f"{i:03d}_{stem}.npz")
        valid = np.isfinite(depth)
        centre = _central_disc(cameras[i], focus)
        stats = {"valid_fraction": float(valid.mean()),
                 "centre_valid_fraction": float(valid[centre].mean()) if centre.any() else 0.0,
                 "median_confidence": float(np.median(conf[valid])) if valid.any() else 0.0,
                 "seconds": round(time.perf_counter() - t0, 3)}
        return i, DepthMapRecord(scene.image_names[i], cameras[i], path.resolve(), sources[i], ranges[i]), stats

    records: list[DepthMapRecord | None] = [None] * len(scene)
    per_view: list[dict[str, float]] = [{}] * len(scene)
    # On the CPU two views at a time: OpenCV and numpy release the GIL, so this keeps both cores busy.
    workers = 1 if device else max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (i, record, stats) in enumerate(pool.map(run_view, range(len(scene))), start=1):
            records[i], per_view[i] = record, stats
            progress(done / len(scene), f"depth map {done}/{len(scene)}")
    views = [r for r in records if r is not None]
    fractions = np.array([s["valid_fraction"] for s in per_view])
    centre_fractions = np.array([s["centre_valid_fraction"] for s in per_view])
    metrics = {
        "views": len(scene),
        "views_with_depth": len(views),
        "width": cameras[0].width,
        "height": cameras[0].height,
        "num_depth_planes": config.num_depth_planes,
        "gpu": int(device is not None),
        "valid_fraction": float(fractions.mean()),
        "centre_valid_fraction": float(centre_fractions.mean()),
        "median_confidence": float(np.median([s["median_confidence"] for s in per_view])),
        "seconds": round(time.perf_counter() - start, 2),
        "seconds_per_view": round((time.perf_counter() - start) / len(scene), 3),
        "per_view": {scene.image_names[i]: per_view[i] for i in range(len(scene))},
    }
    findings = _findings(scene.image_names, centre_fractions)
    if not views:
        return DepthMaps(ok=False, metrics=metrics, findings=findings,
                         failure="No photo got a depth map: the photos share too few matched points. Take more "
                                 "photos with more overlap (about 15 degrees between neighbouring shots).")
    logger.info("depth maps: %d views, %.0f%% valid, %.1f s", len(views), 100 * fractions.mean(), metrics["seconds"])
    return DepthMaps(metrics=metrics, findings=findings, artifacts={"depth_maps": out_dir.resolve()}, views=views)


def _gpu_device() -> str | None:
    """'cuda' when torch sees a GPU (the sweep then runs there), else None (OpenCV on the CPU)."""
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


def _findings(names: list[str], centre_fractions: np.ndarray) -> list[Finding]:
    """Verdicts from the coverage in the middle of the photos (where the product is), not of whole photos: a plain
    backdrop rightly gets no depth and says nothing about the product."""
    findings = []
    mean = float(centre_fractions.mean())
    if mean < _LOW_CENTRE_COVERAGE:
        findings.append(Finding(
            "warning", f"Only {mean:.0%} of the product area got a reliable depth; the product may be shiny, "
                       "see-through or plain, or the photos are too far apart.",
            "Use soft, even light, put the product on a patterned mat, and take photos closer together."))
    weak = [names[i] for i in np.flatnonzero(centre_fractions < 0.5 * _LOW_CENTRE_COVERAGE)]
    if weak and len(weak) <= len(names) // 3:  # more than that: the warning above already says it
        findings.append(Finding(
            "info", f"{len(weak)} photo(s) gave little depth: {', '.join(weak[:5])}{' ...' if len(weak) > 5 else ''}.",
            "These photos may be blurred or not centred on the product; retake them if the model has gaps there."))
    return findings


def cameras_focus(cameras: list[PinholeCamera]) -> np.ndarray:
    """Least-squares point nearest to every optical axis (where the cameras converge: the product).

    Solves sum_i (I - d_i d_i^T)(x - c_i) = 0; for parallel axes (a sweep, not an orbit) there is no such point and
    the mean of the points one unit in front of the cameras is returned.
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in cameras:
        d = cam.viewing_direction
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.center
    if np.linalg.cond(A) > 1e8:
        return np.mean([c.center + c.viewing_direction for c in cameras], axis=0)
    return np.linalg.solve(A, b)


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
    """Per view, the ``count`` views that share the most well-triangulated sparse points with it.

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
    """Depth interval of the view's sparse points (robust quantiles) with a margin; None when it sees too few."""
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


def _homography(ref: PinholeCamera, src: PinholeCamera, depth: float) -> np.ndarray:
    """Homography from reference to source pixel indices induced by the plane z = depth in the reference camera."""
    R = src.R @ ref.R.T
    t = src.t - R @ ref.t
    n = np.array([0.0, 0.0, 1.0])
    H = src.K @ (R + np.outer(t, n) / depth) @ np.linalg.inv(ref.K)
    # Array index i sits at continuous coordinate i + 0.5 (geometry.py); OpenCV samples at the index.
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return np.linalg.inv(shift) @ H @ shift


def _box(image: np.ndarray) -> np.ndarray:
    return cv2.boxFilter(image, -1, (_WINDOW, _WINDOW), borderType=cv2.BORDER_REFLECT)


def _sweep(ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray], src_cams: list[PinholeCamera],
           depth_range: tuple[float, float], num_planes: int, device: str | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Plane sweep for one reference view; returns (depth with NaN, confidence).

    The per-plane costs come from OpenCV on the CPU, or from torch on ``device`` (a GPU) when given; the winner
    selection is shared.
    """
    h, w = ref.shape
    inv_depths = np.linspace(1.0 / depth_range[0], 1.0 / depth_range[1], num_planes)
    k = max(1, round(_BEST_K_SHARE * len(srcs)))
    costs = _plane_costs_torch if device else _plane_costs_opencv
    wta = _StreamingWinner(h, w)
    for cost in costs(ref, ref_cam, srcs, src_cams, inv_depths, k, device):
        wta.add(cost)
    std_r = np.sqrt(np.maximum(_box(ref * ref) - _box(ref) ** 2, 0))
    return wta.result(inv_depths, std_r > _MIN_TEXTURE_STD)


def _plane_costs_opencv(ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray], src_cams: list[PinholeCamera],
                        inv_depths: np.ndarray, k: int, device: str | None = None) -> Iterator[np.ndarray]:
    """Per plane: the mean of the k best source costs (1 - ZNCC), each source warped by the plane's homography."""
    h, w = ref.shape
    mu_r = _box(ref)
    inv_std_r = 1.0 / np.maximum(np.sqrt(np.maximum(_box(ref * ref) - mu_r * mu_r, 0)), _MIN_TEXTURE_STD)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for inv_d in inv_depths:
        best = [np.full((h, w), _INVALID_COST, dtype=np.float32) for _ in range(k)]
        for src, cam in zip(srcs, src_cams, strict=True):
            # Outside the source the warp returns a sentinel: that source does not see the pixel on this plane.
            warped = cv2.warpPerspective(src, _homography(ref_cam, cam, 1.0 / inv_d), (w, h), flags=flags,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=_OUTSIDE)
            mu_s = _box(warped)
            var_s = np.maximum(_box(warped * warped) - mu_s * mu_s, 0)
            cov = _box(ref * warped) - mu_r * mu_s
            cost = 1.0 - cov * inv_std_r / (np.sqrt(var_s) + 1e-4)
            cost[warped < 0] = _INVALID_COST
            for i in range(k):  # keep the k smallest costs, sorted (insertion; k and the source count are small)
                lower = np.minimum(best[i], cost)
                cost = np.maximum(best[i], cost)
                best[i] = lower
        yield sum(best) / k


def _plane_costs_torch(ref: np.ndarray, ref_cam: PinholeCamera, srcs: list[np.ndarray], src_cams: list[PinholeCamera],
                       inv_depths: np.ndarray, k: int, device: str | None = None) -> Iterator[np.ndarray]:
    """The same costs as ``_plane_costs_opencv`` computed with torch (grid_sample + avg_pool) on ``device``."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device or "cpu")
    h, w = ref.shape

    def box(x: torch.Tensor) -> torch.Tensor:
        # Separable (rows then columns): several times faster than one square pooling; the normalisation by the
        # in-image count is exact because the window is a product of the two.
        x = F.avg_pool2d(x, (1, _WINDOW), stride=1, padding=(0, _WINDOW // 2), count_include_pad=False)
        return F.avg_pool2d(x, (_WINDOW, 1), stride=1, padding=(_WINDOW // 2, 0), count_include_pad=False)

    with torch.no_grad():
        r = torch.from_numpy(ref).to(dev)[None, None]
        mu_r = box(r)
        inv_std_r = 1.0 / (box(r * r) - mu_r * mu_r).clamp_min(0).sqrt().clamp_min(_MIN_TEXTURE_STD)
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=dev)])
        sources = [torch.from_numpy(s).to(dev)[None, None] for s in srcs]
        for inv_d in inv_depths:
            costs = []
            for src, cam in zip(sources, src_cams, strict=True):
                H = torch.from_numpy(_homography(ref_cam, cam, 1.0 / inv_d)).to(dev, torch.float32)
                mapped = H @ pix
                x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]  # source pixel indices
                hs, ws = src.shape[-2:]
                inside = ((x >= 0) & (x <= ws - 1) & (y >= 0) & (y <= hs - 1) & (mapped[2] > 0)).reshape(1, 1, h, w)
                # grid_sample (align_corners=False) wants the continuous coordinate index + 0.5 scaled to [-1, 1].
                grid = torch.stack([(2 * x + 1) / ws - 1, (2 * y + 1) / hs - 1], dim=-1).reshape(1, h, w, 2)
                warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
                mu_s = box(warped)
                var_s = (box(warped * warped) - mu_s * mu_s).clamp_min(0)
                cov = box(r * warped) - mu_r * mu_s
                cost = 1.0 - cov * inv_std_r / (var_s.sqrt() + 1e-4)
                costs.append(torch.where(inside, cost, torch.full_like(cost, _INVALID_COST)))
            best = torch.topk(torch.cat(costs), k, dim=0, largest=False).values.mean(0)
            yield best[0].cpu().numpy()


class _StreamingWinner:
    """Winner-take-all over planes in sweep order without keeping the cost volume (memory stays O(pixels)).

    Keeps the best cost and plane, the costs on either side of the best (for the parabola) and the best cost more
    than two planes away from the winner (for uniqueness). The last one is exact except when the winner moves by one
    or two planes, where an older runner-up may be dropped; a confidence measure does not need more.
    """

    def __init__(self, h: int, w: int) -> None:
        self.plane = 0
        self.best = np.full((h, w), np.inf, dtype=np.float32)
        self.best_plane = np.zeros((h, w), dtype=np.int32)
        self.before = np.full((h, w), np.inf, dtype=np.float32)
        self.after = np.full((h, w), np.inf, dtype=np.float32)
        self.second = np.full((h, w), np.inf, dtype=np.float32)
        self.previous = np.full((h, w), np.inf, dtype=np.float32)

    def add(self, cost: np.ndarray) -> None:
        p = self.plane
        # np.copyto(..., where=) is several times faster than boolean-mask indexing here.
        np.copyto(self.after, cost, where=self.best_plane == p - 1)
        far = np.abs(self.best_plane - p) > 2
        better = cost < self.best
        # The old winner becomes the runner-up when the new one is far from it; otherwise a far plane may be.
        candidate = np.where(better, self.best, cost)
        np.minimum(self.second, candidate, out=self.second, where=far)
        np.copyto(self.best, cost, where=better)
        np.copyto(self.best_plane, p, where=better)
        np.copyto(self.before, self.previous, where=better)
        np.copyto(self.after, np.inf, where=better)
        self.previous = cost
        self.plane += 1

    def result(self, inv_depths: np.ndarray, textured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parabola refinement in inverse depth; confidence from match quality and uniqueness."""
        num_planes = len(inv_depths)
        c0, cm, cp = self.best, self.before, self.after
        interior = (self.best_plane > 0) & (self.best_plane < num_planes - 1)
        denom = cm - 2 * c0 + cp
        ok = interior & np.isfinite(denom) & (denom > 1e-6)
        offset = np.zeros_like(c0)
        offset[ok] = np.clip(0.5 * (cm[ok] - cp[ok]) / denom[ok], -0.5, 0.5)
        step = inv_depths[1] - inv_depths[0] if num_planes > 1 else 0.0
        depth = (1.0 / (inv_depths[self.best_plane] + offset * step)).astype(np.float32)
        quality = np.clip(1.0 - c0, 0, 1)  # mean ZNCC of the best sources
        margin = np.clip((np.minimum(self.second, _INVALID_COST) - c0) / 0.5, 0, 1)
        confidence = (quality * margin).astype(np.float32)
        confidence[~textured | (c0 >= _INVALID_COST - 1e-3)] = 0.0
        # Winners at the ends of the range are usually outside it (or wrong): not trusted.
        confidence[~interior] = 0.0
        depth[confidence < _MIN_CONFIDENCE] = np.nan
        return depth, confidence
