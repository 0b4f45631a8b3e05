"""The 3D sticker: a thin, puffed, closed solid following the die-cut outline, the printed face as its texture.

The die-cut is sampled on a grid of square cells; every cell mostly inside becomes two front and two back
triangles on shared corner vertices, and every outline edge of the front a wall quad down to the back, so the solid
is closed (each edge in exactly two triangles) by construction. The outline's staircase is relaxed along the outline
(both faces move together). The front rises from the rim height by a rounded edge (a quarter circle over the
distance to the outline) and a gentle dome, plus the depth prior's shape where there is one; the back is flat.
UVs: the front's are its canvas position (glTF convention, v down), the back's point at a border-coloured texel, so
rim and back take the border colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.geometry import boundary_edges

OUTLINE_SMOOTHING = (3, 0.25)
"""Relaxation rounds and step along the outline: each round halves a staircase's zig-zag (to 1/8 after 3), moving
vertices less than half a cell; a step of 0.5 would flatten it in one round and leave the triangles of a corner cell
(all three corners on the outline) with zero area."""
EDGE_RADIUS_SHARE = 0.05
"""The rounded edge rises over this share of the canvas side (4 mm on an 80 mm sticker)."""
DOME_SHARE = 0.3
"""Share of the puff that comes from the dome over the whole sticker (the rest from the rounded edge)."""
RELIEF_SHARE = 0.4
"""With a depth prior: the subject's relative depth adds up to this share of the puff height."""


@dataclass
class Solid:
    vertices: np.ndarray
    """(V, 3) float64 metres, glTF frame: y up, the front facing +z, standing on y = 0, centred on x."""
    faces: np.ndarray
    """(F, 3) int64, counter-clockwise seen from outside."""
    uv: np.ndarray
    """(V, 2) float in [0, 1], glTF convention (v = 0 is the texture's top row)."""
    canvas_xy: np.ndarray
    """(V, 2) float: each vertex's position on the sticker canvas (px)."""
    front_faces: int
    """The first ``front_faces`` faces are the front."""


