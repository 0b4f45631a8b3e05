"""Single-image product segmentation without downloaded weights: one image in, a mask and a confidence out.

Shops photograph products on plain backdrops (a white sweep, a black cloth, a lightbox). The backdrop is what the
image border shows, so:

1. a **backdrop colour model** is learnt from the border band (k-means clusters in Lab, each with its spread);
   pixels close to a compact cluster and connected to the border are probably backdrop;
2. **GrabCut** (OpenCV's graph cut over colour mixtures) is seeded from that trimap, together with any hints a
   caller has from elsewhere (surely background / surely product / where the product can be at all; the masks stage
   derives them from the reconstruction);
3. the result is cleaned (small islands and pin holes) and scored: a **confidence** in [0, 1] from how well the
   outline follows image edges, how differently coloured the inside and the surroundings are, and whether the mask
   is a plausible object (not empty, not the whole frame, not cut by the frame on several sides).

Everything runs on a copy whose longer side is at most ``max_side`` pixels (GrabCut costs ~0.7 s at 480x360 with
four iterations on one core) and the mask is scaled back to the image size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

logger = logging.getLogger(__name__)

BORDER_SHARE = 0.03
"""Width of the border band the backdrop is learnt from, as a share of the shorter image side."""
BACKDROP_CLUSTERS = 4
"""k-means clusters of the border colours (a sweep is one or two; a mat entering the frame adds more)."""
COMPACT_CLUSTER_STD = 6.0
"""A border cluster whose mean Lab spread is below this is a plain backdrop colour (sweep/cloth: 1-3 on renders,
2-5 on JPEG photos; a textured mat's clusters spread 15-40)."""
BACKDROP_DISTANCE = 3.0
"""Pixels within this many (noise-floored) standard deviations of a compact border cluster look like backdrop."""
NOISE_FLOOR = 2.5
"""Lab spread assumed at least (sensor noise and JPEG), so a perfectly flat render does not make every other pixel
'far' from the backdrop."""
LIGHTNESS_WEIGHT = 0.5
"""Lightness differences count half as much as colour differences: soft shadows darken a backdrop without
changing its colour."""
MIN_ISLAND_SHARE = 0.1
"""Mask components smaller than this share of the largest one are dropped (unless a hint says product)."""
HOLE_SHARE = 0.01
"""Holes smaller than this share of the mask are filled (noise on a plain face; a mug handle's hole is larger)."""


@dataclass(frozen=True)
class SegmentationHints:
    """What a caller already knows about some pixels (boolean arrays at the image's size; None: nothing known)."""

    background: np.ndarray | None = None
    """Surely not product (e.g. pixels seen to lie on the support plane)."""
    product: np.ndarray | None = None
    """Surely product (e.g. around reconstructed product points)."""
    possible: np.ndarray | None = None
    """Where the product can be at all (a generous region); everything outside is background."""


@dataclass(frozen=True)
class Segmentation:
    """A product mask and how much to trust it."""

    mask: np.ndarray
    """(H, W) bool, True on the product."""
    confidence: float
    """In [0, 1]: edge support x (half + half colour separation) x plausibility (see ``mask_confidence``)."""
    scores: dict[str, float] = field(default_factory=dict)
    """The factors of the confidence and a few numbers for the diagnostics."""


@dataclass(frozen=True)
class BackdropModel:
    """Colour clusters of the image border (Lab, float32)."""

    means: np.ndarray
    """(K, 3) cluster centres."""
    spreads: np.ndarray
    """(K,) mean per-channel standard deviation of each cluster."""
    shares: np.ndarray
    """(K,) share of the border pixels in each cluster."""

    @property
    def compact(self) -> np.ndarray:
        """Clusters that look like a plain backdrop (low spread, a real share of the border)."""
        return (self.spreads < COMPACT_CLUSTER_STD) & (self.shares > 0.05)

    def shadow_like(self, image: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """Pixels that look like a compact backdrop colour in shadow: same chromaticity, darker."""
        rgb = image.reshape(-1, 3).astype(np.float32) + 1.0
        total = rgb.sum(1, keepdims=True)
        chroma = rgb[:, :2] / total
        lightness = lab.reshape(-1, 3)[:, 0]
        out = np.zeros(len(rgb), bool)
        for mean in self.means[self.compact]:
            reference = cv2.cvtColor(mean.reshape(1, 1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(3)
            reference = np.clip(reference, 0, 1) * 255.0 + 1.0
            ref_chroma = reference[:2] / reference.sum()
            ratio = lightness / max(float(mean[0]), 1e-3)
            out |= (np.abs(chroma - ref_chroma).max(1) < SHADOW_CHROMA) & (ratio > SHADOW_DARKENING[0]) & (
                ratio < SHADOW_DARKENING[1])
        return out.reshape(lab.shape[:2])

    def distance(self, lab: np.ndarray) -> np.ndarray:
        """Per pixel, the smallest normalised distance to a compact cluster (inf when there is none)."""
        flat = lab.reshape(-1, 3).astype(np.float32)
        best = np.full(len(flat), np.inf, np.float32)
        weights = np.array([LIGHTNESS_WEIGHT, 1.0, 1.0], np.float32)
        for mean, spread in zip(self.means[self.compact], self.spreads[self.compact], strict=True):
            d = np.sqrt((((flat - mean) * weights) ** 2).sum(1)) / max(float(spread), NOISE_FLOOR)
            np.minimum(best, d, out=best)
        return best.reshape(lab.shape[:2])


SHADOW_CHROMA = 0.02
"""A pixel with the backdrop's chromaticity (r, g shares of r + g + b) within this, but darker, may be its shadow
(renders with a hard key-light shadow: the backdrop's shadow stays within 0.005; coloured products lie 0.03-0.2
away, neutral grey or white ones do not and are left to the multi-view checks)."""
SHADOW_DARKENING = (0.1, 0.9)
"""Brightness ratio to the backdrop of a shadow: darker than this upper bound, not blacker than the lower one."""


def to_lab(image: np.ndarray) -> np.ndarray:
    """RGB uint8 -> Lab float32 with L in [0, 100] and a, b around 0 (OpenCV's float conversion)."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def border_band(shape: tuple[int, int], share: float = BORDER_SHARE) -> np.ndarray:
    """Boolean band along the four image edges."""
    h, w = shape
    width = max(2, round(share * min(h, w)))
    band = np.zeros((h, w), bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    return band


def backdrop_model(lab: np.ndarray, seed: int = 0) -> BackdropModel:
    """Cluster the border colours of a Lab image."""
    samples = lab[border_band(lab.shape[:2])].astype(np.float32)
    k = min(BACKDROP_CLUSTERS, len(samples))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    spreads = np.array([samples[labels == i].std(0).mean() if (labels == i).any() else np.inf for i in range(k)])
    shares = np.bincount(labels, minlength=k) / len(labels)
    return BackdropModel(centres, spreads.astype(np.float32), shares)


def segment_product(image: np.ndarray, hints: SegmentationHints | None = None, *, max_side: int = 480,
                    iterations: int = 4) -> Segmentation:
    """Segment the product in one RGB uint8 image (H, W, 3); ``hints`` sharpen it where a caller knows more."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    hints = _resize_hints(hints, size)
    lab = to_lab(small)
    model = backdrop_model(lab)
    trimap = initial_trimap(lab, model, hints, model.shadow_like(small, lab))
    mask = _grabcut(small, trimap, iterations)
    mask = clean_mask(mask, hints.product if hints else None)
    confidence, scores = mask_confidence(small, mask, lab)
    scores["backdrop_compact_share"] = float(model.shares[model.compact].sum())
    if scale < 1:
        mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR) > 0
        mask = refine_outline(image, mask, band=int(np.ceil(1.5 / scale)))
    return Segmentation(mask, confidence, scores)


def refine_outline(image: np.ndarray, mask: np.ndarray, band: int) -> np.ndarray:
    """Re-decide the pixels within ``band`` of the outline at full resolution by their local colours.

    A pixel joins the side (just inside or just outside the band) whose local mean colour it is closer to: the
    outline of a mask found at a lower resolution moves onto the real edge (measured on 1024 px renders: a
    480 px GrabCut outline is 1-2 px off, this brings it within a pixel).
    """
    if band < 1:
        return mask
    m8 = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inner = cv2.erode(m8, kernel).astype(np.float32)
    outer = (1 - cv2.dilate(m8, kernel)).astype(np.float32)
    uncertain = (inner == 0) & (outer == 0)
    if not uncertain.any():
        return mask
    lab = to_lab(image)
    window = (4 * band + 1, 4 * band + 1)
    count_in = cv2.boxFilter(inner, -1, window, normalize=False)
    count_out = cv2.boxFilter(outer, -1, window, normalize=False)
    d_in = np.zeros(mask.shape, np.float32)
    d_out = np.zeros(mask.shape, np.float32)
    for channel in range(3):
        c = np.ascontiguousarray(lab[:, :, channel])
        mean_in = cv2.boxFilter(c * inner, -1, window, normalize=False) / np.maximum(count_in, 1)
        mean_out = cv2.boxFilter(c * outer, -1, window, normalize=False) / np.maximum(count_out, 1)
        d_in += (c - mean_in) ** 2
        d_out += (c - mean_out) ** 2
    decided = uncertain & (count_in > 0) & (count_out > 0)
    out = mask.copy()
    out[decided] = d_in[decided] < d_out[decided]
    # A lone pixel flipped by noise on a plain face is not an outline.
    out = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(out, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)


def initial_trimap(lab: np.ndarray, model: BackdropModel, hints: SegmentationHints | None = None,
                   shadow: np.ndarray | None = None) -> np.ndarray:
    """GrabCut labels: backdrop-like pixels (or its shadow) connected to the border -> probably background, the
    rest probably product; the border band itself is sure background where it matches the backdrop; hints
    override."""
    h, w = lab.shape[:2]
    distance = model.distance(lab)
    like = distance < BACKDROP_DISTANCE
    if shadow is not None:
        like |= shadow
    like = like.astype(np.uint8)
    # Only backdrop-coloured regions that reach the border: a white label on a product is not the sweep.
    count, labels = cv2.connectedComponents(like, connectivity=4)
    band = border_band((h, w))
    touching = np.unique(labels[band & (like > 0)])
    connected = np.isin(labels, touching[touching > 0])
    trimap = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
    trimap[connected] = cv2.GC_PR_BGD
    trimap[band & connected & (distance < 0.5 * BACKDROP_DISTANCE)] = cv2.GC_BGD
    if hints is not None:
        if hints.possible is not None:
            trimap[~hints.possible] = cv2.GC_BGD
        if hints.background is not None:
            trimap[hints.background] = cv2.GC_BGD
        if hints.product is not None:
            trimap[hints.product] = cv2.GC_FGD
    return trimap


def _grabcut(image: np.ndarray, trimap: np.ndarray, iterations: int) -> np.ndarray:
    """GrabCut from a trimap; the trimap's own foreground when one side has no pixels to learn from."""
    fg = np.isin(trimap, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if fg.all() or not fg.any():
        return fg
    labels = trimap.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(image[:, :, ::-1]), labels, None, bgd, fgd, iterations,
                cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def clean_mask(mask: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Drop islands much smaller than the largest component (unless ``keep`` marks them) and fill pin holes."""
    mask = mask.astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    kept = 1 + np.flatnonzero(areas >= MIN_ISLAND_SHARE * areas.max())
    if keep is not None:
        kept = np.union1d(kept, np.unique(labels[keep & (labels > 0)]))
    out = np.isin(labels, kept)
    holes = (~out).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    band = border_band(out.shape, share=0.0)  # the 2-pixel frame: holes never touch it
    outside = np.unique(labels[band])
    small = 1 + np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < HOLE_SHARE * out.sum())
    out[np.isin(labels, np.setdiff1d(small, outside))] = True
    return out


def mask_confidence(image: np.ndarray, mask: np.ndarray, lab: np.ndarray | None = None
                    ) -> tuple[float, dict[str, float]]:
    """How much to trust a mask of ``image``: (confidence in [0, 1], its factors).

    * ``edge_support``: share of the outline lying on a clear image edge (a true product outline on a backdrop
      does almost everywhere; a cut through a textured mat or a plain face does not);
    * ``separation``: 1 - Bhattacharyya overlap of the colour histograms just inside and just outside the outline;
    * ``plausible``: 0 for an empty or frame-filling mask, reduced when the mask runs along several image edges.
    """
    lab = to_lab(image) if lab is None else lab
    h, w = mask.shape
    area = float(mask.mean())
    scores = {"area_fraction": area}
    if area < 0.001 or area > 0.95:
        scores.update(edge_support=0.0, separation=0.0, plausible=0.0)
        return 0.0, scores
    m8 = mask.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    outline = (m8 - cv2.erode(m8, kernel)).astype(bool)
    outline &= ~border_band((h, w), share=0.0)  # where the frame cuts the mask there is no edge to find
    gradient = _colour_gradient(lab)
    # A clear edge: well above the image's typical gradient (most pixels are flat backdrop or flat faces).
    threshold = max(4.0 * float(np.median(gradient)), 1.5)
    edge_support = float((cv2.dilate((gradient > threshold).astype(np.uint8), kernel)[outline] > 0).mean()) \
        if outline.any() else 0.0
    ring = max(3, round(0.02 * min(h, w)))
    big = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    inside = mask & ~cv2.erode(m8, big).astype(bool)
    outside = cv2.dilate(m8, big).astype(bool) & ~mask
    separation = 1.0 - _bhattacharyya(lab[inside], lab[outside])
    edges = (mask[:2], mask[-2:], mask[:, :2], mask[:, -2:])
    sides = sum(bool(edge.mean() > 0.05) for edge in edges)
    plausible = 1.0 if sides <= 1 else 0.7 if sides == 2 else 0.3
    scores.update(edge_support=edge_support, separation=separation, plausible=plausible, frame_sides=float(sides))
    # Separation only tempers: a product's shaded side next to its own shadow overlaps in colour with a correct mask
    # (renders: perfect masks score 0.4-0.9), while a missing edge or an implausible shape is decisive.
    confidence = float(np.clip(edge_support * (0.5 + 0.5 * separation) * plausible, 0.0, 1.0))
    return confidence, scores


def _colour_gradient(lab: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude summed over the Lab channels (lightness weighted like the backdrop model)."""
    total = np.zeros(lab.shape[:2], np.float32)
    for channel, weight in zip(cv2.split(lab), (LIGHTNESS_WEIGHT, 1.0, 1.0), strict=True):
        gx = cv2.Sobel(channel, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(channel, cv2.CV_32F, 0, 1, ksize=3)
        total += weight * np.sqrt(gx * gx + gy * gy) / 8.0  # Sobel's gain: a unit step gives 4 per side
    return total


def _bhattacharyya(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Bhattacharyya coefficient of two sets of Lab colours (1 = same distribution, 0 = disjoint)."""
    if len(a) < 10 or len(b) < 10:
        return 1.0
    ranges = [(0.0, 100.0), (-80.0, 80.0), (-80.0, 80.0)]
    ha, _ = np.histogramdd(a, bins=bins, range=ranges)
    hb, _ = np.histogramdd(b, bins=bins, range=ranges)
    return float(np.sqrt(ha / ha.sum() * hb / hb.sum()).sum())


def _resize_hints(hints: SegmentationHints | None, size: tuple[int, int]) -> SegmentationHints | None:
    if hints is None:
        return None

    def fit(array: np.ndarray | None) -> np.ndarray | None:
        if array is None or (array.shape[1], array.shape[0]) == size:
            return array
        return cv2.resize(array.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0

    return SegmentationHints(fit(hints.background), fit(hints.product), fit(hints.possible))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
