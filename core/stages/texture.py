"""Texture stage: a UV atlas for the final mesh and a base-colour texture baked from the photos.

``run_texture`` gives every face its own right triangle in a grid of square atlas cells (two faces per cell, a
texel of gutter around each), picks one photo per face (sharp, frontal, close, unoccluded, inside the product's
mask; neighbouring faces prefer the same photo, a few ICM passes in the spirit of Waechter et al. 2014), levels each
photo's colour gain against the others, and samples the chosen photo, blended with the next best few, bilinearly at
every texel. Faces no photo sees
(the capped base) take the mesh's vertex colours; the gutters are filled by dilation so no black shows.
Writes ``RUN/texture/textured.npz`` (vertices, faces, uv; reconstruction frame) and ``RUN/texture/base_color.png``;
with ``texture.normal_map`` also ``RUN/texture/normal.png``, a tangent-space normal map baked from the product's
dense points (``bake_normal_map``; off by default: measured in its config field, it does not beat the mesh's own
smooth normals on the benchmark captures).

Why a cell atlas and not xatlas: xatlas 0.0.11 took 72.8 s to chart and pack a 100k-face mesh on this 2-core machine
(81 s with max_iterations=1), above the stage's 60 s budget on its own; the cell atlas is instant and gives every
face ~18 texels at balanced (2048², 100k faces), more than the ~5 photo pixels a face covers in a 1024 px photo.
Its cost is a seam at every face, hidden by the gutters and the dilation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from core import advice
from core.artifacts import ISOLATION_POINTS, TEXTURE_BASE_COLOR, TEXTURE_MESH, TEXTURE_NORMAL
from core.config import TextureConfig
from core.geometry import PinholeCamera, camera_rays, mesh_silhouettes, sample_image
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.stages import StageOutput

logger = logging.getLogger(__name__)

_GUTTER = 1
"""Texels between a face's triangle and its cell's border / its cell-mate (bilinear lookups stay on the face)."""
_MIN_CELL = 6
"""Smallest cell side in texels; below it the atlas grows to the next power of two (up to 8192)."""
_SMOOTH_WEIGHT = 0.3
"""ICM pairwise weight, as a share of a face's best data score per neighbour on another photo (0.3 keeps labels
in patches without letting a grazing view win)."""
_ICM_PASSES = 4
_MIN_COS = 0.1
"""Views seeing a face at more than ~84° from its normal are not used (smeared texels)."""
_VISIBLE_SLACK = 0.01
"""A ray to a face's centre may stop this share of the distance short of it and still count as reaching it (the
mesh's own bumps near the face; soup can, balanced: 1e-3 left 24.0 % of the faces unseen, 1e-2 22.3 %, 3e-2
14.5 % but novel-view PSNR fell 21.10 -> 20.95 dB: the rest are inner folds no photo sees)."""
_BLEND_VIEWS = 5
_BLEND_MIN_SHARE = 0.3
"""Photos blended per face (weighted by score): the chosen one and up to four others scoring at least 0.3 of it.
Blending averages out the photos' view-dependent shine and the small misregistration the mesh's error leaves
(novel views, soup can, balanced, vertex colours 21.37 dB: 1 photo 21.24 dB, 3 at 0.5 22.62, 4 at 0.5 22.91,
5 at 0.3 23.10; the rest of the error is the lid's geometry, which no texture fixes)."""
_OUTLINE_MARGIN = 0.01
"""A photo may colour a face inside its mask, or more than this share of the image diagonal inside the mesh's own
outline in it: an untrusted mask that lost part of the product (soup turntable on a textured backdrop: recall 0.77-0.92)
no longer leaves those faces to grazing views or unseen. Measured (balanced, novel-view PSNR of the textured model; 0,
0.005, 0.01, 0.02): soup turntable textured backdrop 20.94, -, 21.33, 21.17 dB; FUZE turntable 23.46, 23.61, 23.78,
23.93 (faces no photo sees 37 % -> 3.9 % at 0.01); soup orbit 29.02, 28.32, 29.03, 29.02; cracker box 31.03, 30.35,
31.11, 31.05 (0.005 lets the backdrop onto the edges where the mesh bulges)."""
_OUTLINE_STEP = 2
"""The mesh's outline is ray-cast at every second pixel (a quarter of the rays; the margin is ~6 of them)."""
_GAIN_CLIP = (0.6, 1.6)
"""Per-photo colour gains outside this are not trusted (a wrong match, not exposure)."""
_NORMAL_NEIGHBOURS = 8
"""Dense points whose normals are averaged at a texel of the normal map (one point's normal is noisy)."""
_NORMAL_REACH = 4.0
"""A texel takes the dense normals only when its nearest dense point is within this many of the cloud's median
point spacings; farther (the capped base, a hole the mesh bridged) it keeps the mesh's own normal (flat texel)."""
FLAT_NORMAL = (128, 128, 255)
"""The tangent-space normal (0, 0, 1) as 8-bit RGB: the mesh's own shading normal."""


@dataclass
class TextureResult(StageOutput):
    """A UV-mapped mesh and its base-colour atlas, in the reconstruction (SfM) frame."""

    vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """(N, 3) float64."""
    faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    """(M, 3) int."""
    uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """(N, 2) in [0, 1], glTF convention: uv[:, 1] = 0 is the image's top row."""
    base_color: Path | None = None
    """The atlas PNG (square, power of two)."""
    normal_map: Path | None = None
    """The tangent-space normal map baked from the dense surface (PNG, the atlas's size), when asked for."""


@dataclass
class DenseSurface:
    """The dense surface a normal map is baked from: oriented points, in the reconstruction frame."""

    points: np.ndarray
    """(P, 3) float."""
    normals: np.ndarray
    """(P, 3) unit."""


def load_dense_surface(run_dir: Path) -> DenseSurface | None:
    """The product's fused points with their normals (``RUN/isolation/points.ply``), None without them."""
    import open3d as o3d

    path = ISOLATION_POINTS.path(run_dir)
    if not path.is_file():
        return None
    cloud = o3d.io.read_point_cloud(str(path))
    if not cloud.has_normals() or len(cloud.points) < _NORMAL_NEIGHBOURS:
        return None
    return DenseSurface(np.asarray(cloud.points, np.float64), np.asarray(cloud.normals, np.float64))


def run_texture(mesh, scene: SparseScene, masks, run_dir: Path, config: TextureConfig,
                progress: StageProgress = no_progress) -> TextureResult:
    """Unwrap ``mesh`` (a MeshResult) and bake its base colour from the scene's photos into ``RUN/texture/``."""
    if not config.enabled:
        return TextureResult(metrics={"textured": 0})
    if mesh is None or mesh.mesh is None or len(mesh.mesh.triangles) == 0:
        return TextureResult(ok=False, failure=advice.TEXTURE_NO_MESH)
    dense = load_dense_surface(run_dir) if config.normal_map else None
    if config.normal_map and dense is None:
        logger.warning("texture: no dense points with normals in %s, no normal map", ISOLATION_POINTS.run_path)
    result = bake_texture(mesh.mesh, scene, masks, TEXTURE_BASE_COLOR.path(run_dir), config.size, config.max_views,
                          progress, dense=dense, normal_png=TEXTURE_NORMAL.path(run_dir))
    np.savez_compressed(TEXTURE_MESH.path(run_dir), vertices=result.vertices, faces=result.faces, uv=result.uv)
    result.artifacts = [TEXTURE_MESH, TEXTURE_BASE_COLOR, *([TEXTURE_NORMAL] if result.normal_map else [])]
    result.findings = advice.texture_findings(result.metrics)
    progress(1.0, "texture ready")
    return result


def bake_texture(o3d_mesh, scene: SparseScene, masks, png: Path, size: int, max_views: int = 0,
                 progress: StageProgress = no_progress, *, dense: DenseSurface | None = None,
                 normal_png: Path | None = None) -> TextureResult:
    """Lay out the cell atlas of ``o3d_mesh`` (an Open3D mesh in the reconstruction frame, vertex colours for the
    faces no photo sees) and bake its base colour from the scene's photos into ``png`` (``size`` a side, grown when
    the faces would get too few texels); with ``dense`` and ``normal_png``, also a tangent-space normal map
    (``bake_normal_map``). The texture stage's bake; the asset stage re-bakes decimated variants."""
    start = time.perf_counter()
    V = np.asarray(o3d_mesh.vertices, dtype=np.float64)
    F = np.asarray(o3d_mesh.triangles, dtype=np.int64)
    vcol = np.asarray(o3d_mesh.vertex_colors) if o3d_mesh.has_vertex_colors() else np.full((len(V), 3), 0.7)

    progress(0.05, "laying out the texture atlas")
    size, cell = atlas_layout(len(F), size)
    uv, texel_face, texel_bary, texel_rc = _cell_atlas(len(F), size, cell)

    progress(0.15, "choosing a photo for every face")
    views = list(range(len(scene.cameras)))
    if max_views and len(views) > max_views:
        views = list(np.linspace(0, len(views) - 1, max_views).round().astype(int))
    cameras = [scene.cameras[i] for i in views]
    # Every mask keeps photos off the faces outside it, trusted or not, unless the face lies well inside the mesh's
    # own outline there (``_OUTLINE_MARGIN``). Measured before that rule (balanced, novel-view PSNR): with only
    # trusted masks the FUZE turntable's faces with no photo fell from 37 % to 0.7 % but PSNR from 23.5 to 21.9 dB
    # (the backdrop at its edges); the outline rule takes them to 3.9 % and PSNR to 23.8 dB.
    photo_masks = [masks.mask_for(scene.photos[i]) if masks is not None and masks.ok else None for i in views]
    scores, centre_colors = _face_scores(V, F, cameras, [scene.image_paths[i] for i in views], photo_masks)
    labels = _smooth_labels(scores, _face_neighbours(F))
    seen = scores[np.arange(len(F)), labels] > 0
    labels[~seen] = -1

    progress(0.45, "levelling colours between photos")
    gains = _colour_gains(scores, centre_colors)

    progress(0.55, "baking the texture")
    weights = _blend_weights(scores, labels)
    atlas = np.zeros((size, size, 3), np.float32)
    atlas_weight = np.zeros((size, size), np.float32)
    tri = V[F]
    points = np.einsum("nk,nkd->nd", texel_bary, tri[texel_face])
    texel_label = labels[texel_face]
    for k, (camera, path) in enumerate(zip(cameras, [scene.image_paths[i] for i in views], strict=True)):
        sel = np.flatnonzero(weights[texel_face, k] > 0)
        if len(sel) == 0:
            continue
        image = _read_rgb(path)
        pix, _ = camera.project(points[sel])
        w = weights[texel_face[sel], k]
        rows, cols = texel_rc[sel, 0], texel_rc[sel, 1]
        # Each texel belongs to one face, so (rows, cols) has no repeats within a photo: plain += is safe.
        atlas[rows, cols] += _bilinear(image, pix[:, 0] - 0.5, pix[:, 1] - 0.5) * gains[k] * w[:, None]
        atlas_weight[rows, cols] += w
        progress(0.55 + 0.3 * (k + 1) / len(cameras), f"baked photo {k + 1} of {len(cameras)}")
    filled = atlas_weight > 0
    atlas[filled] /= atlas_weight[filled, None]
    unseen = np.flatnonzero(texel_label < 0)
    if len(unseen):  # faces no photo sees (the capped base): the mesh's colours, so nothing is black
        colours = np.einsum("nk,nkd->nd", texel_bary[unseen], vcol[F[texel_face[unseen]]]) * 255.0
        atlas[texel_rc[unseen, 0], texel_rc[unseen, 1]] = colours
        filled[texel_rc[unseen, 0], texel_rc[unseen, 1]] = True
    progress(0.9, "filling the gutters")
    atlas = _dilate_fill(np.clip(atlas, 0, 255).astype(np.uint8), filled, iterations=cell)

    png.parent.mkdir(parents=True, exist_ok=True)
    vertices = tri.reshape(-1, 3)
    faces = np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)
    if not cv2.imwrite(str(png), cv2.cvtColor(atlas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {png}")
    normal_metrics: dict = {}
    if dense is not None and normal_png is not None:
        progress(0.95, "baking the normal map")
        normal_metrics = bake_normal_map(vertices, faces, uv, size, cell, dense, normal_png, flat_faces=~seen,
                                         texels=(texel_face, texel_bary, texel_rc))
    metrics = {
        "textured": 1,
        "texture_size": size,
        "cell_texels": cell,
        "faces": len(F),
        "views_used": len(np.unique(labels[labels >= 0])),
        "unseen_faces": int((~seen).sum()),
        "unseen_share": round(float((~seen).mean()), 4),
        "gain_min": round(float(gains.min()), 3),
        "gain_max": round(float(gains.max()), 3),
        **normal_metrics,
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("texture: %d² atlas, %d faces, %d unseen, %.1f s", size, len(F), metrics["unseen_faces"],
                metrics["seconds"])
    return TextureResult(metrics=metrics, vertices=vertices, faces=faces, uv=uv, base_color=png.resolve(),
                         normal_map=normal_png.resolve() if normal_metrics else None)


def bake_normal_map(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, size: int, cell: int,
                    dense: DenseSurface, png: Path, *, flat_faces: np.ndarray | None = None,
                    texels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Bake the dense surface's normals into a tangent-space normal map ``png`` for a cell-atlas mesh (``vertices``,
    ``faces``, ``uv`` as ``bake_texture`` returns them: one vertex per face corner), and return its metrics.

    Each texel takes the mean normal of the dense points nearest its point on the face, written in the frame a glTF
    viewer shades that point with (``tangent_frames``): x along +u, y up the image (-v, glTF's "+Y is up"), z the
    interpolated smooth vertex normal; RGB = (n + 1) / 2. ``flat_faces`` (the faces no photo sees: the capped base)
    and texels with no dense point near stay flat; the gutters are filled by dilation like the base colour's.
    """
    start = time.perf_counter()
    if texels is None:
        _, texel_face, texel_bary, texel_rc = _cell_atlas(len(faces), size, cell)
    else:
        texel_face, texel_bary, texel_rc = texels
    T, B, N = tangent_frames(vertices, faces, uv, texel_face, texel_bary)
    points = np.einsum("nk,nkd->nd", texel_bary, vertices[faces[texel_face]])
    dense_normal, reached = _dense_normals(dense, points, N)
    if flat_faces is not None:
        reached &= ~flat_faces[texel_face]
    local = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    d = dense_normal[reached]
    local[reached] = np.stack([(d * T[reached]).sum(1), (d * B[reached]).sum(1), (d * N[reached]).sum(1)], 1)
    local /= np.maximum(np.linalg.norm(local, axis=1, keepdims=True), 1e-12)
    image = np.zeros((size, size, 3), np.uint8)
    image[texel_rc[:, 0], texel_rc[:, 1]] = np.clip(np.floor((local + 1.0) * 127.5 + 0.5), 0, 255)
    filled = np.zeros((size, size), bool)
    filled[texel_rc[:, 0], texel_rc[:, 1]] = True
    image = _dilate_fill(image, filled, iterations=cell)
    png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {png}")
    angle = np.degrees(np.arccos(np.clip(local[reached, 2], -1, 1)))
    metrics = {
        "normal_map": 1,
        "normal_reached_share": round(float(reached.mean()), 4),
        "normal_mean_tilt_deg": round(float(angle.mean()), 2) if len(angle) else 0.0,
        "normal_seconds": round(time.perf_counter() - start, 2),
    }
    logger.info("normal map: %d² texels, %.1f %% from the dense surface, mean tilt %.1f°, %.1f s", size,
                100 * metrics["normal_reached_share"], metrics["normal_mean_tilt_deg"], metrics["normal_seconds"])
    return metrics


def tangent_frames(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, face: np.ndarray, bary: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, B, N), each (n, 3) unit, at points ``bary`` of faces ``face``: the tangent frame a glTF viewer shades with
    when the file has no TANGENT attribute. N: the interpolated vertex normal the asset writes
    (``core.stages.asset.smooth_normals``); T: the face's dP/du made orthogonal to N; B = N x T, which on the cell
    atlas's unmirrored charts points up the image (-v, glTF's uv origin being the top-left)."""
    from core.stages.asset import smooth_normals

    vn = smooth_normals(vertices, faces)
    N = np.einsum("nk,nkd->nd", bary, vn[faces[face]])
    N /= np.maximum(np.linalg.norm(N, axis=1, keepdims=True), 1e-12)
    tri, tri_uv = vertices[faces], uv[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    d1, d2 = tri_uv[:, 1] - tri_uv[:, 0], tri_uv[:, 2] - tri_uv[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    safe = np.where(np.abs(det) > 1e-20, det, 1e-20)
    dp_du = (d2[:, 1, None] * e1 - d1[:, 1, None] * e2) / safe[:, None]
    T = dp_du[face]
    T = T - N * (T * N).sum(1, keepdims=True)
    T /= np.maximum(np.linalg.norm(T, axis=1, keepdims=True), 1e-12)
    return T, np.cross(N, T), N


def shading_normals(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, face: np.ndarray, bary: np.ndarray,
                    normal_map: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) unit normals a glTF viewer shades the points ``bary`` of faces ``face`` with: the interpolated vertex
    normal, tilted by ``normal_map`` (an RGB uint8 tangent-space map, sampled bilinearly at the points' uv) if given."""
    T, B, N = tangent_frames(vertices, faces, uv, face, bary)
    if normal_map is None:
        return N
    t = np.einsum("nk,nkd->nd", bary, uv[faces[face]])
    side_y, side_x = normal_map.shape[:2]
    local = _bilinear(normal_map, t[:, 0] * side_x - 0.5, t[:, 1] * side_y - 0.5) / 127.5 - 1.0
    out = local[:, :1] * T + local[:, 1:2] * B + local[:, 2:] * N
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cell_atlas_mesh(V: np.ndarray, F: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The cell-atlas layout of a mesh without baking: vertices (one per face corner), faces, uv, atlas side and
    cell side, as ``bake_texture`` lays them out (``bake_normal_map`` takes them)."""
    size, cell = atlas_layout(len(F), size)
    uv = _cell_atlas(len(F), size, cell)[0]
    vertices = np.asarray(V, np.float64)[np.asarray(F)].reshape(-1, 3)
    return vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3), uv, size, cell


def _dense_normals(dense: DenseSurface, points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) mean normal of the ``_NORMAL_NEIGHBOURS`` dense points nearest each of ``points`` (each point's normal
    turned to the side of ``reference``, the mesh's normal there: fused normals can be flipped), and whether the
    nearest dense point is within ``_NORMAL_REACH`` point spacings."""
    import open3d as o3d

    tensor = o3d.core.Tensor(np.asarray(dense.points, np.float32))
    search = o3d.core.nns.NearestNeighborSearch(tensor)
    search.knn_index()
    spacing_index, spacing_d2 = search.knn_search(tensor, 2)
    spacing = float(np.median(np.sqrt(spacing_d2.numpy()[:, 1])))
    normals = np.asarray(dense.normals, np.float64)
    out = np.empty_like(reference)
    reached = np.empty(len(points), bool)
    chunk = 1 << 20
    for begin in range(0, len(points), chunk):
        end = min(begin + chunk, len(points))
        index, d2 = search.knn_search(o3d.core.Tensor(points[begin:end].astype(np.float32)), _NORMAL_NEIGHBOURS)
        near = normals[index.numpy()]
        ref = reference[begin:end]
        near *= np.where((near * ref[:, None]).sum(2, keepdims=True) < 0, -1.0, 1.0)
        mean = near.sum(1)
        out[begin:end] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        reached[begin:end] = np.sqrt(d2.numpy()[:, 0]) <= _NORMAL_REACH * spacing
    return out, reached




def load_textured(run_dir: Path) -> TextureResult:
    """The textured mesh a finished texture stage wrote into ``run_dir``."""
    with np.load(TEXTURE_MESH.path(run_dir)) as data:
        vertices, faces, uv = data["vertices"], data["faces"], data["uv"]
    normal = TEXTURE_NORMAL.path(run_dir)
    return TextureResult(artifacts=[TEXTURE_MESH, TEXTURE_BASE_COLOR, *([TEXTURE_NORMAL] if normal.is_file() else [])],
                         vertices=vertices, faces=faces, uv=uv, base_color=TEXTURE_BASE_COLOR.path(run_dir).resolve(),
                         normal_map=normal.resolve() if normal.is_file() else None)


# --- atlas -----------------------------------------------------------------------------------------------------


def atlas_layout(num_faces: int, size: int) -> tuple[int, int]:
    """(atlas side, cell side) in texels: two faces per square cell, the atlas a power of two."""
    size = int(2 ** np.ceil(np.log2(max(size, 16))))
    while True:
        per_side = int(np.ceil(np.sqrt(np.ceil(num_faces / 2))))
        cell = size // max(per_side, 1)
        if cell >= _MIN_CELL or size >= 8192:
            return size, max(cell, 3)
        size *= 2


def atlas_capacity(size: int) -> int:
    """The most faces an atlas of ``size`` texels a side holds without growing (``atlas_layout``)."""
    return 2 * (size // _MIN_CELL) ** 2


def _cell_triangles(cell: int) -> np.ndarray:
    """(2, 3, 2) texel-space corners (x, y) of the two triangles of a cell, each a gutter away from the other."""
    g, s = _GUTTER, cell
    # Corners in the order that runs counter-clockwise with v up (as the face runs about its outward normal): the
    # charts are not mirrored, so every glTF viewer's tangent frame (MikkTSpace, or the UV-gradient tangent with
    # bitangent = normal x tangent) agrees on the normal map's green = up in the image (bake_normal_map).
    lower = [(g, g), (g, s - 2 * g), (s - 2 * g, g)]
    upper = [(s - g, s - g), (s - g, 2 * g), (2 * g, s - g)]
    return np.array([lower, upper], np.float64)


def _cell_atlas(num_faces: int, size: int, cell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """UVs of every face corner (3M, 2) and, per covered texel: its face, barycentrics (T, 3) and (row, col)."""
    per_side = size // cell
    corners = _cell_triangles(cell)
    # Texel centres inside each template triangle (the same in every cell), and their barycentrics.
    ys, xs = np.mgrid[0:cell, 0:cell] + 0.5
    template = []
    for tri in corners:
        a, b, c = tri
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        lam = np.linalg.solve(m, np.stack([xs.ravel() - a[0], ys.ravel() - a[1]]))
        bary = np.stack([1 - lam[0] - lam[1], lam[0], lam[1]], 1)
        # Texels whose centre is up to half a texel outside the triangle are baked too (bilinear lookups read them);
        # no more, so a texel never belongs to both faces of a cell.
        inside = bary.min(1) > -0.5 / max(cell - 3 * _GUTTER, 1)
        bary = np.clip(bary[inside], 0, None)
        bary /= bary.sum(1, keepdims=True)
        template.append((ys.ravel()[inside].astype(np.int64), xs.ravel()[inside].astype(np.int64), bary))
    face = np.arange(num_faces)
    cell_index, half = face // 2, face % 2
    cell_row, cell_col = cell_index // per_side, cell_index % per_side
    uv = np.empty((num_faces, 3, 2))
    uv[:] = corners[half]
    uv[:, :, 0] += (cell_col * cell)[:, None]
    uv[:, :, 1] += (cell_row * cell)[:, None]
    uv = (uv / size).reshape(-1, 2)
    faces_out, bary_out, rc_out = [], [], []
    for h in (0, 1):
        fs = face[half == h]
        rows, cols, bary = template[h]
        faces_out.append(np.repeat(fs, len(rows)))
        bary_out.append(np.tile(bary, (len(fs), 1)))
        rc_out.append(np.stack([(cell_row[fs, None] * cell + rows).ravel(), (cell_col[fs, None] * cell + cols).ravel()],
                               1))
    return uv, np.concatenate(faces_out), np.concatenate(bary_out), np.concatenate(rc_out)


def _dilate_fill(image: np.ndarray, filled: np.ndarray, iterations: int) -> np.ndarray:
    """Grow the filled texels' colours into the empty ones (gutters), then give anything left the mean colour."""
    image = image.copy()
    known = filled.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(max(iterations, 2)):
        if known.all():
            break
        blurred = cv2.blur(image.astype(np.float32) * known[..., None], (3, 3))
        weight = cv2.blur(known.astype(np.float32), (3, 3))
        grow = (known == 0) & (weight > 0)
        image[grow] = (blurred[grow] / weight[grow, None]).round().astype(np.uint8)
        known = cv2.dilate(known, kernel)
    if not known.all():
        image[known == 0] = image[filled].mean(0).astype(np.uint8) if filled.any() else 180
    return image


# --- view selection ---------------------------------------------------------------------------------------------


def _face_scores(V: np.ndarray, F: np.ndarray, cameras: list[PinholeCamera], paths: list[Path],
                 masks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """(M, V) score of each photo for each face (0 = unusable) and (M, V, 3) the face centre's colour there.

    Score = the face's area in the photo's pixels (resolution and closeness) times the cosine between its normal and
    the ray (frontality); 0 when the face is turned away, outside the photo, occluded (a ray from the camera to the
    face's centre hits another face first) or outside both the product's mask and the mesh's own outline shrunk by
    ``_OUTLINE_MARGIN``.
    """
    import open3d as o3d

    tri = V[F]
    centre = tri.mean(1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-18)
    raycast = o3d.t.geometry.RaycastingScene()
    raycast.add_triangles(o3d.core.Tensor(V.astype(np.float32)), o3d.core.Tensor(F.astype(np.uint32)))
    scores = np.zeros((len(F), len(cameras)), np.float32)
    colours = np.zeros((len(F), len(cameras), 3), np.float32)
    outlines = mesh_silhouettes(V, F, cameras, step=_OUTLINE_STEP) if any(m is not None for m in masks) else []
    for k, camera in enumerate(cameras):
        ray = centre - camera.center
        dist = np.linalg.norm(ray, axis=1)
        cos = -(normal * ray).sum(1) / np.maximum(dist, 1e-18)
        pix, z = camera.project(centre)
        ok = (cos > _MIN_COS) & (z > 0) & (pix[:, 0] >= 1) & (pix[:, 1] >= 1) & \
             (pix[:, 0] < camera.width - 1) & (pix[:, 1] < camera.height - 1)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            continue
        if masks[k] is not None:
            mask = masks[k]
            r = np.clip(pix[idx, 1].astype(int), 0, mask.shape[0] - 1)
            c = np.clip(pix[idx, 0].astype(int), 0, mask.shape[1] - 1)
            idx = idx[mask[r, c] | _inside_outline(outlines[k], camera, pix[idx])]
        rays = np.concatenate([np.broadcast_to(camera.center, (len(idx), 3)), ray[idx]], 1).astype(np.float32)
        hit = raycast.cast_rays(o3d.core.Tensor(rays))
        t_hit, prim = hit["t_hit"].numpy(), hit["primitive_ids"].numpy().astype(np.int64)
        visible = (prim == idx) | (t_hit > 1 - _VISIBLE_SLACK)  # the direction reaches the centre at t = 1
        idx = idx[visible]
        corner_pix = np.stack([camera.project(tri[idx, j])[0] for j in range(3)], 1)
        e1, e2 = corner_pix[:, 1] - corner_pix[:, 0], corner_pix[:, 2] - corner_pix[:, 0]
        area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        scores[idx, k] = area * cos[idx]
        colours[idx, k] = _bilinear(_read_rgb(paths[k]), pix[idx, 0] - 0.5, pix[idx, 1] - 0.5)
    return scores, colours


def _inside_outline(outline: np.ndarray, camera: PinholeCamera, pix: np.ndarray) -> np.ndarray:
    """Whether each pixel lies more than ``_OUTLINE_MARGIN`` of the image diagonal inside ``outline`` (the mesh's
    silhouette in ``camera`` at every ``_OUTLINE_STEP``-th pixel)."""
    radius = max(1, round(_OUTLINE_MARGIN * np.hypot(camera.width, camera.height) / _OUTLINE_STEP))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    inner = cv2.erode(outline.astype(np.uint8), disc) > 0
    r = np.clip((pix[:, 1] / _OUTLINE_STEP).astype(int), 0, inner.shape[0] - 1)
    c = np.clip((pix[:, 0] / _OUTLINE_STEP).astype(int), 0, inner.shape[1] - 1)
    return inner[r, c]


def _face_neighbours(F: np.ndarray) -> np.ndarray:
    """(M, 3) the face across each edge, -1 at a border (or a non-manifold edge)."""
    M = len(F)
    edges = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    owner = np.tile(np.arange(M), 3)
    slot = np.repeat(np.arange(3), M)
    order = np.lexsort((key[:, 1], key[:, 0]))
    k = key[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    out = np.full((M, 3), -1, np.int64)
    a, b = order[:-1][same], order[1:][same]
    out[owner[a], slot[a]] = owner[b]
    out[owner[b], slot[b]] = owner[a]
    return out


def _smooth_labels(scores: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Best photo per face, then ICM passes: data cost 1 - score/best, plus a cost per neighbour on another photo."""
    best = scores.max(1, keepdims=True)
    data = 1.0 - scores / np.maximum(best, 1e-12)
    data[scores <= 0] = 1e3  # never a photo that cannot see the face
    labels = data.argmin(1)
    rng = np.random.default_rng(0)
    has = neighbours >= 0
    for _ in range(_ICM_PASSES):
        votes = np.zeros_like(data)
        for j in range(3):
            rows = np.flatnonzero(has[:, j])
            np.add.at(votes, (rows, labels[neighbours[rows, j]]), 1.0)
        cost = data + _SMOOTH_WEIGHT * (has.sum(1, keepdims=True) - votes)
        update = rng.random(len(labels)) < 0.5  # half the faces at a time: synchronous ICM oscillates
        labels = np.where(update, cost.argmin(1), labels)
    return labels


def _blend_weights(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M, V) blending weight of each photo for each face: the smoothed label's photo plus up to
    ``_BLEND_VIEWS - 1`` others scoring at least ``_BLEND_MIN_SHARE`` of it, weighted by score; 0 elsewhere."""
    weights = np.zeros_like(scores)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) == 0:
        return weights
    ref = scores[rows, labels[rows]]
    order = np.argsort(-scores[rows], axis=1)[:, :_BLEND_VIEWS]
    for j in range(order.shape[1]):
        k = order[:, j]
        s = scores[rows, k]
        keep = (s > 0) & (s >= _BLEND_MIN_SHARE * ref)
        weights[rows[keep], k[keep]] = s[keep]
    weights[rows, labels[rows]] = np.maximum(ref, 1e-12)  # the chosen photo always takes part
    return weights


def _colour_gains(scores: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(V, 3) per-photo, per-channel gain that brings each photo's colours to the mean of the photos seeing the same
    faces (exposure and white balance differ per photo): the median ratio over the faces several photos see."""
    seen = scores > 0
    multi = np.flatnonzero(seen.sum(1) >= 2)
    gains = np.ones((scores.shape[1], 3), np.float32)
    if len(multi) < 50:
        return gains
    s, c = seen[multi], colours[multi]
    mean = (c * s[..., None]).sum(1) / s.sum(1)[:, None]
    for k in range(scores.shape[1]):
        rows = np.flatnonzero(s[:, k] & (c[:, k].min(1) > 8))
        if len(rows) >= 30:
            gains[k] = np.clip(np.median(mean[rows] / c[rows, k], axis=0), *_GAIN_CLIP)
    return gains


# --- images and rendering ---------------------------------------------------------------------------------------


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"could not read the photo {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, 3) float32 bilinear samples at float pixel coordinates (integer = pixel centre), clamped at borders."""
    if len(x) == 0:
        return np.zeros((0, 3), np.float32)
    return sample_image(image.astype(np.float32), x + 0.5, y + 0.5)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, camera: PinholeCamera, *, uv: np.ndarray | None = None,
                texture: np.ndarray | None = None, vertex_colors: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast a mesh from ``camera``: (H, W, 3) float32 RGB in 0-255 and the (H, W) bool hit mask.

    Colour from ``uv`` + ``texture`` (glTF v-down UVs, RGB uint8 atlas) or from ``vertex_colors`` (0-1 RGB).
    """
    import open3d as o3d

    raycast = o3d.t.geometry.RaycastingScene()
    raycast.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                          o3d.core.Tensor(np.asarray(faces, np.uint32)))
    rays = camera_rays(camera)
    hit = raycast.cast_rays(o3d.core.Tensor(rays))
    prim = hit["primitive_ids"].numpy().astype(np.int64)
    ok = np.isfinite(hit["t_hit"].numpy())
    idx = np.flatnonzero(ok)
    b = hit["primitive_uvs"].numpy()[idx]
    w = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], 1)
    corners = np.asarray(faces)[prim[idx]]
    out = np.zeros((len(rays), 3), np.float32)
    if uv is not None and texture is not None:
        t = np.einsum("nk,nkd->nd", w, np.asarray(uv)[corners])
        size_y, size_x = texture.shape[:2]
        out[idx] = _bilinear(texture, t[:, 0] * size_x - 0.5, t[:, 1] * size_y - 0.5)
    elif vertex_colors is not None:
        out[idx] = np.einsum("nk,nkd->nd", w, np.asarray(vertex_colors)[corners]) * 255.0
    return out.reshape(camera.height, camera.width, 3), ok.reshape(camera.height, camera.width)
