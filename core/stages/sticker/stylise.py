"""Cartoon stylisation of the cut-out subject, per theme: a pluggable step (``Stylizer``).

The classical stylizer (no weights): edge-preserving smoothing (OpenCV's recursive edge-preserving filter, then a
bilateral pass), k-means colour quantisation in Lab with every cluster mapped to its nearest colour of the theme's
palette (so the cartoon never has more colours than the palette), a mode filter on the regions, bold outlines (the
edges between regions, dilated; the silhouette thicker) and the theme's accent inside the subject (retro halftone
dots in the shadows). Accents outside the subject (glow, sparkles) belong to the die-cut (``diecut.py``).

A local image-to-image model (a diffusers img2img folder with ``model_index.json``, or a transformers
``image-to-image`` folder with ``config.json``), found at ``StickerConfig.model_path``,
``$PRODUCT_STUDIO_STICKER_MODEL`` or ``models/sticker``, repaints the subject first when its library is
importable; its output still goes through the palette and outlines, so the theme's palette holds either way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from core.config import StickerConfig
from core.segmentation import to_lab
from core.stages.sticker.themes import Theme

logger = logging.getLogger(__name__)

ENV_VAR = "PRODUCT_STUDIO_STICKER_MODEL"
MODEL_FOLDER_NAME = "sticker"
"""Folder under the project's models/ searched for a stylisation model (next to the depth model's)."""
MODEL_STRENGTH = 0.55
"""img2img strength: how far the model may move from the photo (0.5-0.6 keeps the subject recognisable)."""
MAX_SAMPLES = 40_000
"""Subject pixels k-means is fitted on (a random subset; assigning every pixel to a centre is cheap)."""


@runtime_checkable
class Stylizer(Protocol):
    """Turns the subject's pixels into a cartoon of the theme (RGB uint8 in, RGB uint8 out, same size)."""

    name: str

    def stylise(self, image: np.ndarray, mask: np.ndarray, theme: Theme) -> np.ndarray: ...


def palette_for(theme: Theme, palette_size: int) -> np.ndarray:
    """(K, 3) uint8: the theme's palette, cut to ``palette_size`` colours when that is smaller (0: all of it)."""
    palette = np.array(theme.palette, np.uint8)
    return palette[:palette_size] if 0 < palette_size < len(palette) else palette


def _palette_lab(palette: np.ndarray) -> np.ndarray:
    return to_lab(palette.reshape(1, -1, 3)).reshape(-1, 3)


