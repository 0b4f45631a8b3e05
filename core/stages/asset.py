"""Asset stage: the shop-ready model: real size and pose, GLB / USDZ / OBJ exports, marketplace checks, variants.

``run_asset`` takes the texture stage's textured mesh (``TexturedSurface``: vertices, faces, uv in the glTF
convention, a base-colour PNG, an optional normal map, all in the reconstruction frame) or, when there is none (the
texture stage off or absent), bakes the mesh stage's vertex colours into a UV atlas (xatlas unwrap, per-texel
barycentric interpolation). It then

1. moves the model into the asset frame (metres, Y up, resting on Y = 0, centred on the vertical axis, its front -
   the first photo's side - toward +Z), scaled to the known distance between two points picked on a photo
   (core/known_distance.py: the picks cast onto the mesh along that photo's camera rays) or else to the known
   dimension, when one is given (``AssetConfig``); a known distance that cannot be measured (its photo unknown or not
   placed, a pick off the model, both picks the same point) fails the stage with a reason naming the photo;
2. writes ``RUN/asset/asset.glb`` (glTF 2.0 PBR metallic-roughness, embedded JPEG base colour), ``asset.usdz``
   (UsdPreviewSurface,
   texture packaged) and ``asset.obj`` + ``asset.mtl`` + ``asset.png``;
3. re-opens the files and checks them against each marketplace profile (``PROFILES``), writing a variant under
   ``RUN/asset/variants/`` for each profile the asset fails where fewer faces and/or another texture size fix it:
   the mesh stage's mesh decimated to the profile's budget (still closed) and its texture baked again (the texture
   stage's ``bake_texture``, or the vertex-colour bake), then checked again.

The manifest metrics hold ``asset_from_reconstruction`` (the 4x4 similarity), ``size_mm`` (or None: unknown),
``size_from`` (``known_distance``, ``height``, ``width``, ``depth`` or None), ``known_distance`` (the picks, their two
3D points, their distance in reconstruction units and the scale used, or None) and each profile's pass/fail with its
reasons; ``checks.json`` holds the same for the app.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import open3d as o3d

from core import advice
from core.artifacts import (
    ASSET_CHECKS,
    ASSET_GLB,
    ASSET_MTL,
    ASSET_NORMAL,
    ASSET_OBJ,
    ASSET_TEXTURE,
    ASSET_USDZ,
    ASSET_VARIANTS,
    Artifact,
)
from core.config import AssetConfig
from core.geometry import boundary_loops
from core.known_distance import KnownDistanceError, MeasuredDistance, measure_known_distance, parse_known_distance
from core.manifest import Finding, PhotoRecord
from core.progress import StageProgress, no_progress
from core.stages import StageOutput

logger = logging.getLogger(__name__)

ROUGHNESS = 0.8
"""A matte product surface: photos bake the lighting in, so a glossy default would add a second highlight."""
BASE_COLOUR_JPEG_QUALITY = 92
"""The GLB's and USDZ's base colour is JPEG at this quality (4:4:4): on the balanced 2048² atlases of the soup can,
cracker box and bottle, 4.7-5.0 MB as PNG -> 1.8-2.1 MB, 38-39 dB from the PNG (the novel views are 23-30 dB from
the photos, so unchanged), which keeps the cracker box's GLB under the 15 MB of Google and Shopify (15.6 MB with
PNG). q85 saves 0.6 MB more at 35 dB; q95 costs 0.6 MB. The OBJ's ``asset.png`` and normal maps stay PNG."""
_PADDING_TEXELS = 2
"""Gutter between atlas charts (xatlas), filled by dilation so bilinear sampling never reads the background."""
_CENTRED_SHARE = 0.01
"""The bounding box's centre may be this share of the model's size off the vertical axis and still count as centred."""
_ON_FLOOR_SHARE = 0.005
"""The lowest point may be this share of the model's height off Y = 0 and still count as resting on it."""


class TexturedSurface(Protocol):
    """What the texture stage delivers (its ``TextureResult``), in the reconstruction frame."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    """(N, 2) in [0, 1], glTF convention: uv[:, 1] = 0 is the image's top row."""
    base_color: Path
    normal_map: Path | None


