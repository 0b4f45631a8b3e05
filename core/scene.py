"""The SfM result in the project's own conventions, as the dense stages consume it.

``SparseScene`` is built from an undistorted COLMAP model (PINHOLE cameras) and its images, so everything
downstream works with plain pinhole cameras (see core/geometry.py) and never touches pycolmap objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.geometry import PinholeCamera
from core.photos import Photo, PhotoSet


@dataclass
class SparseScene:
    """Registered views (undistorted, pinhole) and the sparse points that SfM triangulated."""

    photos: list[Photo]
    """The placed photos, in the same order as ``cameras``."""
    image_paths: list[Path]
    """Undistorted images, one per view, in the same order as ``cameras``."""
    cameras: list[PinholeCamera]
    points: np.ndarray
    """(N, 3) sparse points, world coordinates."""
    colors: np.ndarray
    """(N, 3) uint8 RGB of the sparse points."""
    visibility: list[np.ndarray]
    """Per view: indices into ``points`` of the points observed in that view."""

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def names(self) -> list[str]:
        """The user's names of the placed photos (for messages)."""
        return [p.name for p in self.photos]

    def covisibility(self) -> np.ndarray:
        """(V, V) number of sparse points shared by each pair of views."""
        n = len(self.cameras)
        member = np.zeros((n, len(self.points)), dtype=np.float32)
        for i, idx in enumerate(self.visibility):
            member[i, idx] = 1.0
        shared = member @ member.T
        np.fill_diagonal(shared, 0)
        return shared.astype(np.int64)


def load_sparse_scene(undistorted_dir: Path, photos: PhotoSet) -> SparseScene:
    """Read pycolmap's undistortion output (``sparse/`` with PINHOLE cameras, ``images/``) for the given photos."""
    import pycolmap

    model_dir, image_dir = Path(undistorted_dir) / "sparse", Path(undistorted_dir) / "images"
    rec = pycolmap.Reconstruction(str(model_dir))
    point_ids = sorted(rec.points3D.keys())
    index_of = {pid: i for i, pid in enumerate(point_ids)}
    points = np.array([rec.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    colors = np.array([rec.points3D[p].color for p in point_ids], dtype=np.uint8).reshape(-1, 3)

    placed, paths, cameras, visibility = [], [], [], []
    for image_id in sorted(rec.reg_image_ids(), key=lambda i: rec.images[i].name):
        image = rec.images[image_id]
        if not rec.cameras[image.camera_id].is_undistorted():
            raise ValueError(f"{model_dir} holds distorted cameras ({rec.cameras[image.camera_id].model_name}); "
                             "undistort first")
        cameras.append(pinhole_camera(rec, image))
        placed.append(photos.by_working(image.name))
        paths.append(Path(image_dir) / image.name)
        observed = [index_of[p.point3D_id] for p in image.points2D if p.has_point3D()]
        visibility.append(np.unique(np.array(observed, dtype=np.int64)))
    return SparseScene(placed, paths, cameras, points, colors, visibility)


def cameras_from_model(model_dir: Path) -> dict[str, PinholeCamera]:
    """Registered cameras of any COLMAP model folder by image name (distortion parameters are ignored).

    For poses (accuracy checks, the viewer); the dense stages use ``load_sparse_scene`` on the undistorted model.
    """
    import pycolmap

    rec = pycolmap.Reconstruction(str(model_dir))
    return {rec.images[i].name: pinhole_camera(rec, rec.images[i]) for i in rec.reg_image_ids()}


def pinhole_camera(rec, image) -> PinholeCamera:
    """A registered COLMAP image as a PinholeCamera: the conversion at the pycolmap boundary (same axes)."""
    camera = rec.cameras[image.camera_id]
    pose = image.cam_from_world()  # a method since pycolmap 4.1
    return PinholeCamera(K=np.asarray(camera.calibration_matrix(), dtype=np.float64),
                         R=np.asarray(pose.rotation.matrix(), dtype=np.float64),
                         t=np.asarray(pose.translation, dtype=np.float64),
                         width=int(camera.width), height=int(camera.height))
