"""Turntable structure: one fixed camera, one rotation axis, one angle per photo (several rings share the axis).

Seen from the product, a turntable capture is cameras on circles about one axis, each ring's cameras the same
camera turned about it: R_i = R0_ring @ R_axis(theta_i)^T, centre_i = R_axis(theta_i) @ c0_ring. ``fit_turntable``
recovers that structure from solved cameras (the axis from the pairs' relative rotations, its position from the
camera centres) and measures how far each camera is from it; ``turntable_cameras`` gives the constrained poses.

Re-solving a folded fixed-camera capture from its pairs' essential matrices does not recover it, because those
are wrong too (FUZE bottle on a plain plate, 640x480: neighbours re-estimated 4-12° apart instead of 15°, axes
scattered by tens of degrees: the bas-relief ambiguity of a small, plain object). The constraint enters the
estimation itself in ``turntable_ba`` (one axis, one fixed camera, one angle per photo, fitted to all pairs' matches
at once); ``fit_turntable`` gives it its starting angles from a trusted incremental solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.geometry import PinholeCamera, rotation_angle_deg

RING_TOLERANCE = 0.05
"""Cameras whose canonical centres (turned back to angle 0) lie within this share of the radius are one ring."""


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about the unit ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _rotation_axis(R: np.ndarray) -> tuple[np.ndarray, float]:
    angle = np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    norm = np.linalg.norm(axis)
    return (axis / norm if norm > 1e-12 else np.zeros(3)), float(angle)


@dataclass(frozen=True)
class TurntableFit:
    """The turntable found in a set of cameras."""

    axis: np.ndarray
    """Unit axis direction (world), oriented towards the cameras' side (up)."""
    point: np.ndarray
    """A point on the axis (world)."""
    angles: dict[str, float]
    """Per photo, its turn about the axis in radians (the azimuth of its centre)."""
    rings: dict[str, int]
    """Per photo, its ring (camera height)."""
    residual_deg: dict[str, float]
    """Per photo, rotation between its pose and the ring's pose turned by its angle (0 on a perfect turntable)."""


def fit_turntable(cameras: dict[str, PinholeCamera]) -> TurntableFit:
    """The common axis, the angle and ring of each photo, and how well each camera fits the turntable."""
    names = sorted(cameras)
    cams = [cameras[n] for n in names]
    scatter = np.zeros((3, 3))
    for i in range(len(cams)):
        for j in range(i + 1, len(cams)):
            axis, angle = _rotation_axis(cams[j].R.T @ cams[i].R)  # world-frame turn from camera i to camera j
            scatter += np.sin(min(angle, np.pi / 2)) * np.outer(axis, axis)
    axis = np.linalg.eigh(scatter)[1][:, -1]
    centres = np.array([c.center for c in cams])
    up = -np.array([c.R[1] for c in cams]).sum(0)
    if axis @ up < 0:
        axis = -axis
    # The axis line: c_j - p = R(theta_ij)(c_i - p) for photos of one ring; in the plane normal to the axis the
    # centres lie on circles about it, so fit the circle centre shared by all (algebraic fit, one radius per camera
    # height is absorbed by fitting |q - p|^2 = r^2 per ring after grouping; first pass: one circle).
    e1 = np.cross(axis, [1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.cross(axis, [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    q = np.stack([centres @ e1, centres @ e2], 1)
    heights = centres @ axis
    ring_of = _group(heights, tolerance=RING_TOLERANCE * np.median(np.linalg.norm(q - q.mean(0), axis=1)))
    rows, rhs = [], []
    rings = sorted(set(ring_of))
    for k, ring in enumerate(rings):
        for qi in q[ring_of == ring]:
            row = np.zeros(2 + len(rings))
            row[:2] = 2 * qi
            row[2 + k] = 1.0  # r_k^2 - |p|^2
            rows.append(row)
            rhs.append(qi @ qi)
    solution = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    p2 = solution[:2]
    point = p2[0] * e1 + p2[1] * e2
    angles = {n: float(np.arctan2(*(q[i] - p2)[::-1])) for i, n in enumerate(names)}
    residual = {}
    for ring in rings:
        members = [i for i in range(len(names)) if ring_of[i] == ring]
        canonical = [cams[i].R @ axis_rotation(axis, angles[names[i]]) for i in members]
        reference = _mean_rotation(canonical)
        for i, R in zip(members, canonical, strict=True):
            residual[names[i]] = rotation_angle_deg(R @ reference.T)
    return TurntableFit(axis, point, angles, {n: int(ring_of[i]) for i, n in enumerate(names)}, residual)


def turntable_cameras(fit: TurntableFit, cameras: dict[str, PinholeCamera]) -> dict[str, PinholeCamera]:
    """The cameras moved onto the fitted turntable: each ring's mean pose turned by each photo's angle."""
    out = {}
    for ring in sorted(set(fit.rings.values())):
        members = [n for n in cameras if fit.rings[n] == ring]
        canonical = [cameras[n].R @ axis_rotation(fit.axis, fit.angles[n]) for n in members]
        centre0 = np.mean([axis_rotation(fit.axis, -fit.angles[n]) @ (cameras[n].center - fit.point)
                           for n in members], axis=0)
        R0 = _mean_rotation(canonical)
        for n in members:
            turn = axis_rotation(fit.axis, fit.angles[n])
            R = R0 @ turn.T
            centre = fit.point + turn @ centre0
            cam = cameras[n]
            out[n] = PinholeCamera(cam.K, R, -R @ centre, cam.width, cam.height)
    return out


def _mean_rotation(rotations: list[np.ndarray]) -> np.ndarray:
    U, _, Vt = np.linalg.svd(np.sum(rotations, axis=0))
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R


def _group(values: np.ndarray, tolerance: float) -> np.ndarray:
    """Labels grouping sorted 1-D values whose gaps are below ``tolerance``."""
    order = np.argsort(values)
    labels = np.zeros(len(values), dtype=int)
    label = 0
    for a, b in zip(order[:-1], order[1:], strict=True):
        if values[b] - values[a] > tolerance:
            label += 1
        labels[b] = label
    return labels