@dataclass
class BakedSurface:
    """A textured surface made here from vertex colours (the ``TexturedSurface`` fields)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    base_color: Path
    normal_map: Path | None = None


@dataclass(frozen=True)
class Profile:
    """One marketplace's rules for a 3D product model (from the platforms' published guidance, issue 12)."""

    name: str
    label: str
    format: str
    """'glb' or 'usdz': the file the marketplace takes."""
    max_triangles: int | None = None
    max_texture: int | None = None
    min_texture: int | None = None
    power_of_two: bool = False
    max_bytes: int | None = None
    real_size: bool = True
    on_floor_centred: bool = True
    validator: bool = True


PROFILES: dict[str, Profile] = {p.name: p for p in [
    # Shopify: GLB or USDZ, about 15 MB before it re-compresses, real size, origin set.
    Profile("shopify", "Shopify", "glb", max_bytes=15_000_000),
    # Amazon: <= 200k triangles, square power-of-two textures 2K-4K, Khronos validator, Y-up resting on Y = 0, centred.
    Profile("amazon", "Amazon", "glb", max_triangles=200_000, max_texture=4096, min_texture=2048, power_of_two=True),
    # Google (Merchant Center / Search): glTF/GLB <= 15 MB, textures <= 4K.
    Profile("google", "Google", "glb", max_texture=4096, max_bytes=15_000_000, real_size=False,
            on_floor_centred=False),
    # Apple AR Quick Look: USDZ, ~100k polygons, 2048 px textures.
    Profile("apple", "Apple AR Quick Look", "usdz", max_triangles=100_000, max_texture=2048, validator=False),
    # The studio's own <model-viewer>: the GLB is inlined into the page (core/report/asset_view.py caps it).
    Profile("web", "Web viewer", "glb", max_texture=4096, max_bytes=20_000_000, real_size=False,
            on_floor_centred=False),
]}


@dataclass
class FileFacts:
    """What a written GLB or USDZ holds, read back from the file."""

    triangles: int
    textures: list[tuple[int, int]]
    bytes: int
    lo: np.ndarray
    hi: np.ndarray
    validator_errors: int | None = None
    validator_summary: str = ""
    y_up_metres: bool = True


@dataclass
class AssetResult(StageOutput):
    glb: Path | None = None
    usdz: Path | None = None
    obj: Path | None = None
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))
    """asset_from_reconstruction (4x4 similarity)."""
    size_mm: dict[str, float] | None = None
    checks: dict = field(default_factory=dict)
    """The content of checks.json: frame, size, profiles."""


def run_asset(texture: TexturedSurface | None, mesh, isolation, scene, run_dir: Path, config: AssetConfig,
              progress: StageProgress = no_progress, masks=None, *, photos: Sequence[PhotoRecord] = (),
              sfm_model: Path | None = None) -> AssetResult:
    """Build the shop-ready asset into ``RUN/asset/`` (module docstring). ``masks`` (the masks stage's result) are
    used when a variant's fewer faces are re-baked from the photos; ``photos`` (the capture stage's records) and
    ``sfm_model`` (COLMAP's model folder) when a known distance is picked on a photo."""
    start = time.perf_counter()
    folder = ASSET_GLB.path(run_dir).parent
    folder.mkdir(parents=True, exist_ok=True)
    findings: list[Finding] = []
    surface = texture if _usable_texture(texture) else None
    source = "texture" if surface is not None else "vertex_colours"
    if surface is None and (mesh is None or getattr(mesh, "mesh", None) is None or len(mesh.mesh.triangles) == 0):
        return AssetResult(ok=False, failure=advice.ASSET_NO_MESH)
    measured: MeasuredDistance | None = None
    if config.known_distance:  # first: a pick that cannot be used fails the stage before anything is written
        shape = (surface.vertices, surface.faces) if surface is not None else (np.asarray(mesh.mesh.vertices),
                                                                               np.asarray(mesh.mesh.triangles))
        try:
            measured = measure_known_distance(parse_known_distance(config.known_distance), photos, sfm_model, *shape)
        except KnownDistanceError as exc:
            return AssetResult(ok=False, failure=str(exc))
    if surface is None:
        progress(0.05, "unwrapping the mesh and baking its colours")
        surface = bake_vertex_colours(mesh.mesh, folder / "baked.png", config.texture_size)
    vertices = np.asarray(surface.vertices, np.float64)
    faces = np.asarray(surface.faces, np.int64)
    # Welded first: both atlases split vertices along UV seams (the texture stage's at every face), not the surface.
    _, open_edges = boundary_loops(_welded_faces(vertices, faces))
    if open_edges:
        findings.append(advice.asset_open(open_edges))

    progress(0.4, "real size and pose")
    up = np.asarray(isolation.up, np.float64) if isolation is not None else np.array([0.0, 0.0, 1.0])
    first = _first_camera(scene)
    known = _known_dimension(config)
    dimension = None if measured is not None else known  # a picked distance wins over a dimension (config.py)
    transform, size_mm = asset_similarity(vertices, up, first.center if first is not None else None, dimension,
                                          measured.metres_per_unit if measured is not None else None)
    if size_mm is None:
        findings.append(advice.ASSET_SIZE_UNKNOWN)
    elif measured is not None and known is not None:
        findings.append(advice.asset_distance_over_dimension(known[0], known[1], size_mm[known[0]],
                                                              measured.known.photo))
    size_from = "known_distance" if measured is not None else dimension[0] if dimension is not None else None
    picks = measured.record() if measured is not None else None
    placed = vertices @ transform[:3, :3].T + transform[:3, 3]

    progress(0.5, "writing GLB, USDZ and OBJ")
    texture_image = _square_texture(Path(surface.base_color), config.texture_size)
    base_color = _encoded(texture_image, "JPEG")
    normal_png = Path(surface.normal_map).read_bytes() if surface.normal_map else None
    uv = np.asarray(surface.uv, np.float64)
    write_glb(ASSET_GLB.path(run_dir), placed, faces, uv, base_color, normal_png)
    write_usdz(ASSET_USDZ.path(run_dir), placed, faces, uv, base_color, normal_png)
    ASSET_TEXTURE.path(run_dir).write_bytes(_encoded(texture_image, "PNG"))
    artifacts: list[Artifact] = [ASSET_GLB, ASSET_USDZ, ASSET_OBJ, ASSET_MTL, ASSET_TEXTURE]
    if normal_png is not None:
        ASSET_NORMAL.path(run_dir).write_bytes(normal_png)
        artifacts.append(ASSET_NORMAL)
    write_obj(ASSET_OBJ.path(run_dir), placed, faces, uv, ASSET_TEXTURE.path(run_dir).name,
              ASSET_NORMAL.path(run_dir).name if normal_png is not None else None)
    (folder / "baked.png").unlink(missing_ok=True)

    progress(0.7, "checking the marketplaces' rules")
    variants = ASSET_VARIANTS.path(run_dir)
    variants.mkdir(exist_ok=True)

    resurfaced: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, bytes, bytes | None]] = {}

    def resurface(max_faces: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes, bytes | None]:
        """The mesh stage's mesh decimated to ``max_faces`` and baked again as the asset's surface was, at ``size``:
        vertices (reconstruction frame), faces, uv, the base-colour image and, when the asset has one, the normal map
        baked again from the dense points. Once per budget (Shopify and Google often ask for the same one)."""
        from core.stages.mesh import decimate

        if (max_faces, size) not in resurfaced:
            fewer, _, _ = decimate(mesh.mesh, max_faces)
            png = variants / f".{max_faces}_{size}_base_color.png"
            normal_file = variants / f".{max_faces}_{size}_normal.png"
            try:
                normal = None
                if source == "texture":
                    from core.stages.texture import bake_texture, load_dense_surface

                    dense = load_dense_surface(run_dir) if normal_png is not None else None
                    surface = bake_texture(fewer, scene, masks, png, size, dense=dense, normal_png=normal_file)
                    if surface.normal_map is not None:
                        normal = Path(surface.normal_map).read_bytes()
                else:
                    surface = bake_vertex_colours(fewer, png, size)
                colour = _encoded(_square_texture(Path(surface.base_color), size), "JPEG")
            finally:
                png.unlink(missing_ok=True)
                normal_file.unlink(missing_ok=True)
            resurfaced[max_faces, size] = (np.asarray(surface.vertices, np.float64),
                                           np.asarray(surface.faces, np.int64), np.asarray(surface.uv), colour, normal)
        return resurfaced[max_faces, size]
    facts = {"glb": inspect_glb(ASSET_GLB.path(run_dir)), "usdz": inspect_usdz(ASSET_USDZ.path(run_dir))}
    profiles = {}
    for name in config.profiles:
        profile = PROFILES.get(name)
        if profile is None:
            findings.append(advice.asset_unknown_profile(name, sorted(PROFILES)))
            continue
        main = ASSET_GLB if profile.format == "glb" else ASSET_USDZ
        reasons = check_profile(profile, facts[profile.format], size_mm is not None)
        entry = {"label": profile.label, "pass": not reasons, "reasons": reasons, "file": main.run_path,
                 "variant": None}
        if reasons:
            variant = _write_variant(profile, variants, facts[profile.format], source == "texture", resurface,
                                     transform, placed, faces, uv, base_color, normal_png)
            if variant is not None:
                variant_facts = inspect_glb(variant) if profile.format == "glb" else inspect_usdz(variant)
                variant_reasons = check_profile(profile, variant_facts, size_mm is not None)
                entry["variant"] = {"file": f"{ASSET_VARIANTS.run_path}/{variant.name}", "pass": not variant_reasons,
                                    "reasons": variant_reasons, "bytes": variant_facts.bytes}
                if not variant_reasons:
                    entry["file"] = entry["variant"]["file"]
        profiles[name] = entry
        findings.append(advice.asset_profile(profile.label, entry))
    artifacts.append(ASSET_VARIANTS)

    glb = facts["glb"]
    mesh_metrics = getattr(mesh, "metrics", None) or {}
    # The mesh stage's record of the made-up base (a flat cap on the table no photo saw), for the shop's listing.
    base = {k: mesh_metrics[k] for k in ("base_capped", "base_faces", "base_area_share") if k in mesh_metrics}
    checks = {"source": source, **base, "asset_from_reconstruction": transform.tolist(), "size_mm": size_mm,
              "known_dimension": dimension and {"axis": dimension[0], "mm": dimension[1]}, "size_from": size_from,
              "known_distance": picks, "profiles": profiles,
              "glb": {"bytes": glb.bytes, "triangles": glb.triangles, "textures": glb.textures,
                      "validator_errors": glb.validator_errors}}
    ASSET_CHECKS.path(run_dir).write_text(json.dumps(checks, indent=1), encoding="utf-8")
    artifacts.append(ASSET_CHECKS)
    metrics = {
        "source": source,
        "asset_from_reconstruction": [[round(float(x), 9) for x in row] for row in transform],
        "size_mm": size_mm,
        "size_from": size_from,
        "known_distance": picks,
        "triangles": glb.triangles,
        "texture_size": glb.textures[0][0] if glb.textures else 0,
        "closed": int(open_edges == 0),
        "boundary_edges": int(open_edges),
        **base,
        "glb_bytes": glb.bytes,
        "usdz_bytes": facts["usdz"].bytes,
        "validator_errors": glb.validator_errors,
        "profiles": {k: {"pass": int(v["pass"]), "reasons": v["reasons"], "file": v["file"]}
                     for k, v in profiles.items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("asset: %d triangles, GLB %.1f MB, size %s, %.1f s", glb.triangles, glb.bytes / 1e6, size_mm,
                metrics["seconds"])
    progress(1.0, "asset ready")
    return AssetResult(metrics=metrics, findings=findings, artifacts=artifacts, glb=ASSET_GLB.path(run_dir),
                       usdz=ASSET_USDZ.path(run_dir), obj=ASSET_OBJ.path(run_dir), transform=transform,
                       size_mm=size_mm, checks=checks)


def load_asset(run_dir: Path) -> AssetResult:
    """The asset stage's result rebuilt from checks.json (a resumed run)."""
    checks = json.loads(ASSET_CHECKS.path(run_dir).read_text(encoding="utf-8"))
    return AssetResult(glb=ASSET_GLB.path(run_dir), usdz=ASSET_USDZ.path(run_dir), obj=ASSET_OBJ.path(run_dir),
                       transform=np.array(checks["asset_from_reconstruction"]), size_mm=checks["size_mm"],
                       checks=checks)


def _usable_texture(texture) -> bool:
    if texture is None or not getattr(texture, "ok", True):
        return False
    base = getattr(texture, "base_color", None)
    return base is not None and Path(base).is_file() and len(getattr(texture, "faces", [])) > 0


# --- real size and pose ------------------------------------------------------------------------------------------

def _known_dimension(config: AssetConfig) -> tuple[str, float] | None:
    """The dimension the model is scaled to: height, else width, else depth (millimetres)."""
    for axis, value in (("height", config.height_mm), ("width", config.width_mm), ("depth", config.depth_mm)):
        if value is not None and value > 0:
            return axis, float(value)
    return None


def _first_camera(scene):
    """The camera of the first photo the user gave (the product's front faces it)."""
    if scene is None or not len(scene.cameras):
        return None
    order = sorted(range(len(scene.cameras)), key=lambda i: scene.photos[i].index if scene.photos else i)
    return scene.cameras[order[0]]


def asset_similarity(vertices: np.ndarray, up: np.ndarray, front_camera: np.ndarray | None,
                     known: tuple[str, float] | None,
                     metres_per_unit: float | None = None) -> tuple[np.ndarray, dict[str, float] | None]:
    """The 4x4 similarity from the reconstruction frame to the asset frame, and the size in mm (None: unknown).

    Asset frame: Y = ``up``; +Z = the horizontal direction from the model's axis toward ``front_camera``; X = Y x Z;
    lowest point on Y = 0; bounding box centred on the Y axis. Scaled by ``metres_per_unit`` when given (a known
    distance), else so the ``known`` dimension (height along Y, width along X, depth along Z) has its length in
    metres; unscaled (reconstruction units) when nothing is known.
    """
    y = up / np.linalg.norm(up)
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    toward = (front_camera - centre) if front_camera is not None else np.array([0.0, 0.0, 1.0])
    z = toward - (toward @ y) * y
    if np.linalg.norm(z) < 1e-9:  # a camera straight above: any horizontal direction
        z = np.cross(y, [1.0, 0, 0] if abs(y[0]) < 0.9 else [0, 1.0, 0])
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    rotation = np.stack([x, y, z])
    rotated = vertices @ rotation.T
    extent = rotated.max(0) - rotated.min(0)
    scale = 1.0
    if metres_per_unit is not None:
        scale = float(metres_per_unit)
    elif known is not None:
        axis = {"width": 0, "height": 1, "depth": 2}[known[0]]
        scale = known[1] / 1000.0 / max(float(extent[axis]), 1e-12)
    lo, hi = scale * rotated.min(0), scale * rotated.max(0)
    translation = -np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    transform = np.eye(4)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = translation
    size = None if known is None and metres_per_unit is None else {k: round(float(v) * scale * 1000.0, 2)
                                       for k, v in zip(("width", "height", "depth"), extent, strict=True)}
    return transform, size


# --- baking vertex colours ---------------------------------------------------------------------------------------

def bake_vertex_colours(mesh: o3d.geometry.TriangleMesh, png: Path, size: int) -> BakedSurface:
    """Unwrap ``mesh`` with xatlas and bake its vertex colours into a ``size``-square atlas written to ``png``."""
    import cv2
    import xatlas

    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.triangles)
    colours = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else np.full((len(vertices), 3), 0.7)
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = size, _PADDING_TEXELS, True
    atlas.generate(xatlas.ChartOptions(), pack)
    mapping, new_faces, uv = atlas[0]
    image, filled = rasterize(uv, new_faces.astype(np.int64), colours[mapping], size)
    image = fill_gutters(image, filled)
    cv2.imwrite(str(png), cv2.cvtColor(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return BakedSurface(vertices[mapping], new_faces.astype(np.int64), uv.astype(np.float64), png)


def rasterize(uv: np.ndarray, faces: np.ndarray, values: np.ndarray, size: int,
              chunk: int = 40_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-texel barycentric interpolation of per-vertex ``values`` over the UV triangles (row = v * size)."""
    out = np.zeros((size * size, values.shape[1]), np.float32)
    filled = np.zeros(size * size, bool)
    texel = np.asarray(uv, np.float64) * size
    for begin in range(0, len(faces), chunk):
        f = faces[begin:begin + chunk]
        tri = texel[f]
        lo = np.clip(np.floor(tri.min(1) - 0.5), 0, size - 1).astype(np.int64)
        hi = np.clip(np.ceil(tri.max(1) - 0.5), 0, size - 1).astype(np.int64)
        w, h = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
        n = w * h
        owner = np.repeat(np.arange(len(f)), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        cols, rows = lo[owner, 0] + k % w[owner], lo[owner, 1] + k // w[owner]
        a, b, c = tri[owner, 0], tri[owner, 1], tri[owner, 2]
        e0, e1 = b - a, c - a
        p = np.stack([cols + 0.5, rows + 0.5], 1) - a
        den = e0[:, 0] * e1[:, 1] - e1[:, 0] * e0[:, 1]
        safe = np.where(np.abs(den) < 1e-12, 1.0, den)
        l1 = (p[:, 0] * e1[:, 1] - e1[:, 0] * p[:, 1]) / safe
        l2 = (e0[:, 0] * p[:, 1] - p[:, 0] * e0[:, 1]) / safe
        l0 = 1 - l1 - l2
        inside = (np.abs(den) >= 1e-12) & (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6)
        fi = f[owner[inside]]
        vals = (l0[inside, None] * values[fi[:, 0]] + l1[inside, None] * values[fi[:, 1]]
                + l2[inside, None] * values[fi[:, 2]])
        index = rows[inside] * size + cols[inside]
        out[index], filled[index] = vals, True
    return out.reshape(size, size, -1), filled.reshape(size, size)


def fill_gutters(image: np.ndarray, filled: np.ndarray, rounds: int = 8) -> np.ndarray:
    """Grow the charts' texels into the gutters (bilinear filtering and mipmaps read there), the rest mean colour."""
    import cv2

    image, filled = image.copy(), filled.copy()
    for _ in range(rounds):
        if filled.all():
            break
        weight = filled.astype(np.float32)
        total = cv2.blur(image * weight[..., None], (3, 3))
        count = cv2.blur(weight, (3, 3))
        grow = ~filled & (count > 0)
        image[grow] = total[grow] / count[grow, None]
        filled |= grow
    if filled.any():
        image[~filled] = image[filled].mean(0)
    return image


def _welded_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces re-indexed onto unique positions (UV seams split vertices; closedness is about the surface)."""
    _, inverse = np.unique(np.round(vertices, 9), axis=0, return_inverse=True)
    return inverse.reshape(-1)[faces]


def smooth_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals computed on the welded surface (no shading seam along UV seams)."""
    welded = _welded_faces(vertices, faces)
    tri = vertices[faces]
    face_normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    accum = np.zeros((welded.max() + 1, 3))
    for corner in range(3):
        np.add.at(accum, welded[:, corner], face_normal)
    per_vertex = np.zeros_like(vertices)
    per_vertex[faces.reshape(-1)] = accum[welded.reshape(-1)]
    length = np.linalg.norm(per_vertex, axis=1, keepdims=True)
    return np.where(length > 1e-20, per_vertex / np.maximum(length, 1e-20), [0.0, 1.0, 0.0])


def _square_texture(path: Path, cap: int):
    """The base-colour texture (PIL image), square power of two, at most ``cap`` a side; encoded JPEG for the GLB
    and USDZ, PNG for the OBJ (``_encoded``)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    side = min(cap, 1 << int(np.round(np.log2(max(image.size)))))
    if image.size != (side, side):
        image = image.resize((side, side), Image.LANCZOS)
    return image


def _encoded(image, image_format: str) -> bytes:
    """``image`` (PIL) as JPEG at ``BASE_COLOUR_JPEG_QUALITY`` or as PNG."""
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=BASE_COLOUR_JPEG_QUALITY, subsampling=0)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _resized_image(data: bytes, side: int) -> bytes:
    """A texture (JPEG or PNG bytes) resized to ``side`` square, in the format it came in."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB").resize((side, side), Image.LANCZOS)
    return _encoded(image, "JPEG" if _is_jpeg(data) else "PNG")


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


# --- exports -------------------------------------------------------------------------------------------------

def write_glb(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, base_color: bytes,
              normal_map: bytes | None = None) -> Path:
    """glTF 2.0 binary: one mesh, PBR metallic-roughness material with the embedded base-colour (and normal) PNG.

    When every face has its own three vertices in order (the texture stage's cell atlas) the primitive has no index
    buffer: glTF draws vertices 3k..3k+2 as face k, and the indices would add 1.2 MB per 100k faces (the balanced
    soup can's GLB: 15.5 MB with them, over the 15 MB marketplace limit)."""
    import pygltflib as g

    indexed = not np.array_equal(faces.reshape(-1), np.arange(faces.size))
    arrays = [vertices.astype(np.float32), smooth_normals(vertices, faces).astype(np.float32), uv.astype(np.float32)]
    if indexed:
        arrays.append(faces.astype(np.uint32).reshape(-1))
    blob, views = b"", []
    for i, data in enumerate([*(a.tobytes() for a in arrays), base_color, *([normal_map] if normal_map else [])]):
        blob += b"\0" * (-len(blob) % 4)
        target = g.ARRAY_BUFFER if i < 3 else g.ELEMENT_ARRAY_BUFFER if i < len(arrays) else None
        views.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
        blob += data
    blob += b"\0" * (-len(blob) % 4)
    accessors = [
        g.Accessor(bufferView=0, componentType=g.FLOAT, count=len(vertices), type=g.VEC3,
                   min=arrays[0].min(0).tolist(), max=arrays[0].max(0).tolist()),
        g.Accessor(bufferView=1, componentType=g.FLOAT, count=len(vertices), type=g.VEC3),
        g.Accessor(bufferView=2, componentType=g.FLOAT, count=len(vertices), type=g.VEC2),
    ]
    if indexed:
        accessors.append(g.Accessor(bufferView=3, componentType=g.UNSIGNED_INT, count=faces.size, type=g.SCALAR))
    images = [g.Image(bufferView=len(arrays), mimeType="image/jpeg" if _is_jpeg(base_color) else "image/png",
                      name="base_color")]
    material = g.Material(name="product", doubleSided=False, pbrMetallicRoughness=g.PbrMetallicRoughness(
        baseColorTexture=g.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=ROUGHNESS))
    if normal_map:
        images.append(g.Image(bufferView=len(arrays) + 1, mimeType="image/png", name="normal"))
        material.normalTexture = g.NormalMaterialTexture(index=1)
    gltf = g.GLTF2(
        asset=g.Asset(version="2.0", generator="Product Studio"),
        scene=0, scenes=[g.Scene(nodes=[0])], nodes=[g.Node(mesh=0, name="product")],
        meshes=[g.Mesh(name="product", primitives=[g.Primitive(
            attributes=g.Attributes(POSITION=0, NORMAL=1, TEXCOORD_0=2), indices=3 if indexed else None, material=0,
            mode=g.TRIANGLES)])],
        accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
        images=images, samplers=[g.Sampler(magFilter=g.LINEAR, minFilter=g.LINEAR_MIPMAP_LINEAR,
                                           wrapS=g.CLAMP_TO_EDGE, wrapT=g.CLAMP_TO_EDGE)],
        textures=[g.Texture(sampler=0, source=i) for i in range(len(images))], materials=[material])
    gltf.set_binary_blob(blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    gltf.save_binary(str(path))
    return path


def write_usdz(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, base_color: bytes,
               normal_map: bytes | None = None) -> Path:
    """USDZ for AR Quick Look: a Y-up, metre stage, one mesh with an ``st`` primvar bound to a UsdPreviewSurface whose
    UsdUVTexture reads the packaged JPEG or PNG (USD's st origin is the bottom-left: st = (u, 1 - v))."""
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt

    work = path.parent / f".{path.stem}_usd"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        colour_file = "base_color.jpg" if _is_jpeg(base_color) else "base_color.png"
        (work / colour_file).write_bytes(base_color)
        if normal_map:
            (work / "normal.png").write_bytes(normal_map)
        stage = Usd.Stage.CreateNew(str(work / "asset.usdc"))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/Product")
        stage.SetDefaultPrim(root.GetPrim())
        mesh = UsdGeom.Mesh.Define(stage, "/Product/Mesh")
        mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices.astype(np.float32)))
        mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
        mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.astype(np.int32).reshape(-1)))
        mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(smooth_normals(vertices, faces).astype(np.float32)))
        mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
        mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
        mesh.CreateExtentAttr([Gf.Vec3f(*map(float, vertices.min(0))), Gf.Vec3f(*map(float, vertices.max(0)))])
        st = np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]).astype(np.float32)
        UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                                UsdGeom.Tokens.vertex).Set(Vt.Vec2fArray.FromNumpy(st))
        material = UsdShade.Material.Define(stage, "/Product/Material")
        surface = UsdShade.Shader.Define(stage, "/Product/Material/Surface")
        surface.CreateIdAttr("UsdPreviewSurface")
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(ROUGHNESS)
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        reader = UsdShade.Shader.Define(stage, "/Product/Material/StReader")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")

        def texture(name: str, file: str, colour_space: str):
            shader = UsdShade.Shader.Define(stage, f"/Product/Material/{name}")
            shader.CreateIdAttr("UsdUVTexture")
            shader.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(file)
            shader.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
            shader.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set(colour_space)
            for wrap in ("wrapS", "wrapT"):
                shader.CreateInput(wrap, Sdf.ValueTypeNames.Token).Set("clamp")
            return shader

        colour = texture("BaseColor", colour_file, "sRGB")
        colour.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(colour.ConnectableAPI(), "rgb")
        if normal_map:
            normal = texture("Normal", "normal.png", "raw")
            normal.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(2, 2, 2, 1))
            normal.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(-1, -1, -1, 0))
            normal.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
            surface.CreateInput("normal", Sdf.ValueTypeNames.Normal3f).ConnectToSource(normal.ConnectableAPI(), "rgb")
        UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim()).Bind(material)
        stage.GetRootLayer().Save()
        path.unlink(missing_ok=True)
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(work / "asset.usdc")), str(path)):
            raise RuntimeError(f"USD could not package {path.name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, texture_name: str,
              normal_name: str | None = None) -> Path:
    """OBJ with UVs and normals, its .mtl naming the PNG texture (OBJ's vt origin is the bottom-left)."""
    mtl = path.with_suffix(".mtl")
    lines = ["newmtl product", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "illum 1", f"map_Kd {texture_name}"]
    if normal_name:
        lines.append(f"norm {normal_name}")
    mtl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    normals = smooth_normals(vertices, faces)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"# Product Studio asset: metres, Y up, front +Z; {len(vertices)} vertices, {len(faces)} faces\n")
        fh.write(f"mtllib {mtl.name}\nusemtl product\n")
        np.savetxt(fh, vertices, fmt="v %.6f %.6f %.6f")
        np.savetxt(fh, np.column_stack([uv[:, 0], 1.0 - uv[:, 1]]), fmt="vt %.6f %.6f")
        np.savetxt(fh, normals, fmt="vn %.5f %.5f %.5f")
        index = np.repeat(faces + 1, 3, axis=1)
        np.savetxt(fh, index, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return path


# --- reading back and checking -----------------------------------------------------------------------------------

def inspect_glb(path: Path) -> FileFacts:
    """Triangles, texture sizes, bytes, bounds and the Khronos validator's verdict of a written GLB."""
    import pygltflib as g
    from PIL import Image

    from core.gltf_validator import validate_gltf

    gltf = g.GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    triangles = sum(gltf.accessors[p.indices if p.indices is not None else p.attributes.POSITION].count // 3
                    for m in gltf.meshes for p in m.primitives)
    textures = []
    for image in gltf.images:
        view = gltf.bufferViews[image.bufferView]
        data = blob[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength]
        textures.append(Image.open(io.BytesIO(data)).size)
    position = gltf.accessors[gltf.meshes[0].primitives[0].attributes.POSITION]
    report = validate_gltf(path)
    return FileFacts(triangles, textures, path.stat().st_size, np.array(position.min), np.array(position.max),
                     report.errors, report.summary())


def inspect_usdz(path: Path) -> FileFacts:
    """The same facts of a written USDZ, read with pxr and from the package's files."""
    from PIL import Image
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(path))
    triangles, points = 0, []
    for prim in stage.Traverse():
        if prim.IsA(UsdGeom.Mesh):
            mesh = UsdGeom.Mesh(prim)
            counts = np.array(mesh.GetFaceVertexCountsAttr().Get())
            triangles += int((counts - 2).sum())
            points.append(np.array(mesh.GetPointsAttr().Get()))
    with zipfile.ZipFile(path) as package:
        textures = [Image.open(io.BytesIO(package.read(n))).size for n in package.namelist()
                    if n.lower().endswith((".png", ".jpg", ".jpeg"))]
    all_points = np.concatenate(points) if points else np.zeros((1, 3))
    y_up = UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    return FileFacts(triangles, textures, path.stat().st_size, all_points.min(0), all_points.max(0),
                     y_up_metres=y_up)


