"""Visual hull: the volume every silhouette allows, carved from product masks and cameras, fused with stereo.

The hull is kept as a **silhouette distance field** on a voxel grid: per voxel, the smallest over the views of the
signed distance (world units, positive inside) from its projection to the mask outline, converted with the voxel's
depth (pixels x z / f). Interpolating that field gives the hull surface to a fraction of a voxel, far finer than
a binary carving at the same grid (Esteban & Schmitt 2004 use the same idea for their silhouette force). A support
plane, when known, closes the hull from below: the base of a product standing on a table is the table.

Fusion with stereo (``silhouette_fusion``) never lets the silhouettes replace confident stereo:

* **per mask**: a mask that cuts off more than ``MAX_STEREO_CUT`` of the confirmed product stereo it sees has lost a
  part of the product (a shadowed base, a label the colour of the backdrop) and does not carve;
* **per point**: a confirmed stereo point is dropped only when more than ``MAX_DISSENT`` of the masks seeing it
  exclude it (the room, the table), never on the word of one mask;
* **per pixel**: the hull's surface fills in only where no photo that sees it has confirmed stereo (plain faces
  give stereo nothing to match; where they are silhouette-generating, such as the sides of a bottle, the hull is
  exact; where they are not, such as the top of a box seen only from above, the hull is an upper bound and the
  result says how much of the surface came from it).

Whether the hull is used at all is fusion's gate (``MAX_STEREO_COVERAGE``): a textured product's stereo covers it
and keeps its own cloud.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from core.geometry import PinholeCamera, sample_image

logger = logging.getLogger(__name__)

OUTSIDE = -1e9
"""Field value for voxels that some view excludes outright (behind the plane, or no view sees them)."""


@dataclass
class VisualHull:
    """A silhouette distance field on a regular grid (world frame)."""

    origin: np.ndarray
    """(3,) world position of voxel (0, 0, 0)'s centre."""
    voxel: float
    """Grid spacing, world units."""
    field: np.ndarray
    """(nx, ny, nz) float32 signed distance to the hull surface, positive inside (a lower bound of it)."""
    views: int
    """Masks that carved it."""
    plane: np.ndarray | None = None
    """The support plane that closes it from below (a, b, c, d), (a, b, c) = up."""

    @property
    def occupied(self) -> np.ndarray:
        return self.field > 0

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World box of the grid's voxel centres."""
        return self.origin, self.origin + self.voxel * (np.array(self.field.shape) - 1)

    def volume(self) -> float:
        return float(self.occupied.sum()) * self.voxel**3

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Trilinear field value at world points; OUTSIDE beyond the grid."""
        g = (np.asarray(points, dtype=np.float64) - self.origin) / self.voxel
        shape = np.array(self.field.shape)
        inside = np.all((g >= 0) & (g <= shape - 1), axis=1)
        out = np.full(len(g), OUTSIDE, dtype=np.float32)
        if not inside.any():
            return out
        gi = g[inside]
        base = np.minimum(np.floor(gi).astype(np.int64), shape - 2)
        frac = gi - base
        value = np.zeros(len(gi))
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    weight = (np.where(dx, frac[:, 0], 1 - frac[:, 0]) * np.where(dy, frac[:, 1], 1 - frac[:, 1])
                              * np.where(dz, frac[:, 2], 1 - frac[:, 2]))
                    value += weight * self.field[base[:, 0] + dx, base[:, 1] + dy, base[:, 2] + dz]
        out[inside] = value
        return out

    def surface(self) -> tuple[np.ndarray, np.ndarray]:
        """Points where the field crosses zero along grid edges, and outward unit normals (from its gradient)."""
        f = np.maximum(self.field, -4 * self.voxel)  # OUTSIDE would swamp the interpolation and the gradient
        gradient = np.stack(np.gradient(f, self.voxel), axis=-1)
        points, normals = [], []
        for axis in range(3):
            lower, upper = [slice(None)] * 3, [slice(None)] * 3
            lower[axis], upper[axis] = slice(None, -1), slice(1, None)
            f0, f1 = f[tuple(lower)], f[tuple(upper)]
            cross = (f0 > 0) != (f1 > 0)
            grid = np.argwhere(cross).astype(np.float64)
            if len(grid) == 0:
                continue
            grid[:, axis] += f0[cross] / (f0[cross] - f1[cross])
            points.append(self.origin + self.voxel * grid)
            near = np.minimum(np.rint(grid).astype(np.int64), np.array(f.shape) - 1)
            normals.append(-gradient[near[:, 0], near[:, 1], near[:, 2]])
        if not points:
            return np.empty((0, 3)), np.empty((0, 3))
        pts, nrm = np.concatenate(points), np.concatenate(normals)
        length = np.linalg.norm(nrm, axis=1, keepdims=True)
        return pts, nrm / np.maximum(length, 1e-12)

    def project(self, camera: PinholeCamera, field: np.ndarray | None = None) -> np.ndarray:
        """(H, W) bool: pixels whose ray meets an occupied voxel (voxel centres splatted with their footprint)."""
        occupied = (self.field if field is None else field) > 0
        centres = self.origin + self.voxel * np.argwhere(occupied)
        image = np.zeros((camera.height, camera.width), np.uint8)
        if len(centres) == 0:
            return image.astype(bool)
        uv, z = camera.project(centres)
        ok = z > 0
        uv, z = uv[ok], z[ok]
        radius = np.maximum(0.5 * self.voxel * camera.K[0, 0] / z, 0.5)
        cols, rows = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        inside = (cols >= 0) & (rows >= 0) & (cols < camera.width) & (rows < camera.height)
        image[rows[inside], cols[inside]] = 1
        # Voxels project to discs about `radius` wide: close the gaps between neighbouring centres.
        size = int(2 * np.ceil(np.median(radius)) + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        return cv2.morphologyEx(image, cv2.MORPH_CLOSE, kernel).astype(bool)


def signed_distance_px(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the signed distance in pixels to the mask outline (positive inside), float32."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return (inside - outside + np.where(m > 0, -0.5, 0.5)).astype(np.float32)  # outline between pixel centres


@dataclass
class CarvedField:
    """The field of every view folded into the smallest and second smallest value (for leave-one-out checks)."""

    smallest: np.ndarray
    second: np.ndarray
    which: np.ndarray
    """(nx, ny, nz) int16 index of the view that gave the smallest value (-1: none saw the voxel)."""

    def without(self, view: int) -> np.ndarray:
        """The field as the other views alone carve it."""
        return np.where(self.which == view, self.second, self.smallest)


def carve(cameras: list[PinholeCamera], masks: list[np.ndarray], origin: np.ndarray, voxel: float,
          shape: tuple[int, int, int], plane: np.ndarray | None = None, min_views: int = 2) -> CarvedField:
    """Fold every view's signed silhouette distance over the grid (views that do not see a voxel abstain).

    ``plane`` (a, b, c, d) with (a, b, c) the unit up direction: voxels below it are outside. A voxel seen by fewer
    than ``min_views`` views is outside (nothing vouches for it).
    """
    nx, ny, nz = shape
    ix, iy, iz = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    x = (origin[0] + voxel * ix).ravel()
    y = (origin[1] + voxel * iy).ravel()
    z = (origin[2] + voxel * iz).ravel()
    n = len(x)
    smallest = np.full(n, np.inf, np.float32)
    second = np.full(n, np.inf, np.float32)
    which = np.full(n, -1, np.int16)
    seen = np.zeros(n, np.int16)
    for index, (camera, mask) in enumerate(zip(cameras, masks, strict=True)):
        R, t, K = camera.R, camera.t, camera.K
        cx = R[0, 0] * x + R[0, 1] * y + R[0, 2] * z + t[0]
        cy = R[1, 0] * x + R[1, 1] * y + R[1, 2] * z + t[1]
        cz = R[2, 0] * x + R[2, 1] * y + R[2, 2] * z + t[2]
        front = cz > 1e-9
        inv = np.where(front, 1.0 / np.where(front, cz, 1.0), 0.0)
        u = K[0, 0] * cx * inv + K[0, 2]
        v = K[1, 1] * cy * inv + K[1, 2]
        visible = front & (u >= 0) & (v >= 0) & (u < camera.width) & (v < camera.height)
        value = sample_image(signed_distance_px(mask), u, v)
        world = (value * cz / K[0, 0]).astype(np.float32)
        world[~visible] = np.inf
        seen += visible
        lower = world < smallest
        np.copyto(second, np.where(lower, smallest, np.minimum(second, world)))
        np.copyto(smallest, world, where=lower)
        np.copyto(which, np.int16(index), where=lower)
    unseen = seen < min_views
    smallest[unseen] = OUTSIDE
    second[unseen] = OUTSIDE
    if plane is not None:
        height = (plane[0] * x + plane[1] * y + plane[2] * z + plane[3]).astype(np.float32)
        np.minimum(smallest, height, out=smallest)
        np.minimum(second, height, out=second)
    second[~np.isfinite(second)] = OUTSIDE  # seen by one view only
    return CarvedField(smallest.reshape(shape), second.reshape(shape), which.reshape(shape))


def carve_hull(cameras: list[PinholeCamera], masks: list[np.ndarray], lo: np.ndarray, hi: np.ndarray,
               resolution: int, plane: np.ndarray | None = None, refine_bounds: bool = True,
               one_may_dissent: bool = False) -> VisualHull:
    """The visual hull inside the box [lo, hi] on a grid of ``resolution`` voxels along its longest side.

    ``one_may_dissent``: a voxel is carved away only when two masks exclude it (one wrong mask cannot dent it).

    With ``refine_bounds`` a coarse pass first shrinks the box to what the silhouettes leave (plus a margin), so the
    fine grid is spent on the product only.
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if refine_bounds:
        coarse = carve_hull(cameras, masks, lo, hi, max(24, resolution // 4), plane, refine_bounds=False,
                            one_may_dissent=one_may_dissent)
        if coarse.occupied.any():
            idx = np.argwhere(coarse.occupied)
            margin = 2.0 * coarse.voxel
            lo = np.maximum(lo, coarse.origin + coarse.voxel * idx.min(0) - margin)
            hi = np.minimum(hi, coarse.origin + coarse.voxel * idx.max(0) + margin)
    voxel = float(np.max(hi - lo)) / resolution
    shape = tuple(int(s) for s in np.maximum(np.ceil((hi - lo) / voxel).astype(int) + 1, 2))
    folded = carve(cameras, masks, lo, voxel, shape, plane)  # type: ignore[arg-type]
    return VisualHull(lo, voxel, folded.second if one_may_dissent else folded.smallest, len(cameras), plane)


@dataclass
class HullFusion:
    """Stereo points checked against the hull, and the hull points that fill where stereo has nothing."""

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    from_hull: np.ndarray
    """(N,) bool: the point is a hull surface point (not seen by stereo)."""
    stats: dict[str, float]


def fuse_with_hull(points: np.ndarray, normals: np.ndarray, colors: np.ndarray, hull: VisualHull,
                   cameras: list[PinholeCamera], images: list[np.ndarray], spacing: float,
                   outside_tolerance: float | None = None, cover_radius: float | None = None,
                   confirmed: list[np.ndarray] | None = None, keep: np.ndarray | None = None) -> HullFusion:
    """Stereo where it is, the hull where it is not; stereo points the silhouettes rule out are dropped.

    ``outside_tolerance`` (default 1.5 voxels): how far outside the hull a stereo point may lie (mask outlines are
    a pixel or so off). ``cover_radius`` (default 3 x max(spacing, voxel)): a hull point with a stereo point this
    close is already covered. ``confirmed`` (per camera, (H, W) bool at the camera's size: pixels with a depth
    other photos confirmed): a hull point that a photo sees where that photo has confirmed stereo is covered too,
    however far the stereo surface lies (the hull is only an upper bound: above a can's lid it is a roof).
    ``keep``: which of ``points`` the silhouettes allow, when the caller checked them (default: ``inside_hull``).
    """
    import open3d as o3d

    tolerance = 1.5 * hull.voxel if outside_tolerance is None else outside_tolerance
    radius = 3.0 * max(spacing, hull.voxel) if cover_radius is None else cover_radius
    keep = inside_hull(points, hull, tolerance) if keep is None else keep
    stereo_pts, stereo_nrm, stereo_rgb = points[keep], normals[keep], colors[keep]
    hull_pts, hull_nrm = hull.surface()
    if len(stereo_pts) and len(hull_pts):
        index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(np.ascontiguousarray(stereo_pts)))
        index.knn_index()
        _, d2 = index.knn_search(o3d.core.Tensor(np.ascontiguousarray(hull_pts)), 1)
        uncovered = np.sqrt(d2.numpy()[:, 0]) > radius
    else:
        uncovered = np.ones(len(hull_pts), bool)
    n_far = int(uncovered.sum())
    if confirmed is not None and uncovered.any():
        idx = np.flatnonzero(uncovered)
        uncovered[idx[seen_by_stereo(hull_pts[idx], hull_nrm[idx], hull, cameras, confirmed)]] = False
    fill_pts, fill_nrm = hull_pts[uncovered], hull_nrm[uncovered]
    fill_rgb = surface_colours(fill_pts, fill_nrm, cameras, images)
    stats = {"stereo_points_in": int(len(points)), "stereo_outside_hull": int((~keep).sum()),
             "hull_surface_points": int(len(hull_pts)), "hull_points_added": int(len(fill_pts)),
             "hull_points_under_stereo": n_far - int(len(fill_pts)),
             "hull_share": float(len(fill_pts) / max(len(fill_pts) + len(stereo_pts), 1)),
             "hull_voxel": hull.voxel, "hull_volume": hull.volume()}
    return HullFusion(np.concatenate([stereo_pts, fill_pts]), np.concatenate([stereo_nrm, fill_nrm]),
                      np.concatenate([stereo_rgb, fill_rgb]).astype(np.uint8),
                      np.concatenate([np.zeros(len(stereo_pts), bool), np.ones(len(fill_pts), bool)]), stats)


