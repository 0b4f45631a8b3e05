"""Turntable bundle adjustment: the cameras of a fixed-camera capture solved as one turntable.

The parameters are the shared intrinsics (focal length and radial distortion, principal point fixed), one camera
pose per ring relative to the turntable (several rings share the axis), one turn angle per photo, and the 3D points;
the cost is the robust (Cauchy) reprojection error of the feature tracks built from the COLMAP database's verified
matches, minimised by Levenberg-Marquardt on the Schur complement (points eliminated, so a step costs a small dense
solve). World frame: the turntable's, axis = z through the origin; photo i of ring k is seen by
``cam_from_world = [R_k | t_k] @ Rz(theta_i)`` (the product turned by theta_i in front of the fixed camera).

Why: on a small, plain product two photos alone cannot tell a big turn of a shallow shape from a small turn of a
deep one (the bas-relief ambiguity); incremental mapping, which grows from pairs, then folds or mirrors the cameras.
Tied to one axis and one angle per photo, and to all photos' matches at once (the turn closes on itself), the
ambiguity goes: the only unknowns left per photo are one angle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CAUCHY_SCALE_PX = 2.0
"""Residuals beyond this many pixels count less and less (SIFT matches of a sharp capture agree within ~1 px)."""
INLIER_PX = 3.0
"""An observation within this many pixels of its point's projection is explained by the solution."""
MAX_ITERATIONS = 200
START_ELEVATIONS_DEG = (20.0, 45.0)
"""Camera heights tried when nothing says how high the camera is (product photography: 10-60° above the table;
FUZE bottle on a plain plate, 800x600: starts at 15, 35 and 55° all converged to the same 29°, true 30°)."""
TILT_STD_MAX_DEG = 0.7
"""A turntable solution whose ring tilt is less sure than this (1 sigma) is not trusted: the tilt's error ran to
about 5 sigma (FUZE bottle on a plain plate: 800x600, ±0.39°, cameras 1.2° off; 640x480, ±1.09°, all 5.7° off)."""
MAX_OBSERVATIONS = 8000
"""The longest tracks up to this many observations are adjusted (a textured plate gives 47k, minutes per start on
two cores; the FUZE bottle on a plain plate has 4k and solves in about 12 s per start)."""
MIN_PHOTO_INLIERS = 12
"""A photo is placed only when this many of its observations are explained (its one angle then rests on many
points; fewer, and a few wrong matches could turn it)."""


@dataclass
class FeatureTracks:
    """Multi-view tracks from the verified matches of a COLMAP database."""

    names: list[str]
    """Image names, index = image index below."""
    image_ids: list[int]
    """COLMAP image id of each image."""
    keypoints: list[np.ndarray]
    """Per image, all its keypoints (n, 2) in pixels."""
    observations: np.ndarray
    """(m, 3) int: image index, keypoint index, track index."""
    num_tracks: int
    pair_inliers: np.ndarray
    """(n, n) verified inlier matches between images."""
    camera: dict
    """The database's camera of the first image: model, width, height, params."""