MERGE_DISTANCE = 10.0
"""k-means centres closer than this (Lab, lightness at half weight) are one colour of the photo: a plain face
split by noise (drawn test subjects: one face's clusters lie 3-9 apart, different faces 25+)."""
SAME_HUE_DEG = 20.0
"""Coloured centres (chroma above ``MIN_CHROMA``) whose hue angles differ by less than this are one face in light
and shade: darkening keeps the hue but moves Lab a and b a lot (an orange lit and in shadow: 30 apart in a, b, the
same hue within 5 degrees), and a cartoon paints a face flat."""
MAX_SHADE_STEP = 15.0
"""...as long as their lightness differs by less than this (brown is dark orange: a brown head on an orange body,
L 45 against 62, stays two faces)."""
MIN_CHROMA = 15.0
INK_LIGHTNESS = 25.0
"""Photo colours darker than this (Lab L) are painted with the outline ink (drawn eyes: L 5-10; the shaded side of a
grey statue on black, L 30-50, must stay a fill colour, not become a black blot)."""
"""Below this chroma a colour counts as grey and its hue is meaningless."""
LAB_WEIGHTS = np.array([0.5, 1.0, 1.0], np.float32)
"""Lightness counts half: shading changes lightness, not the colour of a face."""


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Weighted Lab distance, or 0 for two coloured centres of the same hue (one face in light and shade)."""
    chroma_a, chroma_b = float(np.hypot(a[1], a[2])), float(np.hypot(b[1], b[2]))
    if chroma_a > MIN_CHROMA and chroma_b > MIN_CHROMA:
        turn = abs(np.degrees(np.arctan2(a[2], a[1]) - np.arctan2(b[2], b[1]))) % 360
        if min(turn, 360 - turn) < SAME_HUE_DEG and abs(float(a[0] - b[0])) < MAX_SHADE_STEP:
            return 0.0
    return float(np.linalg.norm((a - b) * LAB_WEIGHTS))


def _merge_centres(centres: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join the closest pair of centres (count-weighted) until every pair is ``MERGE_DISTANCE`` apart; returns
    the merged centres and, for each input centre, the index of its merged one."""
    groups = [[i] for i in range(len(centres))]
    means = [centres[i].astype(np.float64) for i in range(len(centres))]
    weights = [float(max(counts[i], 1)) for i in range(len(centres))]
    while len(means) > 1:
        best, pair = np.inf, (0, 0)
        for i in range(len(means)):
            for j in range(i + 1, len(means)):
                d = _colour_distance(means[i], means[j])
                if d < best:
                    best, pair = d, (i, j)
        if best >= MERGE_DISTANCE:
            break
        i, j = pair
        total = weights[i] + weights[j]
        means[i] = (means[i] * weights[i] + means[j] * weights[j]) / total
        weights[i] = total
        groups[i] += groups.pop(j)
        means.pop(j)
        weights.pop(j)
    owner = np.zeros(len(centres), np.int32)
    for g, members in enumerate(groups):
        owner[members] = g
    return np.array(means, np.float32), owner


def assign_palette(colours: np.ndarray, palette_lab: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """For each photo colour (Lab) a palette index, distinct ones while the palette lasts.

    The photo's lightness range is first stretched onto the palette's (so the darkest colour takes the ink and the
    lightest the palette's lightest); then the largest colours (by ``counts``) get distinct palette colours with the
    least total distance (every injective assignment tried: at most 8!/(8-n)! = 40,320, a few ms), so two faces of
    the subject never end up the same colour unless there are more faces than colours; the rest take their nearest.
    """
    from itertools import permutations

    stretched = colours.astype(np.float64).copy()
    # The ink (palette[0]) is for outlines and truly dark features: the fills' lightness is stretched onto the other
    # colours' range, and only photo colours darker than INK_LIGHTNESS may take the ink.
    fills = palette_lab[1:] if len(palette_lab) > 1 else palette_lab
    lo, hi = stretched[:, 0].min(), stretched[:, 0].max()
    p_lo, p_hi = fills[:, 0].min(), fills[:, 0].max()
    if hi - lo > 1e-3:
        stretched[:, 0] = p_lo + (stretched[:, 0] - lo) * (p_hi - p_lo) / (hi - lo)
    cost = np.linalg.norm((stretched[:, None, :] - palette_lab[None].astype(np.float64)) * LAB_WEIGHTS, axis=-1)
    if len(palette_lab) > 1:
        dark = colours[:, 0] < INK_LIGHTNESS
        cost[dark, 0] = 0.0  # black eyes, a dark logo: ink
        cost[~dark, 0] = 1e6  # only when every other colour is taken
    out = cost.argmin(1).astype(np.int32)
    order = np.argsort(-(counts if counts is not None else np.ones(len(colours))), kind="stable")
    main = order[:min(len(colours), len(palette_lab), 8)]
    sub = cost[main]
    best, best_cost = None, np.inf
    rows = np.arange(len(main))
    for choice in permutations(range(len(palette_lab)), len(main)):
        total = sub[rows, choice].sum()
        if total < best_cost:
            best, best_cost = choice, total
    if best is not None:
        out[main] = best
    return out


def quantise(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Subject pixels mapped to palette colours: (labels (H, W) int, -1 outside; the palette index per colour).

    k-means (k = palette size) in Lab finds the photo's colour groups, near-identical groups are merged, and each
    remaining group takes its own palette colour (``assign_palette``).
    """
    lab = to_lab(image)
    pixels = lab[mask]
    labels = np.full(mask.shape, -1, np.int32)
    if len(pixels) == 0:
        return labels, np.zeros(0, np.int32)
    rng = np.random.default_rng(seed)
    sample = pixels[rng.choice(len(pixels), MAX_SAMPLES, replace=False)] if len(pixels) > MAX_SAMPLES else pixels
    # Twice the palette's clusters, so small features (eyes, a mouth) get their own before merging.
    k = max(1, min(2 * len(palette), len(np.unique(sample.round(1), axis=0))))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, sample_labels, centres = cv2.kmeans(sample.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    counts = np.bincount(sample_labels.ravel(), minlength=k)
    merged, owner = _merge_centres(centres, counts)
    to_centre = (((pixels[:, None, :] - merged[None]) * LAB_WEIGHTS) ** 2).sum(-1).argmin(1)
    colour = assign_palette(merged, _palette_lab(palette), np.bincount(owner, weights=counts, minlength=len(merged)))
    labels[mask] = colour[to_centre]
    return labels, colour


def _mode_filter(labels: np.ndarray, mask: np.ndarray, radius: int, count: int) -> np.ndarray:
    """Each subject pixel takes the most common label around it (removes speckles, rounds the regions)."""
    if radius < 1:
        return labels
    size = 2 * radius + 1
    best = np.full(labels.shape, -1.0, np.float32)
    out = labels.copy()
    for index in range(count):
        votes = cv2.blur((labels == index).astype(np.float32), (size, size))
        better = votes > best
        out[better] = index
        best = np.maximum(best, votes)
    out[~mask] = -1
    return out


def outline_masks(labels: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of the bold outlines: the edges between colour regions dilated to ``width``, and the silhouette's
    inner band at 1.5 times that."""
    edges = np.zeros(mask.shape, bool)
    edges[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edges[1:, :] |= labels[1:, :] != labels[:-1, :]
    edges &= mask
    width = max(1, width)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
    lines = cv2.dilate(edges.astype(np.uint8), kernel) > 0
    rim = max(1, round(1.5 * width))
    inner = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1)))
    return (lines | (mask & (inner == 0))) & mask