STEREO_COVER_PX = 2
"""A hull point is under stereo when a photo that sees it has a confirmed depth within this many depth-map pixels
of where it lands (the outline of a plain face, where stereo stops, is a band of a few pixels)."""
MAX_VIEW_ANGLE_DEG = 75.0
"""A photo sees a hull point when the hull's normal there faces it within this angle (grazing views see the
outline, whose stereo belongs to the face beside it)."""


def seen_by_stereo(points: np.ndarray, normals: np.ndarray, hull: VisualHull, cameras: list[PinholeCamera],
                   confirmed: list[np.ndarray]) -> np.ndarray:
    """(N,) bool: some photo sees the point (facing it, not hidden behind the product) where it has confirmed
    stereo depth: stereo is confident there, so the hull's surface must not replace it."""
    from core.stages.fusion.fill import in_sight

    covered = np.zeros(len(points), bool)
    min_cos = np.cos(np.radians(MAX_VIEW_ANGLE_DEG))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * STEREO_COVER_PX + 1, 2 * STEREO_COVER_PX + 1))
    for camera, known in zip(cameras, confirmed, strict=True):
        if not known.any():
            continue
        grown = cv2.dilate(known.astype(np.uint8), kernel)
        uv, z = camera.project(points)
        col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        towards = camera.center - points
        facing = (towards * normals).sum(1) > min_cos * np.linalg.norm(towards, axis=1)
        ok = ~covered & facing & (z > 0) & (col >= 0) & (row >= 0) & (col < camera.width) & (row < camera.height)
        idx = np.flatnonzero(ok)
        idx = idx[grown[row[idx], col[idx]] > 0]
        if len(idx):
            covered[idx[in_sight(points[idx], camera, hull)]] = True
    return covered


