"""Trust checks on solved cameras: does the solution look like an object capture, and do the photos agree with it?

An incremental mapper can return a confident, wrong solution on plain or symmetric products: cameras folded onto
one side, flipped upside down, or placed on the far side of the object. Each check below tests one property every
object capture has, per photo, so that the stage can drop or re-place the photos that fail it, or fail with their
names rather than hand a wrong model to the dense stages:

* ``below_support``: the camera is under the table the product stands on (no photo is taken through the table);
* ``not_looking``: the product (where the cameras converge) is not in front of the camera, inside its frame;
* ``upside_down``: the camera's image-up points down (a flip about the view axis: tripods and hands hold cameras
  upright, so a capture's cameras share an up within a right angle);
* ``two_view``: the relative rotation re-estimated from the photo's verified matches with its neighbours (essential
  matrix, RANSAC) disagrees with the solved relative rotation (a camera mirrored through the object or folded onto
  the wrong side: its matches still say where it really was).

A turntable solution (``check_turntable_model``: one axis, one angle per photo, so it cannot fold) is held to what
its constraint leaves open instead of ``two_view``, whose per-pair estimates are themselves ambiguous on the small,
plain products that need it:

* ``unexplained``: the solved relative pose explains (Sampson error) clearly fewer of the pair's verified matches
  than the pair's own best essential matrix, for most of the photo's pairs;
* ``facing_away``: most points the photo sees lie on the far side of the product from it (the mirror image of the
  true solution: a turntable seen through the table, turning the other way).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.geometry import (
    PinholeCamera,
    cameras_focus,
    cameras_up,
    rotation_angle_deg,
    support_plane,
)

logger = logging.getLogger(__name__)

TWO_VIEW_TOLERANCE_DEG = 20.0
"""Solved and re-estimated relative rotation of one pair may differ by this much. Measured on correct solutions
(balanced): Middlebury temple ring median 0.6°, max 4.0°; Herz-Jesu median 0.04°, max 5.1°; Kermit (strong lens
distortion, 640x480) median 0.5°, max 15°. A mirrored camera differs by 90-180°."""
FOLDED_MEDIAN_DEG = 3.0
"""When the median pair differs by more than this, the whole solution is folded (FUZE bottle on a plain turntable
plate, 24 photos at 640x480: median 12°, cameras turned 5° apart instead of 15°); correct solutions: 0.04-0.6°."""
TWO_VIEW_MIN_INLIERS = 30
"""Only pairs with this many verified matches are re-estimated (fewer leave the essential matrix unreliable)."""
TWO_VIEW_MAX_MATCHES = 400
"""A pair's essential matrix is re-estimated from at most this many of its verified matches (a seeded random
subset): the rotation is as well determined by 400 well-spread matches as by thousands. Soup-can orbit, balanced,
276 pairs: the check took 22.1 CPU-s with every match, 13.6 with 400 (the same 24/24 photos trusted)."""
TWO_VIEW_MIN_TRIALS = 100
"""RANSAC trials at least per re-estimated pair (COLMAP's default 1000): the verified matches are nearly all inliers,
so a hundred 5-point samples find the pair's best essential matrix. Soup-can orbit, preview, 256 pairs: 14.6 s with
1000, 1.8 s with 100, the same rotations (median 0.218°, max 7.99° from the solved ones); 30 let one pair miss
(72°)."""
TWO_VIEW_MIN_ANGLE_DEG = 2.0
"""Pairs whose matches say the camera turned less than this are skipped: a tiny rotation says little, and on a
turntable in front of a textured backdrop the matches of some pairs are still background that slipped past the
masks (re-estimated 0.1-0.8° where the product turned 45-180°: measured on a 16-photo render)."""
TWO_VIEW_BAD_SHARE = 0.5
"""A photo is untrusted when more than this share of its checked pairs disagree (a correct photo next to a wrong
one disagrees with that one only)."""
UPSIDE_DOWN_DEG = 150.0
"""A camera whose image-up is further than this from the capture's up is upside down (a 180° flip about the view
axis of a camera at elevation e puts it 180-2e away; portrait photos: 90°; a correct Middlebury temple-ring photo
measured over 120°, hence the margin)."""
SUPPORT_MARGIN = 0.05
"""A camera counts as under the table when it is more than this share of its distance to the product below it."""
FRAME_MARGIN = 0.25
"""The product may lie this share of the frame outside the image edges and still count as looked at."""


@dataclass
class TrustReport:
    """Which photos' solved poses cannot be trusted, and why."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    """Image name -> the checks it failed (``below_support``, ``not_looking``, ``upside_down``, ``two_view``)."""
    pairs_checked: int = 0
    """Neighbouring pairs whose relative rotation was re-estimated."""
    two_view_errors_deg: list[float] = field(default_factory=list)
    outlier_pairs: int = 0
    """Disagreeing pairs left unexplained by any photo (a bad two-view estimate between otherwise consistent photos)."""
    """|solved - re-estimated| relative rotation of every checked pair (the trusted ones and the others)."""
    support_found: bool = False
    folded: bool = False
    turntable: dict = field(default_factory=dict)
    """Fixed-camera captures: what the turntable solve found (placed, tilt, accepted or why not)."""
    explained_shares: list[float] = field(default_factory=list)
    """Turntable solutions: per checked pair, the share of its matches the solved pose explains (of its best)."""
    dropped: list[str] = field(default_factory=list)
    """Photos left out of the solution because they failed the checks (recovered)."""
    """The photos' matches disagree with the solution as a whole (not one photo: every one)."""

    @property
    def untrusted(self) -> list[str]:
        return sorted(self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems

    def flag(self, name: str, check: str) -> None:
        self.problems.setdefault(name, [])
        if check not in self.problems[name]:
            self.problems[name].append(check)

    def metrics(self) -> dict:
        errors = np.array(self.two_view_errors_deg) if self.two_view_errors_deg else np.zeros(1)
        return {"trust_pairs_checked": self.pairs_checked,
                "trust_two_view_median_deg": round(float(np.median(errors)), 3),
                "trust_two_view_p90_deg": round(float(np.percentile(errors, 90)), 3),
                "trust_outlier_pairs": self.outlier_pairs,
                "trust_support_plane_found": self.support_found, "trust_folded": self.folded,
                "untrusted_photos": self.untrusted, "trust_dropped": list(self.dropped),
                "turntable": dict(self.turntable)}


def model_cameras(model) -> dict[str, PinholeCamera]:
    """Registered images of a pycolmap Reconstruction as pinhole cameras, by image name."""
    from core.scene import pinhole_camera

    return {model.images[i].name: pinhole_camera(model, model.images[i]) for i in model.reg_image_ids()}


def layout_report(model) -> TrustReport | None:
    """The layout checks (``check_shape``) of a solved model; None when fewer than 3 photos are placed."""
    cameras = model_cameras(model)
    if len(cameras) < 3:
        return None
    report = TrustReport()
    points = np.array([p.xyz for p in model.points3D.values()]) if model.num_points3D() else np.zeros((0, 3))
    check_shape(cameras, points, report)
    return report


def check_model(model, database: Path, min_inliers: int = TWO_VIEW_MIN_INLIERS,
                tolerance_deg: float = TWO_VIEW_TOLERANCE_DEG, seed: int = 0) -> TrustReport:
    """Every trust check on a solved model; the verified matches come from the COLMAP ``database``."""
    report = layout_report(model)
    if report is None:
        return TrustReport()
    check_two_view(model, database, report, min_inliers=min_inliers, tolerance_deg=tolerance_deg, seed=seed)
    return report


EXPLAINED_PX = 2.0
"""Sampson distance (pixels) within which the solved pose explains a match (the RANSAC threshold of the re-check)."""
EXPLAINED_SHARE = 0.8
"""A pair agrees when the solved pose explains this share of what the pair's own best estimate explains (correct
turntable solution of the FUZE bottle on a plain plate, 800x600: median 1.0, 10th percentile 0.82)."""
FACING_SHARE = 0.5
"""A photo faces away when fewer than this share of its points lie on its side of the product (measured: correct
turntable solutions 0.9+, their mirror images below 0.2)."""


def check_turntable_model(model, database: Path, seed: int = 0) -> TrustReport:
    """The trust checks for a solution tied to a turntable: layout, matches explained, points facing the camera."""
    report = layout_report(model)
    if report is None:
        return TrustReport()
    check_explained(model, database, report, seed=seed)
    check_facing(model, report)
    return report


def check_explained(model, database: Path, report: TrustReport, min_inliers: int = TWO_VIEW_MIN_INLIERS,
                    seed: int = 0) -> None:
    """Flag the photos whose solved relative poses explain too few of their pairs' verified matches."""
    cameras = model_cameras(model)
    bad: dict[str, int] = {}
    total: dict[str, int] = {}
    shares = []
    for name1, name2, matches1, matches2, best in pair_matches(model, database, min_inliers, seed):
        c1, c2 = cameras[name1], cameras[name2]
        R = c2.R @ c1.R.T
        t = c2.t - R @ c1.t
        tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
        F = np.linalg.inv(c2.K).T @ tx @ R @ np.linalg.inv(c1.K)
        x1 = np.c_[matches1, np.ones(len(matches1))]
        x2 = np.c_[matches2, np.ones(len(matches2))]
        Fx1, Ftx2 = x1 @ F.T, x2 @ F
        denominator = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
        sampson = np.abs((x2 * Fx1).sum(1)) / np.sqrt(np.maximum(denominator, 1e-12))
        share = float((sampson < EXPLAINED_PX).sum()) / max(best, 1)
        shares.append(share)
        for name in (name1, name2):
            total[name] = total.get(name, 0) + 1
            if share < EXPLAINED_SHARE:
                bad[name] = bad.get(name, 0) + 1
    report.pairs_checked = len(shares)
    report.explained_shares = [round(s, 3) for s in shares]
    for name, count in bad.items():
        if count / total[name] > TWO_VIEW_BAD_SHARE:
            report.flag(name, "unexplained")


def check_facing(model, report: TrustReport) -> None:
    """Flag the photos most of whose points lie on the far side of the product (seen across the axis through the
    cameras' focus, along the capture's up)."""
    cameras = model_cameras(model)
    cams = list(cameras.values())
    up = capture_up(cams)
    focus = cameras_focus(cams)
    for image_id in model.reg_image_ids():
        image = model.images[image_id]
        xyz = np.array([model.points3D[p.point3D_id].xyz for p in image.points2D if p.has_point3D()])
        if len(xyz) < 10:
            continue
        centre = cameras[image.name].center
        towards = (centre - focus) - ((centre - focus) @ up) * up
        offsets = (xyz - focus) - np.outer((xyz - focus) @ up, up)
        if float(np.mean(offsets @ towards > 0)) < FACING_SHARE:
            report.flag(image.name, "facing_away")


def placed_pairs(model, database: Path, min_inliers: int, seed: int = 0, max_matches: int | None = None):
    """Yield (name1, name2, image1, image2, keypoints1, keypoints2) of the verified matches of every pair of placed
    photos with ``min_inliers`` of them; at most ``max_matches`` (a seeded random subset) when given."""
    import pycolmap

    placed = {model.images[i].name: model.images[i] for i in model.reg_image_ids()}
    rng = np.random.default_rng(seed)
    db = pycolmap.Database.open(str(database))
    try:
        db_names = {im.image_id: im.name for im in db.read_all_images()}
        pair_ids, geometries = db.read_two_view_geometries()
        keypoints: dict[int, np.ndarray] = {}

        def keys(image_id: int) -> np.ndarray:
            if image_id not in keypoints:
                keypoints[image_id] = np.asarray(db.read_keypoints(image_id), dtype=np.float64)[:, :2]
            return keypoints[image_id]

        for pair_id, geometry in zip(pair_ids, geometries, strict=True):
            matches = np.asarray(geometry.inlier_matches)
            if len(matches) < min_inliers:
                continue
            id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
            name1, name2 = db_names[id1], db_names[id2]
            if name1 not in placed or name2 not in placed:
                continue
            if max_matches is not None and len(matches) > max_matches:
                matches = matches[np.sort(rng.choice(len(matches), max_matches, replace=False))]
            yield name1, name2, placed[name1], placed[name2], keys(id1)[matches[:, 0]], keys(id2)[matches[:, 1]]
    finally:
        db.close()


def _ransac(max_error_px: float, seed: int):
    """The RANSAC options of the pair re-estimates (``TWO_VIEW_MIN_TRIALS``, seeded)."""
    import pycolmap

    ransac = pycolmap.RANSACOptions()
    ransac.max_error = max_error_px
    ransac.random_seed = seed
    ransac.min_num_trials = TWO_VIEW_MIN_TRIALS
    return ransac


def pair_matches(model, database: Path, min_inliers: int, seed: int = 0
                 ) -> list[tuple[str, str, np.ndarray, np.ndarray, int]]:
    """(name1, name2, keypoints1, keypoints2 of the verified matches, how many the pair's own best essential
    matrix explains within EXPLAINED_PX) for the pairs of placed photos with ``min_inliers`` matches."""
    import pycolmap

    ransac = _ransac(EXPLAINED_PX, seed)
    results = []
    for name1, name2, image1, image2, points1, points2 in placed_pairs(model, database, min_inliers, seed):
        estimate = pycolmap.estimate_essential_matrix(points1, points2, image1.camera, image2.camera, ransac)
        best = int(estimate["num_inliers"]) if estimate is not None else 0
        results.append((name1, name2, points1, points2, best))
    return results


def capture_up(cameras: list[PinholeCamera]) -> np.ndarray:
    """The capture's up: the mean image-up of the cameras, re-taken over those within a right angle of it (so a few
    upside-down cameras do not tilt it)."""
    up = cameras_up(cameras)
    ups = -np.array([c.R[1] for c in cameras])
    agreeing = ups[ups @ up > 0]
    if len(agreeing):
        up = agreeing.sum(0) / max(np.linalg.norm(agreeing.sum(0)), 1e-12)
    return up


def check_shape(cameras: dict[str, PinholeCamera], points: np.ndarray, report: TrustReport) -> None:
    """The checks on the cameras' layout: under the table, not looking at the product, upside down."""
    names = sorted(cameras)
    cams = [cameras[n] for n in names]
    up = capture_up(cams)
    focus = cameras_focus(cams)
    distances = np.array([np.linalg.norm(c.center - focus) for c in cams])
    scale = float(np.median(distances))
    for name, cam in zip(names, cams, strict=True):
        cam_up = -cam.R[1]
        if np.degrees(np.arccos(np.clip(cam_up @ up, -1, 1))) > UPSIDE_DOWN_DEG:
            report.flag(name, "upside_down")
        uv, z = cam.project(focus[None])
        margin = FRAME_MARGIN * np.array([cam.width, cam.height])
        inside = z[0] > 0 and np.all(uv[0] > -margin) and np.all(uv[0] < np.array([cam.width, cam.height]) + margin)
        if not inside:
            report.flag(name, "not_looking")
    if len(points) >= 100:
        plane = support_plane(points, cams, up, focus, tolerance=0.01 * scale)
        if plane is not None:
            report.support_found = True
            for name, cam in zip(names, cams, strict=True):
                height = cam.center @ plane[:3] + plane[3]
                if height < -SUPPORT_MARGIN * np.linalg.norm(cam.center - focus):
                    report.flag(name, "below_support")


def relative_rotations(model, database: Path, min_inliers: int, seed: int = 0,
                       max_matches: int = TWO_VIEW_MAX_MATCHES) -> list[tuple[str, str, np.ndarray, int, np.ndarray]]:
    """(name1, name2, R2_from_1 re-estimated from (a subset of) the verified matches, inliers, t2_from_1 direction)
    for the pairs of placed photos."""
    import pycolmap

    ransac = _ransac(2.0, seed)  # px; matched SIFT keypoints of a sharp capture agree within ~1 px
    results = []
    for name1, name2, image1, image2, points1, points2 in placed_pairs(model, database, min_inliers, seed,
                                                                       max_matches):
        estimate = pycolmap.estimate_essential_matrix(points1, points2, image1.camera, image2.camera, ransac)
        if estimate is None or estimate["num_inliers"] < min_inliers:
            continue
        pose = estimate["cam2_from_cam1"]
        rotation = np.asarray(pose.rotation.matrix())
        results.append((name1, name2, rotation, int(estimate["num_inliers"]), np.asarray(pose.translation)))
    return results


def check_two_view(model, database: Path, report: TrustReport, min_inliers: int = TWO_VIEW_MIN_INLIERS,
                   tolerance_deg: float = TWO_VIEW_TOLERANCE_DEG, seed: int = 0) -> None:
    """Flag the photos whose solved relative rotations disagree with what their matches say.

    Greedy: while some checked pair disagrees, the photo with the most disagreeing pairs (and a majority of its
    pairs disagreeing) is flagged and its pairs set aside; a correct photo next to a wrong one then agrees again.
    """
    cameras = model_cameras(model)
    pairs = []
    for name1, name2, measured, _, _ in relative_rotations(model, database, min_inliers, seed):
        solved = cameras[name2].R @ cameras[name1].R.T
        if rotation_angle_deg(measured) < TWO_VIEW_MIN_ANGLE_DEG:
            continue
        error = rotation_angle_deg(solved @ measured.T)
        pairs.append((name1, name2, error))
        report.two_view_errors_deg.append(round(error, 3))
    report.pairs_checked = len(pairs)
    if len(pairs) >= 5 and np.median([p[2] for p in pairs]) > FOLDED_MEDIAN_DEG:
        report.folded = True
        for name in cameras:
            report.flag(name, "two_view")
        return
    active = list(pairs)
    while True:
        bad: dict[str, int] = {}
        total: dict[str, int] = {}
        for name1, name2, error in active:
            for name in (name1, name2):
                total[name] = total.get(name, 0) + 1
                if error > tolerance_deg:
                    bad[name] = bad.get(name, 0) + 1
        if not bad:
            return
        # Most disagreeing minus agreeing pairs first: a wrong photo disagrees with all its neighbours.
        worst = max(bad, key=lambda n: (2 * bad[n] - total[n], bad[n], n))
        if bad[worst] / total[worst] <= TWO_VIEW_BAD_SHARE:
            # What is left are single disagreeing pairs between photos that agree with their other neighbours: the
            # pair's essential matrix is the outlier, not the photos (soup-can orbit, balanced: view_006 and view_020
            # were dropped for one such pair each although both were placed within 0.02° of the truth).
            report.outlier_pairs = sum(1 for p in active if p[2] > tolerance_deg)
            return
        report.flag(worst, "two_view")
        active = [p for p in active if worst not in p[:2]]
