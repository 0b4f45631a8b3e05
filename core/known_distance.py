"""Real size from a known distance between two points picked on a photo (the width of a label, a lid's diameter).

One vocabulary everywhere (config ``asset.known_distance``, the CLI's ``--known-distance``, the API, the manifest):

    PHOTO:X1,Y1:X2,Y2:MM      e.g.  IMG_0001.jpg:812,640:1490,655:85

``PHOTO`` is the user's name of the photo; the points are pixel positions in the ORIGINAL photo as the user sees it
(after its EXIF rotation, at full size), in the project's pixel convention (core/geometry.py: (0, 0) is the top-left
corner of the photo, the top-left pixel's centre is (0.5, 0.5)); ``MM`` is the true distance between them.

``measure_known_distance`` turns the two pixels into 3D points: the original-photo pixel is mapped onto the working
copy (capture resized it; width and height are scaled separately because the working size is rounded), then COLMAP's
own camera of that photo (``RUN/sfm/model``, the distorted SIMPLE_RADIAL camera of the working copy) un-projects it
(``Camera.cam_from_img`` removes the lens distortion), so no pixel has to go through the undistorted images' crop; the
ray from the photo's centre is cast against the final mesh (Open3D ``RaycastingScene``), in the reconstruction frame
the mesh, the SfM model and the undistorted cameras share. The distance between the two hits, in reconstruction
units, and the millimetres give the scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SYNTAX = "PHOTO:X1,Y1:X2,Y2:MM"
EXAMPLE = "IMG_0001.jpg:812,640:1490,655:85"

MIN_SPAN_WORKING_PX = 10.0
"""Two picks closer than this on the working copy count as the same point: a click lands within about a pixel of
where it was meant, so a shorter span would carry a >10 % error into the scale."""


class KnownDistanceError(ValueError):
    """A known distance that cannot be used; the message names the photo and the fix."""


@dataclass(frozen=True)
class KnownDistance:
    """Two points on one photo and the true distance between them."""

    photo: str
    """The user's name of the photo."""
    first: tuple[float, float]
    """(x, y) in the original photo's pixels."""
    second: tuple[float, float]
    mm: float

    @property
    def text(self) -> str:
        """The ``PHOTO:X1,Y1:X2,Y2:MM`` form stored in the config."""
        (x1, y1), (x2, y2) = self.first, self.second
        return f"{self.photo}:{_num(x1)},{_num(y1)}:{_num(x2)},{_num(y2)}:{_num(self.mm)}"

    @property
    def pixels(self) -> list[list[float]]:
        return [list(self.first), list(self.second)]


def _num(value: float) -> str:
    """A number as short as it can be at 0.01 (a hundredth of a pixel or millimetre is below any pick's precision)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def parse_known_distance(text: str) -> KnownDistance:
    """``PHOTO:X1,Y1:X2,Y2:MM`` parsed; KnownDistanceError with the expected form otherwise. The photo's name may
    itself hold colons: the last three fields are taken from the right."""
    how = f"write it as {SYNTAX}, e.g. {EXAMPLE} (pixels of the photo as you see it, the distance in millimetres)"
    parts = str(text).strip().rsplit(":", 3)
    if len(parts) != 4 or not parts[0].strip():
        raise KnownDistanceError(f"known distance {text!r} is not {SYNTAX}; {how}.")
    photo, first, second, mm = parts

    def point(field: str, which: str) -> tuple[float, float]:
        values = field.split(",")
        try:
            x, y = (float(v) for v in values)
        except ValueError:
            raise KnownDistanceError(f"known distance {text!r}: the {which} point {field!r} is not X,Y in pixels; "
                                     f"{how}.") from None
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            raise KnownDistanceError(f"known distance {text!r}: the {which} point {field!r} must be two pixel "
                                     "positions of 0 or more.")
        return x, y

    a, b = point(first, "first"), point(second, "second")
    try:
        millimetres = float(mm)
    except ValueError:
        millimetres = float("nan")
    if not (millimetres > 0 and math.isfinite(millimetres)):
        raise KnownDistanceError(f"known distance {text!r}: {mm!r} is not a positive distance in millimetres; {how}.")
    return KnownDistance(photo.strip(), a, b, millimetres)


@dataclass
class MeasuredDistance:
    """What the picks gave: the 3D points, their distance in reconstruction units and the scale."""

    known: KnownDistance
    points: np.ndarray
    """(2, 3) the picks on the mesh, reconstruction frame."""
    working_pixels: np.ndarray
    """(2, 2) the picks on the working copy (what COLMAP's camera un-projected)."""

    @property
    def distance_units(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))

    @property
    def metres_per_unit(self) -> float:
        """The scale: metres per reconstruction unit."""
        return self.known.mm / 1000.0 / self.distance_units

    def record(self) -> dict:
        """The manifest's record of the picks (metrics and checks.json)."""
        return {"photo": self.known.photo, "pixels": self.known.pixels, "mm": self.known.mm,
                "points": [[round(float(v), 9) for v in p] for p in self.points],
                "distance_units": round(self.distance_units, 9), "metres_per_unit": round(self.metres_per_unit, 9)}