def halftone(luminance: np.ndarray, mask: np.ndarray, spacing: int) -> np.ndarray:
    """Retro halftone: ink dots on a 45 degree grid, larger where the photo is darker (only its darker half)."""
    h, w = mask.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = (u + v) / np.sqrt(2.0), (u - v) / np.sqrt(2.0)  # the grid rotated by 45 degrees
    da = (a % spacing) - spacing / 2
    db = (b % spacing) - spacing / 2
    level = np.median(luminance[mask]) if mask.any() else 0.5
    darkness = np.clip((level - luminance) / max(level, 1e-3), 0, 1)
    radius = 0.45 * spacing * np.sqrt(darkness)
    return mask & (np.hypot(da, db) < radius)


@dataclass
class ClassicalStylizer:
    """Smoothing, palette quantisation, outlines, accents: no weights needed."""

    palette_size: int = 0
    scale: float = 1.0
    """Sticker size / 1024: the outline widths and filter sizes are set for 1024 px."""
    name: str = "classical"

    def stylise(self, image: np.ndarray, mask: np.ndarray, theme: Theme) -> np.ndarray:
        palette = palette_for(theme, self.palette_size)
        smooth = cv2.edgePreservingFilter(np.ascontiguousarray(image[:, :, ::-1]), flags=cv2.RECURS_FILTER,
                                          sigma_s=max(10.0, 50.0 * self.scale), sigma_r=0.4)
        smooth = cv2.bilateralFilter(smooth, d=max(5, round(9 * self.scale)), sigmaColor=40, sigmaSpace=7)[:, :, ::-1]
        labels, _ = quantise(smooth, mask, palette)
        labels = _mode_filter(labels, mask, max(1, round(5 * self.scale)), len(palette))
        out = np.zeros_like(image)
        out[mask] = palette[labels[mask]]
        ink = palette[0]
        if theme.accent == "halftone":
            grey = cv2.cvtColor(smooth, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            out[halftone(grey, mask, max(4, round(10 * self.scale)))] = ink
        out[outline_masks(labels, mask, round(theme.outline_px * self.scale))] = ink
        return out


@dataclass
class ModelStylizer:
    """A local image-to-image model repaints the subject; the classical pass then maps it to the palette."""

    folder: Path
    library: str
    """'diffusers' or 'transformers'."""
    classical: ClassicalStylizer
    name: str = "model"

    def __post_init__(self) -> None:
        self._pipeline = None

    def _load(self):
        if self._pipeline is None:
            if self.library == "diffusers":
                from diffusers import AutoPipelineForImage2Image

                self._pipeline = AutoPipelineForImage2Image.from_pretrained(str(self.folder), local_files_only=True)
            else:
                from transformers import pipeline

                self._pipeline = pipeline("image-to-image", model=str(self.folder))
        return self._pipeline

    def stylise(self, image: np.ndarray, mask: np.ndarray, theme: Theme) -> np.ndarray:
        from PIL import Image

        pipe = self._load()
        source = Image.fromarray(image)
        if self.library == "diffusers":
            result = pipe(prompt=theme.prompt, image=source, strength=MODEL_STRENGTH, num_inference_steps=20).images[0]
        else:
            result = pipe(source)
        painted = np.asarray(result.convert("RGB").resize((image.shape[1], image.shape[0])))
        return self.classical.stylise(painted, mask, theme)


@dataclass(frozen=True)
class StylizerChoice:
    stylizer: Stylizer
    message: str
    """What was used and why (a finding on the result page)."""


def model_library(folder: Path) -> str | None:
    """'diffusers' (model_index.json) or 'transformers' (config.json + weights) for a model folder, else None."""
    if (folder / "model_index.json").is_file():
        return "diffusers"
    if (folder / "config.json").is_file() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))):
        return "transformers"
    return None