def check_profile(profile: Profile, facts: FileFacts, size_known: bool) -> list[str]:
    """The reasons ``facts`` fail ``profile`` (empty: it passes)."""
    reasons = []
    if profile.max_triangles and facts.triangles > profile.max_triangles:
        reasons.append(f"{facts.triangles:,} triangles, over the {profile.max_triangles:,} limit")
    for width, height in facts.textures:
        side = max(width, height)
        if profile.max_texture and side > profile.max_texture:
            reasons.append(f"a {width}x{height} texture, over the {profile.max_texture} px limit")
        if profile.min_texture and side < profile.min_texture:
            reasons.append(f"a {width}x{height} texture, under the {profile.min_texture} px minimum")
        if profile.power_of_two and (width != height or width & (width - 1)):
            reasons.append(f"a {width}x{height} texture, not square with a power-of-two side")
    if profile.max_bytes and facts.bytes > profile.max_bytes:
        reasons.append(f"{facts.bytes / 1e6:.1f} MB, over the {profile.max_bytes / 1e6:.0f} MB limit")
    if profile.real_size and not size_known:
        reasons.append("real size unknown (give a known height, width or depth in millimetres, or a known distance "
                       "between two points on a photo)")
    if profile.on_floor_centred:
        extent = np.maximum(facts.hi - facts.lo, 1e-12)
        centre = 0.5 * (facts.lo + facts.hi)
        if abs(facts.lo[1]) > _ON_FLOOR_SHARE * extent[1]:
            reasons.append(f"not resting on Y = 0 (lowest point at {facts.lo[1]:.4f})")
        if max(abs(centre[0]) / extent[0], abs(centre[2]) / extent[2]) > _CENTRED_SHARE:
            reasons.append("not centred on the vertical axis")
    if not facts.y_up_metres:
        reasons.append("the stage is not Y-up in metres")
    if profile.validator and facts.validator_errors:
        reasons.append(f"{facts.validator_errors} Khronos glTF-Validator error(s): {facts.validator_summary}")
    return reasons


