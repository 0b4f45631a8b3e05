"""Masks stage: a product mask per photo, with a confidence, after SfM so the reconstruction can sharpen it.

Per photo, ``core.segmentation.segment_product`` runs with hints from the reconstruction:

* **on the support plane**: pixels that look the same in a neighbouring photo warped through the support plane's
  homography (a textured mat or turntable plate) are background, however colourful;
* **product points**: sparse points standing above the plane near the axis the cameras look at are product;
* **off the plane**: textured pixels in front of the mat or plate that no neighbour warped through the plane matches
  stand on it: product too, whatever their colour (a red label on a colourful plate);
* **where the product can be**: the projection of a generous cylinder around that axis.

Then the photos check each other: a coarse visual hull is carved from every other photo's mask and projected into
the photo (leave one out). What lies outside that projection is background in every other view (a shadow, a bit of
plate), so a second segmentation pass treats it as such; the agreement (IoU) between the photo's mask and the
others' hull is the multi-view part of its confidence.

The user can supply masks (a folder of images named like the photos, white = product): they are used as given,
and checked against each other the same way (their confidence is that agreement; findings name the ones that
disagree).

Writes ``RUN/masks/images/<stem>.png`` (uint8, 255 = product, at the size of the undistorted images the dense stages
use); ``MasksResult.mask_for(photo)`` reads them back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core import advice
from core.artifacts import MASKS_IMAGES
from core.config import MasksConfig, cpu_budget
from core.geometry import PinholeCamera, cameras_focus, cameras_up, narrowest_half_view, support_plane
from core.manifest import Finding
from core.photos import Photo
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.segmentation import Segmentation, SegmentationHints, mask_iou, segment_product
from core.stages import StageOutput
from core.stages.fusion.hull import Silhouettes, carve, carve_hull

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PLANE_ZNCC = 0.6
"""Photos warped through the support plane that correlate above this (7x7 ZNCC) show the plane there."""
PLANE_TEXTURE_STD = 0.02
"""...where the window has at least this grey-level spread (images in [0, 1]); plain areas say nothing."""
OFF_PLANE_ZNCC = 0.3
"""Textured pixels over the mat or plate that no neighbouring photo, warped through the support plane, matches above
this stand on it: product seeds, whatever their colour (a red label on a colourful plate). Measured, balanced masks'
IoU with the true ones (no seeds; 0.2, 0.3, 0.4): FUZE turntable 0.55; 0.95, 0.96, 0.96; soup turntable on a
textured backdrop 0.84; 0.91, 0.91, 0.91; cracker box 0.955; 0.977, 0.978, 0.979; plain box turntable 0.945; 0.971,
0.988, 0.988; textured bottle 0.91; 0.962, 0.965, 0.967; plain bottle turntable 0.983; 0.982, 0.981, 0.981. An
opening of the seeds (3x3, 5x5) lost part of the gain (FUZE 0.94, 0.88 at 0.3)."""
PRODUCT_HEIGHT_SHARE = 0.02
"""Sparse points this share of the camera distance above the plane are off the table (product or background)."""
POINT_RADIUS_PX = 3
"""Radius of the product seed around each projected product point, in mask pixels."""
OBJECT_FRAME_SHARE = 0.8
"""The product fills at most this share of the narrower half field of view (isolation's assumption too)."""
PLANE_TOLERANCE = 0.004
"""RANSAC inlier distance for the support plane, as a share of the camera distance (isolation's too)."""
CONSISTENCY_RESOLUTION = 64
"""Voxels along the longest side of the leave-one-out hull (coarse: it only has to say 'not here')."""
CONSISTENCY_MARGIN_SHARE = 0.015
"""Pixels farther than this share of the image diagonal outside the others' hull are background."""
MIN_HULL_CONFIDENCE = 0.3
"""Masks below this confidence do not carve the consistency hull (nor, later, the visual hull)."""
MIN_PRODUCT_POINTS = 50
"""Sparse product points needed to bound the product by their cylinder (fewer say too little about its extent)."""
PRODUCT_BOUND_PAD = 1.15
"""The product cylinder is the points' 99th-percentile radius and height times this: the extreme points sit a few
per cent inside the true outline (measured on the FUZE turntable: GT silhouette inside the bound in every photo)."""
UNTRUSTED_MASK_GROWTH = 0.03
"""An untrusted mask joins the search region grown by this share of the longer image side (a plain cap above the
last product point is inside it)."""
MIN_SEARCH_CONFIDENCE = 0.7
"""Masks limit the dense search (pixels outside get no depth) only when the capture's median confidence and the
photo's own reach this: a mask that cuts the product off loses that part for good. Measured (balanced, 24 photos):
soup-can and cracker-box orbits, masks right (mesh silhouette IoU 0.96 / 0.80), confidences 0.73-0.86, median 0.78;
FUZE bottle on a colourful turntable plate, masks then missing the red label (IoU 0.36-0.64; 0.92-0.98 since
the off-plane seeds),
confidences 0.39-0.74, median 0.52, and the mask-limited search lost 30 % of the surface (mesh recall@1% 0.73)."""


@dataclass
class MasksResult(StageOutput):
    """Where the masks are, how much each is trusted, and where the product stands (for the visual hull)."""

    mask_dir: Path | None = None
    photos: list[Photo] = field(default_factory=list)
    """The scene's photos, in order."""
    confidence: dict[str, float] = field(default_factory=dict)
    """Per photo (working name), in [0, 1]."""
    supplied: set[str] = field(default_factory=set)
    """Working names of the photos whose mask the user supplied."""
    plane: np.ndarray | None = None
    """The support plane found in the sparse points (a, b, c, d), (a, b, c) = up; None when there is none."""
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    focus: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Where the cameras' axes meet (on the plane when there is one)."""
    radius: float = 0.0
    """Generous radius around the focus inside which the product stands."""
    product_radius: float = 0.0
    """The padded cylinder holding the sparse product points (``SceneGeometry``); 0 when it is not known."""
    product_height: float = 0.0

    def path_for(self, photo: Photo) -> Path | None:
        if self.mask_dir is None:
            return None
        path = self.mask_dir / f"{photo.stem}.png"
        return path if path.is_file() else None

    def mask_for(self, photo: Photo) -> np.ndarray | None:
        """(H, W) bool product mask of a photo at the size of its undistorted image (None when there is none)."""
        path = self.path_for(photo)
        mask = None if path is None else cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        return None if mask is None else mask > 127

    def confidence_for(self, photo: Photo) -> float:
        return self.confidence.get(photo.working, 0.0)

    def trusted(self, photo: Photo) -> bool:
        """Whether the photo's mask may decide alone what is product (``MIN_SEARCH_CONFIDENCE``, for the capture
        and the photo): it is then where the dense search runs."""
        return (self.ok and bool(self.confidence) and self.confidence_for(photo) >= MIN_SEARCH_CONFIDENCE
                and float(np.median(list(self.confidence.values()))) >= MIN_SEARCH_CONFIDENCE)

    def search_masks(self, scene: SparseScene) -> list[np.ndarray | None] | None:
        """Per photo of ``scene``, the region that limits the dense search (None for the photo: search it whole);
        None when nothing limits any photo.

        A trusted mask (``MIN_SEARCH_CONFIDENCE``, for the capture and the photo) is the region. Otherwise the
        product cylinder's image (every sparse product point inside, padded) joined with the untrusted mask grown by
        ``UNTRUSTED_MASK_GROWTH``: a mask that took the label for the plate cannot cut the product off, and the
        backdrop around the product is still not searched (FUZE turntable: 10 % of the frame instead of all of it).
        """
        if not self.ok or not self.confidence:
            return None
        regions: list[np.ndarray | None] = []
        for photo, camera in zip(scene.photos, scene.cameras, strict=True):
            mask = self.mask_for(photo)
            if mask is not None and self.trusted(photo):
                regions.append(mask)
                continue
            bound = self.product_bound(camera)
            if bound is not None and mask is not None and mask.shape == bound.shape:
                radius = max(1, round(UNTRUSTED_MASK_GROWTH * max(mask.shape)))
                kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
                bound |= cv2.dilate(mask.astype(np.uint8), kernel) > 0
            regions.append(bound)
        return regions if any(r is not None for r in regions) else None

    def trusted_masks(self, scene: SparseScene) -> tuple[list[PinholeCamera], list[np.ndarray]]:
        """The cameras and masks of the photos whose mask is trusted (``trusted``), for checking the mesh."""
        _, cameras, masks = self._masks_where(scene, self.trusted)
        same = [(c, m) for c, m in zip(cameras, masks, strict=True) if m.shape == (c.height, c.width)]
        return [c for c, _ in same], [m for _, m in same]

    def _masks_where(self, scene: SparseScene, keep) -> tuple[list[str], list[PinholeCamera], list[np.ndarray]]:
        """Working names, cameras and masks of the scene's photos that have a mask and pass ``keep(photo)``."""
        workings, cameras, masks = [], [], []
        for photo, camera in zip(scene.photos, scene.cameras, strict=True):
            mask = self.mask_for(photo) if keep(photo) else None
            if mask is not None:
                workings.append(photo.working)
                cameras.append(camera)
                masks.append(mask)
        return workings, cameras, masks

    def product_bound(self, camera: PinholeCamera) -> np.ndarray | None:
        """The image of the product cylinder in ``camera`` (None when the cylinder is not known)."""
        if self.plane is None or self.product_radius <= 0 or self.product_height <= 0:
            return None
        return cylinder_region(camera, self.focus, self.up, self.product_radius, (0.0, self.product_height))

    def silhouettes(self, scene: SparseScene) -> Silhouettes | None:
        """The trusted masks with their cameras and the product's frame, for fusion's visual hull (None: no masks)."""
        if not self.ok or self.mask_dir is None:
            return None
        workings, cameras, masks = self._masks_where(
            scene, lambda photo: self.confidence_for(photo) >= MIN_HULL_CONFIDENCE)
        return Silhouettes(workings, cameras, masks, self.plane, self.focus, self.up, self.radius)


def run_masks(scene: SparseScene, run_dir: Path, config: MasksConfig, progress: StageProgress = no_progress,
              supplied: Mapping[int, Path] | None = None) -> MasksResult:
    """Segment the product in every photo of ``scene``; writes ``RUN/masks/images/<stem>.png``.

    ``supplied``: the user's mask files by photo index (``find_supplied_masks``); they are used as given.
    """
    started = time.perf_counter()
    if not config.enabled:
        return MasksResult(metrics={"masks": 0}, findings=[advice.MASKS_OFF])
    mask_dir = MASKS_IMAGES.path(run_dir)
    mask_dir.mkdir(parents=True, exist_ok=True)
    photos, cameras = list(scene.photos), scene.cameras
    images = [_read_rgb(p) for p in scene.image_paths]
    given, findings = read_supplied_masks(supplied or {}, photos, [(c.width, c.height) for c in cameras])
    geometry = SceneGeometry.from_scene(scene)
    progress(0.02, "reading the support plane")
    hints: list[SegmentationHints] = [geometry.hints(i, images) for i in range(len(cameras))]
    todo = [i for i in range(len(cameras)) if i not in given]
    segmentations = _segment_all(images, {i: hints[i] for i in todo}, config,
                                 lambda done: progress(0.05 + 0.45 * done / max(len(todo), 1),
                                                       f"segmented {done}/{len(todo)}"))
    masks = [given[i] if i in given else segmentations[i].mask for i in range(len(cameras))]
    own = np.array([1.0 if i in given else segmentations[i].confidence for i in range(len(cameras))])

    agreement = np.ones(len(cameras))
    if len(cameras) >= 3:
        agreement, others = leave_one_out(cameras, masks, own, geometry)
        if config.refine:
            refined = {i: _with_others(hints[i], others[i], images[i].shape[:2]) for i in sorted(segmentations)}
            segmentations = _segment_all(images, refined, config,
                                         lambda done: progress(0.55 + 0.4 * done / max(len(refined), 1),
                                                               f"refined {done}/{len(refined)}"))
            for i, segmentation in segmentations.items():
                masks[i], own[i] = segmentation.mask, segmentation.confidence
            agreement, _ = leave_one_out(cameras, masks, own, geometry)

    confidence: dict[str, float] = {}
    per_photo: dict[str, dict[str, float]] = {}
    for i, photo in enumerate(photos):
        # The other photos' agreement decides (a mask that took the plate or lost a side disagrees with them); the
        # photo's own edge and colour evidence tempers it (at 320 px it is weak even for good masks: 0.35-0.6).
        value = float(agreement[i]) if i in given else float(agreement[i] * (0.5 + 0.5 * own[i]))
        confidence[photo.working] = round(value, 3)
        cv2.imwrite(str(mask_dir / f"{photo.stem}.png"), masks[i].astype(np.uint8) * 255)
        per_photo[photo.name] = {"confidence": confidence[photo.working], "agreement": round(float(agreement[i]), 3),
                                 "supplied": int(i in given), "area_fraction": round(float(masks[i].mean()), 4)}
        if i in segmentations:
            per_photo[photo.name].update({k: round(v, 3) for k, v in segmentations[i].scores.items()})
    values = np.array(list(confidence.values()))
    frame = geometry.product_frame()
    bound_from = "sparse points" if geometry.product_radius > 0 else None
    if bound_from is None and geometry.plane is not None:
        # A plain product gives SfM no points of its own: the masks bound it instead.
        usable = [(c, m) for c, m, photo in zip(cameras, masks, photos, strict=True)
                  if confidence[photo.working] >= MIN_HULL_CONFIDENCE]
        radius, height = mask_cylinder([c for c, _ in usable], [m for _, m in usable], geometry.focus, geometry.up)
        if radius > 0:
            frame.update(product_radius=min(radius, geometry.radius), product_height=min(height, geometry.height))
            bound_from = "masks"
    metrics = {"masks": len(photos), "supplied": len(given), "median_confidence": float(np.median(values)),
               "low_confidence": int((values < advice.LOW_MASK_CONFIDENCE).sum()),
               "support_plane_found": int(geometry.plane is not None),
               # Kept in the record so that a resumed run bounds the dense search the same way.
               "product_radius": float(frame["product_radius"]), "product_height": float(frame["product_height"]),
               "product_bound_from": bound_from,
               "seconds": round(time.perf_counter() - started, 2), "per_photo": per_photo}
    findings += advice.masks_findings(per_photo)
    progress(1.0, "masks ready")
    return MasksResult(metrics=metrics, findings=findings, artifacts=[MASKS_IMAGES], mask_dir=mask_dir.resolve(),
                       photos=photos, confidence=confidence, supplied={photos[i].working for i in given}, **frame)


def _segment_all(images: Sequence[np.ndarray], hints: Mapping[int, SegmentationHints], config: MasksConfig,
                 on_done: Callable[[int], None]) -> dict[int, Segmentation]:
    """``segment_product`` on the photos of ``hints``, on the run's cores (GrabCut releases the GIL)."""
    def one(i: int) -> Segmentation:
        return segment_product(images[i], hints[i], max_side=config.max_side, iterations=config.iterations)

    out: dict[int, Segmentation] = {}
    with ThreadPoolExecutor(max_workers=max(1, cpu_budget())) as pool:
        for done, (i, segmentation) in enumerate(zip(hints, pool.map(one, hints), strict=True), start=1):
            out[i] = segmentation
            on_done(done)
    return out


MASK_BOUND_QUANTILE = 0.9
"""The mask-bounded cylinder takes this quantile over the photos of each photo's extent: the product's widest view
counts (a box seen along its diagonal), a few masks that took the plate or the backdrop do not."""


def mask_cylinder(cameras: Sequence[PinholeCamera], masks: Sequence[np.ndarray], focus: np.ndarray,
                  up: np.ndarray) -> tuple[float, float]:
    """(radius, height) of an upright cylinder on the support plane around ``focus`` that holds the product as the
    masks outline it (padded by ``PRODUCT_BOUND_PAD``); (0, 0) with fewer than 3 masks.

    Each mask's outline is cast onto the vertical plane through the axis facing its camera: its 99th-percentile
    distance from the axis and height above the plane are that photo's extent (rays through the far top rim cross
    that plane higher than the rim: the bound errs large)."""
    radii, heights = [], []
    for camera, mask in zip(cameras, masks, strict=True):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            continue
        pixels = np.concatenate(contours).reshape(-1, 2).astype(np.float64) + 0.5
        toward = camera.center - focus
        normal = toward - (toward @ up) * up
        if np.linalg.norm(normal) < 1e-9:  # looking straight down the axis: no side view of the product
            continue
        normal /= np.linalg.norm(normal)
        rays = np.column_stack([pixels, np.ones(len(pixels))]) @ np.linalg.inv(camera.K).T @ camera.R  # world dirs
        along = rays @ normal
        ok = np.abs(along) > 1e-9
        t = ((focus - camera.center) @ normal) / along[ok]
        hit = camera.center + t[:, None] * rays[ok] - focus
        height = hit @ up
        radial = np.linalg.norm(hit - np.outer(height, up), axis=1)
        if len(radial) and (t > 0).all():
            radii.append(np.quantile(radial, 0.99))
            heights.append(np.quantile(height, 0.99))
    if len(radii) < 3:
        return 0.0, 0.0
    return (float(np.quantile(radii, MASK_BOUND_QUANTILE)) * PRODUCT_BOUND_PAD,
            float(np.quantile(heights, MASK_BOUND_QUANTILE)) * PRODUCT_BOUND_PAD)


def find_supplied_masks(folder: Path, photos: Sequence[Photo], sources: Sequence[Path]) -> dict[int, Path]:
    """The user's mask files by photo index: named like the photo files (``sources[photo.index]``), any image
    suffix, stems compared case-insensitively."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    by_stem = {p.stem.lower(): p for p in folder.iterdir() if p.suffix.lower() in MASK_SUFFIXES and p.is_file()}
    found = {}
    for photo in photos:
        path = by_stem.get(Path(sources[photo.index]).stem.lower())
        if path is not None:
            found[photo.index] = path
    return found


def read_supplied_masks(files: Mapping[int, Path], photos: Sequence[Photo], sizes: Sequence[tuple[int, int]]
                        ) -> tuple[dict[int, np.ndarray], list[Finding]]:
    """The user's masks (> 127 = product) at each photo's (width, height), by position in ``photos``; the
    problems, naming the file, as findings."""
    found: dict[int, np.ndarray] = {}
    problems: list[str] = []
    for i, (photo, (width, height)) in enumerate(zip(photos, sizes, strict=True)):
        path = files.get(photo.index)
        if path is None:
            continue
        raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            problems.append(advice.mask_unreadable(path.name))
            continue
        if abs(np.log((raw.shape[1] / raw.shape[0]) / (width / height))) > 0.02:
            problems.append(advice.mask_wrong_shape(path.name, raw.shape[1], raw.shape[0], photo.name, width, height))
            continue
        if raw.shape != (height, width):
            raw = cv2.resize(raw, (width, height), interpolation=cv2.INTER_NEAREST)
        mask = raw > 127
        if not mask.any() or mask.all():
            problems.append(advice.mask_blank(path.name, "black" if not mask.any() else "white"))
            continue
        found[i] = mask
    return found, advice.supplied_masks_findings(problems, len(found), len(photos))


# ----------------------------------------------------------------------------------------------------------------
# What the reconstruction says about each photo
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SceneGeometry:
    """Support plane, product axis and product points of a scene, for segmentation hints."""

    cameras: list[PinholeCamera]
    plane: np.ndarray | None
    """(a, b, c, d), (a, b, c) the unit up direction; None when no table was found."""
    up: np.ndarray
    focus: np.ndarray
    """Where the optical axes meet, moved onto the plane when there is one."""
    radius: float
    """Generous radius of the region the product can occupy around the axis."""
    height: float
    """Generous height of that region above the plane (or around the focus without one)."""
    product_points: np.ndarray
    neighbours: list[list[int]]
    product_radius: float = 0.0
    """Radius around the axis of the cylinder that holds the product points (padded); 0 when too few points."""
    product_height: float = 0.0
    """Height above the plane of that cylinder (padded)."""

    @classmethod
    def from_scene(cls, scene: SparseScene) -> SceneGeometry:
        cameras = scene.cameras
        up = cameras_up(cameras)
        focus = cameras_focus(cameras)
        distance = float(np.median([np.linalg.norm(c.center - focus) for c in cameras]))
        radius = distance * narrowest_half_view(cameras) * OBJECT_FRAME_SHARE
        points = scene.points
        plane = support_plane(points, cameras, up, focus, PLANE_TOLERANCE * distance) if len(points) >= 100 else None
        height = 2.0 * radius
        product = np.empty((0, 3))
        if plane is not None:
            up = plane[:3]
            focus = focus - (focus @ up + plane[3]) * up
            above = points @ up + plane[3]
            offset = points - focus
            radial = np.linalg.norm(offset - np.outer(offset @ up, up), axis=1)
            keep = (above > PRODUCT_HEIGHT_SHARE * distance) & (radial < radius)
            product = points[keep]
            if keep.sum() >= MIN_PRODUCT_POINTS:
                product_radius = float(np.quantile(radial[keep], 0.99)) * PRODUCT_BOUND_PAD
                product_height = float(np.quantile(above[keep], 0.99)) * PRODUCT_BOUND_PAD
                return cls(cameras, plane, up, focus, radius, height, product, _neighbours(cameras),
                           min(product_radius, radius), min(product_height, height))
        return cls(cameras, plane, up, focus, radius, height, product, _neighbours(cameras))

    def product_frame(self) -> dict[str, object]:
        """Where the product stands, as ``MasksResult`` keeps it (for the visual hull and the search region)."""
        return {"plane": self.plane, "up": self.up, "focus": self.focus, "radius": self.radius,
                "product_radius": self.product_radius, "product_height": self.product_height}

    def hints(self, index: int, images: list[np.ndarray]) -> SegmentationHints:
        camera = self.cameras[index]
        possible = self._possible(camera)
        product = np.zeros((camera.height, camera.width), bool)
        if len(self.product_points):
            uv, z = camera.project(self.product_points)
            seeds = np.zeros(product.shape, np.uint8)
            ok = z > 0
            for u, v in uv[ok]:
                cv2.circle(seeds, (int(u), int(v)), POINT_RADIUS_PX, 1, -1)
            product = seeds.astype(bool) & possible
        background = None
        if self.plane is not None:
            background, off_plane = self._against_plane(index, images)
            product |= off_plane & possible & self._over_support(camera)
            background &= ~product
        return SegmentationHints(background=background, product=product, possible=possible)

    def _over_support(self, camera: PinholeCamera) -> np.ndarray:
        """Pixels whose ray meets the support plane within ``radius`` of the axis (in front of the mat or plate): the
        image of that disc."""
        return cylinder_region(camera, self.focus, self.up, self.radius, (0.0, 0.0))

    def _possible(self, camera: PinholeCamera) -> np.ndarray:
        """Pixels whose ray passes through the cylinder (radius, height) standing on the plane around the axis."""
        return cylinder_region(camera, self.focus, self.up, self.radius,
                               (0.0, self.height) if self.plane is not None else (-self.height / 2, self.height / 2))

    def _against_plane(self, index: int, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pixels that a neighbouring photo, warped through the support plane, shows the same (ZNCC): the plane; and
        textured pixels that no neighbour shows the same: something standing on it (or hiding it)."""
        camera = self.cameras[index]
        grey = _grey(images[index])
        best = np.full(grey.shape, -1.0, np.float32)
        mu = cv2.blur(grey, (7, 7))
        std = np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - mu * mu, 0))
        for j in self.neighbours[index]:
            H = plane_homography(camera, self.cameras[j], self.plane)  # type: ignore[arg-type]
            warped = cv2.warpPerspective(_grey(images[j]), H, (camera.width, camera.height),
                                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
            mu_s = cv2.blur(warped, (7, 7))
            var_s = np.maximum(cv2.blur(warped * warped, (7, 7)) - mu_s * mu_s, 0)
            zncc = (cv2.blur(grey * warped, (7, 7)) - mu * mu_s) / (std * np.sqrt(var_s) + 1e-6)
            zncc[cv2.erode((warped >= 0).astype(np.uint8), np.ones((7, 7), np.uint8)) == 0] = -1.0
            np.maximum(best, zncc, out=best)
        on_plane = ((best > PLANE_ZNCC) & (std > PLANE_TEXTURE_STD)).astype(np.uint8)
        # Speckle on the product (a chance match) is removed; the mat is large and solid.
        on_plane = cv2.morphologyEx(on_plane, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        off_plane = (best < OFF_PLANE_ZNCC) & (best > -1.0) & (std > PLANE_TEXTURE_STD)  # -1: no neighbour saw it
        return on_plane.astype(bool), off_plane


def cylinder_region(camera: PinholeCamera, base_centre: np.ndarray, up: np.ndarray, radius: float,
                    span: tuple[float, float]) -> np.ndarray:
    """(H, W) bool: pixels whose ray passes through the upright cylinder of ``radius`` around ``base_centre`` from
    ``span[0]`` to ``span[1]`` along ``up`` (a convex solid: its image is the hull of its two rims' images)."""
    ring = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    e1 = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    circle = radius * (np.outer(np.cos(ring), e1) + np.outer(np.sin(ring), e2))
    points = np.concatenate([base_centre + circle + span[0] * up, base_centre + circle + span[1] * up])
    uv, z = camera.project(points)
    region = np.zeros((camera.height, camera.width), np.uint8)
    if (z <= 0).any():  # the camera is inside or beside the cylinder: no useful bound
        return np.ones(region.shape, bool)
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    cv2.fillConvexPoly(region, hull, 1)
    return region.astype(bool)


def plane_homography(ref: PinholeCamera, src: PinholeCamera, plane: np.ndarray) -> np.ndarray:
    """Homography from reference to source pixel indices induced by a world plane (a, b, c, d)."""
    n_ref = ref.R @ plane[:3]
    d_ref = plane[3] - n_ref @ ref.t
    R = src.R @ ref.R.T
    t = src.t - R @ ref.t
    H = src.K @ (R - np.outer(t, n_ref) / d_ref) @ np.linalg.inv(ref.K)
    shift = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # index i sits at continuous coordinate i + 0.5
    return np.linalg.inv(shift) @ H @ shift


def leave_one_out(cameras: list[PinholeCamera], masks: list[np.ndarray], confidence: np.ndarray,
                  geometry: SceneGeometry) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per view, IoU of its mask with the hull the *other* trusted masks carve, and that hull's projection."""
    trusted = [i for i in range(len(masks)) if confidence[i] >= MIN_HULL_CONFIDENCE]
    if len(trusted) < 3:
        trusted = list(range(len(masks)))
    lo, hi = geometry_bounds(geometry)
    coarse = carve_hull([cameras[i] for i in trusted], [masks[i] for i in trusted], lo, hi,
                        CONSISTENCY_RESOLUTION, geometry.plane)
    shape = coarse.field.shape
    folded = carve([cameras[i] for i in trusted], [masks[i] for i in trusted], coarse.origin, coarse.voxel,
                   shape, geometry.plane)  # type: ignore[arg-type]
    agreement = np.zeros(len(masks))
    others = []
    for i, camera in enumerate(cameras):
        field_without = folded.without(trusted.index(i)) if i in trusted else folded.smallest
        projected = coarse.project(camera, field_without)
        others.append(projected)
        # An empty mask agrees with an empty hull and says nothing (seen: every mask of a preview empty, each given
        # agreement 1 and so confidence 0.5, enough to carve).
        agreement[i] = mask_iou(masks[i], projected) if masks[i].any() else 0.0
    return agreement, others


def geometry_bounds(geometry: SceneGeometry) -> tuple[np.ndarray, np.ndarray]:
    """A world box around the region the product can occupy."""
    extent = np.full(3, geometry.radius)
    centre = geometry.focus + (0.5 * geometry.height * geometry.up if geometry.plane is not None else 0)
    extent = np.maximum(extent, 0.5 * geometry.height)
    return centre - extent, centre + extent


def _with_others(hints: SegmentationHints, others: np.ndarray, shape: tuple[int, int]) -> SegmentationHints:
    """Hints plus 'background' beyond a margin outside the other photos' hull."""
    margin = max(2, round(CONSISTENCY_MARGIN_SHARE * float(np.hypot(*shape))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    outside = cv2.dilate(others.astype(np.uint8), kernel) == 0
    background = outside if hints.background is None else (hints.background | outside)
    # Deep inside what every other photo allows is product (the hull is a superset of the product, but not by
    # twice the margin: on renders of a plain box from 24 views its excess is 3-10 px at 1024 px).
    inside = cv2.erode(others.astype(np.uint8), kernel, iterations=2).astype(bool)
    if hints.background is not None:
        inside &= ~hints.background
    product = inside if hints.product is None else ((hints.product & ~outside) | inside)
    return SegmentationHints(background=background, product=product, possible=hints.possible)


def _neighbours(cameras: list[PinholeCamera], count: int = 2) -> list[list[int]]:
    """Per view, the ``count`` views with the nearest centres among those looking within 45 degrees of it."""
    centres = np.array([c.center for c in cameras])
    axes = np.array([c.viewing_direction for c in cameras])
    result = []
    for i in range(len(cameras)):
        distance = np.linalg.norm(centres - centres[i], axis=1)
        distance[i] = np.inf
        distance[axes @ axes[i] < np.cos(np.radians(45))] = np.inf
        order = [int(j) for j in np.argsort(distance)[:count] if np.isfinite(distance[j])]
        result.append(order)
    return result


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
