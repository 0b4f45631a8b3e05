"""Typed, confined readers of run folders for the pages: the record, its artefacts and the arrays they hold.

Pages never build artefact paths themselves: ``open_run`` reads the manifest (migrated by core.manifest, so no page
carries fallbacks for old layouts) and ``RunView.artifact`` resolves a recorded artefact only when it lies inside
the run folder and exists, so a damaged or hostile manifest cannot point the viewer at any other file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.artifacts import DEPTH_MAPS, DEPTH_PRIOR_MAPS, MASKS_IMAGES
from core.geometry import PinholeCamera
from core.manifest import ManifestError, RunManifest, load_manifest
from core.photos import Photo
from core.pipeline import stage_label
from core.stages.depth import DepthMap, load_depth_map
from core.stages.depth_prior import PriorView, load_prior_view

logger = logging.getLogger(__name__)

__all__ = ["RunView", "SparseView", "open_run", "read_depth_map", "read_manifest", "read_match_matrix", "read_mesh",
           "read_point_cloud", "read_sparse_model", "stage_label"]

_GREY = np.array([170, 170, 170], dtype=np.uint8)


@dataclass
class RunView:
    """A run folder as the pages see it."""

    run_dir: Path
    manifest: RunManifest | None
    """None when there is no record yet, or it is damaged (``problem`` says which)."""
    problem: str = ""
    """'' when the record was read; otherwise a sentence for the user."""

    def artifact(self, key: str) -> Path | None:
        """The recorded artefact ``key``, when it exists inside the run folder (None otherwise)."""
        if self.manifest is None or key not in self.manifest.artifacts:
            return None
        root = self.run_dir.resolve()
        path = (root / self.manifest.artifacts[key].path).resolve()
        if not path.is_relative_to(root):
            logger.warning("artefact %s of %s points outside the run folder; refused", key, self.run_dir)
            return None
        return path if path.exists() else None

    def photo_name(self, working: str) -> str:
        """The user's name of a photo from its working name (COLMAP image names), else the name itself."""
        if self.manifest is not None:
            for record in self.manifest.photos:
                if record.working == Path(working).name:
                    return record.name
        return working

    def depth_maps(self, stage: str) -> list[tuple[Photo, Path]]:
        """The depth maps a depth stage (``depth`` or ``depth_prior``) wrote, with their photos, in photo order."""
        folder = self.artifact({"depth": DEPTH_MAPS.key, "depth_prior": DEPTH_PRIOR_MAPS.key}[stage])
        if folder is None or self.manifest is None:
            return []
        maps = []
        for photo in self.manifest.accepted_photos:
            path = folder / f"{photo.stem}.npz"
            if path.is_file():
                maps.append((photo, path))
        return maps


    def mask_overlays(self) -> list[tuple[Photo, np.ndarray, float]]:
        """Per photo with a mask: the undistorted photo with the mask drawn over it (RGB uint8: the product kept,
        the rest dimmed, the outline in green) and the mask's confidence; in photo order."""
        import cv2

        folder = self.artifact(MASKS_IMAGES.key)
        undistorted = self.artifact("sfm.undistorted")
        if folder is None or undistorted is None or self.manifest is None:
            return []
        masks_stage = next((s for s in self.manifest.stages if s.name == "masks"), None)
        per_photo = masks_stage.metrics.get("per_photo", {}) if masks_stage else {}
        out = []
        for photo in self.manifest.accepted_photos:
            mask_path, image_path = folder / f"{photo.stem}.png", undistorted / "images" / photo.working
            mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) if mask_path.is_file() else None
            image = cv2.imread(str(image_path), cv2.IMREAD_COLOR) if image_path.is_file() else None
            if mask is None or image is None or mask.shape != image.shape[:2]:
                continue
            out.append((photo, mask_overlay(image[:, :, ::-1], mask > 127),
                        float(per_photo.get(photo.name, {}).get("confidence", 0.0))))
        return out

    def prior_view(self, photo: Photo) -> PriorView | None:
        """What the depth-prior stage kept of the prior for ``photo`` (None when it was not used for it)."""
        return load_prior_view(self.run_dir, photo)