def _write_variant(profile: Profile, folder: Path, facts: FileFacts, cell_atlas: bool, resurface, transform: np.ndarray,
                   vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, base_color: bytes,
                   normal_map: bytes | None) -> Path | None:
    """A copy that ``profile`` takes: fewer faces (the mesh decimated and its texture baked again by ``resurface``)
    and/or a texture of another size; None when neither can fix what fails (e.g. an unknown real size)."""
    plan = variant_plan(profile, facts, len(base_color) + len(normal_map or b""), cell_atlas)
    if plan is None:
        return None
    side, max_faces = plan
    path = folder / f"{profile.name}.{profile.format}"
    writer = write_glb if profile.format == "glb" else write_usdz
    current = max((max(t) for t in facts.textures), default=0)
    if max_faces < facts.triangles or (cell_atlas and side < current):
        # A cell atlas cannot be shrunk (its faces' cells would bleed into each other): it is baked again too.
        for _ in range(2):
            fewer, fewer_faces, fewer_uv, colour, normal = resurface(max_faces, side)
            placed = fewer @ transform[:3, :3].T + transform[:3, 3]
            logger.info("asset variant %s: %d faces, %d px texture", profile.name, len(fewer_faces), side)
            writer(path, placed, fewer_faces, fewer_uv, colour, normal)
            size = path.stat().st_size
            if not profile.max_bytes or size <= profile.max_bytes:
                break
            # The plan scaled the texture's bytes with its area; a smaller photo atlas compresses worse per texel
            # (4096 -> 2048 on the soup can: 15.4 MB for a 14.25 MB aim). Once more with the bytes now known.
            images = len(colour) + len(normal or b"")
            per_face = (size - images) / max(len(fewer_faces), 1)
            max_faces = int((_BYTES_ROOM * profile.max_bytes - images) / per_face)
            if max_faces <= 0:
                break
        return path
    colour = _resized_image(base_color, side)
    normal = _resized_image(normal_map, side) if normal_map else None
    return writer(path, vertices, faces, uv, colour, normal)


