"""Ground-truth product captures rendered on the CPU with Open3D ray casting.

A capture is a product (a procedural box or bottle with a rich, non-repeating texture, or a scanned product from
an OBJ + MTL + texture folder) standing on a support disc, optionally in front of a backdrop, photographed either
by cameras on one or two rings around it ("orbit") or by a fixed camera while the product and its disc turn
("turntable"). Shading is Lambertian with two directional lights, ambient light, a shadow from the key light and
seeded sensor noise.

Everything written is in the conventions of core/geometry.py, with the product's own frame as the world:

* ``images/<name>.jpg|png`` the photos;
* ``cameras.json`` a list of ``{name, K, R, t, width, height}`` (cam_from_world, OpenCV axes, metres);
* ``object.ply`` the product mesh alone (for F-score evaluation);
* ``depth/<name>.npy`` float32 camera-z depth of whatever the pixel centre sees, NaN where nothing was hit;
* ``masks/<name>.png`` 255 where the pixel centre sees the product;
* ``capture.json`` the spec and a summary.

Use :func:`render_capture` to make one and :func:`load_ground_truth` to read one back. CLI::

    python -m core.synthetic --out DIR [--views 24] [--size 1024x768] [--object procedural-box] [--mode orbit]
    python -m core.synthetic --sample assets/sample      # the bundled sample capture
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from core.geometry import PinholeCamera, intrinsics_from_fov, look_at
from core.stage import ProgressFn, no_progress

logger = logging.getLogger(__name__)

ObjectKind = str
"""'procedural-box', 'procedural-bottle', or the path of a folder holding a textured OBJ (metres, z up)."""
CaptureMode = Literal["orbit", "turntable"]
BackdropKind = Literal["plain", "textured", "none"]
SurfaceTexture = Literal["packaging", "rich", "plain"]
SupportKind = Literal["textured", "plain", "none"]

DEFAULT_SEED = 20261121
CAPTURE_JSON = "capture.json"
CAMERAS_JSON = "cameras.json"
OBJECT_PLY = "object.ply"


@dataclass
class CaptureSpec:
    """What to render: the product, its surroundings, the cameras and the output format."""

    object: ObjectKind = "procedural-box"
    """'procedural-box', 'procedural-bottle', or a folder with a textured OBJ (e.g. a product_models/<name>)."""
    mode: CaptureMode = "orbit"
    """'orbit': cameras circle a static scene; 'turntable': a fixed camera, the product and its disc turn."""
    backdrop: BackdropKind = "plain"
    """Around the product: 'plain' studio surfaces, 'textured' ones, or 'none' (flat background colour)."""
    support: SupportKind = "textured"
    """The disc (mat or turntable plate) the product stands on: 'textured', 'plain' or 'none'."""
    product_texture: SurfaceTexture = "packaging"
    """Procedural products only: 'packaging' (brand colour, names, illustrations, small print), 'rich' (dense
    random marks and words), or 'plain' (nearly uniform colour); the first two never repeat."""
    num_views: int = 24
    """Number of photos."""
    width: int = 1024
    """Image width in pixels."""
    height: int = 768
    """Image height in pixels."""
    horizontal_fov_deg: float = 50.0
    """Horizontal field of view of the pinhole camera."""
    elevations_deg: tuple[float, ...] = (25.0, 40.0)
    """Camera elevation of each ring (views are shared out between rings, the later rings offset by half a step)."""
    fill: float = 0.65
    """Fraction of the image height the product's bounding sphere spans (sets the camera distance)."""
    image_format: Literal["jpg", "png"] = "jpg"
    """Photo file format (JPEG at quality 92)."""
    supersample: int = 1
    """Rays per pixel along each axis for the colour image (anti-aliasing); depth/masks use the pixel centre."""
    blur_sigma: float = 0.6
    """Gaussian lens blur in pixels (softens aliased edges as a real lens would); 0 for none."""
    noise_sigma: float = 1.5
    """Standard deviation of the Gaussian sensor noise, in 8-bit levels."""
    shadows: bool = True
    """Cast a shadow from the key light."""
    write_depth: bool = True
    """Write depth/<name>.npy."""
    write_masks: bool = True
    """Write masks/<name>.png."""
    seed: int = DEFAULT_SEED
    """Seed for textures, procedural shapes and noise: the same spec gives byte-identical images."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["elevations_deg"] = list(self.elevations_deg)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptureSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "elevations_deg" in kwargs:
            kwargs["elevations_deg"] = tuple(kwargs["elevations_deg"])
        return cls(**kwargs)


@dataclass
class CaptureGroundTruth:
    """A rendered capture on disk and its ground truth, world = the product's frame, metres."""

    root: Path
    """The capture folder."""
    spec: CaptureSpec
    """What was rendered."""
    image_names: list[str]
    """Photo file names in capture order."""
    cameras: dict[str, PinholeCamera]
    """Ground-truth camera of each photo, by file name."""
    image_dir: Path
    """Folder of the photos."""
    mesh_path: Path
    """The product mesh alone (PLY), in the ground-truth frame."""
    depth_paths: dict[str, Path] = field(default_factory=dict)
    """Depth map (.npy float32, camera z, NaN = no hit) by photo name; empty when not written."""
    mask_paths: dict[str, Path] = field(default_factory=dict)
    """Product mask (.png, 255 = product) by photo name; empty when not written."""
    bbox_min: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Lower corner of the product's axis-aligned bounding box."""
    bbox_max: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """Upper corner of the product's axis-aligned bounding box."""

    @property
    def image_paths(self) -> dict[str, Path]:
        return {name: self.image_dir / name for name in self.image_names}

    @property
    def object_diagonal(self) -> float:
        """Length of the product's bounding-box diagonal (the size that tolerances are relative to)."""
        return float(np.linalg.norm(self.bbox_max - self.bbox_min))

    def camera_list(self) -> list[PinholeCamera]:
        return [self.cameras[n] for n in self.image_names]

    def load_depth(self, name: str) -> np.ndarray:
        return np.load(self.depth_paths[name])

    def load_mask(self, name: str) -> np.ndarray:
        """Boolean product mask of a photo."""
        return cv2.imread(str(self.mask_paths[name]), cv2.IMREAD_GRAYSCALE) > 127