def find_model_folder(config: StickerConfig) -> tuple[Path | None, list[str]]:
    """The stylisation model's folder (explicit path > environment variable > models/sticker) and what was tried."""
    from core.stages.depth_prior import model as depth_model  # models/ lives there (the tests move it)

    tried = []
    candidates = [(config.model_path, "given explicitly"), (os.environ.get(ENV_VAR, "").strip(), f"${ENV_VAR}"),
                  (str(depth_model.MODELS_DIR / MODEL_FOLDER_NAME), "the project's models folder")]
    for raw, where in candidates:
        if not raw:
            continue
        path = Path(raw).expanduser()
        if path.is_dir() and model_library(path):
            return path, tried
        tried.append(f"{path} ({where}): {'not a model folder' if path.exists() else 'missing'}")
    return None, tried


def choose_stylizer(config: StickerConfig, scale: float) -> StylizerChoice:
    """The model stylizer when a model folder is found and its library imports, else the classical one."""
    import importlib.util

    classical = ClassicalStylizer(config.palette_size, scale)
    folder, tried = find_model_folder(config)
    if folder is None:
        return StylizerChoice(classical, "Classical cartoon stylisation (no image-to-image model installed: "
                                         f"{'; '.join(tried) or 'none configured'}). To use one, put a diffusers "
                                         f"img2img model folder in models/{MODEL_FOLDER_NAME} or set {ENV_VAR}.")
    library = model_library(folder)
    assert library is not None
    if importlib.util.find_spec(library) is None:
        return StylizerChoice(classical, f"Classical cartoon stylisation: the model in {folder} needs the Python "
                                         f"package '{library}', which is not installed.")
    return StylizerChoice(ModelStylizer(folder, library, classical),
                          f"Stylised by the image-to-image model in {folder.name} ({library}), then mapped to the "
                          "theme's palette.")
