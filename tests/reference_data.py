"""Readers for the real photo sets with known cameras in ../shared/data (tests skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.geometry import PinholeCamera

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_middlebury_par(path: Path, width: int = 640, height: int = 480) -> dict[str, PinholeCamera]:
    """Middlebury *_par.txt: 'name k11..k33 r11..r33 t1 t2 t3', world-to-camera, OpenCV axes (see SOURCE.txt)."""
    cameras = {}
    lines = path.read_text().split("\n")[1:]
    for line in lines:
        parts = line.split()
        if len(parts) != 22:
            continue
        values = np.array(parts[1:], dtype=float)
        cameras[parts[0]] = PinholeCamera(values[:9].reshape(3, 3), values[9:18].reshape(3, 3), values[18:21],
                                          width, height)
    return cameras


def read_bundler_cameras(path: Path, image_names: list[str], width: int, height: int) -> dict[str, PinholeCamera]:
    """Bundler v0.3 bundle.out cameras (registered ones only), converted to OpenCV axes.

    Bundler's camera looks down -z with y up; flipping the y and z rows of R and t gives OpenCV's x right, y down,
    z forward. Its principal point is the image centre.
    """
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
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
