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