def read_tracks(database: Path, names: list[str] | None = None) -> FeatureTracks:
    """Tracks joined from every verified pair's inlier matches (union-find); tracks that see one image at two
    keypoints (a wrong match somewhere along them) are left out."""
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        images = sorted(db.read_all_images(), key=lambda im: im.name)
        if names is not None:
            wanted = set(names)
            images = [im for im in images if im.name in wanted]
        index = {im.image_id: i for i, im in enumerate(images)}
        keypoints = [np.asarray(db.read_keypoints(im.image_id), dtype=np.float64)[:, :2] for im in images]
        cam = db.read_camera(images[0].camera_id)
        camera = {"model": cam.model_name, "width": int(cam.width), "height": int(cam.height),
                  "params": np.asarray(cam.params, dtype=np.float64).copy()}
        offsets = np.concatenate([[0], np.cumsum([len(k) for k in keypoints])])
        parent = np.arange(offsets[-1])
        pair_inliers = np.zeros((len(images), len(images)), dtype=int)
        pair_ids, geometries = db.read_two_view_geometries()
        edges = []
        for pair_id, geometry in zip(pair_ids, geometries, strict=True):
            id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
            if id1 not in index or id2 not in index:
                continue
            matches = np.asarray(geometry.inlier_matches, dtype=np.int64).reshape(-1, 2)
            if not len(matches):
                continue
            i, j = index[id1], index[id2]
            pair_inliers[i, j] = pair_inliers[j, i] = len(matches)
            edges.append(np.stack([offsets[i] + matches[:, 0], offsets[j] + matches[:, 1]], 1))
    finally:
        db.close()

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in (np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(x) for x in range(len(parent))])
    image_of = np.repeat(np.arange(len(images)), np.diff(offsets))
    key_of = np.arange(len(parent)) - offsets[image_of]
    counts = np.bincount(roots, minlength=len(parent))
    in_track = counts[roots] >= 2
    # A track holding two keypoints of one image is inconsistent: leave it out.
    pairs = roots[in_track] * len(images) + image_of[in_track]
    unique, multiplicity = np.unique(pairs, return_counts=True)
    bad_roots = np.unique(unique[multiplicity > 1] // len(images))
    keep = in_track & ~np.isin(roots, bad_roots)
    _, track = np.unique(roots[keep], return_inverse=True)
    observations = np.stack([image_of[keep], key_of[keep], track], 1)
    observations = observations[np.argsort(observations[:, 2], kind="stable")]  # by track: sums per point are slices
    return FeatureTracks([im.name for im in images], [int(im.image_id) for im in images], keypoints,
                         observations, int(track.max() + 1) if len(track) else 0, pair_inliers, camera)


def longest_tracks(tracks: FeatureTracks, max_observations: int = MAX_OBSERVATIONS) -> FeatureTracks:
    """The tracks seen by the most photos, up to ``max_observations`` observations (long tracks tie most photos
    together and bend the most: they carry the turn and the tilt)."""
    if len(tracks.observations) <= max_observations:
        return tracks
    lengths = np.bincount(tracks.observations[:, 2], minlength=tracks.num_tracks)
    order = np.argsort(-lengths, kind="stable")
    chosen = order[:int(np.searchsorted(np.cumsum(lengths[order]), max_observations, side="right"))]
    keep = np.isin(tracks.observations[:, 2], chosen)
    observations = tracks.observations[keep].copy()
    _, observations[:, 2] = np.unique(observations[:, 2], return_inverse=True)
    return replace(tracks, observations=observations, num_tracks=len(chosen))


@dataclass
class TurntableSolution:
    """Solved turntable: intrinsics, ring poses, one angle per photo, points."""

    focal: float
    distortion: float
    principal: np.ndarray
    ring_rotations: np.ndarray
    """(rings, 3, 3) camera-from-turntable rotation of each ring."""
    ring_translations: np.ndarray
    """(rings, 3)."""
    ring_of: np.ndarray
    """Per image, its ring."""
    angles: np.ndarray
    """Per image, its turn in radians."""
    points: np.ndarray
    """(tracks, 3) in the turntable frame (nan for tracks left out)."""
    inlier: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per observation of the tracks: explained within INLIER_PX."""
    cost: float = float("inf")
    start: str = ""
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per observation: used by the last adjustment (the others were set aside as outliers)."""
    fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per image: its angle was held (one per ring, the gauge of the turn)."""

    def rotation(self, image: int) -> np.ndarray:
        return self.ring_rotations[self.ring_of[image]] @ rot_z(self.angles[image])

    def translation(self, image: int) -> np.ndarray:
        return self.ring_translations[self.ring_of[image]]

    @property
    def inliers(self) -> int:
        return int(self.inlier.sum())


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _skew(v: np.ndarray) -> np.ndarray:
    """(m, 3) -> (m, 3, 3) cross-product matrices."""
    out = np.zeros((len(v), 3, 3))
    out[:, 0, 1], out[:, 0, 2], out[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    out[:, 1, 0], out[:, 2, 0], out[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    return out


def _exp_so3(w: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(w)
    if angle < 1e-12:
        return np.eye(3)
    k = _skew((w / angle)[None])[0]
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def look_at_ring(elevation: float, distance: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of an upright camera at ``elevation`` (radians) above the table, looking at the axis' origin."""
    centre = distance * np.array([np.cos(elevation), 0.0, np.sin(elevation)])
    forward = -centre / np.linalg.norm(centre)
    down = np.array([0.0, 0.0, -1.0]) - forward * (forward @ np.array([0.0, 0.0, -1.0]))
    down /= np.linalg.norm(down)
    right = np.cross(down, forward)
    R = np.stack([right, down, forward])
    return R, -R @ centre


class _Problem:
    """Observations and the residuals / Jacobians of the turntable model."""

    def __init__(self, tracks: FeatureTracks, ring_of: np.ndarray, principal: np.ndarray, fixed_angles: np.ndarray,
                 fix_intrinsics: bool = False):
        self.tracks = tracks
        obs = tracks.observations
        self.image = obs[:, 0]
        self.point = obs[:, 2]
        self.uv = np.concatenate([tracks.keypoints[i][k][None] for i, k in obs[:, :2]]) if len(obs) else \
            np.zeros((0, 2))
        self.ring_of = ring_of
        self.rings = int(ring_of.max()) + 1
        self.principal = principal
        self.n_images = len(tracks.names)
        # Camera-side parameters: focal, distortion, per ring (rotation increment, translation), per image angle.
        self.n_cam = 2 + 6 * self.rings + self.n_images
        free = np.ones(self.n_cam, dtype=bool)
        free[2 + 6 * self.rings + np.flatnonzero(fixed_angles)] = False  # one angle per ring: the turn's gauge
        if fix_intrinsics:
            free[:2] = False
        self.free = free
        self.active = np.ones(len(obs), dtype=bool)
        self.track_starts = np.flatnonzero(np.r_[True, np.diff(self.point) != 0])  # observations sorted by track

    def per_point(self, values: np.ndarray) -> np.ndarray:
        """Sums of per-observation ``values`` over each track's observations."""
        return np.add.reduceat(values, self.track_starts, axis=0)

    def project(self, sol: TurntableSolution, points: np.ndarray | None = None, jacobians: bool = False):
        points = sol.points if points is None else points
        ring = self.ring_of[self.image]
        theta = sol.angles[self.image]
        c, s = np.cos(theta), np.sin(theta)
        X = points[self.point]
        Xt = np.stack([c * X[:, 0] - s * X[:, 1], s * X[:, 0] + c * X[:, 1], X[:, 2]], 1)
        R = sol.ring_rotations[ring]
        RXt = np.einsum("mij,mj->mi", R, Xt)
        Xc = RXt + sol.ring_translations[ring]
        z = Xc[:, 2]
        z_safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        p = Xc[:, :2] / z_safe[:, None]
        r2 = (p**2).sum(1)
        d = 1 + sol.distortion * r2
        uv = sol.focal * d[:, None] * p + sol.principal
        residual = uv - self.uv
        if not jacobians:
            return residual, z
        m = len(X)
        f, k = sol.focal, sol.distortion
        du_dp = f * (d[:, None, None] * np.eye(2)[None] + 2 * k * p[:, :, None] * p[:, None, :])
        dp_dXc = np.zeros((m, 2, 3))
        dp_dXc[:, 0, 0] = dp_dXc[:, 1, 1] = 1 / z_safe
        dp_dXc[:, :, 2] = -p / z_safe[:, None]
        J_xc = du_dp @ dp_dXc  # (m, 2, 3)
        Rz = np.zeros((m, 3, 3))
        Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
        J_point = J_xc @ R @ Rz
        J_cam = np.zeros((m, 2, self.n_cam))
        J_cam[:, :, 0] = d[:, None] * p
        J_cam[:, :, 1] = f * r2[:, None] * p
        J_rot = -J_xc @ _skew(RXt)
        dXt_dtheta = np.stack([-Xt[:, 1], Xt[:, 0], np.zeros(m)], 1)
        J_theta = np.einsum("mij,mj->mi", J_xc @ R, dXt_dtheta)
        rows = np.arange(m)
        for q in range(3):
            J_cam[rows, :, 2 + 6 * ring + q] = J_rot[:, :, q]
            J_cam[rows, :, 5 + 6 * ring + q] = J_xc[:, :, q]
        J_cam[rows, :, 2 + 6 * self.rings + self.image] = J_theta
        return residual, z, J_cam, J_point

    def robust_cost(self, residual: np.ndarray, z: np.ndarray) -> float:
        sq = (residual**2).sum(1) / CAUCHY_SCALE_PX**2
        sq = np.where(z > 0, sq, 1e4)  # behind the camera: as bad as a gross outlier
        return float(0.5 * CAUCHY_SCALE_PX**2 * np.log1p(sq[self.active]).sum())

    def step(self, sol: TurntableSolution, delta_cam: np.ndarray, delta_points: np.ndarray) -> TurntableSolution:
        rings = self.rings
        rot = sol.ring_rotations.copy()
        for r in range(rings):
            rot[r] = _exp_so3(delta_cam[2 + 6 * r: 5 + 6 * r]) @ rot[r]
        trans = sol.ring_translations + delta_cam[2:2 + 6 * rings].reshape(rings, 6)[:, 3:]
        return replace(sol, focal=sol.focal + delta_cam[0], distortion=sol.distortion + delta_cam[1],
                       ring_rotations=rot, ring_translations=trans,
                       angles=sol.angles + delta_cam[2 + 6 * rings:], points=sol.points + delta_points)


def _normal_equations(problem: _Problem, sol: TurntableSolution):
    """IRLS-weighted normal equations: camera block, camera-point blocks, point blocks, gradients, and the
    weighted squared residuals."""
    residual, z, J_cam, J_point = problem.project(sol, jacobians=True)
    sq = (residual**2).sum(1) / CAUCHY_SCALE_PX**2
    weight = np.where(problem.active & (z > 0), 1.0 / (1.0 + sq), 0.0)  # IRLS weights of the Cauchy loss
    Jc = J_cam[:, :, problem.free]
    Wr = weight[:, None] * residual
    # Batched matrix products (einsum with three operands does not reach BLAS: it was 80% of the time).
    WJc = (weight[:, None, None] * Jc).transpose(0, 2, 1)  # (m, cams, 2)
    n = Jc.shape[2]
    H_cc = WJc.transpose(0, 2, 1).reshape(-1, n).T @ Jc.reshape(-1, n)
    g_c = (Jc * Wr[:, :, None]).sum((0, 1))
    H_cp = problem.per_point(WJc @ J_point)
    H_pp = problem.per_point((weight[:, None, None] * J_point).transpose(0, 2, 1) @ J_point)
    g_p = problem.per_point((J_point * Wr[:, :, None]).sum(1))
    return H_cc, g_c, H_cp, H_pp, g_p, float((weight * (residual**2).sum(1)).sum())


def adjust(problem: _Problem, sol: TurntableSolution, iterations: int = MAX_ITERATIONS) -> TurntableSolution:
    """Levenberg-Marquardt on the robust reprojection error; the points are eliminated (Schur complement)."""
    residual, z = problem.project(sol)
    cost = problem.robust_cost(residual, z)
    lam = 1e-3
    for _ in range(iterations):
        H_cc, g_c, H_cp, H_pp, g_p, _ = _normal_equations(problem, sol)
        improved = converged = False
        for _ in range(10):
            A = H_cc + lam * np.diag(np.diag(H_cc) + 1e-9)
            B = H_pp + lam * (np.einsum("pii->pi", H_pp)[:, :, None] * np.eye(3) + 1e-9 * np.eye(3))
            B_inv = np.linalg.inv(B)
            HB = H_cp @ B_inv
            S = A - np.tensordot(HB, H_cp, axes=([0, 2], [0, 2]))
            rhs = -g_c + np.tensordot(HB, g_p, axes=([0, 2], [0, 1]))
            try:
                dc = np.linalg.solve(S, rhs)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            dp = -(B_inv @ (g_p + (H_cp.transpose(0, 2, 1) @ dc))[:, :, None])[:, :, 0]
            delta = np.zeros(problem.n_cam)
            delta[problem.free] = dc
            candidate = problem.step(sol, delta, dp)
            new_cost = problem.robust_cost(*problem.project(candidate))
            if new_cost < cost:
                converged = cost - new_cost < 1e-7 * cost
                sol, cost = candidate, new_cost
                lam = max(lam / 3, 1e-7)
                improved = True
                break
            lam *= 5
        if not improved or converged:
            break
    residual, z = problem.project(sol)
    sol.cost = cost
    sol.inlier = problem.active & (z > 0) & (np.linalg.norm(residual, axis=1) < INLIER_PX)
    sol.active = problem.active.copy()
    return sol


def tilt_std_deg(tracks: FeatureTracks, sol: TurntableSolution) -> float:
    """Standard deviation (degrees) of the worst-determined ring's tilt (its camera's rotation about the image's
    horizontal axis, which sets the camera height), from the inverse of the reduced normal equations.

    The turn angles of a small product are fixed by all photos together, its tilt only by how far each point's
    path bends in the image (an ellipse whose height is the sine of the elevation): short tracks on a small product
    leave it loose."""
    problem = _Problem(tracks, sol.ring_of, sol.principal, sol.fixed, fix_intrinsics=True)
    problem.active = sol.active
    H_cc, _, H_cp, H_pp, _, weighted_sq = _normal_equations(problem, sol)
    regular = 1e-9 * np.einsum("pii->p", H_pp)[:, None, None] * np.eye(3)
    S = H_cc - np.einsum("pik,pkl,pjl->ij", H_cp, np.linalg.pinv(H_pp + regular), H_cp)
    dof = max(2 * int(problem.active.sum()) - int(problem.free.sum()) - 3 * len(sol.points), 1)
    covariance = weighted_sq / dof * np.linalg.pinv(S)
    position = np.cumsum(problem.free) - 1
    return float(max(np.degrees(np.sqrt(max(covariance[position[2 + 6 * r], position[2 + 6 * r]], 0.0)))
                     for r in range(problem.rings)))


def triangulate(problem: _Problem, sol: TurntableSolution) -> np.ndarray:
    """Each track's point by linear triangulation (DLT, distortion ignored) from the current cameras."""
    f, pp = sol.focal, sol.principal
    K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1.0]])
    P = np.stack([K @ np.hstack([sol.rotation(i), sol.translation(i)[:, None]]) for i in range(problem.n_images)])
    points = np.zeros((problem.tracks.num_tracks, 3))
    Pm = P[problem.image]
    rows = np.concatenate([problem.uv[:, :1] * Pm[:, 2] - Pm[:, 0], problem.uv[:, 1:] * Pm[:, 2] - Pm[:, 1]], 1)
    rows = rows.reshape(-1, 2, 4)
    A = problem.per_point(np.einsum("mai,maj->mij", rows, rows))
    _, vecs = np.linalg.eigh(A)
    h = vecs[:, :, 0]
    w = np.where(np.abs(h[:, 3]) < 1e-12, 1e-12, h[:, 3])
    points = h[:, :3] / w[:, None]
    return points


