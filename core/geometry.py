"""Geometry conventions, written once and used everywhere.

Conventions (the same as COLMAP and OpenCV):

* A camera pose is ``cam_from_world``: a rotation ``R`` (3x3) and translation ``t`` (3,)
  with ``x_cam = R @ x_world + t``.
* Camera axes: x right, y down, z forward (the camera looks along +z).
* Pixel coordinates are continuous with the origin at the top-left corner of the
  top-left pixel, so the centre of pixel (col, row) is (col + 0.5, row + 0.5).
  Depth maps store the z coordinate in the camera frame (not the ray length).
* World units are whatever the reconstruction has: SfM results have an arbitrary
  scale; synthetic captures and product scans are in metres.

Anything coming in with another convention (Bundler, Strecha, OpenGL/glTF) is
converted at the boundary where it is read or written, with a comment there.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """An undistorted pinhole camera with its pose (cam_from_world)."""

    K: np.ndarray
    """3x3 intrinsics in pixels."""
    R: np.ndarray
    """3x3 rotation, cam_from_world."""
    t: np.ndarray
    """(3,) translation, cam_from_world."""
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def viewing_direction(self) -> np.ndarray:
        """Unit optical axis (+z of the camera) in world coordinates."""
        return self.R[2].copy()

    def world_to_cam(self, points: np.ndarray) -> np.ndarray:
        return points @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N,3) world points; returns (N,2) pixels and (N,) depths (z in camera)."""
        cam = self.world_to_cam(points)
        z = cam[:, 2]
        safe_z = np.where(np.abs(z) < 1e-12, 1e-12, z)
        uv = (cam[:, :2] / safe_z[:, None]) @ self.K[:2, :2].T + self.K[:2, 2]
        return uv, z

    def scaled(self, factor: float) -> PinholeCamera:
        """The same camera for an image resized by ``factor`` (pixel-corner convention)."""
        K = self.K.copy()
        K[:2] *= factor
        return PinholeCamera(K, self.R, self.t, round(self.width * factor), round(self.height * factor))


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world (R, t) for a camera at ``eye`` looking at ``target``; image y down, ``up`` (default +z) up."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else up
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: any right vector will do
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ eye


