"""Evaluation maths: camera poses and surfaces against ground truth.

* Poses: the SfM cameras are matched to ground truth by image name and aligned with a 7-DoF similarity fitted to
  the camera centres (core.geometry.compare_poses); rotation errors in degrees, centre errors in ground-truth units.
* Surfaces: reconstructed points (a dense cloud, or points sampled on a mesh) are moved into the ground-truth frame
  with that similarity and cropped to the ground-truth object's bounding box enlarged by 5 %. Then, with tau a
  fraction of the box diagonal:
  precision = share of reconstructed points within tau of the true surface (exact point-to-mesh distance),
  recall = share of true-surface samples within tau of a reconstructed point,
  F-score = their harmonic mean; accuracy = mean reconstructed->truth distance, completeness = mean
  truth->reconstructed distance (metres). The true-surface samples are restricted to the part some ground-truth
  camera sees (the base a product stands on cannot be reconstructed and is not counted against it).
* Camera files of public photo sets: Middlebury ``*_par.txt`` and Strecha ``*.camera``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.geometry import PinholeCamera, Similarity, compare_poses

DEFAULT_TAUS: tuple[float, ...] = (0.005, 0.01)
"""Distance thresholds as fractions of the ground-truth bounding-box diagonal."""
CORRECT_ROTATION_DEG = 5.0
"""A placed photo is *correctly* placed when its rotation error after alignment is below this (issue 10: correct
solutions of the benchmark captures stay under 1-2°; flipped or folded cameras are 20-180° off)."""


@dataclass
class PoseReport:
    """How well SfM placed the photos."""

    num_images: int
    """Photos with ground truth."""
    num_registered: int
    """Of those, photos SfM placed."""
    rotation_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per registered photo, rotation error after alignment."""
    center_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per registered photo, camera centre error after alignment (ground-truth units)."""
    scale_reference: float = 1.0
    """The object size the relative centre error is divided by (bounding-box diagonal)."""
    alignment: Similarity | None = None
    """SfM frame -> ground-truth frame; None when fewer than 3 photos were placed."""

    @property
    def median_rotation_deg(self) -> float:
        return float(np.median(self.rotation_deg)) if len(self.rotation_deg) else float("nan")

    @property
    def num_correct(self) -> int:
        """Placed photos whose rotation error is below CORRECT_ROTATION_DEG (a flipped camera is placed, not right)."""
        return int(np.sum(self.rotation_deg < CORRECT_ROTATION_DEG))

    @property
    def median_center_error(self) -> float:
        return float(np.median(self.center_error)) if len(self.center_error) else float("nan")

    @property
    def median_center_error_rel(self) -> float:
        """Median centre error as a fraction of the object size."""
        return self.median_center_error / self.scale_reference

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "num_registered": self.num_registered,
            "num_correct": self.num_correct,
            "median_rotation_deg": self.median_rotation_deg,
            "max_rotation_deg": float(np.max(self.rotation_deg)) if len(self.rotation_deg) else float("nan"),
            "median_center_error": self.median_center_error,
            "median_center_error_rel": self.median_center_error_rel,
        }

    def summary(self) -> str:
        return (f"registered {self.num_registered}/{self.num_images} ({self.num_correct} within "
                f"{CORRECT_ROTATION_DEG:.0f} deg), median rotation error "
                f"{self.median_rotation_deg:.3f} deg, median centre error {self.median_center_error:.5f} "
                f"({100 * self.median_center_error_rel:.3f}% of the object size)")


def evaluate_poses(estimated: dict[str, PinholeCamera], truth: dict[str, PinholeCamera],
                   scale_reference: float = 1.0) -> PoseReport:
    """Compare SfM cameras with ground truth, matched by image file name."""
    names = [n for n in truth if n in estimated]
    report = PoseReport(num_images=len(truth), num_registered=len(names), scale_reference=scale_reference)
    if len(names) < 3:
        return report
    errors = compare_poses([estimated[n] for n in names], [truth[n] for n in names])
    report.rotation_deg = errors.rotation_deg
    report.center_error = errors.center_error
    report.alignment = errors.alignment
    return report


# --------------------------------------------------------------------------------------------------------------
# Surfaces
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SurfaceReport:
    """Reconstructed surface against the true one, in the ground-truth frame (metres for synthetic captures)."""

    num_points: int
    """Reconstructed points inside the enlarged ground-truth box."""
    taus: list[float]
    """Absolute thresholds (same units as the ground truth)."""
    precision: list[float]
    recall: list[float]
    fscore: list[float]
    accuracy: float
    """Mean distance reconstructed -> true surface."""
    completeness: float
    """Mean distance true surface -> reconstructed points."""

    def to_dict(self) -> dict[str, Any]:
        return {"num_points": self.num_points, "taus": self.taus, "precision": self.precision,
                "recall": self.recall, "fscore": self.fscore, "accuracy": self.accuracy,
                "completeness": self.completeness}


def crop_to_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, enlarge: float = 0.05) -> np.ndarray:
    """Points inside the box [lo, hi] grown by ``enlarge`` of its size (half on each side)."""
    margin = 0.5 * enlarge * (hi - lo)
    inside = np.all((points >= lo - margin) & (points <= hi + margin), axis=1)
    return points[inside]


def sample_mesh(vertices: np.ndarray, triangles: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points uniformly distributed (by area) on a triangle mesh."""
    rng = np.random.default_rng(seed)
    tri = vertices[triangles]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3))
    pick = rng.choice(len(tri), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    a, b, c = 1 - s, s * (1 - r2), s * r2
    chosen = tri[pick]
    return a[:, None] * chosen[:, 0] + b[:, None] * chosen[:, 1] + c[:, None] * chosen[:, 2]


def visible_points(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                   cameras: list[PinholeCamera], rel_tolerance: float = 1e-3) -> np.ndarray:
    """Boolean mask of the points (on the mesh) that at least one camera sees: inside its image, not occluded."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    seen = np.zeros(len(points), bool)
    for cam in cameras:
        uv, z = cam.project(points)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        idx = np.flatnonzero(inside & ~seen)
        if len(idx) == 0:
            continue
        direction = points[idx] - cam.center
        dist = np.linalg.norm(direction, axis=1)
        rays = np.concatenate([np.broadcast_to(cam.center, direction.shape), direction / dist[:, None]], 1)
        t_hit = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        seen[idx[t_hit >= dist * (1 - rel_tolerance) - 1e-6]] = True
    return seen


def point_to_mesh_distance(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Exact unsigned distance from each point to the mesh surface."""
    import open3d as o3d

    if len(points) == 0:
        return np.zeros(0)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy().astype(np.float64)


def nearest_distance(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each query to its nearest point (inf when there are no points)."""
    import open3d as o3d

    if len(points) == 0:
        return np.full(len(queries), np.inf)
    if len(queries) == 0:
        return np.zeros(0)
    q = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(queries.astype(np.float64)))
    p = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    return np.asarray(q.compute_point_cloud_distance(p))


def surface_metrics(reconstructed: np.ndarray, gt_samples: np.ndarray, rec_to_gt: np.ndarray,
                    taus: list[float]) -> SurfaceReport:
    """Scores from all reconstructed points, true-surface samples and rec->truth distances of (a subset of) them."""
    gt_to_rec = nearest_distance(gt_samples, reconstructed)
    precision = [float(np.mean(rec_to_gt < tau)) if len(rec_to_gt) else 0.0 for tau in taus]
    recall = [float(np.mean(gt_to_rec < tau)) if len(gt_to_rec) else 0.0 for tau in taus]
    fscore = [2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precision, recall, strict=True)]
    return SurfaceReport(
        num_points=len(reconstructed), taus=list(taus), precision=precision, recall=recall, fscore=fscore,
        accuracy=float(np.mean(rec_to_gt)) if len(rec_to_gt) else float("nan"),
        completeness=float(np.mean(gt_to_rec)) if len(gt_to_rec) else float("inf"))


@dataclass
class GroundTruthSurface:
    """The true object surface prepared once for several evaluations."""

    vertices: np.ndarray
    triangles: np.ndarray
    samples: np.ndarray
    """Points on the visible part of the surface."""
    bbox_min: np.ndarray
    bbox_max: np.ndarray

    @property
    def diagonal(self) -> float:
        return float(np.linalg.norm(self.bbox_max - self.bbox_min))

    @classmethod
    def from_mesh(cls, mesh_path: Path, cameras: list[PinholeCamera] | None = None, num_samples: int = 100_000,
                  seed: int = 0) -> GroundTruthSurface:
        import open3d as o3d

        mesh = o3d.io.read_triangle_mesh(str(mesh_path))
        vertices, triangles = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        return cls.from_arrays(vertices, triangles, cameras, num_samples, seed)

    @classmethod
    def from_arrays(cls, vertices: np.ndarray, triangles: np.ndarray, cameras: list[PinholeCamera] | None = None,
                    num_samples: int = 100_000, seed: int = 0) -> GroundTruthSurface:
        samples = sample_mesh(vertices, triangles, num_samples, seed)
        if cameras:
            samples = samples[visible_points(samples, vertices, triangles, cameras)]
        return cls(vertices, triangles, samples, vertices.min(0), vertices.max(0))

    def evaluate(self, points: np.ndarray, alignment: Similarity | None = None,
                 taus: tuple[float, ...] = DEFAULT_TAUS, max_points: int = 300_000, seed: int = 0) -> SurfaceReport:
        """Score reconstructed points (in their own frame, moved here by ``alignment`` when given)."""
        pts = alignment.apply(points) if alignment is not None else np.asarray(points, dtype=np.float64)
        pts = crop_to_box(pts, self.bbox_min, self.bbox_max)
        subset = pts
        if len(pts) > max_points:  # precision/accuracy are shares and means: a uniform subset estimates them
            subset = pts[np.random.default_rng(seed).choice(len(pts), max_points, replace=False)]
        rec_to_gt = point_to_mesh_distance(subset, self.vertices, self.triangles)
        return surface_metrics(pts, self.samples, rec_to_gt, [t * self.diagonal for t in taus])


def load_points(path: Path, mesh_samples: int = 500_000, seed: int = 0) -> tuple[np.ndarray, int]:
    """Points of a PLY point cloud, or points sampled on a PLY/OBJ mesh; also the face count (0 for clouds)."""
    import open3d as o3d

    if _ply_face_count(path) == 0:  # a point cloud: reading it as a mesh would only print a warning
        cloud = o3d.io.read_point_cloud(str(path))
        return np.asarray(cloud.points, dtype=np.float64), 0
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) > 0:
        vertices, triangles = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
        return sample_mesh(vertices, triangles, mesh_samples, seed), len(triangles)
    cloud = o3d.io.read_point_cloud(str(path))
    return np.asarray(cloud.points, dtype=np.float64), 0


def _ply_face_count(path: Path) -> int | None:
    """Faces declared in a PLY header (0 for a point cloud); None when it is not a PLY file."""
    if Path(path).suffix.lower() != ".ply":
        return None
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.decode("ascii", errors="replace").strip()
            if line.startswith("element face"):
                return int(line.split()[-1])
            if line == "end_header":
                return 0
    return 0


def load_depth_maps_cloud(folder: Path, min_confidence: float = 0.0) -> np.ndarray:
    """All depth maps of a folder (core.stages.depth ``.npz`` layout) back-projected with their cameras, as one cloud.

    Scores of this cloud are per-view depth accuracy before fusion (their own frame, like the sparse model).
    """
    from core.geometry import backproject_depth
    from core.stages.depth import load_depth_map

    clouds = []
    for path in sorted(Path(folder).glob("*.npz")):
        view = load_depth_map(path)
        clouds.append(backproject_depth(view.depth, view.camera, view.confidence >= min_confidence))
    return np.concatenate(clouds) if clouds else np.zeros((0, 3))


# --------------------------------------------------------------------------------------------------------------
# Camera files of public photo sets
# --------------------------------------------------------------------------------------------------------------

SHARED_DATA = Path(os.environ.get("PRODUCT_STUDIO_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
"""The real photo sets and product scans (``../shared/data`` beside the repository); never copied into it."""


def read_middlebury_par(path: Path, image_size: tuple[int, int] = (640, 480)) -> dict[str, PinholeCamera]:
    """Middlebury ``*_par.txt``: ``name k(9) R(9) t(3)`` per line, world-to-camera like ours (see its SOURCE.txt)."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    cameras = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) != 22:
            continue
        values = np.array([float(x) for x in parts[1:]])
        cameras[parts[0]] = PinholeCamera(values[:9].reshape(3, 3), values[9:18].reshape(3, 3), values[18:21],
                                          image_size[0], image_size[1])
    return cameras


def read_strecha_camera(path: Path) -> PinholeCamera:
    """Strecha ``.camera``: K, distortion, R camera-to-world, centre C, size; converted to cam_from_world here."""
    rows = [line.split() for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]
    K = np.array(rows[0:3], float)
    R_c2w = np.array(rows[4:7], float)
    centre = np.array(rows[7], float)
    width, height = (int(float(x)) for x in rows[8][:2])
    R = R_c2w.T
    return PinholeCamera(K, R, -R @ centre, width, height)


def read_strecha_folder(camera_dir: Path) -> dict[str, PinholeCamera]:
    """All ``NAME.camera`` files of a folder, keyed by NAME (the image file name)."""
    return {p.name[: -len(".camera")]: read_strecha_camera(p) for p in sorted(Path(camera_dir).glob("*.camera"))}


def read_bundler_cameras(path: Path, image_names: list[str], width: int, height: int) -> dict[str, PinholeCamera]:
    """Bundler v0.3 ``bundle.out`` cameras (the registered ones), converted to OpenCV axes.

    Bundler's camera looks down -z with y up: flipping the y and z rows of R and t gives x right, y down, z forward.
    Its principal point is the image centre.
    """
    lines = [line for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    num_cameras = int(lines[0].split()[0])
    flip = np.diag([1.0, -1.0, -1.0])
    cameras = {}
    for index in range(num_cameras):
        block = np.array([line.split() for line in lines[1 + 5 * index: 6 + 5 * index]], dtype=float)
        focal, R, t = block[0, 0], block[1:4], block[4]
        if focal == 0:
            continue  # not registered by Bundler
        K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        cameras[image_names[index]] = PinholeCamera(K, flip @ R, flip @ t, width, height)
    return cameras
