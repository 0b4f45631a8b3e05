"""The die-cut sticker look: the subject framed on a square canvas, a white border of even width around its
silhouette (a Euclidean distance transform, so the width is the same all round, corners rounded), a soft drop
shadow, the theme's outer accent (a pastel glow, sparkles in the border), and the exports (transparent PNG, WebP).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.stages.sticker.themes import Theme

BORDER_COLOUR = (255, 255, 255)
"""The classic die-cut sticker is white vinyl around the print."""
SHADOW_OPACITY = 0.35
"""Peak opacity of the drop shadow (0.3-0.4 reads as a sticker lifted off the page without looking dirty)."""
WEBP_MAX_BYTES = 100_000
"""WhatsApp refuses static stickers over 100 KB; the WebP quality is lowered until it fits."""


def canvas_margin(border_px: int) -> int:
    """Room around the die-cut for the shadow and the glow (both reach about 2.2 border widths out)."""
    return round(2.5 * border_px) + 4


@dataclass(frozen=True)
class Framing:
    """Where the photo's subject lies on the sticker canvas: canvas = scale * photo + offset."""

    scale: float
    offset: tuple[float, float]
    size: int

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.scale, 0.0, self.offset[0]], [0.0, self.scale, self.offset[1]]])


def frame_subject(mask: np.ndarray, size: int, margin: int) -> Framing:
    """Scale and shift so the subject's bounding box fills the square canvas less the margin, centred."""
    rows, cols = np.nonzero(mask)
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    scale = (size - 2 * margin) / max(x1 - x0, y1 - y0)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    return Framing(float(scale), (size / 2 - scale * centre[0], size / 2 - scale * centre[1]), size)


def to_canvas(image: np.ndarray, mask: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its subject mask on the canvas (the photo's edge pixels repeat where the canvas runs past it)."""
    size = (framing.size, framing.size)
    flags = cv2.INTER_CUBIC if framing.scale > 1 else cv2.INTER_AREA
    if framing.scale < 1:  # warpAffine has no area filter: shrink first, then place
        small = cv2.resize(image, None, fx=framing.scale, fy=framing.scale, interpolation=cv2.INTER_AREA)
        fine = np.array([[1.0, 0.0, framing.offset[0]], [0.0, 1.0, framing.offset[1]]])
        canvas = cv2.warpAffine(small, fine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        canvas = cv2.warpAffine(image, framing.matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    soft = cv2.warpAffine(mask.astype(np.float32), framing.matrix, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return canvas, soft > 0.5


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every hole that does not reach the image border filled (a sticker is one piece of vinyl)."""
    outside = (~mask).astype(np.uint8)
    count, labels = cv2.connectedComponents(outside, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, edge)


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from each pixel to the nearest subject pixel (0 on the subject)."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def die_cut(mask: np.ndarray, border_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(die-cut mask, its anti-aliased alpha in [0, 1]): the subject grown by ``border_px`` all round, holes
    filled."""
    distance = distance_outside(mask)
    alpha = np.clip(border_px + 0.5 - distance, 0.0, 1.0).astype(np.float32)
    die = fill_holes(alpha >= 0.5)
    alpha[die & (alpha < 0.5)] = 1.0  # the filled holes
    return die, alpha


def _over(dst_rgb: np.ndarray, dst_a: np.ndarray, rgb: np.ndarray, a: np.ndarray) -> None:
    """Porter-Duff 'over' in place (float RGB in [0, 255], alpha in [0, 1])."""
    out_a = a + dst_a * (1 - a)
    safe = np.maximum(out_a, 1e-6)[..., None]
    dst_rgb[:] = (rgb * a[..., None] + dst_rgb * (dst_a * (1 - a))[..., None]) / safe
    dst_a[:] = out_a


def _star(canvas: np.ndarray, centre: tuple[float, float], radius: float, colour: tuple[int, int, int]) -> None:
    """A four-pointed sparkle."""
    cx, cy = centre
    points = []
    for k in range(8):
        angle = np.pi / 4 * k
        r = radius if k % 2 == 0 else 0.32 * radius
        points.append((cx + r * np.cos(angle), cy + r * np.sin(angle)))
    cv2.fillPoly(canvas, [np.round(np.array(points) * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


def sparkle_spots(mask: np.ndarray, border_px: int, count: int = 7) -> list[tuple[float, float]]:
    """Points in the middle of the border band, spread evenly along the outline."""
    middle = (distance_outside(mask) <= border_px / 2).astype(np.uint8)
    contours, _ = cv2.findContours(middle, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    outline = max(contours, key=len).reshape(-1, 2).astype(float)
    picks = np.linspace(0, len(outline), count, endpoint=False).astype(int) + len(outline) // (2 * count)
    return [tuple(outline[i % len(outline)]) for i in picks]


@dataclass
class DieCut:
    rgba: np.ndarray
    """(S, S, 4) uint8: the finished sticker with its shadow (the PNG)."""
    front: np.ndarray
    """(S, S, 3) uint8: the printed face (cartoon, border, sparkles), border colour outside (the GLB's texture)."""
    die: np.ndarray
    """(S, S) bool: the die-cut outline's inside."""
    alpha: np.ndarray
    """(S, S) float32: the die-cut's anti-aliased coverage."""


def compose(cartoon: np.ndarray, mask: np.ndarray, theme: Theme, border_px: int) -> DieCut:
    """The sticker: shadow, outer accent, white border, the cartoon on top."""
    die, alpha = die_cut(mask, border_px)
    front = np.empty_like(cartoon)
    front[:] = BORDER_COLOUR
    front[mask] = cartoon[mask]
    if theme.accent == "sparkles" and border_px >= 6:
        sparkles = front.copy()
        for spot in sparkle_spots(mask, border_px):
            _star(sparkles, spot, 0.42 * border_px, theme.accent_color)
        band = die & ~mask
        front[band] = sparkles[band]
    size = cartoon.shape[:2]
    rgb = np.zeros((*size, 3), np.float32)
    a = np.zeros(size, np.float32)
    sigma = 0.6 * border_px
    shifted = cv2.warpAffine(alpha, np.array([[1.0, 0, 0.25 * border_px], [0, 1.0, 0.45 * border_px]]),
                             (size[1], size[0]))
    shadow = SHADOW_OPACITY * cv2.GaussianBlur(shifted, (0, 0), sigma)
    _over(rgb, a, np.zeros_like(rgb), shadow)
    if theme.accent == "glow":
        grown = (distance_outside(die) <= 0.6 * border_px).astype(np.float32)
        glow = 0.9 * cv2.GaussianBlur(grown, (0, 0), 0.8 * border_px)
        _over(rgb, a, np.broadcast_to(np.array(theme.accent_color, np.float32), rgb.shape).copy(), glow)
    _over(rgb, a, front.astype(np.float32), alpha)
    rgba = np.dstack([np.clip(rgb + 0.5, 0, 255), np.clip(a * 255 + 0.5, 0, 255)]).astype(np.uint8)
    return DieCut(rgba, front, die, alpha)


def write_png(rgba: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path, optimize=True)


def write_webp(rgba: np.ndarray, path: Path, size: int) -> int:
    """A ``size`` x ``size`` WebP of the sticker under WhatsApp's size limit; returns the quality used."""
    image = Image.fromarray(rgba, "RGBA").resize((size, size), Image.Resampling.LANCZOS)
    for quality in (90, 80, 70, 60, 50, 40):
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=quality, method=4)  # 6 packs ~5 % smaller, 10x slower
        if buffer.tell() <= WEBP_MAX_BYTES:
            break
    path.write_bytes(buffer.getvalue())
    return quality