def _sample(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W) float field at canvas positions (px, pixel centres at +0.5)."""
    map_x = (xy[:, 0] - 0.5).astype(np.float32).reshape(-1, 1)
    map_y = (xy[:, 1] - 0.5).astype(np.float32).reshape(-1, 1)
    return cv2.remap(field.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE).ravel()


def build_solid(alpha: np.ndarray, cells: int, size_mm: float, thickness_mm: float, puff_mm: float,
                relief: np.ndarray | None = None) -> Solid:
    """The puffed solid of the die-cut coverage ``alpha`` (S, S) in [0, 1]; ``relief`` (S, S) in [0, 1] (near = 1)
    raises the front where the depth prior sees the subject closer."""
    size = alpha.shape[0]
    cell = size / cells
    inside = cv2.resize(alpha.astype(np.float32), (cells, cells), interpolation=cv2.INTER_AREA) > 0.5
    if not inside.any():
        raise ValueError("the die-cut covers no grid cell")
    rows, cols = np.nonzero(inside)
    used = np.zeros((cells + 1, cells + 1), bool)
    for dr in (0, 1):
        for dc in (0, 1):
            used[rows + dr, cols + dc] = True
    index = np.full(used.shape, -1, np.int64)
    index[used] = np.arange(used.sum())
    corner_r, corner_c = np.nonzero(used)
    xy = np.stack([corner_c * cell, corner_r * cell], axis=1).astype(np.float64)
    count = len(xy)
    tl, tr = index[rows, cols], index[rows, cols + 1]
    bl, br = index[rows + 1, cols], index[rows + 1, cols + 1]
    # Canvas rows grow downwards and the model's y upwards: (tl, bl, br) is counter-clockwise seen from +z.
    front = np.concatenate([np.stack([tl, bl, br], 1), np.stack([tl, br, tr], 1)])
    rim = boundary_edges(front)
    on_rim = np.zeros(count, bool)
    on_rim[rim.ravel()] = True
    rounds, step = OUTLINE_SMOOTHING
    for _ in range(rounds):  # relax the staircase along the outline (each outline vertex towards its neighbours)
        total = np.zeros_like(xy)
        degree = np.zeros(count)
        for a, b in ((rim[:, 0], rim[:, 1]), (rim[:, 1], rim[:, 0])):
            np.add.at(total, a, xy[b])
            np.add.at(degree, a, 1)
        moving = degree > 0
        xy[moving] += step * (total[moving] / degree[moving, None] - xy[moving])

    distance = cv2.distanceTransform((alpha >= 0.5).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d = _sample(distance, xy)
    d[on_rim] = 0.0
    radius = EDGE_RADIUS_SHARE * size
    edge = np.sqrt(1.0 - (1.0 - np.clip(d / radius, 0.0, 1.0)) ** 2)
    dome = np.sqrt(np.clip(d / max(float(distance.max()), 1e-6), 0.0, 1.0))
    lift = (1.0 - DOME_SHARE) * edge + DOME_SHARE * dome
    if relief is not None:
        lift = lift + RELIEF_SHARE * edge * _sample(relief, xy)
    die_rows, die_cols = np.nonzero(alpha >= 0.5)
    extent = max(np.ptp(die_rows), np.ptp(die_cols)) + 1
    metres_per_px = size_mm / 1000.0 / extent
    z_front = (thickness_mm + puff_mm * lift) / 1000.0

    x = (xy[:, 0] - size / 2) * metres_per_px
    y = (size / 2 - xy[:, 1]) * metres_per_px
    vertices = np.concatenate([np.stack([x, y, z_front], 1), np.stack([x, y, np.zeros(count)], 1)])
    vertices[:, 0] -= (vertices[:, 0].min() + vertices[:, 0].max()) / 2
    vertices[:, 1] -= vertices[:, 1].min()
    back = front[:, ::-1] + count
    a, b = rim[:, 0], rim[:, 1]
    walls = np.concatenate([np.stack([b, a, a + count], 1), np.stack([b, a + count, b + count], 1)])
    faces = np.concatenate([front, back, walls]).astype(np.int64)
    corner = np.full((count, 2), 0.5 / size)  # a texel outside the die-cut: the border colour
    uv = np.concatenate([xy / size, corner])
    return Solid(vertices, faces, uv, np.concatenate([xy, xy]), len(front))


def projection_mask(solid: Solid, size: int) -> np.ndarray:
    """The front faces drawn on the canvas (what the solid covers seen from the front)."""
    canvas = np.zeros((size, size), np.uint8)
    triangles = np.round(solid.canvas_xy[solid.faces[:solid.front_faces]] * 16).astype(np.int32)
    cv2.fillPoly(canvas, list(triangles), 1, cv2.LINE_8, shift=4)
    return canvas > 0


def vertex_colours(solid: Solid, texture: np.ndarray) -> np.ndarray:
    """(V, 3) uint8: the texture at each vertex's UV (the viewer's vertex-coloured copy)."""
    h, w = texture.shape[:2]
    u = np.clip((solid.uv[:, 0] * w).astype(int), 0, w - 1)
    v = np.clip((solid.uv[:, 1] * h).astype(int), 0, h - 1)
    return texture[v, u]


def write_glb(solid: Solid, texture: np.ndarray, path: Path) -> None:
    """The textured solid as glTF binary (one mesh, one PBR material with the front as base colour texture)."""
    import trimesh
    from PIL import Image
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    image = Image.fromarray(texture, "RGB")
    side = 1 << max(6, round(np.log2(max(image.size))))  # a power of two: mipmaps everywhere (WebGL 1)
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    material = PBRMaterial(name="sticker", baseColorTexture=image, metallicFactor=0.0,
                           roughnessFactor=0.55, doubleSided=False)
    # trimesh keeps UVs in OpenGL's convention (v up) and flips them when it writes glTF.
    uv_gl = np.stack([solid.uv[:, 0], 1.0 - solid.uv[:, 1]], axis=1)
    mesh = trimesh.Trimesh(vertices=solid.vertices, faces=solid.faces, process=False,
                           visual=TextureVisuals(uv=uv_gl, material=material))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mesh.export(file_type="glb"))


def write_ply(solid: Solid, texture: np.ndarray, path: Path) -> None:
    """The solid with vertex colours from the texture (what the Plotly viewer draws), in the studio's z-up world
    frame like the relief (x right, z up, the front facing -y, towards a viewer at -y)."""
    import open3d as o3d

    z_up = solid.vertices @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # (x, -z, y): a rotation
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(z_up),
                                     o3d.utility.Vector3iVector(solid.faces.astype(np.int32)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(vertex_colours(solid, texture).astype(np.float64) / 255.0)
    mesh.compute_vertex_normals()
    o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False)
