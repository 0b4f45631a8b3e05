"""What a ground-truth capture is: the spec of what to render, and the capture on disk with its ground truth.

Everything is in the conventions of core/geometry.py, with the product's own frame as the world (metres, z up, the
product standing on z = 0). A capture folder holds:

* ``images/<name>.jpg|png`` the photos;
* ``cameras.json`` a list of ``{name, K, R, t, width, height}`` (cam_from_world, OpenCV axes, metres);
* ``object.ply`` the product mesh alone (for F-score evaluation);
* ``depth/<name>.npy`` float32 camera-z depth of whatever the pixel centre sees, NaN where nothing was hit;
* ``masks/<name>.png`` 255 where the pixel centre sees the product;
* ``capture.json`` the spec and a summary.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from core.geometry import PinholeCamera, backproject_depth
from core.photos import Photo
from core.scene import SparseScene

ObjectKind = str
"""'procedural-box', 'procedural-bottle', or the path of a folder holding a textured OBJ (metres, z up)."""
CaptureMode = Literal["orbit", "turntable"]
BackdropKind = Literal["plain", "textured", "none"]
SurfaceTexture = Literal["packaging", "rich", "plain"]
SupportKind = Literal["textured", "plain", "none"]

DEFAULT_SEED = 20261121
CAPTURE_JSON = "capture.json"
CAMERAS_JSON = "cameras.json"
OBJECT_PLY = "object.ply"


@dataclass
class CaptureSpec:
    """What to render: the product, its surroundings, the cameras and the output format."""

    object: ObjectKind = "procedural-box"
    """'procedural-box', 'procedural-bottle', or a folder with a textured OBJ (e.g. a product_models/<name>)."""
    mode: CaptureMode = "orbit"
    """'orbit': cameras circle a static scene; 'turntable': a fixed camera, the product and its disc turn."""
    backdrop: BackdropKind = "plain"
    """Around the product: 'plain' studio surfaces, 'textured' ones, or 'none' (flat background colour)."""
    support: SupportKind = "textured"
    """The disc (mat or turntable plate) the product stands on: 'textured', 'plain' or 'none'."""
    product_texture: SurfaceTexture = "packaging"
    """Procedural products only: 'packaging' (brand colour, names, illustrations, small print), 'rich' (dense
    random marks and words), or 'plain' (nearly uniform colour); the first two never repeat."""
    num_views: int = 24
    """Number of photos."""
    width: int = 1024
    """Image width in pixels."""
    height: int = 768
    """Image height in pixels."""
    horizontal_fov_deg: float = 50.0
    """Horizontal field of view of the pinhole camera."""
    elevations_deg: tuple[float, ...] = (25.0, 40.0)
    """Camera elevation of each ring (views are shared out between rings, the later rings offset by half a step)."""
    fill: float = 0.65
    """Fraction of the image height the product's bounding sphere spans (sets the camera distance)."""
    image_format: Literal["jpg", "png"] = "jpg"
    """Photo file format (JPEG at quality 92)."""
    supersample: int = 1
    """Rays per pixel along each axis for the colour image (anti-aliasing); depth/masks use the pixel centre."""
    blur_sigma: float = 0.6
    """Gaussian lens blur in pixels (softens aliased edges as a real lens would); 0 for none."""
    noise_sigma: float = 1.5
    """Standard deviation of the Gaussian sensor noise, in 8-bit levels."""
    shadows: bool = True
    """Cast a shadow from the key light."""
    write_depth: bool = True
    """Write depth/<name>.npy."""
    write_masks: bool = True
    """Write masks/<name>.png."""
    seed: int = DEFAULT_SEED
    """Seed for textures, procedural shapes and noise: the same spec gives byte-identical images."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["elevations_deg"] = list(self.elevations_deg)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptureSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "elevations_deg" in kwargs:
            kwargs["elevations_deg"] = tuple(kwargs["elevations_deg"])
        return cls(**kwargs)


@dataclass
class CaptureGroundTruth:
    """A rendered capture on disk and its ground truth, world = the product's frame, metres."""

    root: Path
    """The capture folder."""
    spec: CaptureSpec
    """What was rendered."""
    image_names: list[str]
    """Photo file names in capture order."""
    cameras: dict[str, PinholeCamera]
    """Ground-truth camera of each photo, by file name."""
    image_dir: Path
    """Folder of the photos."""
    mesh_path: Path
    """The product mesh alone (PLY), in the ground-truth frame."""
    depth_paths: dict[str, Path] = field(default_factory=dict)
    """Depth map (.npy float32, camera z, NaN = no hit) by photo name; empty when not written."""
    mask_paths: dict[str, Path] = field(default_factory=dict)
    """Product mask (.png, 255 = product) by photo name; empty when not written."""
    bbox_min: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Lower corner of the product's axis-aligned bounding box."""
    bbox_max: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Upper corner of the product's axis-aligned bounding box."""

    @property
    def image_paths(self) -> dict[str, Path]:
        return {name: self.image_dir / name for name in self.image_names}

    @property
    def object_diagonal(self) -> float:
        """Length of the product's bounding-box diagonal (the size that tolerances are relative to)."""
        return float(np.linalg.norm(self.bbox_max - self.bbox_min))

    def camera_list(self) -> list[PinholeCamera]:
        return [self.cameras[n] for n in self.image_names]

    def load_depth(self, name: str) -> np.ndarray:
        return np.load(self.depth_paths[name])

    def load_mask(self, name: str) -> np.ndarray:
        """Boolean product mask of a photo."""
        return cv2.imread(str(self.mask_paths[name]), cv2.IMREAD_GRAYSCALE) > 127