def inside_hull(points: np.ndarray, hull: VisualHull, tolerance: float) -> np.ndarray:
    """Points the silhouettes allow: inside the hull (within ``tolerance``) and above the table.

    The table inside the hull's footprint (its excess over the product) is no product: stereo never sees the base,
    so whatever lies on the plane is table.
    """
    if len(points) == 0:
        return np.zeros(0, bool)
    keep = hull.sample(points) >= -tolerance
    if hull.plane is not None:
        keep &= points @ hull.plane[:3] + hull.plane[3] > tolerance
    return keep


def surface_colours(points: np.ndarray, normals: np.ndarray, cameras: list[PinholeCamera],
                    images: list[np.ndarray]) -> np.ndarray:
    """Colour of each point from the photo that faces it most directly (uint8 RGB; grey when none does)."""
    colours = np.full((len(points), 3), 160, np.uint8)
    if len(points) == 0 or not cameras:
        return colours
    centres = np.array([c.center for c in cameras])
    facing = np.stack([((centres[i] - points) * normals).sum(1) / np.linalg.norm(centres[i] - points, axis=1)
                       for i in range(len(cameras))], axis=1)
    best = np.argmax(facing, axis=1)
    for i, (camera, image) in enumerate(zip(cameras, images, strict=True)):
        sel = np.flatnonzero((best == i) & (facing[np.arange(len(points)), best] > 0))
        if len(sel) == 0:
            continue
        scale = image.shape[1] / camera.width
        uv, _ = camera.project(points[sel])
        cols = np.clip(np.floor(uv[:, 0] * scale).astype(np.int64), 0, image.shape[1] - 1)
        rows = np.clip(np.floor(uv[:, 1] * scale).astype(np.int64), 0, image.shape[0] - 1)
        colours[sel] = image[rows, cols]
    return colours