def ring_elevation(sol: TurntableSolution, ring: int) -> float:
    """Elevation (radians) of a ring's camera above the points' centre, seen from the axis."""
    centre = -sol.ring_rotations[ring].T @ sol.ring_translations[ring]
    good = np.isfinite(sol.points).all(1)
    focus_height = np.median(sol.points[good, 2]) if good.any() else 0.0
    return float(np.arctan2(centre[2] - focus_height, np.linalg.norm(centre[:2])))


def circular_angles(weights: np.ndarray) -> np.ndarray:
    """Angles on a circle from pairwise similarity (verified matches): the two leading non-trivial eigenvectors
    of the normalised match graph of a closed turn are the cosine and sine of each photo's angle (spectral circular
    ordering; needs no file order)."""
    W = weights.astype(float)
    degree = np.maximum(W.sum(1), 1e-9)
    normalised = W / np.sqrt(np.outer(degree, degree))
    _, vecs = np.linalg.eigh(normalised)
    v1, v2 = vecs[:, -2] / np.sqrt(degree), vecs[:, -3] / np.sqrt(degree)
    return np.arctan2(v2, v1)


def solve(tracks: FeatureTracks, ring_of: np.ndarray, starts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray,
                                                                         float, float]],
          fix_intrinsics: bool = False) -> TurntableSolution | None:
    """The best turntable over several starts: (label, angles, ring rotations, ring translations, focal, k).

    Each start: points triangulated from its cameras, adjusted, observations beyond 4x the inlier distance set
    aside, adjusted again. A start that reaches where an earlier one did after the first adjustment stops there (the
    camera heights tried converge to one solution per turning direction). Best = most observations explained."""
    principal = tracks.camera["params"][1:3].copy()
    fixed = np.zeros(len(tracks.names), dtype=bool)
    for ring in np.unique(ring_of):
        members = np.flatnonzero(ring_of == ring)
        fixed[members[np.argmax(tracks.pair_inliers[members].sum(1))]] = True  # the best-connected photo
    best = None
    reached: list[TurntableSolution] = []
    for label, angles, rotations, translations, focal, k in starts:
        problem = _Problem(tracks, ring_of, principal, fixed, fix_intrinsics)
        sol = TurntableSolution(focal, k, principal, rotations.copy(), translations.copy(), ring_of, angles.copy(),
                                np.zeros((tracks.num_tracks, 3)), start=label, fixed=fixed)
        sol.points = triangulate(problem, sol)
        sol = adjust(problem, sol, iterations=60)
        if any(_same_solution(sol, other) for other in reached):
            logger.info("turntable start %s: converges to an earlier start's solution", label)
            continue
        reached.append(sol)
        for _ in range(2):
            residual, z = problem.project(sol)
            problem.active = (z > 0) & (np.linalg.norm(residual, axis=1) < 4 * INLIER_PX)
            sol = adjust(problem, sol)
        logger.info("turntable start %s: %d of %d observations explained, focal %.1f, elevation %.1f°", label,
                    sol.inliers, len(problem.image), sol.focal, np.degrees(ring_elevation(sol, 0)))
        if best is None or sol.inliers > best.inliers:
            best = sol
    return best