def read_cameras_json(path: Path) -> dict[str, PinholeCamera]:
    """cameras.json -> PinholeCamera by image name (in file order)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return {r["name"]: PinholeCamera(np.array(r["K"], float), np.array(r["R"], float), np.array(r["t"], float),
                                     int(r["width"]), int(r["height"])) for r in records}



def load_ground_truth(capture_dir: Path) -> CaptureGroundTruth:
    """Read a capture written by :func:`render_capture` (depth and mask paths only where the files exist)."""
    root = Path(capture_dir)
    summary = json.loads((root / CAPTURE_JSON).read_text(encoding="utf-8"))
    spec = CaptureSpec.from_dict(summary.get("spec", {}))
    cameras = read_cameras_json(root / CAMERAS_JSON)
    names = list(cameras)
    depth_paths = {n: root / "depth" / f"{Path(n).stem}.npy" for n in names}
    mask_paths = {n: root / "masks" / f"{Path(n).stem}.png" for n in names}
    return CaptureGroundTruth(
        root=root, spec=spec, image_names=names, cameras=cameras, image_dir=root / "images",
        mesh_path=root / OBJECT_PLY,
        depth_paths={n: p for n, p in depth_paths.items() if p.exists()},
        mask_paths={n: p for n, p in mask_paths.items() if p.exists()},
        bbox_min=np.array(summary["object_bbox_min"], float), bbox_max=np.array(summary["object_bbox_max"], float))


def ground_truth_scene(gt: CaptureGroundTruth, corners_per_view: int = 400, seed: int = 0) -> SparseScene:
    """What SfM would give on a capture, from its ground truth: the true cameras, and SfM-like sparse points (corners
    of each photo lifted with the true depth, with 0.1 mm of noise, kept where two or more photos see them).

    For developing and testing the dense stages without SfM's errors; photos are named by their file names.
    """
    rng = np.random.default_rng(seed)
    cameras = gt.camera_list()
    depths = [gt.load_depth(n) for n in gt.image_names]
    points, colors = [], []
    for name, camera, depth in zip(gt.image_names, cameras, depths, strict=True):
        image = cv2.imread(str(gt.image_dir / name))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        corners = cv2.goodFeaturesToTrack(grey, corners_per_view, 0.01, 5)
        if corners is None:
            continue
        cols, rows = np.clip(corners[:, 0, 0].astype(int), 0, camera.width - 1), np.clip(
            corners[:, 0, 1].astype(int), 0, camera.height - 1)
        mask = np.zeros(depth.shape, bool)
        mask[rows, cols] = True
        lifted = backproject_depth(depth, camera, mask)
        points.append(lifted)
        colors.append(np.zeros((len(lifted), 3), np.uint8))
    all_points = np.concatenate(points)
    all_points += rng.normal(0, 1e-4, all_points.shape)  # SfM points carry a little noise (0.1 mm here)
    seen = []
    for camera, depth in zip(cameras, depths, strict=True):
        uv, z = camera.project(all_points)
        c, r = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (z > 0) & (c >= 0) & (r >= 0) & (c < camera.width) & (r < camera.height)
        ok = np.zeros(len(all_points), bool)
        idx = np.flatnonzero(inside)
        ok[idx] = np.abs(depth[r[idx], c[idx]] / z[idx] - 1) < 0.005
        seen.append(ok)
    seen_arr = np.array(seen)
    keep = seen_arr.sum(0) >= 2
    remap = np.cumsum(keep) - 1
    visibility = [remap[np.flatnonzero(s & keep)] for s in seen_arr]
    photos = [Photo(i, n, n) for i, n in enumerate(gt.image_names)]
    return SparseScene(photos, [gt.image_dir / n for n in gt.image_names], cameras, all_points[keep],
                       np.concatenate(colors)[keep], visibility)