def mask_overlay(image: np.ndarray, mask: np.ndarray, max_side: int = 480) -> np.ndarray:
    """The photo (RGB) with the background dimmed and the mask's outline drawn, at most ``max_side`` wide."""
    import cv2

    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    out = image.copy()
    out[~mask] = (out[~mask] * 0.35).astype(np.uint8)
    outline = mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    out[outline] = (40, 220, 90)
    return out


def read_depth_map(path: Path) -> DepthMap | None:
    """A depth map file of the run, or None when it is unreadable (cut short by a crashed run)."""
    try:
        return load_depth_map(path)
    except (OSError, KeyError, ValueError):
        return None


def open_run(run_dir: Path) -> RunView:
    """The run folder's record, or a view that says why there is none."""
    run_dir = Path(run_dir)
    try:
        return RunView(run_dir, load_manifest(run_dir))
    except FileNotFoundError:
        return RunView(run_dir, None, "This run has no record yet.")
    except (ManifestError, OSError) as exc:
        logger.warning("cannot read the manifest in %s: %s", run_dir, exc)
        return RunView(run_dir, None, "This run's record is damaged, so only its files can be shown "
                                      f"({exc}).")


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The run's record, or None when there is none or it is damaged."""
    return open_run(run_dir).manifest


@dataclass
class SparseView:
    """What the viewer needs of a COLMAP model: coloured points, registered cameras and per-point quality."""

    points: np.ndarray
    """(N, 3) world points."""
    colors: np.ndarray
    """(N, 3) uint8 RGB."""
    cameras: list[PinholeCamera]
    names: list[str]
    """Image name per camera (the working name; ``RunView.photo_name`` gives the user's)."""
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(N,) reprojection error in pixels."""
    track_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    """(N,) number of photos that see each point."""


def read_sparse_model(model_dir: Path) -> SparseView:
    """Read a COLMAP model folder (binary or text) with pycolmap; distortion is ignored (display only)."""
    import pycolmap

    from core.scene import pinhole_camera

    rec = pycolmap.Reconstruction(str(model_dir))
    ids = sorted(rec.points3D.keys())
    points = np.array([rec.points3D[i].xyz for i in ids], dtype=np.float64).reshape(-1, 3)
    colors = np.array([rec.points3D[i].color for i in ids], dtype=np.uint8).reshape(-1, 3)
    errors = np.array([rec.points3D[i].error for i in ids], dtype=np.float64)
    tracks = np.array([rec.points3D[i].track.length() for i in ids], dtype=np.int64)
    images = sorted((rec.images[i] for i in rec.reg_image_ids()), key=lambda im: im.name)
    return SparseView(points, colors, [pinhole_camera(rec, im) for im in images], [im.name for im in images],
                      errors, tracks)


def read_point_cloud(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) and uint8 colours (N, 3) of a PLY point cloud (grey when it has no colours)."""
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    points = np.asarray(cloud.points, dtype=np.float64)
    if cloud.has_colors():
        colors = np.clip(np.asarray(cloud.colors) * 255, 0, 255).astype(np.uint8)
    else:
        colors = np.tile(_GREY, (len(points), 1))
    return points, colors


def read_mesh(path: Path, max_faces: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices (V, 3), triangles (F, 3) and uint8 vertex colours (V, 3) or None, of a PLY/OBJ/GLB mesh.

    ``max_faces`` simplifies larger meshes for display (the downloads stay full resolution).
    """
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    if max_faces is not None and len(mesh.triangles) > max_faces:
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=max_faces)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    triangles = np.asarray(mesh.triangles, dtype=np.int64)
    colors = None
    if mesh.has_vertex_colors():
        colors = np.clip(np.asarray(mesh.vertex_colors) * 255, 0, 255).astype(np.uint8)
    return vertices, triangles, colors


def read_match_matrix(path: Path) -> tuple[list[str], np.ndarray] | None:
    """The SfM stage's ``matches.json`` (images + inlier_matches), or None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
        names = [str(n) for n in data["images"]]
        matrix = np.asarray(data["inlier_matches"], dtype=np.float64).reshape(len(names), len(names))
    except (OSError, KeyError, ValueError, TypeError):
        logger.info("no usable match matrix at %s", path)
        return None
    return names, matrix


def download_stem(sku: str, product_name: str, job_id: str) -> str:
    """The file-name stem of a run's downloads: the SKU (else the product name, else the job id), made file-safe."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", sku or product_name or job_id).strip("_") or job_id