_TEXTURE_SHARE = 0.5
"""Under a file-size limit the texture is halved (down to 1024) until it takes at most this share of the limit; the
faces get the rest (a photo atlas's PNG is ~1.1 bytes per texel: 4.6 MB at 2048², the soup can)."""
_BYTES_ROOM = 0.95
"""A variant under a size limit aims this share of it (PNG compression varies with the new bake)."""


def variant_plan(profile: Profile, facts: FileFacts, texture_bytes: int, cell_atlas: bool) -> tuple[int, int] | None:
    """(texture side, face budget) of a variant ``profile`` takes, from what fails in ``facts``; None when neither
    changes. The face budget respects the profile's triangle limit, its file-size limit (bytes per face as in the
    file checked) and, for the texture stage's cell atlas, the faces the texture side can hold."""
    side = max((max(t) for t in facts.textures), default=0)
    if side == 0:
        return None
    target = side
    if profile.max_texture and side > profile.max_texture:
        target = profile.max_texture
    if profile.min_texture and side < profile.min_texture:
        target = profile.min_texture  # upsampled: no new detail, only the format the marketplace asks for
    if profile.power_of_two and target & (target - 1):
        target = 1 << int(np.ceil(np.log2(target)))
    faces = facts.triangles
    if profile.max_triangles:
        faces = min(faces, profile.max_triangles)
    if profile.max_bytes and facts.bytes > profile.max_bytes:
        def scaled(t: int) -> float:
            return texture_bytes * (t / side) ** 2

        while target > 1024 and scaled(target) > _TEXTURE_SHARE * profile.max_bytes:
            target //= 2
        per_face = max(facts.bytes - texture_bytes, 1) / max(facts.triangles, 1)
        faces = min(faces, int((_BYTES_ROOM * profile.max_bytes - scaled(target)) / per_face))
    if cell_atlas:
        from core.stages.texture import atlas_capacity

        faces = min(faces, atlas_capacity(target))
    if faces <= 0 or (target == side and faces == facts.triangles):
        return None
    return target, faces