def working_pixels(known: KnownDistance, original_size: tuple[int, int], working_size: tuple[int, int]) -> np.ndarray:
    """The picks on the working copy: the original photo resized to ``working_size`` (pixel-corner convention, so a
    position scales with the size; each axis by its own factor, the working size being rounded)."""
    factor = np.array(working_size, np.float64) / np.array(original_size, np.float64)
    return np.array([known.first, known.second], np.float64) * factor


def photo_rays(model, working_name: str, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """World rays (origins, unit directions) through ``pixels`` of the working copy ``working_name``, from COLMAP's
    model (a pycolmap Reconstruction); None when the photo is not placed in it."""
    image = next((im for im in model.images.values() if im.name == working_name and im.has_pose), None)
    if image is None:
        return None
    camera = model.cameras[image.camera_id]
    normalised = np.asarray(camera.cam_from_img(np.asarray(pixels, np.float64)), np.float64).reshape(-1, 2)
    pose = image.cam_from_world()
    R, t = np.asarray(pose.rotation.matrix()), np.asarray(pose.translation)
    directions = np.column_stack([normalised, np.ones(len(normalised))]) @ R  # R^T d, row-wise
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.repeat((-R.T @ t)[None], len(directions), axis=0)
    return origins, directions


def cast(vertices: np.ndarray, faces: np.ndarray, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(N, 3) first hits of the rays on the mesh; rows of NaN where a ray misses it."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(faces, np.uint32)))
    rays = np.column_stack([origins, directions]).astype(np.float32)
    t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(np.float64)
    hits = origins + t_hit[:, None] * directions
    hits[~np.isfinite(t_hit)] = np.nan
    return hits


def measure_known_distance(known: KnownDistance, photos: Sequence, model_dir: Path | None, vertices: np.ndarray,
                           faces: np.ndarray) -> MeasuredDistance:
    """The picks of ``known`` on the mesh (``vertices``, ``faces``: reconstruction frame); KnownDistanceError naming
    the photo and the fix when the photo is unknown, rejected or not placed, a pick is outside it or misses the
    model, or both picks are the same point. ``photos`` are the run's photo records (``PhotoRecord``: the user's
    name, the oriented original's width and height, the working copy's name)."""
    import pycolmap

    record = next((p for p in photos if p.name == known.photo), None)
    if record is None:
        names = ", ".join(p.name for p in photos if p.status == "accepted")
        raise KnownDistanceError(f"The known distance's photo '{known.photo}' is not one of this run's photos; "
                                 f"use one of: {names}.")
    if record.status != "accepted" or not record.working:
        raise KnownDistanceError(f"The known distance's photo '{known.photo}' was rejected ({record.reason}); pick "
                                 "the two points on another photo.")
    if not record.width or not record.height:
        raise KnownDistanceError(f"The size of '{known.photo}' is not recorded; run the capture stage again.")
    for which, (x, y) in (("first", known.first), ("second", known.second)):
        if x > record.width or y > record.height:
            raise KnownDistanceError(f"The {which} point ({_num(x)}, {_num(y)}) is outside '{known.photo}', which is "
                                     f"{record.width}×{record.height} pixels; give pixels of the photo as you see "
                                     "it at full size.")
    if model_dir is None or not Path(model_dir).is_dir():
        raise KnownDistanceError(f"'{known.photo}' cannot be measured: the run has no camera model (structure from "
                                 "motion did not finish).")
    model = pycolmap.Reconstruction(str(model_dir))
    image = next((im for im in model.images.values() if im.name == record.working), None)
    placed = image is not None and image.has_pose
    if not placed:
        raise KnownDistanceError(f"'{known.photo}' was not placed by structure from motion, so points on it cannot "
                                 "be found on the model; pick the two points on a photo that was placed (the Viewer "
                                 "lists them).")
    camera = model.cameras[image.camera_id]
    pixels = working_pixels(known, (record.width, record.height), (camera.width, camera.height))
    if np.linalg.norm(pixels[1] - pixels[0]) < MIN_SPAN_WORKING_PX:
        raise KnownDistanceError(f"The two points on '{known.photo}' are the same point (less than "
                                 f"{MIN_SPAN_WORKING_PX:.0f} pixels apart on the working copy); pick the two ends of "
                                 "the known distance, as far apart as the photo shows them.")
    rays = photo_rays(model, record.working, pixels)
    assert rays is not None
    hits = cast(vertices, faces, *rays)
    missed = [which for which, hit in zip(("first", "second"), hits, strict=True) if not np.isfinite(hit).all()]
    if missed:
        points = " and ".join(f"the {m} point" for m in missed)
        raise KnownDistanceError(f"On '{known.photo}', {points} misses the model (the background, or a part the "
                                 "model lacks); pick points on the product itself.")
    measured = MeasuredDistance(known, hits, pixels)
    if measured.distance_units <= 1e-12:
        raise KnownDistanceError(f"The two points on '{known.photo}' land on the same spot of the model; pick the two "
                                 "ends of the known distance.")
    return measured
