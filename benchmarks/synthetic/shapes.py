"""Meshes of ground-truth scenes: procedural products (box, bottle), support discs, backdrops, scanned OBJ models.

Meshes are vertices (V, 3), triangles (F, 3) and per-corner UVs (F, 3, 2) with v = 0 at the bottom of the texture
image (the OBJ convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


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