def _same_solution(a: TurntableSolution, b: TurntableSolution, tolerance_deg: float = 1.0) -> bool:
    """The same turns (relative to the held photos) and camera heights, within ``tolerance_deg``."""
    turns = np.degrees(np.abs(np.angle(np.exp(1j * ((a.angles - b.angles) - (a.angles - b.angles)[a.fixed][0])))))
    heights = [abs(ring_elevation(a, r) - ring_elevation(b, r)) for r in range(len(a.ring_rotations))]
    return bool(turns.max() < tolerance_deg and np.degrees(max(heights)) < tolerance_deg)


def default_starts(tracks: FeatureTracks, ring_of: np.ndarray) -> list[tuple]:
    """Starts without a prior solution: spectral angles (both turning directions) x a few camera heights."""
    focal, k = float(tracks.camera["params"][0]), 0.0
    angles = circular_angles(tracks.pair_inliers)
    starts = []
    rings = int(ring_of.max()) + 1
    for sign in (1.0, -1.0):
        for elevation in START_ELEVATIONS_DEG:
            poses = [look_at_ring(np.radians(elevation)) for _ in range(rings)]
            starts.append((f"spectral{'+' if sign > 0 else '-'} {elevation:.0f}°", sign * angles,
                           np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses]), focal, k))
    return starts