def intrinsics_from_fov(width: int, height: int, horizontal_fov_deg: float) -> np.ndarray:
    """Pinhole K with the principal point at the image centre."""
    f = 0.5 * width / np.tan(np.deg2rad(horizontal_fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (u, v), each (height, width)."""
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def backproject_depth(depth: np.ndarray, camera: PinholeCamera, mask: np.ndarray | None = None) -> np.ndarray:
    """World points (N,3) of the pixels with finite positive depth (and ``mask`` if given), row-major order."""
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    u, v = pixel_grid(depth.shape[1], depth.shape[0])
    z = depth[valid]
    K = camera.K
    x = (u[valid] - K[0, 2]) / K[0, 0] * z
    y = (v[valid] - K[1, 2]) / K[1, 1] * z
    cam = np.stack([x, y, z], axis=1)
    return (cam - camera.t) @ camera.R


def cameras_focus(cameras: list[PinholeCamera]) -> np.ndarray:
    """Least-squares point nearest to every optical axis (where the cameras converge: the product).

    Solves sum_i (I - d_i d_i^T)(x - c_i) = 0; for parallel axes (a sweep, not an orbit) there is no such point and
    the mean of the points one unit in front of the cameras is returned.
    """
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in cameras:
        d = cam.viewing_direction
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ cam.center
    if np.linalg.cond(A) > 1e8:
        return np.mean([c.center + c.viewing_direction for c in cameras], axis=0)
    return np.linalg.solve(A, b)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees."""
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


@dataclass(frozen=True)
class Similarity:
    """x' = scale * R @ x + t."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.R.T + self.t

    def apply_to_camera(self, camera: PinholeCamera) -> PinholeCamera:
        """The same camera in the transformed world (x' = s R x + t): R_c R^T and s t_c - R_c R^T t, up to scale."""
        R_new = camera.R @ self.R.T
        t_new = self.scale * camera.t - R_new @ self.t
        return PinholeCamera(camera.K, R_new, t_new, camera.width, camera.height)


def umeyama_similarity(source: np.ndarray, target: np.ndarray) -> Similarity:
    """Least-squares similarity mapping ``source`` (N,3) onto ``target`` (N,3) (Umeyama 1991)."""
    if len(source) < 3:
        raise ValueError("need at least 3 point pairs for a similarity")
    mu_s, mu_t = source.mean(0), target.mean(0)
    src, tgt = source - mu_s, target - mu_t
    cov = tgt.T @ src / len(source)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    var_s = (src**2).sum() / len(source)
    scale = float(np.trace(np.diag(D) @ S) / var_s)
    t = mu_t - scale * R @ mu_s
    return Similarity(scale, R, t)


@dataclass(frozen=True)
class PoseErrors:
    """Camera errors of an estimate against ground truth after similarity alignment."""

    rotation_deg: np.ndarray
    center_error: np.ndarray
    """Camera centre errors in ground-truth units."""
    alignment: Similarity


def compare_poses(estimated: list[PinholeCamera], truth: list[PinholeCamera]) -> PoseErrors:
    """Align estimated camera centres to ground truth (7 DoF) and measure rotation and centre errors per camera."""
    est_centers = np.array([c.center for c in estimated])
    gt_centers = np.array([c.center for c in truth])
    sim = umeyama_similarity(est_centers, gt_centers)
    rot_err = []
    for est, gt in zip(estimated, truth, strict=True):
        aligned = sim.apply_to_camera(est)
        rot_err.append(rotation_angle_deg(aligned.R @ gt.R.T))
    center_err = np.linalg.norm(sim.apply(est_centers) - gt_centers, axis=1)
    return PoseErrors(np.array(rot_err), center_err, sim)


def relative_rotation_errors_deg(estimated: list[PinholeCamera], truth: list[PinholeCamera]) -> np.ndarray:
    """Alignment-free rotation errors: for every pair (i, j), the angle between R_i R_j^T estimated and true."""
    errors = []
    for i in range(len(estimated)):
        for j in range(i + 1, len(estimated)):
            rel_est = estimated[i].R @ estimated[j].R.T
            rel_gt = truth[i].R @ truth[j].R.T
            errors.append(rotation_angle_deg(rel_est @ rel_gt.T))
    return np.array(errors)


def find_plane(points: np.ndarray, tolerance: float, accept, *, candidates: int = 4, min_share: float = 0.05,
               iterations: int = 500, max_points: int = 200_000, seed: int = 0) -> np.ndarray | None:
    """The largest RANSAC plane of ``points`` that ``accept(plane)`` approves, peeling off rejected planes.

    ``plane`` is (a, b, c, d) with a unit normal (a x + b y + c z + d = 0), as RANSAC found it (its sign is the
    caller's to orient). Up to ``candidates`` planes are tried, each holding at least ``min_share`` of the points;
    None when none is approved. Used for the table under a product (in the reconstruction and in a single photo).
    """
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if len(cloud.points) > max_points:  # RANSAC needs no more than this
        cloud = cloud.random_down_sample(max_points / len(cloud.points))
    min_inliers = min_share * len(cloud.points)
    o3d.utility.random.seed(seed)
    for _ in range(candidates):
        if len(cloud.points) < 100:
            break
        model, inliers = cloud.segment_plane(distance_threshold=tolerance, ransac_n=3, num_iterations=iterations)
        if len(inliers) < min_inliers:
            break
        plane = np.asarray(model, dtype=np.float64)
        plane /= np.linalg.norm(plane[:3])
        if accept(plane):
            return plane
        cloud = cloud.select_by_index(inliers, invert=True)  # a wall or the backdrop: try the next plane
    return None


def boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) directed edges (in their triangle's winding) that belong to one triangle only."""
    triangles = np.asarray(triangles)
    if len(triangles) == 0:
        return np.empty((0, 2), dtype=np.int64)
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]).astype(np.int64)
    # One integer per undirected edge: a 1-D unique is ~30x faster than np.unique(axis=0) (3.6 s -> 0.1 s on the
    # 900k edges of a 300k-face Poisson mesh).
    key = directed.min(1) * (int(directed.max()) + 1) + directed.max(1)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return directed[counts[inverse.ravel()] == 1]


def boundary_loop_labels(edges: np.ndarray) -> np.ndarray:
    """Connected-component label (0..L-1) of every boundary edge (union-find over their vertices)."""
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    roots = np.array([find(a) for a in edges[:, 0].tolist()])
    return np.unique(roots, return_inverse=True)[1].ravel()


def boundary_cycles(edges: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The boundary ``edges`` (directed, from ``boundary_edges``) chained into closed vertex cycles.

    Each cycle is (vertices, forward): ``forward[i]`` says whether the edge vertices[i] -> vertices[i + 1] (cyclic)
    runs in its face's winding. The chaining ignores direction (a Poisson mesh has patches of flipped faces, whose
    rim edges point the other way); a cycle is oriented so that most of its edges run forward. A vertex where two
    holes touch (a pinch) is split between two cycles; an unclosable chain (a fragment of a non-manifold mesh) is
    dropped.
    """
    edges = np.asarray(edges, dtype=np.int64)
    incident: dict[int, list[int]] = {}
    for k, (a, b) in enumerate(edges.tolist()):
        incident.setdefault(a, []).append(k)
        incident.setdefault(b, []).append(k)
    used = np.zeros(len(edges), dtype=bool)
    cycles = []
    for first in range(len(edges)):
        if used[first]:
            continue
        used[first] = True
        start, vertex = int(edges[first, 0]), int(edges[first, 1])
        cycle, forward = [start], [True]
        while vertex != start:
            nxt = next((k for k in incident[vertex] if not used[k]), None)
            if nxt is None:
                break
            used[nxt] = True
            cycle.append(vertex)
            forward.append(bool(edges[nxt, 0] == vertex))
            vertex = int(edges[nxt, 1] if forward[-1] else edges[nxt, 0])
        if vertex != start or len(cycle) < 3:
            continue
        vertices, ahead = np.array(cycle, dtype=np.int64), np.array(forward)
        if ahead.sum() * 2 < len(ahead):  # walk it the way most of its edges run
            vertices, ahead = np.roll(vertices[::-1], 1), ~ahead[::-1]
        cycles.append((vertices, ahead))
    return cycles


def triangulate_polygon(xy: np.ndarray) -> np.ndarray | None:
    """Ear clipping of a simple 2-D polygon given in order (either winding): (n - 2, 3) indices into ``xy`` whose
    triangles keep the polygon's winding; None when the polygon is not simple (no ear left to clip)."""
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    if n < 3:
        return None
    x, y = xy[:, 0], xy[:, 1]
    winding = 1.0 if float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) >= 0 else -1.0
    scale = float(np.ptp(xy, axis=0).max()) or 1.0
    eps = 1e-12 * scale**2
    index = np.arange(n)
    triangles = []
    while len(index) > 3:
        p = xy[index]
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
        d1, d2 = p - prev, nxt - p
        turn = winding * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
        reflex = p[turn <= eps]  # only reflex (or straight) corners can lie inside a convex corner's ear
        ear = -1
        for i in np.flatnonzero(turn > eps)[np.argsort(-turn[turn > eps])]:
            if len(reflex) == 0 or not _inside_triangle(reflex, prev[i], p[i], nxt[i], eps).any():
                ear = int(i)
                break
        if ear < 0:
            straight = np.flatnonzero(np.abs(turn) <= eps)  # collinear points (a straight rim): a flat sliver
            if len(straight) == 0:
                return None
            ear = int(straight[0])
        m = len(index)
        triangles.append([index[(ear - 1) % m], index[ear], index[(ear + 1) % m]])
        index = np.delete(index, ear)
    triangles.append(index.tolist())
    return np.array(triangles, dtype=np.int64)