MIN_HULL_MASKS = 3
"""Fewer trusted masks than this carve no hull (two silhouettes leave a wide double cone)."""
MIN_MASKS_TO_DISSENT = 16
"""With at least this many masks one may dissent in the carving (``carve_hull(one_may_dissent=True)``): the
second-tightest silhouette is then close to the tightest (plain box, 23 masks of a 24-photo orbit: mesh F@1% 0.84
strict, 0.88 with one dissent); with fewer it is far (10 photos of 320 px, tests/test_masks.py: F@2% 0.74 with one
dissent, above 0.75 strict)."""
CUT_TOLERANCE_PX = 3.0
"""A product point lying farther than this outside a mask (pixels) is cut off by it (outlines are 1-2 px off)."""
MAX_STEREO_CUT = 0.05
"""A mask that cuts off more than this share of the confirmed product points it sees has lost part of the product
and does not carve. Good masks cut some too, stereo's own errors on the outline (balanced, 1024 px renders,
24 photos): soup can 0.2-1.7 % (mask IoU 0.94-0.98), plain box 0.6-3.2 % (IoU 0.90-0.996, unrelated to the
IoU: stereo bleeds past a plain box's outline), one plain-box mask 7 %; a mask missing a quarter of a box 15 %."""
MAX_DISSENT = 0.25
"""Confirmed stereo points that at most this share of the masks seeing them exclude are product (the masks are
judged against these, so one or two wrong masks cannot hide what they cut)."""
TABLE_SPACINGS = 3.0
"""Stereo points closer to the support plane than this many point spacings are table (its noise is 1-2)."""
STEREO_REACH = 0.015
"""Product pixels within this share of the image diagonal of a confirmed stereo depth count as covered by stereo
(boxes at 320 px, plane sweep, median over 10 photos: printed 0.09 / plain 0.07 on confirmed pixels alone; within
4 px 0.69 / 0.27, within 8 px 0.93 / 0.46)."""
MAX_STEREO_COVERAGE = 0.6
"""``silhouettes="auto"``: the hull is used when less than this share of the product's mask pixels lies within
``STEREO_REACH`` of confirmed stereo (median over the photos). Measured, balanced (PatchMatch, 24 photos of 1024 px):
soup-can orbit 1.00, plain box orbit 0.47; test preset (sweep, 10 photos of 320 px, tests/test_masks.py): printed
box 0.84, plain box 0.37."""


