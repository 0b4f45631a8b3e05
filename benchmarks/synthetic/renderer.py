"""Ground-truth product captures rendered on the CPU with Open3D ray casting.

A capture is a product (a procedural box or bottle, or a scanned product from an OBJ + MTL + texture folder)
standing on a support disc, optionally in front of a backdrop, photographed either by cameras on one or two rings
around it ("orbit") or by a fixed camera while the product and its disc turn ("turntable"). Shading is Lambertian
with two directional lights, ambient light, a shadow from the key light and seeded sensor noise. What is written is
described in ``benchmarks/synthetic/spec.py``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.synthetic.shapes import (
    TexturedMesh,
    bottle_profiles,
    box_mesh,
    disc_mesh,
    lathe_mesh,
    load_obj_model,
    room_mesh,
    sweep_mesh,
)
from benchmarks.synthetic.spec import (
    CAMERAS_JSON,
    CAPTURE_JSON,
    OBJECT_PLY,
    CaptureGroundTruth,
    CaptureSpec,
    load_ground_truth,
)
from benchmarks.synthetic.textures import packaging_texture, plain_texture, rich_texture
from core.geometry import PinholeCamera, intrinsics_from_fov, look_at
from core.progress import StageProgress, no_progress

logger = logging.getLogger(__name__)

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
            views.append(_placed_view(name, spec, scene.centre, distance, K, el, azimuth))
    return views



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


def render_capture(spec: CaptureSpec, out_dir: Path, progress: StageProgress = no_progress,
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



NOVEL_DIR = "novel"
"""Held-out views of a capture (``novel/images``, ``novel/masks``, ``novel/cameras.json``): not among its photos."""


def novel_views(spec: CaptureSpec, scene: _Scene, count: int = 8) -> list[_View]:
    """``count`` viewpoints no photo has: half between the rings' elevations, half 12° above the highest ring, at
    azimuths a quarter step off every photo's (turntable: the object turned instead, as for the photos)."""
    K = intrinsics_from_fov(spec.width, spec.height, spec.horizontal_fov_deg)
    distance = _camera_distance(spec, scene.radius)
    elevations = (float(np.mean(spec.elevations_deg)), max(spec.elevations_deg) + 12.0)
    views = []
    for ring, elevation in enumerate(elevations):
        el = np.radians(elevation)
        half = count // 2 + (count % 2 if ring == 0 else 0)
        for k in range(half):
            azimuth = 2 * np.pi * (k + 0.25 + 0.5 * ring) / half
            name = f"novel_{len(views):03d}.png"
            views.append(_placed_view(name, spec, scene.centre, distance, K, el, azimuth))
    return views


def render_novel_views(spec: CaptureSpec, out_dir: Path, count: int = 8) -> Path:
    """Render a capture's held-out views into ``out_dir/novel`` (PNG, no noise; masks; cameras.json); its folder."""
    scene = _build_scene(spec)
    folder = Path(out_dir) / NOVEL_DIR
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    views = novel_views(spec, scene, count)
    clean = CaptureSpec.from_dict({**spec.to_dict(), "noise_sigma": 0.0})
    for index, view in enumerate(views):
        image, _, mask = render_view(scene, view, clean, np.random.default_rng([spec.seed, 1000 + index]))
        cv2.imwrite(str(folder / "images" / view.name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "masks" / view.name), mask.astype(np.uint8) * 255)
    _write_cameras(folder / CAMERAS_JSON, [v.name for v in views], [v.camera_object for v in views])
    return folder


def _placed_view(name: str, spec, centre: np.ndarray, distance: float, K: np.ndarray, el: float,
                 azimuth: float) -> _View:
    """A camera at elevation ``el`` and ``azimuth`` around ``centre``: orbiting it, or (turntable) fixed while the
    object turns by -azimuth, which shows it from the azimuth an orbit would."""
    if spec.mode == "orbit":
        eye = centre + distance * np.array([np.cos(el) * np.cos(azimuth), np.cos(el) * np.sin(azimuth), np.sin(el)])
        R, t = look_at(eye, centre)
        return _View(name, PinholeCamera(K, R, t, spec.width, spec.height), np.eye(3))
    eye = centre + distance * np.array([np.cos(el), 0.0, np.sin(el)])
    R, t = look_at(eye, centre)
    return _View(name, PinholeCamera(K, R, t, spec.width, spec.height), _rot_z(-azimuth))