def _inside_triangle(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, eps: float) -> np.ndarray:
    """Which ``points`` lie strictly inside triangle abc (either winding; points on its edges do not count)."""
    def side(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (q[0] - p[0]) * (points[:, 1] - p[1]) - (q[1] - p[1]) * (points[:, 0] - p[0])

    s1, s2, s3 = side(a, b), side(b, c), side(c, a)
    return ((s1 > eps) & (s2 > eps) & (s3 > eps)) | ((s1 < -eps) & (s2 < -eps) & (s3 < -eps))


def boundary_loops(triangles: np.ndarray) -> tuple[int, int]:
    """(number of boundary loops = holes, number of boundary edges) of a triangle mesh."""
    edges = boundary_edges(triangles)
    if len(edges) == 0:
        return 0, 0
    return int(boundary_loop_labels(edges).max()) + 1, len(edges)


MAX_PLANE_TILT_DEG = 30.0
"""A support plane's normal lies within this angle of the cameras' up."""
PLANE_CANDIDATES = 4
"""RANSAC planes tried before giving up on finding the table."""
MIN_PLANE_SHARE = 0.05
"""A plane must hold this share of the points to count as the table."""
CAMERAS_ABOVE = 0.8
"""Share of the cameras that must be above a plane for it to be the table (a few may look up from below it)."""


def cameras_up(cameras: list[PinholeCamera]) -> np.ndarray:
    """Mean image-up direction (-y of each camera) in world coordinates (people hold cameras upright)."""
    up = -np.array([c.R[1] for c in cameras]).sum(0)
    return up / max(np.linalg.norm(up), 1e-12)


def narrowest_half_view(cameras: list[PinholeCamera]) -> float:
    """tan of the smallest half field of view among the cameras."""
    return float(min(min(c.width / (2 * c.K[0, 0]), c.height / (2 * c.K[1, 1])) for c in cameras))


def support_plane(points: np.ndarray, cameras: list[PinholeCamera], up: np.ndarray, focus: np.ndarray,
                  tolerance: float) -> np.ndarray | None:
    """The table: a large plane facing up, under the focus, with the cameras above it; normal oriented up.

    Used on the fused cloud (isolation) and on the sparse points (masks).
    """
    centers = np.array([c.center for c in cameras])

    def oriented(plane: np.ndarray) -> np.ndarray:
        return plane if plane[:3] @ up >= 0 else -plane

    def is_table(plane: np.ndarray) -> bool:
        plane = oriented(plane)
        cameras_above = np.mean(centers @ plane[:3] + plane[3] > 0)
        tilt = np.degrees(np.arccos(np.clip(plane[:3] @ up, -1, 1)))
        return bool(tilt < MAX_PLANE_TILT_DEG and cameras_above > CAMERAS_ABOVE
                    and focus @ plane[:3] + plane[3] > -tolerance)

    plane = find_plane(points, tolerance, is_table, candidates=PLANE_CANDIDATES, min_share=MIN_PLANE_SHARE)
    return None if plane is None else oriented(plane)


def sample_image(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear values of a float32 image (H, W) or (H, W, C) at continuous pixel coordinates (u, v): (N,) or (N, C);
    the edge value beyond it."""
    n = len(u)
    cols = 4096  # cv2.remap's maps must stay under 32767 on a side
    rows = max(1, -(-n // cols))
    pad = rows * cols - n
    # cv2.remap samples pixel centres at integer coordinates: continuous coordinate - 0.5.
    map_x = np.pad((u - 0.5).astype(np.float32), (0, pad)).reshape(rows, cols)
    map_y = np.pad((v - 0.5).astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, *image.shape[2:])[:n]


def camera_rays(camera: PinholeCamera, step: int = 1) -> np.ndarray:
    """(n, 6) float32 rays (origin, direction) through the pixel centres of ``camera``, row by row (every
    ``step``-th pixel in each direction)."""
    u, v = np.meshgrid(np.arange(0, camera.width, step) + 0.5, np.arange(0, camera.height, step) + 0.5)
    K = camera.K
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3) @ camera.R
    return np.concatenate([np.broadcast_to(camera.center, d.shape), d], 1).astype(np.float32)


def mesh_silhouettes(vertices: np.ndarray, triangles: np.ndarray, cameras: list[PinholeCamera],
                     step: int = 1) -> list[np.ndarray]:
    """Per camera, the pixels whose centre ray hits the mesh (every ``step``-th pixel in each direction)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    out = []
    for cam in cameras:
        shape = (len(range(0, cam.height, step)), len(range(0, cam.width, step)))
        hit = scene.cast_rays(o3d.core.Tensor(camera_rays(cam, step)))["t_hit"].numpy()
        out.append(np.isfinite(hit).reshape(shape))
    return out


def silhouette_iou(vertices: np.ndarray, triangles: np.ndarray, cameras: list[PinholeCamera],
                   masks: list[np.ndarray], step: int = 1) -> dict[str, float]:
    """Mean and lowest IoU of a mesh's silhouettes with product masks seen by the same cameras (on every
    ``step``-th pixel in each direction)."""
    ious = []
    for silhouette, mask in zip(mesh_silhouettes(vertices, triangles, cameras, step), masks, strict=True):
        mask = mask[::step, ::step]
        union = np.logical_or(silhouette, mask).sum()
        ious.append(float(np.logical_and(silhouette, mask).sum() / union) if union else 1.0)
    return {"mean": float(np.mean(ious)), "min": float(np.min(ious))} if ious else {"mean": 0.0, "min": 0.0}
