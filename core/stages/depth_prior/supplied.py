"""Depth maps supplied with the photos (a depth camera, phone LiDAR, another pipeline): naming, reading, resizing.

The one naming rule a user is told: a depth map is named like its photo file (``IMG_0001.jpg`` -> ``IMG_0001.npy`` or
``IMG_0001.png``; the suffix's case does not matter). ``.npy`` holds float values (metres, or a model's relative
output); ``.png`` is 16-bit millimetres with 0 = no measurement. The pipeline copies a user's maps into the run under
the photos' working stems (``copy_supplied_depth``), so the run folder holds every input it was made from and the
depth-prior stage reads one layout.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from core.artifacts import DEPTH_PRIOR_SUPPLIED
from core.photos import Photo

DEPTH_SUFFIXES = (".npy", ".png")


def find_depth_file(depth_dir: Path, image_name: str) -> Path | None:
    """The depth file for a photo: same base name, .npy or .png (case-insensitive suffix).

    The run's copies (``copy_supplied_depth``) follow the same rule with the working stems.
    """
    stem = Path(image_name).stem
    folder = Path(depth_dir)
    for suffix in DEPTH_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_depth_file(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A supplied depth map as float32 (NaN unknown), resized to ``size`` = (width, height) when given.

    ``.npy``: float values as stored (depth in metres, or a model's relative output). ``.png``: 16-bit, millimetres,
    0 = no measurement; returned in metres.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            depth = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        except (ValueError, TypeError, EOFError, OSError) as exc:
            raise ValueError(f"{path.name}: not a NumPy .npy array of numbers ({type(exc).__name__})") from exc
        depth = np.squeeze(depth)
        # Zero and negative depths are no measurement (LiDAR writes 0 for holes), like NaN and infinity.
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
    elif suffix == ".png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError(f"{path.name}: not a readable PNG")
        if raw.dtype != np.uint16:
            raise ValueError(f"{path.name}: depth PNGs must be 16-bit (millimetres); this one is {raw.dtype}")
        if raw.ndim == 3:
            raw = raw[..., 0]
        depth = np.where(raw > 0, raw.astype(np.float32) / 1000.0, np.nan).astype(np.float32)
    else:
        raise ValueError(f"{path.name}: depth maps must be .npy or 16-bit .png")
    if depth.ndim != 2:
        raise ValueError(f"{path.name}: expected a 2-D depth map, got shape {depth.shape}")
    if min(depth.shape) < 2:
        raise ValueError(f"{path.name}: is empty or a single line (shape {depth.shape})")
    if not np.isfinite(depth).any():
        raise ValueError(f"{path.name}: holds no depth (every value is zero, negative or not a number)")
    if size is not None:
        # Resizing is fine (LiDAR maps are small); a different shape means another crop or orientation.
        aspect, wanted = depth.shape[1] / depth.shape[0], size[0] / size[1]
        if abs(np.log(aspect / wanted)) > 0.05:
            turned = " (turned by 90 degrees?)" if abs(np.log(aspect * wanted)) < 0.05 else ""
            raise ValueError(f"{path.name} is {depth.shape[1]}x{depth.shape[0]} but the photo is {size[0]}x{size[1]}"
                             f"{turned}; depth maps must have the photo's shape and orientation")
    if size is not None and (depth.shape[1], depth.shape[0]) != tuple(size):
        depth = resize_depth(depth, size)
    return depth


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth map with NaN holes to (width, height): bilinear over valid pixels only, holes stay holes."""
    valid = np.isfinite(depth)
    filled = np.where(valid, depth, 0).astype(np.float32)
    shrinking = size[0] < depth.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    num = cv2.resize(filled, size, interpolation=interp)
    den = cv2.resize(valid.astype(np.float32), size, interpolation=interp)
    out = np.full(num.shape, np.nan, dtype=np.float32)
    # Keep pixels mostly backed by measurements; half-covered ones at hole borders would mix in the zeros' absence.
    keep = den > 0.5
    out[keep] = num[keep] / den[keep]
    return out


def copy_supplied_depth(depth_dir: Path, photos: Sequence[Photo], sources: Sequence[Path], run_dir: Path) -> Path:
    """Copy the depth maps named like the photo files ``sources[photo.index]`` into the run, named after the photos'
    working stems (``RUN/depth_prior/supplied/<stem>.npy|png``); returns that folder."""
    target = DEPTH_PRIOR_SUPPLIED.path(run_dir)
    target.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        found = find_depth_file(depth_dir, sources[photo.index].name)
        if found is not None:
            shutil.copyfile(found, target / f"{photo.stem}{found.suffix.lower()}")
    return target
