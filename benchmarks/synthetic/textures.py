"""Procedural textures for ground-truth captures: packaging artwork, rich random marks, nearly plain colours.

All return (size, size, 3) float32 RGB in [0, 1], seeded by the caller's generator (the same seed, the same image).
"""

from __future__ import annotations

import cv2
import numpy as np

_WORDS = ("ORGANIC", "FRESH", "PREMIUM", "NET WT", "500g", "BEST", "CRISP", "NATURAL", "ZESTY", "GOLD", "No. 7",
          "ORIGINAL", "LIGHT", "CLASSIC", "EXTRA", "SINCE 1921", "RECIPE", "BIO", "VEGAN", "MAX", "SOFT", "PURE")


def value_noise(rng: np.random.Generator, size: int, octaves: int = 6, base: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (size, size) float32; never repeats across the image."""
    out = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    cells = base
    for _ in range(octaves):
        grid = rng.random((cells, cells)).astype(np.float32)
        out += amplitude * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= 0.6
        cells *= 2
        if cells > size // 2:
            break
    out /= total
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1)


def rich_texture(rng: np.random.Generator, size: int = 2048, text: bool = True, blobs: int = 260) -> np.ndarray:
    """A colourful, non-repeating texture (noise, blobs, stripes, label text): plenty of distinct SIFT features.

    Returns (size, size, 3) float32 RGB in [0, 1].
    """
    palette = rng.random((2, 3)).astype(np.float32) * 0.7 + 0.15
    n1, n2 = value_noise(rng, size), value_noise(rng, size, base=8)
    img = palette[0] * n1[..., None] + palette[1] * (1 - n1[..., None])
    img = 0.75 * img + 0.25 * n2[..., None] * rng.random(3).astype(np.float32)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    scale = size / 1024
    for _ in range(blobs):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        kind = rng.integers(0, 4)
        if kind == 0:
            axes = tuple(int(a) for a in rng.integers(int(6 * scale), int(45 * scale), 2))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            w, h = (int(a) for a in rng.integers(int(8 * scale), int(70 * scale), 2))
            cv2.rectangle(img, centre, (centre[0] + w, centre[1] + h), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = tuple(int(c + d) for c, d in zip(centre, rng.integers(-150, 150, 2) * scale, strict=True))
            cv2.line(img, centre, end, colour, int(rng.integers(2, 12) * scale) + 1, cv2.LINE_AA)
        else:
            pts = (np.array(centre) + rng.integers(-40, 40, (int(rng.integers(3, 7)), 2)) * scale).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    if text:
        for _ in range(int(60 * scale * scale) + 20):
            word = str(rng.choice(_WORDS)) if rng.random() < 0.7 else str(int(rng.integers(10, 99999)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            org = (int(rng.integers(0, size - 100)), int(rng.integers(20, size)))
            font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX,
                                   cv2.FONT_HERSHEY_COMPLEX]))
            cv2.putText(img, word, org, font, float(rng.uniform(0.6, 2.2) * scale), colour,
                        int(rng.integers(1, 4) * scale) + 1, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def _pseudo_word(rng: np.random.Generator, length: int) -> str:
    consonants, vowels = "BCDFGHKLMNPRSTVZ", "AEIOU"
    return "".join(str(rng.choice(list(consonants if i % 2 == 0 else vowels))) for i in range(length))


def packaging_texture(rng: np.random.Generator, size: int = 2048) -> np.ndarray:
    """Product packaging: a brand colour, bands, large brand names, an illustration, small print, a barcode.

    Laid out at random over the whole image, so no two parts of the product look alike (SfM needs that), with
    enough mid-scale detail that SIFT finds features at product-photo resolutions. (size, size, 3) float32 RGB.
    """
    scale = size / 1024

    def colour() -> tuple[int, int, int]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    brand = rng.uniform(0.15, 0.85, 3).astype(np.float32)
    noise = value_noise(rng, size, base=6)
    img = brand * (0.8 + 0.35 * noise[..., None])  # printed card is never perfectly flat
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 6))):  # bands of a second colour
        y0 = int(rng.integers(0, size))
        cv2.rectangle(img, (0, y0), (size, y0 + int(rng.integers(20, 160) * scale)), colour(), -1)
    for _ in range(int(rng.integers(4, 8))):  # illustrations: clusters of shaded blobs ("fruit")
        cx, cy = (int(c) for c in rng.integers(0, size, 2))
        for _ in range(int(rng.integers(4, 12))):
            r = int(rng.integers(15, 70) * scale)
            centre = (cx + int(rng.normal(0, 60 * scale)), cy + int(rng.normal(0, 60 * scale)))
            base = np.array(colour())
            cv2.circle(img, centre, r, tuple(int(c) for c in base), -1, cv2.LINE_AA)
            cv2.circle(img, (centre[0] - r // 3, centre[1] - r // 3), max(2, r // 3),
                       tuple(int(c) for c in np.minimum(base + 80, 255)), -1, cv2.LINE_AA)
    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX]
    for _ in range(int(12 * scale) + 6):  # brand names and claims, large
        word = _pseudo_word(rng, int(rng.integers(3, 8))) if rng.random() < 0.6 else str(rng.choice(_WORDS))
        org = (int(rng.integers(-50, size - 200)), int(rng.integers(60, size)))
        thickness = int(rng.integers(3, 9) * scale) + 1
        cv2.putText(img, word, org, int(rng.choice(fonts)), float(rng.uniform(2.0, 4.5) * scale), colour(),
                    thickness + 4, cv2.LINE_AA)  # outline
        cv2.putText(img, word, org, int(rng.choice(fonts)), float(rng.uniform(2.0, 4.5) * scale), colour(),
                    thickness, cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 4))):  # small-print panels with ruled lines
        x0, y0 = (int(c) for c in rng.integers(0, size - int(300 * scale), 2))
        w, h = int(rng.integers(180, 300) * scale), int(rng.integers(120, 260) * scale)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (245, 245, 240), -1)
        for y in range(y0 + int(14 * scale), y0 + h, int(rng.integers(12, 20) * scale) + 1):
            line = " ".join(_pseudo_word(rng, int(rng.integers(2, 7))) for _ in range(6))
            cv2.putText(img, line, (x0 + 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * scale, (20, 20, 20),
                        max(1, int(scale)), cv2.LINE_AA)
            if rng.random() < 0.3:
                cv2.line(img, (x0, y + 3), (x0 + w, y + 3), (60, 60, 60), max(1, int(scale)))
    for _ in range(2):  # barcodes
        x0, y0 = (int(c) for c in rng.integers(0, size - int(160 * scale), 2))
        cv2.rectangle(img, (x0, y0), (x0 + int(150 * scale), y0 + int(90 * scale)), (255, 255, 255), -1)
        x = x0 + int(8 * scale)
        while x < x0 + int(140 * scale):
            bar = int(rng.integers(1, 4) * scale) + 1
            if rng.random() < 0.55:
                cv2.rectangle(img, (x, y0 + int(8 * scale)), (x + bar - 1, y0 + int(80 * scale)), (0, 0, 0), -1)
            x += bar
    for _ in range(int(320 * scale)):  # scattered small marks: icons, dots, dashes, short words
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        kind = rng.random()
        if kind < 0.35:
            cv2.circle(img, centre, int(rng.integers(3, 12) * scale) + 1, colour(), -1, cv2.LINE_AA)
        elif kind < 0.65:
            cv2.putText(img, _pseudo_word(rng, int(rng.integers(2, 6))), centre, int(rng.choice(fonts)),
                        float(rng.uniform(0.5, 1.2) * scale), colour(), int(rng.integers(1, 3) * scale) + 1,
                        cv2.LINE_AA)
        else:
            end = tuple(int(c + d) for c, d in zip(centre, rng.integers(-40, 40, 2) * scale, strict=True))
            cv2.line(img, centre, end, colour(), int(rng.integers(2, 6) * scale) + 1, cv2.LINE_AA)
    return img.astype(np.float32) / 255.0


def plain_texture(rng: np.random.Generator, colour: tuple[float, float, float], size: int = 64,
                  variation: float = 0.02) -> np.ndarray:
    """A nearly uniform colour with a faint, very smooth variation (a low-texture surface)."""
    n = value_noise(rng, size, octaves=2, base=2)
    img = np.array(colour, np.float32) * (1 - variation + 2 * variation * n[..., None])
    return np.clip(img, 0, 1).astype(np.float32)