# --------------------------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------------------------

_WORDS = ("ORGANIC", "FRESH", "PREMIUM", "NET WT", "500g", "BEST", "CRISP", "NATURAL", "ZESTY", "GOLD", "No. 7",
          "ORIGINAL", "LIGHT", "CLASSIC", "EXTRA", "SINCE 1921", "RECIPE", "BIO", "VEGAN", "MAX", "SOFT", "PURE")


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 6, base: int = 4) -> np.ndarray:
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
    n1, n2 = _value_noise(rng, size), _value_noise(rng, size, base=8)
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
    noise = _value_noise(rng, size, base=6)
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
    n = _value_noise(rng, size, octaves=2, base=2)
    img = np.array(colour, np.float32) * (1 - variation + 2 * variation * n[..., None])
    return np.clip(img, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Meshes: vertices (V,3), triangles (F,3), per-corner UVs (F,3,2) with v = 0 at the bottom of the texture image
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TexturedMesh:
    """A triangle mesh with per-corner texture coordinates and a texture image."""

    vertices: np.ndarray
    """(V, 3) float64 positions in the component's own frame."""
    triangles: np.ndarray
    """(F, 3) int vertex indices."""
    uvs: np.ndarray
    """(F, 3, 2) texture coordinates of each corner; OBJ convention (v = 0 at the bottom row of the image)."""
    texture: np.ndarray
    """(H, W, 3) float32 RGB in [0, 1]."""
    smooth: bool = True
    """Shade with interpolated vertex normals (False: flat, per-face normals)."""

    def vertex_normals(self) -> np.ndarray:
        normals = np.zeros_like(self.vertices)
        tri = self.vertices[self.triangles]
        face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
        for k in range(3):
            np.add.at(normals, self.triangles[:, k], face_n)
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        return normals / np.where(norm > 0, norm, 1)


def _merge(meshes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vs, fs, uvs, offset = [], [], [], 0
    for v, f, uv in meshes:
        vs.append(v)
        fs.append(f + offset)
        uvs.append(uv)
        offset += len(v)
    return np.concatenate(vs), np.concatenate(fs), np.concatenate(uvs)


def _grid_patch(origin: np.ndarray, du: np.ndarray, dv: np.ndarray, n: int, uv_rect: tuple[float, float, float, float]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A planar n x n quad patch spanning origin + [0,1] du + [0,1] dv, mapped onto uv_rect = (u0, v0, u1, v1)."""
    s = np.linspace(0, 1, n + 1)
    a, b = np.meshgrid(s, s, indexing="ij")
    verts = origin + a.reshape(-1, 1) * du + b.reshape(-1, 1) * dv
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    q0, q1, q2, q3 = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    tris = np.concatenate([np.stack([q0, q1, q2], 1), np.stack([q0, q2, q3], 1)])
    u0, v0, u1, v1 = uv_rect
    uv_v = np.stack([u0 + (u1 - u0) * a.ravel(), v0 + (v1 - v0) * b.ravel()], 1)
    return verts, tris, uv_v[tris]


def box_mesh(size: tuple[float, float, float], texture: np.ndarray) -> TexturedMesh:
    """A box standing on z = 0, centred on the z axis; each face gets its own cell of the texture atlas."""
    sx, sy, sz = size
    lo = np.array([-sx / 2, -sy / 2, 0.0])
    ex, ey, ez = np.array([sx, 0, 0.0]), np.array([0, sy, 0.0]), np.array([0, 0, sz])
    # (origin, du, dv): du x dv points outwards.
    faces = [
        (lo + ey, -ey, ez), (lo + ex, ey, ez),  # -x, +x
        (lo, ex, ez), (lo + ex + ey, -ex, ez),  # -y, +y
        (lo + ez, ex, ey), (lo + ey, ex, -ey),  # +z, -z
    ]
    parts = []
    for i, (o, du, dv) in enumerate(faces):
        col, row = i % 3, i // 3
        rect = (col / 3 + 0.005, row / 2 + 0.005, (col + 1) / 3 - 0.005, (row + 1) / 2 - 0.005)
        parts.append(_grid_patch(o, du, dv, 4, rect))
    v, f, uv = _merge(parts)
    return TexturedMesh(v, f, uv, texture, smooth=False)


def lathe_mesh(profiles: list[np.ndarray], texture: np.ndarray, segments: int = 96) -> TexturedMesh:
    """A surface of revolution about z from profile pieces (each (n,2) of radius, z); sharp edges between pieces.

    u runs around (0..1, the seam duplicated through per-corner UVs), v along the total profile length.
    """
    lengths = [np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))]) for p in profiles]
    total = sum(seg[-1] for seg in lengths)
    parts, start = [], 0.0
    theta = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    for prof, arc in zip(profiles, lengths, strict=True):
        n = len(prof)
        verts = np.stack([np.outer(prof[:, 0], np.cos(theta)), np.outer(prof[:, 0], np.sin(theta)),
                          np.repeat(prof[:, 1:2], segments, axis=1)], -1).reshape(-1, 3)
        i, j = np.meshgrid(np.arange(n - 1), np.arange(segments), indexing="ij")
        i, j = i.ravel(), j.ravel()
        a, b = i * segments + j, i * segments + (j + 1) % segments
        c, d = (i + 1) * segments + (j + 1) % segments, (i + 1) * segments + j
        tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
        u = np.concatenate([j / segments, j / segments])
        u_next = u + 1 / segments
        vv = (start + arc[np.concatenate([i, i])]) / total
        vv1 = (start + arc[np.concatenate([i, i]) + 1]) / total
        half = len(i)
        corner_u = np.stack([u, u_next, u_next], 1)
        corner_u[half:] = np.stack([u[half:], u_next[half:], u[half:]], 1)
        corner_v = np.stack([vv, vv, vv1], 1)
        corner_v[half:] = np.stack([vv[half:], vv1[half:], vv1[half:]], 1)
        parts.append((verts, tris, np.stack([corner_u, corner_v], -1)))
        start += arc[-1]
    v, f, uv = _merge(parts)
    # Degenerate triangles at the poles (radius 0) are harmless for ray casting but drop them for a clean mesh.
    tri = v[f]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = area > 1e-12
    return TexturedMesh(v, f[keep], uv[keep], texture, smooth=True)


def bottle_profiles(radius: float = 0.036, height: float = 0.2) -> list[np.ndarray]:
    """Profile pieces (radius, z) of a closed bottle: bottom, body, shoulder and neck, cap underside, side, top."""
    r, h = radius, height
    bottom = np.array([[0, 0], [r * 0.5, 0], [r, 0.0]])
    body = np.stack([np.full(12, r), np.linspace(0, 0.62 * h, 12)], 1)
    t = np.linspace(0, 1, 14)
    shoulder = np.stack([r - (r - 0.42 * r) * (0.5 - 0.5 * np.cos(np.pi * t)), 0.62 * h + 0.22 * h * t], 1)
    neck = np.array([[0.42 * r, 0.84 * h], [0.42 * r, 0.88 * h]])
    cap_under = np.array([[0.42 * r, 0.88 * h], [0.5 * r, 0.88 * h]])  # the cap's overhang (closes the surface)
    cap_side = np.array([[0.5 * r, 0.88 * h], [0.5 * r, h]])
    cap_top = np.array([[0.5 * r, h], [0.25 * r, h], [0, h]])
    return [bottom, body, np.concatenate([shoulder, neck[1:]]), cap_under, cap_side, cap_top]


def disc_mesh(radius: float, z: float, texture: np.ndarray, segments: int = 96, rings: int = 6) -> TexturedMesh:
    """A flat disc facing +z with planar UVs (the texture image spans the disc's bounding square)."""
    r = np.linspace(0, radius, rings + 1)[1:]
    theta = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    verts = np.concatenate([[[0, 0, z]], np.stack([np.outer(r, np.cos(theta)), np.outer(r, np.sin(theta)),
                                                   np.full((rings, segments), z)], -1).reshape(-1, 3)])
    tris = [np.stack([np.zeros(segments, int), 1 + np.arange(segments), 1 + (np.arange(segments) + 1) % segments], 1)]
    for k in range(rings - 1):
        j = np.arange(segments)
        a, b = 1 + k * segments + j, 1 + k * segments + (j + 1) % segments
        c, d = b + segments, a + segments
        tris += [np.stack([a, c, b], 1), np.stack([a, d, c], 1)]
    f = np.concatenate(tris)
    # Orient every triangle to face +z.
    tri = verts[f]
    flip = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] < 0
    f[flip] = f[flip][:, ::-1]
    uv_v = verts[:, :2] / (2 * radius) + 0.5
    return TexturedMesh(verts, f, uv_v[f], texture, smooth=False)


def sweep_mesh(back: float, half_width: float, height: float, front: float, bend: float, z: float,
               texture: np.ndarray) -> TexturedMesh:
    """A studio sweep: a floor from x = front to x = -back + bend, curving up into a wall at x = -back."""
    t = np.linspace(0, np.pi / 2, 12)
    curve = np.stack([-back + bend - bend * np.sin(t), z + bend - bend * np.cos(t)], 1)
    prof = np.concatenate([[[front, z]], curve, [[-back, z + height]]])
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(prof, axis=0), axis=1))])
    ys = np.linspace(-half_width, half_width, 9)
    verts = np.stack([np.repeat(prof[:, :1], len(ys), 1), np.tile(ys, (len(prof), 1)),
                      np.repeat(prof[:, 1:], len(ys), 1)], -1).reshape(-1, 3)
    n, m = len(prof), len(ys)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(m - 1), indexing="ij")
    a = (i * m + j).ravel()
    f = np.concatenate([np.stack([a, a + m, a + m + 1], 1), np.stack([a, a + m + 1, a + 1], 1)])
    uv_v = np.stack([(verts[:, 1] + half_width) / (2 * half_width), np.repeat(arc / arc[-1], m)], 1)
    return TexturedMesh(verts, f, uv_v[f], texture, smooth=True)