def starts_from_model(tracks: FeatureTracks, ring_of: np.ndarray, cameras: dict) -> list[tuple]:
    """Starts whose angles come from a solved model (photos it left out: spectral angles turned to agree with it),
    both turning directions, camera heights from the model."""
    from core.stages.sfm.turntable import fit_turntable

    placed = [i for i, n in enumerate(tracks.names) if n in cameras]
    if len(placed) < 3:
        return []
    fit = fit_turntable({tracks.names[i]: cameras[tracks.names[i]] for i in placed})
    spectral = circular_angles(tracks.pair_inliers)
    focal = float(np.mean([cameras[tracks.names[i]].K[0, 0] for i in placed]))
    rings = int(ring_of.max()) + 1
    elevations = []
    for r in range(rings):
        members = [i for i in placed if ring_of[i] == r]
        heights = [np.arcsin(np.clip(fit.axis @ (cameras[tracks.names[i]].center - fit.point)
                                     / max(np.linalg.norm(cameras[tracks.names[i]].center - fit.point), 1e-12),
                                     -1, 1)) for i in members]
        elevations.append(float(np.median(heights)) if heights else np.radians(30.0))
    starts = []
    model_angles = np.array([fit.angles[tracks.names[i]] for i in placed])
    for sign in (1.0, -1.0):
        angles = np.zeros(len(tracks.names))
        angles[placed] = sign * model_angles
        # Spectral angles of the left-out photos, turned (and mirrored if need be) onto the model's placed ones.
        best = None
        for mirror in (1.0, -1.0):
            offset = np.angle(np.exp(1j * (angles[placed] - mirror * spectral[placed])).mean())
            spread = np.abs(np.exp(1j * (angles[placed] - mirror * spectral[placed])).mean())
            if best is None or spread > best[0]:
                best = (spread, mirror, offset)
        missing = [i for i in range(len(tracks.names)) if i not in set(placed)]
        angles[missing] = best[1] * spectral[missing] + best[2]
        poses = [look_at_ring(e) for e in elevations]
        starts.append((f"model{'+' if sign > 0 else '-'}", angles, np.stack([p[0] for p in poses]),
                       np.stack([p[1] for p in poses]), focal, 0.0))
    return starts