@dataclass
class Silhouettes:
    """What the masks stage hands fusion: trusted masks with their cameras, and where the product stands."""

    workings: list[str]
    """Working names of the photos whose masks are trusted."""
    cameras: list[PinholeCamera]
    """Their cameras at the masks' resolution (the undistorted images)."""
    masks: list[np.ndarray]
    plane: np.ndarray | None
    focus: np.ndarray
    up: np.ndarray
    radius: float


def masks_at_views(silhouettes: Silhouettes, depth_maps: list) -> list[np.ndarray | None]:
    """Each depth map's trusted mask at the depth map's size (None: its photo has none)."""
    mask_of = dict(zip(silhouettes.workings, silhouettes.masks, strict=True))
    out: list[np.ndarray | None] = []
    for depth_map in depth_maps:
        mask = mask_of.get(depth_map.photo.working)
        size = (depth_map.camera.width, depth_map.camera.height)
        out.append(None if mask is None else
                   cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0)
    return out


def stereo_coverage(confirmed: list[np.ndarray], masks: list[np.ndarray | None]) -> float:
    """Median over the photos with a mask of the share of its product pixels within ``STEREO_REACH`` of a pixel whose
    stereo depth other photos confirmed (0 when no photo has a mask).

    Within reach, not on: the plane sweep confirms scattered pixels even on a printed surface (a tenth of a printed
    box's pixels at 320 px), but they are everywhere on it; on a plain face they stay on its edges.
    """
    shares = []
    for known, mask in zip(confirmed, masks, strict=True):
        if mask is None or not mask.any():
            continue
        reach = max(1, round(STEREO_REACH * float(np.hypot(*mask.shape))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        near = cv2.dilate(known.astype(np.uint8), kernel) > 0
        shares.append(float((near & mask).sum()) / float(mask.sum()))
    return float(np.median(shares)) if shares else 0.0


def stereo_votes(points: np.ndarray, silhouettes: Silhouettes, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Which confirmed stereo points the masks allow, and how much of them each mask cuts off.

    A point is allowed (product) when at least two masks see it, at most ``MAX_DISSENT`` of them put it farther than
    ``CUT_TOLERANCE_PX`` outside their outline, and it stands more than ``TABLE_SPACINGS`` point spacings above the
    support plane. Confirmed stereo is thus never dropped on the word of one or two wrong masks (the strict hull
    would: on soup-can renders it cost the fused cloud 7 points of recall at 0.5 %). Returns ((N,) bool allowed,
    (V,) per mask the share of the allowed points it sees that it cuts off).
    """
    n_views = len(silhouettes.cameras)
    if len(points) == 0:
        return np.zeros(0, bool), np.zeros(n_views)
    outside = np.zeros((n_views, len(points)), bool)
    seen = np.zeros((n_views, len(points)), bool)
    for k, (camera, mask) in enumerate(zip(silhouettes.cameras, silhouettes.masks, strict=True)):
        uv, z = camera.project(points)
        seen[k] = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 1] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] < camera.height)
        value = sample_image(signed_distance_px(mask), uv[:, 0], uv[:, 1])
        outside[k] = seen[k] & (value < -CUT_TOLERANCE_PX)
    n_seen = seen.sum(0)
    product = (n_seen >= 2) & (outside.sum(0) <= MAX_DISSENT * n_seen)
    if silhouettes.plane is not None:  # the table under the product is no product (stereo never sees the base)
        product &= points @ silhouettes.plane[:3] + silhouettes.plane[3] > TABLE_SPACINGS * spacing
    cuts = (outside & product).sum(1) / np.maximum((seen & product).sum(1), 1)
    return product, cuts


SHADING_HULL_RESOLUTION = 96
"""``shading_follows_camera`` carves its own coarse hull (its distance field is finer than the voxels; 1-2 s)."""
DEEP_SHARE = 0.02
"""A stereo point lies deep inside the hull's sides when the field there exceeds this share of the hull's diagonal.
The strict coarse hull of a box's vertical faces bulges past them by 1 % (median; 1 % of the face points beyond 2 %,
24 exact masks of 640 px, tests/test_hull.py); a 1 % threshold flagged a box's true faces, and dropping stereo and
completed faces beyond it cost the plain box turntable mesh F@1% 0.85 -> 0.69."""
SIDE_MAX_UP_COS = 0.5
"""Only points whose nearest hull surface faces sideways (|cos| to up below this) are judged: the ring's photos
graze those sides, so the hull is tight there; over a top the hull is a roof and stereo rightly lies under it."""
MAX_DEEP_PLAIN = 0.2
"""Plain stereo lying deep inside the hull's sides in more than this share is shading matched as texture.
Measured, balanced: plain bottle turntable (lights turning with the camera) 0.31; plain box turntable 0.00 (flat
faces shade evenly: there is no ramp to match); exact box faces 0.01 (tests/test_hull.py)."""
DEEPER_THAN_DETAIL = 3.0
"""...and more than this many times the share of the stereo on detailed pixels (print, edges), which lies as deep
as the hull is loose: plain bottle turntable 0.31 plain against 0.03 detail; a printed box from 10 photos of 320 px
(tests/test_masks.py) 0.41 against 0.44 (a loose hull, not shading)."""
MIN_JUDGED = 100
"""Fewer stereo points than this below the hull's sides say nothing."""


def hull_box(silhouettes: Silhouettes) -> tuple[np.ndarray, np.ndarray]:
    """The world box the product's hull is carved in (its cylinder, up to twice its radius above the plane)."""
    radius, focus, up = silhouettes.radius, silhouettes.focus, silhouettes.up
    lo = focus - radius
    hi = focus + radius + (radius * up if silhouettes.plane is not None else 0.0)
    return np.minimum(lo, hi), np.maximum(lo, hi)


def depth_below_sides(points: np.ndarray, hull: VisualHull, up: np.ndarray) -> np.ndarray:
    """(N,) how deep inside the hull each point lies, as a share of the hull's diagonal, for points below a side of
    it (the nearest hull surface, along the field's gradient, faces sideways: ``SIDE_MAX_UP_COS``); NaN for the
    others (outside, or below a top or a bottom)."""
    out = np.full(len(points), np.nan)
    if len(points) == 0 or not hull.occupied.any():
        return out
    occupied = np.argwhere(hull.occupied)
    diagonal = float(np.linalg.norm((occupied.max(0) - occupied.min(0)) * hull.voxel))
    value = hull.sample(points)
    step = 0.5 * hull.voxel
    gradient = np.stack([(hull.sample(points + step * e) - hull.sample(points - step * e)) / (2 * step)
                         for e in np.eye(3)], axis=1)
    length = np.linalg.norm(gradient, axis=1)
    side = (value > 0) & (length > 1e-6) & (np.abs(gradient @ up) < SIDE_MAX_UP_COS * length)
    out[side] = value[side] / diagonal
    return out


@dataclass
class ShadingCheck:
    """``shading_follows_camera``'s verdict on the stereo of a capture."""

    follows: bool
    """The plain pixels' stereo matched shading that turned with the camera: drop it, the hull knows better."""
    deep_share: float
    """Share of the plain stereo points on the hull's sides that lie deep inside it (the measure)."""
    deep: np.ndarray
    """(N,) bool: the point lies deep inside the hull's sides."""
    detail_share: float = 0.0
    """The same share for the stereo of pixels with fine detail (the hull's own looseness)."""


def shading_follows_camera(points: np.ndarray, plain: np.ndarray, silhouettes: Silhouettes) -> ShadingCheck:
    """Whether the stereo on the product's ``plain`` pixels (no fine detail) matched shading, not the product.

    Under lights that turn with the camera (a turntable in a lightbox) shading and highlights stay put in the frame:
    stereo matches them as a surface that turns with the camera, near the turntable's axis, deep inside the
    product; the hull's sides, which every photo of a ring grazes, say where the surface really is. Under lights
    fixed to the room, shading is attached to the product and its stereo lies on the hull's sides.
    """
    deep = np.zeros(len(points), bool)
    if plain.sum() < MIN_JUDGED or len(silhouettes.cameras) < MIN_HULL_MASKS:
        return ShadingCheck(False, 0.0, deep)
    lo, hi = hull_box(silhouettes)
    # Strict (every mask carves): a wrong mask can only dent the hull, which hides deep points, never invents them.
    hull = carve_hull(silhouettes.cameras, silhouettes.masks, lo, hi, SHADING_HULL_RESOLUTION, silhouettes.plane)
    if not hull.occupied.any():
        return ShadingCheck(False, 0.0, deep)
    depth = depth_below_sides(points, hull, silhouettes.up)
    deep = depth > DEEP_SHARE  # NaN compares False
    judged = np.isfinite(depth)
    if (judged & plain).sum() < MIN_JUDGED:
        return ShadingCheck(False, 0.0, deep)
    share = float(deep[judged & plain].mean())
    # Detail is attached to the product under any light: how deep it lies is how loose the hull is (few photos).
    detail_share = float(deep[judged & ~plain].mean()) if (judged & ~plain).sum() >= MIN_JUDGED else 0.0
    return ShadingCheck(share > MAX_DEEP_PLAIN and share > DEEPER_THAN_DETAIL * detail_share, share, deep,
                        detail_share)


def silhouette_fusion(points: np.ndarray, normals: np.ndarray, colors: np.ndarray, voxel_size: float,
                      silhouettes: Silhouettes, depth_maps: list, resolution: int,
                      confirmed: list[np.ndarray] | None = None, complete_planes: bool = True) -> HullFusion | None:
    """Stereo points checked against the hull, plain faces completed, the rest filled from the hull.

    ``depth_maps`` are the fused ``DepthMap``s (their cameras, stereo depth and images drive the completion);
    ``confirmed`` their pixels whose depth other photos confirmed (the hull fills only where stereo has none).
    ``complete_planes``: complete plain faces as planes between confident points (``fill.py``; not where the plain
    surfaces are curved: ``shading_follows_camera``).
    Masks that cut off confirmed product stereo do not carve (``stereo_votes``). None when there are too few
    trusted masks to carve a hull.
    """
    from core.stages.fusion.consistency import MIN_CONFIDENCE, neighbours, voxel_merge
    from core.stages.fusion.fill import CompletionView, planar_completion

    allowed, cuts = stereo_votes(points, silhouettes, voxel_size)
    n_stereo = len(points)
    points, normals, colors = points[allowed], normals[allowed], colors[allowed]
    agreeing = [k for k in range(len(silhouettes.cameras)) if cuts[k] <= MAX_STEREO_CUT]
    dropped = sorted(silhouettes.workings[k] for k in range(len(cuts)) if cuts[k] > MAX_STEREO_CUT)
    if dropped:
        logger.info("masks cutting off confirmed stereo (not carving): %s", ", ".join(dropped))
    trusted = Silhouettes([silhouettes.workings[k] for k in agreeing], [silhouettes.cameras[k] for k in agreeing],
                          [silhouettes.masks[k] for k in agreeing], silhouettes.plane, silhouettes.focus,
                          silhouettes.up, silhouettes.radius)
    if len(trusted.cameras) < MIN_HULL_MASKS:
        return None
    lo, hi = hull_box(trusted)
    hull = carve_hull(trusted.cameras, trusted.masks, lo, hi, resolution, trusted.plane,
                      one_may_dissent=len(trusted.cameras) >= MIN_MASKS_TO_DISSENT)
    if not hull.occupied.any():
        return None
    views, images = [], []
    for depth_map, mask in zip(depth_maps, masks_at_views(trusted, depth_maps), strict=True):
        mask = np.zeros(depth_map.depth.shape, bool) if mask is None else mask
        depth = np.where(depth_map.confidence >= MIN_CONFIDENCE, depth_map.depth, np.nan).astype(np.float32)
        views.append(CompletionView(depth_map.camera, depth, mask, depth_map.image))
        images.append(depth_map.image)
    # Only the product's own confident points outline its faces (not the table or the room around it).
    if complete_planes:
        extra_pts, extra_nrm, extra_rgb, completion = planar_completion(
            views, points, normals, hull, neighbours([v.camera for v in views]))
    else:
        extra_pts, extra_nrm, extra_rgb, completion = np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), {}
    n_completed = len(extra_pts)
    if n_completed:
        # Every photo completes the same faces: merge the copies on fusion's grid (Poisson's cost follows the count).
        merged_pts, merged_rgb, merged_nrm = voxel_merge(np.concatenate([points, extra_pts]),
                                                         np.concatenate([colors, extra_rgb]).astype(np.float64),
                                                         np.concatenate([normals, extra_nrm]), voxel_size)
        points, normals = merged_pts, merged_nrm
        colors = np.clip(merged_rgb + 0.5, 0, 255).astype(np.uint8)
    # The masks' vote checked the stereo points and the hull the completed ones (planar_completion).
    fused = fuse_with_hull(points, normals, colors, hull, [v.camera for v in views], images, voxel_size,
                           confirmed=confirmed, keep=np.ones(len(points), bool))
    fused.stats.update({"stereo_points_in": n_stereo, "stereo_outside_hull": int(n_stereo - allowed.sum())})
    completed_share = n_completed / max(n_completed + fused.stats["stereo_points_in"], 1)
    fused.stats.update({"hull": 1, "masks_used": len(trusted.cameras), "masks_cutting_stereo": len(dropped),
                        "stereo_cut_per_mask": {w: round(float(c), 4) for w, c in
                                                zip(silhouettes.workings, cuts, strict=True)},
                        "max_stereo_cut": round(float(cuts.max(initial=0.0)), 4), **completion,
                        "completion_share": round(float(completed_share * (1 - fused.stats["hull_share"])), 4)})
    return fused