def room_mesh(radius: float, height: float, z: float, texture: np.ndarray) -> TexturedMesh:
    """A floor disc and a cylindrical wall around the scene (a room for orbit captures)."""
    floor = disc_mesh(radius, z, texture, segments=64, rings=3)
    floor_uv = floor.uvs * 0.5  # floor in the lower-left quarter of the atlas, wall in the upper half
    wall_prof = [np.array([[radius, z], [radius, z + height / 2], [radius, z + height]])]
    wall = lathe_mesh(wall_prof, texture, segments=128)
    wall_uv = wall.uvs * np.array([1.0, 0.5]) + np.array([0.0, 0.5])
    v, f, uv = _merge([(floor.vertices, floor.triangles, floor_uv), (wall.vertices, wall.triangles, wall_uv)])
    return TexturedMesh(v, f, uv, texture, smooth=True)


def load_obj_model(folder: Path) -> TexturedMesh:
    """Read a UV-textured OBJ (the first .obj in ``folder``) with its MTL's map_Kd texture; metres, z up.

    Standard OBJ texture coordinates (v = 0 at the bottom of the image) are kept as they are: the product_models
    YCB files were already flipped to that convention when converted (see their SOURCE.txt).
    """
    folder = Path(folder)
    objs = sorted(folder.glob("*.obj"))
    if not objs:
        raise FileNotFoundError(f"no .obj file in {folder}")
    obj = objs[0]
    positions, texcoords, faces_v, faces_t, mtllib = [], [], [], [], None
    with open(obj, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("v "):
                positions.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("vt "):
                texcoords.append([float(x) for x in line.split()[1:3]])
            elif line.startswith("f "):
                corners = [c.split("/") for c in line.split()[1:]]
                vi = [int(c[0]) for c in corners]
                ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
                for k in range(1, len(corners) - 1):  # fan-triangulate polygons
                    faces_v.append([vi[0], vi[k], vi[k + 1]])
                    faces_t.append([ti[0], ti[k], ti[k + 1]])
            elif line.startswith("mtllib "):
                mtllib = line.split(maxsplit=1)[1].strip()
    verts = np.array(positions, np.float64)
    fv = np.array(faces_v, np.int64)
    fv = np.where(fv > 0, fv - 1, len(verts) + fv)  # OBJ indices are 1-based; negative ones count from the end
    tex = np.array(texcoords, np.float64) if texcoords else np.zeros((1, 2))
    ft = np.array(faces_t, np.int64)
    ft = np.where(ft > 0, ft - 1, np.where(ft < 0, len(tex) + ft, 0))
    texture_path = _find_texture(folder, mtllib)
    image = cv2.imread(str(texture_path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read texture {texture_path}")
    texture = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return TexturedMesh(verts, fv, tex[ft], texture, smooth=True)


def _find_texture(folder: Path, mtllib: str | None) -> Path:
    candidates = [folder / mtllib] if mtllib else []
    candidates += sorted(folder.glob("*.mtl"))
    for mtl in candidates:
        if not mtl.exists():
            continue
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip().startswith("map_Kd"):
                return folder / line.split()[-1]
    images = [p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and "preview" not in p.name]
    if not images:
        raise FileNotFoundError(f"no texture image in {folder}")
    return images[0]


# --------------------------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Component:
    mesh: TexturedMesh
    moves_with_object: bool
    """True for the product and its turntable plate (they turn in turntable mode)."""
    is_product: bool = False
    evenly_lit: bool = False
    """Studio backdrop: lit evenly (as by soft boxes) instead of by the directional lights; only shadowed."""
    normals: np.ndarray | None = None
    """Unit vertex normals (float32) for smooth shading, None for flat shading."""
    texture_cv: np.ndarray | None = None
    """The texture, pre-filtered for the pixel footprint (a one-level mipmap against aliasing)."""
    uvs32: np.ndarray | None = None


@dataclass
class _Scene:
    components: list[_Component]
    product: TexturedMesh
    centre: np.ndarray
    """Centre of the product's bounding sphere (object frame)."""
    radius: float
    background: np.ndarray


def _texture_size(spec: CaptureSpec) -> int:
    """Procedural texture side: about twice the image's longer side (finer detail would be filtered away)."""
    return int(np.clip(2 ** np.ceil(np.log2(2 * max(spec.width, spec.height))), 256, 2048))


def _product_mesh(spec: CaptureSpec, rng: np.random.Generator) -> TexturedMesh:
    if spec.object in ("procedural-box", "procedural-bottle"):
        if spec.product_texture == "packaging":
            texture = packaging_texture(rng, _texture_size(spec))
        elif spec.product_texture == "rich":
            texture = rich_texture(rng, _texture_size(spec))
        else:
            texture = plain_texture(rng, tuple(float(c) for c in rng.uniform(0.35, 0.8, 3)))
        if spec.object == "procedural-box":
            size = (float(rng.uniform(0.10, 0.14)), float(rng.uniform(0.06, 0.09)), float(rng.uniform(0.16, 0.22)))
            return box_mesh(size, texture)
        return lathe_mesh(bottle_profiles(float(rng.uniform(0.032, 0.04)), float(rng.uniform(0.18, 0.22))), texture)
    folder = Path(spec.object)
    if not folder.is_dir():
        raise FileNotFoundError(f"object {spec.object!r} is neither a procedural name nor a model folder")
    mesh = load_obj_model(folder)
    # Stand the product on z = 0 and centre it on the z axis, so the turntable axis passes through it.
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    mesh.vertices = mesh.vertices - np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return mesh


def _build_scene(spec: CaptureSpec) -> _Scene:
    rng = np.random.default_rng(spec.seed)
    product = _product_mesh(spec, rng)
    lo, hi = product.vertices.min(0), product.vertices.max(0)
    centre = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo) / 2)
    footprint = float(np.linalg.norm(hi[:2] - lo[:2]) / 2)
    components = [_Component(product, True, is_product=True)]
    if spec.support != "none":
        if spec.support == "textured":
            tex = rich_texture(rng, _texture_size(spec), blobs=400)
        else:
            tex = plain_texture(rng, (0.62, 0.6, 0.56))
        # The plate sits a hair below the product's base so the two never share a surface.
        plate_radius = max(3.0 * footprint, 1.3 * radius)
        components.append(_Component(disc_mesh(plate_radius, -0.0005 * radius, tex), True))
    distance = _camera_distance(spec, radius)
    if spec.backdrop != "none":
        if spec.backdrop == "textured":
            tex = rich_texture(np.random.default_rng(spec.seed + 1), _texture_size(spec), blobs=500)
        else:
            tex = plain_texture(rng, (0.86, 0.86, 0.84), variation=0.01)
        floor_z = -0.004 * radius
        if spec.mode == "turntable":
            backdrop = sweep_mesh(back=1.2 * distance, half_width=3 * distance, height=3 * distance,
                                  front=2.5 * distance, bend=0.5 * distance, z=floor_z, texture=tex)
        else:
            backdrop = room_mesh(5.0 * distance, 4.0 * distance, floor_z, tex)
        if spec.backdrop == "textured":
            # Repeat the pattern so its detail is near product scale (a patterned room, not a few giant blobs).
            backdrop.uvs = backdrop.uvs * (3.0 if spec.mode == "turntable" else 8.0)
        components.append(_Component(backdrop, False, evenly_lit=True))
    K = intrinsics_from_fov(spec.width, spec.height, spec.horizontal_fov_deg)
    pixel_footprint = distance / K[0, 0] / max(1, spec.supersample)  # metres per pixel at the product
    for comp in components:
        comp.normals = comp.mesh.vertex_normals().astype(np.float32) if comp.mesh.smooth else None
        comp.texture_cv = _prefilter(comp.mesh, pixel_footprint)
        comp.uvs32 = comp.mesh.uvs.astype(np.float32)
    background = np.array([0.78, 0.79, 0.8], np.float32)
    return _Scene(components, product, centre, radius, background)


def _prefilter(mesh: TexturedMesh, pixel_footprint: float) -> np.ndarray:
    """Shrink a texture whose texels are much finer than a pixel, so bilinear lookups do not alias."""
    tex = np.ascontiguousarray(mesh.texture, dtype=np.float32)
    tri = mesh.vertices[mesh.triangles]
    area_3d = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    e1, e2 = mesh.uvs[:, 1] - mesh.uvs[:, 0], mesh.uvs[:, 2] - mesh.uvs[:, 0]
    area_uv = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() * tex.shape[0] * tex.shape[1]
    if area_uv <= 0:
        return tex
    texel = float(np.sqrt(area_3d / area_uv))  # metres per texel
    factor = texel / (0.7 * pixel_footprint)
    if factor >= 1:
        return tex
    size = (max(8, round(tex.shape[1] * factor)), max(8, round(tex.shape[0] * factor)))
    return cv2.resize(tex, size, interpolation=cv2.INTER_AREA)


def _camera_distance(spec: CaptureSpec, radius: float) -> float:
    K = intrinsics_from_fov(spec.width, spec.height, spec.horizontal_fov_deg)
    half_v = np.arctan(spec.height / 2 / K[1, 1])
    return float(radius / np.sin(half_v * spec.fill))


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@dataclass
class _View:
    name: str
    camera_world: PinholeCamera
    """The camera in the world frame (the studio)."""
    object_rotation: np.ndarray
    """world_from_object rotation about the z axis (identity in orbit mode)."""

    @property
    def camera_object(self) -> PinholeCamera:
        """cam_from_object = cam_from_world @ world_from_object (the ground truth)."""
        c = self.camera_world
        return PinholeCamera(c.K, c.R @ self.object_rotation, c.t.copy(), c.width, c.height)


def _views(spec: CaptureSpec, scene: _Scene) -> list[_View]:
    K = intrinsics_from_fov(spec.width, spec.height, spec.horizontal_fov_deg)
    distance = _camera_distance(spec, scene.radius)
    rings = len(spec.elevations_deg)
    per_ring = [spec.num_views // rings + (1 if r < spec.num_views % rings else 0) for r in range(rings)]
    views = []
    ext = spec.image_format
    for ring, (elevation, count) in enumerate(zip(spec.elevations_deg, per_ring, strict=True)):
        el = np.radians(elevation)
        for k in range(count):
            azimuth = 2 * np.pi * (k + 0.5 * (ring % 2)) / count
            name = f"view_{len(views):03d}.{ext}"
            if spec.mode == "orbit":
                eye = scene.centre + distance * np.array([np.cos(el) * np.cos(azimuth),
                                                          np.cos(el) * np.sin(azimuth), np.sin(el)])
                R, t = look_at(eye, scene.centre)
                views.append(_View(name, PinholeCamera(K, R, t, spec.width, spec.height), np.eye(3)))
            else:
                # The camera stays put; turning the object by -azimuth shows it from the azimuth an orbit would.
                eye = scene.centre + distance * np.array([np.cos(el), 0.0, np.sin(el)])
                R, t = look_at(eye, scene.centre)
                views.append(_View(name, PinholeCamera(K, R, t, spec.width, spec.height), _rot_z(-azimuth)))
    return views


# --------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------

# Directions towards the lights (world frame) and their intensities: a key light high at the front-left, a weaker
# fill from the other side, and ambient light so nothing is black.
_LIGHTS = ((np.array([0.45, 0.55, 0.70]), 0.62), (np.array([-0.6, -0.3, 0.45]), 0.22))
_AMBIENT = 0.38
_EVEN_LIGHT = 0.75


def _rays(camera: PinholeCamera, offsets: tuple[float, float]) -> np.ndarray:
    """(H, W, 6) float32 rays through pixel positions (col + du, row + dv); direction scaled to camera z = 1."""
    u, v = np.meshgrid(np.arange(camera.width) + offsets[0], np.arange(camera.height) + offsets[1])
    K = camera.K
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d_world = d_cam @ camera.R  # R^T d for every pixel
    origin = np.broadcast_to(camera.center, d_world.shape)
    return np.concatenate([origin, d_world], -1).astype(np.float32)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of (N,) float pixel coordinates (integer = pixel centre), wrapping at the borders."""
    n = len(x)
    cols = 4096  # cv2.remap wants 2-D maps with sides below 32767
    rows = -(-n // cols)
    pad = rows * cols - n
    mx = np.pad(x.astype(np.float32), (0, pad)).reshape(rows, cols)
    my = np.pad(y.astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, image.shape[2])[:n]


class _FrameRenderer:
    """One ray-casting scene for one object pose (the scene is rebuilt when the turntable turns)."""

    def __init__(self, scene: _Scene, object_rotation: np.ndarray, shadows: bool = True) -> None:
        import open3d as o3d

        self.scene = scene
        self.shadows = shadows
        self.rotations = [object_rotation if c.moves_with_object else np.eye(3) for c in scene.components]
        self.raycast = o3d.t.geometry.RaycastingScene()
        # Shadows come from the product and its plate only: a far backdrop wall would darken the whole floor.
        self.shadow_caster = o3d.t.geometry.RaycastingScene()
        self.geometry_to_component: dict[int, int] = {}
        for index, (comp, rot) in enumerate(zip(scene.components, self.rotations, strict=True)):
            verts = o3d.core.Tensor((comp.mesh.vertices @ rot.T).astype(np.float32))
            tris = o3d.core.Tensor(comp.mesh.triangles.astype(np.uint32))
            gid = self.raycast.add_triangles(verts, tris)
            self.geometry_to_component[int(gid)] = index
            if comp.moves_with_object:
                self.shadow_caster.add_triangles(verts, tris)
        self._o3d = o3d

    def cast(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        result = self.raycast.cast_rays(self._o3d.core.Tensor(rays))
        out = {k: result[k].numpy() for k in ("t_hit", "geometry_ids", "primitive_ids", "primitive_uvs",
                                              "primitive_normals")}
        return out

    def component_map(self, geometry_ids: np.ndarray) -> np.ndarray:
        """Component index per ray, -1 for a miss."""
        lut = np.full(max(self.geometry_to_component) + 2, -1, np.int64)
        for gid, index in self.geometry_to_component.items():
            lut[gid] = index
        ids = geometry_ids.astype(np.int64)
        ids = np.where(ids >= len(lut) - 1, len(lut) - 1, ids)  # INVALID_ID maps to the -1 slot
        return lut[ids]

    def shade(self, rays: np.ndarray, hits: dict[str, np.ndarray]) -> np.ndarray:
        """RGB in [0, 1] per ray, (N, 3) float32."""
        rays = rays.reshape(-1, 6)
        comp_all = self.component_map(hits["geometry_ids"].reshape(-1))
        colour = np.empty((len(comp_all), 3), np.float32)
        colour[:] = self.scene.background
        hit = np.flatnonzero(comp_all >= 0)  # shade only what was hit
        comp = comp_all[hit]
        t = hits["t_hit"].reshape(-1)[hit]
        prim = hits["primitive_ids"].reshape(-1)[hit].astype(np.int64)
        bary = hits["primitive_uvs"].reshape(-1, 2)[hit]
        w = np.stack([1 - bary[:, 0] - bary[:, 1], bary[:, 0], bary[:, 1]], 1)
        normals = hits["primitive_normals"].reshape(-1, 3)[hit]
        albedo = np.empty((len(hit), 3), np.float32)
        for index, c in enumerate(self.scene.components):
            sel = np.flatnonzero(comp == index)
            if len(sel) == 0:
                continue
            ws, ps = w[sel], prim[sel]
            tri_uv = c.uvs32[ps]
            uv = ws[:, 0:1] * tri_uv[:, 0] + ws[:, 1:2] * tri_uv[:, 1] + ws[:, 2:3] * tri_uv[:, 2]
            h, wd = c.texture_cv.shape[:2]
            # OBJ convention: v = 0 is the bottom row of the image; cv2.remap samples pixel centres at integer
            # coordinates, hence the -0.5.
            map_x = (uv[:, 0] % 1.0) * wd - 0.5
            map_y = (1.0 - uv[:, 1] % 1.0) * h - 0.5
            albedo[sel] = _bilinear(c.texture_cv, map_x, map_y)
            if c.normals is not None:
                tri_n = c.normals[c.mesh.triangles[ps]]
                n_local = ws[:, 0:1] * tri_n[:, 0] + ws[:, 1:2] * tri_n[:, 1] + ws[:, 2:3] * tri_n[:, 2]
                normals[sel] = n_local @ self.rotations[index].T.astype(np.float32)
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        direction = rays[hit, 3:]
        facing = np.einsum("ij,ij->i", normals, direction) > 0
        normals[facing] *= -1  # light the side the camera sees
        light = np.full(len(hit), _AMBIENT, np.float32)
        even = np.zeros(len(hit), bool)
        for index, c in enumerate(self.scene.components):
            if c.evenly_lit:
                even |= comp == index
        for k, (direction_l, intensity) in enumerate(_LIGHTS):
            d = (direction_l / np.linalg.norm(direction_l)).astype(np.float32)
            lambert = np.clip(normals @ d, 0, None)
            lambert[even] = _EVEN_LIGHT
            if k == 0 and self.shadows:
                lit = np.flatnonzero(lambert > 0)
                origins = rays[hit[lit], :3] + t[lit, None] * direction[lit] + normals[lit] * (1e-4 * self.scene.radius)
                shadow_rays = np.concatenate([origins, np.broadcast_to(d, origins.shape)], 1).astype(np.float32)
                occluded = self.shadow_caster.test_occlusions(self._o3d.core.Tensor(shadow_rays)).numpy()
                lambert[lit[occluded]] *= 0.15
            light += intensity * lambert
        colour[hit] = albedo * light[:, None]
        return colour


def render_view(scene: _Scene, view: _View, spec: CaptureSpec, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one photo: (H, W, 3) uint8 RGB, (H, W) float32 depth (NaN = no hit), (H, W) bool product mask."""
    renderer = _FrameRenderer(scene, view.object_rotation, spec.shadows)
    cam = view.camera_world
    h, w = cam.height, cam.width
    centre_rays = _rays(cam, (0.5, 0.5))
    centre_hits = renderer.cast(centre_rays)
    t = centre_hits["t_hit"]
    depth = np.where(np.isfinite(t), t, np.nan).astype(np.float32)  # direction has camera z = 1: t is the depth
    comp = renderer.component_map(centre_hits["geometry_ids"]).reshape(h, w)
    mask = comp == 0
    s = max(1, int(spec.supersample))
    if s == 1:
        colour = renderer.shade(centre_rays, centre_hits)
    else:
        colour = np.zeros((h * w, 3), np.float32)
        for i in range(s):
            for j in range(s):
                rays = _rays(cam, ((i + 0.5) / s, (j + 0.5) / s))
                colour += renderer.shade(rays, renderer.cast(rays))
        colour /= s * s
    image = colour.reshape(h, w, 3).astype(np.float32) * 255.0
    if spec.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), spec.blur_sigma)
    if spec.noise_sigma > 0:
        image = image + rng.normal(0.0, spec.noise_sigma, image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    depth[~np.isfinite(depth)] = np.nan
    return image, depth, mask


def render_capture(spec: CaptureSpec, out_dir: Path, progress: ProgressFn = no_progress,
                   workers: int | None = None) -> CaptureGroundTruth:
    """Render a capture into ``out_dir`` (photos, cameras.json, object.ply, depth, masks, capture.json).

    ``workers`` views are rendered at once (default: up to 2; ray casting and OpenCV release the GIL). Every view
    has its own seeded noise, so the result does not depend on the number of workers.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    progress(0.0, "building the scene")
    scene = _build_scene(spec)
    views = _views(spec, scene)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if spec.write_depth:
        (out_dir / "depth").mkdir(exist_ok=True)
    if spec.write_masks:
        (out_dir / "masks").mkdir(exist_ok=True)

    def render_and_write(index: int) -> str:
        view = views[index]
        image, depth, mask = render_view(scene, view, spec, np.random.default_rng([spec.seed, index]))
        stem = Path(view.name).stem
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if spec.image_format == "jpg" else []
        if not cv2.imwrite(str(image_dir / view.name), bgr, params):
            raise OSError(f"could not write {image_dir / view.name}")
        if spec.write_depth:
            np.save(out_dir / "depth" / f"{stem}.npy", depth)
        if spec.write_masks:
            cv2.imwrite(str(out_dir / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)
        return view.name

    workers = workers or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, name in enumerate(pool.map(render_and_write, range(len(views))), start=1):
            progress(done / len(views), f"rendered {name}")
    cameras = [view.camera_object for view in views]
    _write_cameras(out_dir / CAMERAS_JSON, [v.name for v in views], cameras)
    _write_mesh(out_dir / OBJECT_PLY, scene.product)
    lo, hi = scene.product.vertices.min(0), scene.product.vertices.max(0)
    seconds = time.perf_counter() - started
    summary = {
        "spec": spec.to_dict(),
        "images": [v.name for v in views],
        "object_bbox_min": lo.tolist(),
        "object_bbox_max": hi.tolist(),
        "object_diagonal_m": float(np.linalg.norm(hi - lo)),
        "camera_distance_m": _camera_distance(spec, scene.radius),
        "render_seconds": round(seconds, 2),
        "conventions": "cam_from_world, x_cam = R x + t, OpenCV axes, pixel centres at +0.5, metres, "
                       "world = the product's frame (z up, standing on z = 0)",
    }
    (out_dir / CAPTURE_JSON).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("rendered %d views into %s in %.1f s", len(views), out_dir, seconds)
    return load_ground_truth(out_dir)


def _write_cameras(path: Path, names: list[str], cameras: list[PinholeCamera]) -> None:
    records = [{"name": n, "K": c.K.tolist(), "R": c.R.tolist(), "t": c.t.tolist(), "width": c.width,
                "height": c.height} for n, c in zip(names, cameras, strict=True)]
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")


def read_cameras_json(path: Path) -> dict[str, PinholeCamera]:
    """cameras.json -> PinholeCamera by image name (in file order)."""
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return {r["name"]: PinholeCamera(np.array(r["K"], float), np.array(r["R"], float), np.array(r["t"], float),
                                     int(r["width"]), int(r["height"])) for r in records}


def _write_mesh(path: Path, mesh: TexturedMesh) -> None:
    import open3d as o3d

    o3d_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                         o3d.utility.Vector3iVector(mesh.triangles.astype(np.int32)))
    # Box faces and lathe pieces have their own copies of shared edge vertices (for UVs and sharp shading); weld
    # them so the ground-truth surface is one connected mesh. Positions are unchanged.
    o3d_mesh = o3d_mesh.merge_close_vertices(1e-9)
    o3d_mesh.remove_degenerate_triangles()
    o3d_mesh.remove_unreferenced_vertices()
    o3d_mesh.compute_vertex_normals()
    if not o3d.io.write_triangle_mesh(str(path), o3d_mesh, write_ascii=False):
        raise OSError(f"could not write {path}")


def load_ground_truth(capture_dir: Path) -> CaptureGroundTruth:
    """Read a capture written by :func:`render_capture` (depth and mask paths only where the files exist)."""
    root = Path(capture_dir)
    summary = json.loads((root / CAPTURE_JSON).read_text(encoding="utf-8"))
    spec = CaptureSpec.from_dict(summary.get("spec", {}))
    cameras = read_cameras_json(root / CAMERAS_JSON)
    names = list(cameras)
    depth_paths = {n: root / "depth" / f"{Path(n).stem}.npy" for n in names}
    mask_paths = {n: root / "masks" / f"{Path(n).stem}.png" for n in names}
    return CaptureGroundTruth(
        root=root, spec=spec, image_names=names, cameras=cameras, image_dir=root / "images",
        mesh_path=root / OBJECT_PLY,
        depth_paths={n: p for n, p in depth_paths.items() if p.exists()},
        mask_paths={n: p for n, p in mask_paths.items() if p.exists()},
        bbox_min=np.array(summary["object_bbox_min"], float), bbox_max=np.array(summary["object_bbox_max"], float))


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------

SAMPLE_SPEC = CaptureSpec(object="procedural-bottle", mode="orbit", backdrop="plain", support="textured",
                          product_texture="packaging", num_views=24, width=800, height=600, image_format="jpg",
                          write_depth=False, write_masks=False, seed=DEFAULT_SEED)
"""The bundled sample capture (assets/sample): regenerate with ``python -m core.synthetic --sample assets/sample``."""


def _terminal_progress() -> Callable[[float, str], None]:
    def report(fraction: float, message: str) -> None:
        sys.stderr.write(f"\r[{'#' * int(fraction * 30):<30}] {fraction:4.0%} {message:<40}")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--sample", type=Path, metavar="DIR", help="write the bundled sample capture into DIR")
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT")
    parser.add_argument("--object", default="procedural-box",
                        help="procedural-box, procedural-bottle, or a folder with a textured OBJ")
    parser.add_argument("--mode", choices=["orbit", "turntable"], default="orbit")
    parser.add_argument("--backdrop", choices=["plain", "textured", "none"], default="plain")
    parser.add_argument("--support", choices=["textured", "plain", "none"], default="textured")
    parser.add_argument("--product-texture", choices=["packaging", "rich", "plain"], default="packaging")
    parser.add_argument("--elevations", default="25,40", help="ring elevations in degrees, comma-separated")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--no-depth", action="store_true", help="skip depth/ and masks/")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.sample is not None:
        spec, out = SAMPLE_SPEC, args.sample
    elif args.out is not None:
        width, height = (int(x) for x in args.size.lower().split("x"))
        spec = CaptureSpec(object=args.object, mode=args.mode, backdrop=args.backdrop, support=args.support,
                           product_texture=args.product_texture, num_views=args.views, width=width, height=height,
                           elevations_deg=tuple(float(e) for e in args.elevations.split(",")),
                           image_format=args.format, write_depth=not args.no_depth, write_masks=not args.no_depth,
                           seed=args.seed)
        out = args.out
    else:
        parser.error("give --out DIR or --sample DIR")
    gt = render_capture(spec, out, _terminal_progress())
    print(f"{len(gt.image_names)} photos in {gt.image_dir}; ground truth in {gt.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