def placed_images(tracks: FeatureTracks, sol: TurntableSolution) -> np.ndarray:
    """Images with enough explained observations to be placed."""
    counts = np.bincount(tracks.observations[sol.inlier, 0], minlength=len(tracks.names))
    return np.flatnonzero(counts >= MIN_PHOTO_INLIERS)


def to_reconstruction(tracks: FeatureTracks, sol: TurntableSolution, camera_id: int = 1):
    """The solution as a pycolmap Reconstruction (one shared camera; points from the explained observations of
    tracks seen by two or more placed photos), so the stages after SfM read it like any other model."""
    import pycolmap

    placed = set(placed_images(tracks, sol).tolist())
    params = tracks.camera["params"].copy()
    params[0] = sol.focal
    if len(params) > 3:
        params[3] = sol.distortion
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera(model=tracks.camera["model"], width=tracks.camera["width"],
                             height=tracks.camera["height"], params=params, camera_id=camera_id)
    rec.add_camera_with_trivial_rig(camera)
    for i in sorted(placed):
        image = pycolmap.Image(name=tracks.names[i], keypoints=tracks.keypoints[i], camera_id=camera_id,
                               image_id=tracks.image_ids[i])
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(sol.rotation(i)), sol.translation(i))
        rec.add_image_with_trivial_frame(image, pose)
    obs = tracks.observations
    keep = sol.inlier & np.isin(obs[:, 0], list(placed))
    order = np.flatnonzero(keep)
    by_track = np.split(order, np.flatnonzero(np.diff(obs[order, 2])) + 1) if len(order) else []
    for rows in by_track:
        if len(rows) < 2:
            continue
        track = pycolmap.Track()
        for image_index, key, _ in obs[rows]:
            track.add_element(tracks.image_ids[image_index], int(key))
        rec.add_point3D(sol.points[obs[rows[0], 2]], track)
    return rec
