"""Mesh stage: meshing, cleanup, decimation and the review exports (PLY, GLB, OBJ with vertex colours).

``run_mesh`` runs Open3D's screened Poisson reconstruction on the product's oriented points, trims the surface
Poisson invents far from any point (low octree density), crops to the cloud's bounds, removes small islands,
degenerate/duplicate faces and non-manifold edges, caps the unseen base flat on the support plane, closes every other
hole, decimates to the face budget and transfers colours from the nearest points: the mesh is closed (0 boundary
edges) and the manifest says how much of it is the made-up base. ``export_mesh`` writes the three formats; it is
standalone (the single-photo relief uses it too). Writes ``RUN/mesh/mesh.{ply,glb,obj}``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open3d as o3d

from core import advice
from core.artifacts import MESH_GLB, MESH_OBJ, MESH_PLY, Artifact
from core.config import MeshConfig
from core.geometry import (
    PinholeCamera,
    boundary_cycles,
    boundary_edges,
    boundary_loops,
    silhouette_iou,
    triangulate_polygon,
)
from core.progress import StageProgress, no_progress
from core.stages import StageOutput
from core.stages.isolation import IsolatedCloud

logger = logging.getLogger(__name__)

_DENSITY_QUANTILE = 0.02
"""Poisson vertices with octree density below this quantile are trimmed (surface far from any point)."""
_CROP_MARGIN = 0.03
"""The mesh is cropped to the cloud's bounding box grown by this share of its diagonal."""
_MIN_ISLAND_SHARE = 0.02
"""Connected pieces with fewer faces than this share of the largest piece are removed."""
_DECIMATION_ROOM = 0.999
"""Decimation aims this share of the face budget: the fans closing what its cleaning opens add a few faces (soup can,
balanced: 4), and the budget is a marketplace's limit (Apple's 100k)."""
_COLOR_NEIGHBOURS = 4
"""Cloud points averaged for each vertex colour."""


@dataclass
class MeshResult(StageOutput):
    mesh: o3d.geometry.TriangleMesh | None = field(default=None, repr=False)
    """The final mesh in world coordinates (None when meshing failed)."""


def run_mesh(cloud: IsolatedCloud, run_dir: Path, config: MeshConfig, progress: StageProgress = no_progress,
             trusted_masks: tuple[list[PinholeCamera], list[np.ndarray]] | None = None) -> MeshResult:
    """Mesh the product's cloud and export it as ``RUN/mesh/mesh.{ply,glb,obj}``.

    With ``trusted_masks`` (cameras and the product masks the masks stage trusts), the mesh's silhouettes are
    compared with them: a mesh that disagrees (``advice.MESH_MIN_MASK_AGREEMENT``) is reported as an error, not as
    a good model.
    """
    start = time.perf_counter()
    if not cloud.ok or len(cloud.points) < 100:
        return MeshResult(ok=False, failure=cloud.failure or advice.MESH_TOO_FEW_POINTS)
    colors = cloud.colors.astype(np.float64) / 255.0
    spacing = cloud.voxel_size if cloud.voxel_size > 0 else _mean_spacing(cloud.points)
    points, normals = cloud.points, cloud.normals
    plane = cloud.plane
    close = config.close_base and plane is not None
    # A cloud completed by the visual hull is already closed, base included (the hull stands on the plane).
    from_hull = cloud.silhouettes
    base = _base_points(points, plane, spacing) if close and not from_hull else np.empty((0, 3))
    if len(base):
        # The product stands on the table, so its unseen base is the table inside its footprint: give Poisson
        # that flat base (normals pointing down) instead of letting it guess or leaving a hole.
        points = np.concatenate([points, base])
        normals = np.concatenate([normals, np.tile(-plane[:3], (len(base), 1))])
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.normals = o3d.utility.Vector3dVector(normals)

    # An octree finer than about two point spacings only fits noise, and costs 4x time and faces per level:
    # config.poisson_depth is the cap (measured on a 640 px soup-can capture: depth 7 vs 8 gave F 0.918 vs 0.907
    # at 1% of the diagonal, and a quarter of the time).
    extent = float(np.max(cloud.points.max(0) - cloud.points.min(0)))
    depth = int(np.clip(np.ceil(np.log2(1.1 * extent / (2 * spacing))), 5, config.poisson_depth))
    progress(0.05, "screened Poisson surface")
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            pcd, depth=depth, scale=1.1, linear_fit=False)
    densities = np.asarray(densities)
    poisson_faces = len(mesh.triangles)
    progress(0.45, "trimming")
    if not from_hull:  # a hull-completed cloud has no unsupported regions to trim
        mesh.remove_vertices_by_mask(densities < np.quantile(densities, _DENSITY_QUANTILE))
    lo, hi = points.min(0), points.max(0)
    margin = _CROP_MARGIN * float(np.linalg.norm(hi - lo))
    mesh = mesh.crop(o3d.geometry.AxisAlignedBoundingBox(lo - margin, hi + margin))

    progress(0.55, "cleaning")
    mesh, islands = _clean(mesh)
    if len(mesh.triangles) == 0:
        return MeshResult(ok=False, failure=advice.MESH_EMPTY)
    tolerance = base_tolerance(np.asarray(mesh.vertices), spacing)
    base_cycles = 0
    if close and not from_hull:
        # Poisson's guess at the unseen base (from the base points, partly trimmed) is replaced by a flat cap on the
        # table: a shopper may turn the model over, and the manifest says the base is made up.
        progress(0.6, "capping the base")
        mesh, base_cycles = cap_base(mesh, plane, tolerance)
    # Every other hole (stereo gaps the trim opened, the crop's cuts) is closed too: a shop model has no holes.
    mesh, holes_filled = close_holes(mesh)
    progress(0.7, "decimating")
    mesh, more, more_holes = decimate(mesh, config.target_faces)
    islands, holes_filled = islands + more, holes_filled + more_holes
    progress(0.85, "colouring")
    mesh.vertex_colors = o3d.utility.Vector3dVector(_transfer_colors(np.asarray(mesh.vertices), cloud.points, colors))
    mesh.compute_vertex_normals()

    progress(0.9, "exporting")
    artifacts = export_mesh(mesh, run_dir, (MESH_PLY, MESH_GLB, MESH_OBJ), up=cloud.up)
    loops, open_edges = boundary_loops(np.asarray(mesh.triangles))
    # Closed with every edge on two faces (trimesh's is_watertight). Not Open3D's is_watertight: its self-intersection
    # test took 91 s on the soup can's 100k faces.
    watertight = open_edges == 0 and bool(mesh.is_edge_manifold(allow_boundary_edges=False))
    base_faces = base_cap_faces(np.asarray(mesh.vertices), np.asarray(mesh.triangles), plane, spacing) \
        if close else np.zeros(0, np.int64)
    metrics = {
        "faces": len(mesh.triangles),
        "vertices": len(mesh.vertices),
        "poisson_faces": poisson_faces,
        "poisson_depth": depth,
        "base_points_added": len(base),
        "islands_removed": islands,
        "holes_filled": holes_filled,
        "watertight": int(watertight),
        "holes": loops,
        "boundary_edges": open_edges,
        "closed": int(open_edges == 0),
        # The base no photo sees: capped flat on the support plane (the hull stands on it); texturing and viewers
        # may treat these faces as unseen.
        "base_capped": int(len(base_faces) > 0 and open_edges == 0),
        "base_cycles_capped": base_cycles,
        "base_faces": len(base_faces),
        "base_area_share": round(_area_share(np.asarray(mesh.vertices), np.asarray(mesh.triangles), base_faces), 4),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if trusted_masks is not None and len(trusted_masks[0]) >= MIN_CHECK_MASKS:
        progress(0.95, "checking the mesh against the product masks")
        agreement = silhouette_iou(np.asarray(mesh.vertices), np.asarray(mesh.triangles), *trusted_masks,
                                   step=MASK_CHECK_STEP)
        metrics.update({"mask_agreement_mean": round(agreement["mean"], 4),
                        "mask_agreement_min": round(agreement["min"], 4), "masks_checked": len(trusted_masks[0])})
    findings = advice.mesh_findings(metrics)
    logger.info("mesh: %d faces, %d holes, watertight=%s, %.1f s", metrics["faces"], loops, watertight,
                metrics["seconds"])
    progress(1.0, "mesh ready")
    return MeshResult(metrics=metrics, findings=findings, artifacts=artifacts, mesh=mesh)


MIN_CHECK_MASKS = 3
"""Trusted masks needed before the mesh is checked against them."""
MASK_CHECK_STEP = 4
"""The check casts every 4th pixel's ray in each direction: cracker box, balanced, mean IoU 0.9273 against 0.9271 on
every pixel, the mesh stage 15.7 s against 24.8 s (24 photos, loaded machine; 7.4 s without the check)."""
BASE_TOLERANCE_SPACINGS = 2.0
"""Faces within this many point spacings of the support plane (or 1 % of the mesh's size, whichever is more:
Poisson's octree is coarser than the spacing on small photos), facing down, are the base cap."""


def base_tolerance(vertices: np.ndarray, spacing: float) -> float:
    """How far from the support plane a vertex still counts as on it (``BASE_TOLERANCE_SPACINGS``)."""
    size = float(np.linalg.norm(np.ptp(vertices, axis=0))) if len(vertices) else 0.0
    return max(BASE_TOLERANCE_SPACINGS * spacing, 0.01 * size)


def base_cap_faces(vertices: np.ndarray, triangles: np.ndarray, plane: np.ndarray, spacing: float) -> np.ndarray:
    """Indices of the faces lying flat on the support plane and facing down (the unseen base, capped)."""
    if len(triangles) == 0:
        return np.zeros(0, np.int64)
    height = vertices @ plane[:3] + plane[3]
    tolerance = base_tolerance(vertices, spacing)
    tri = vertices[triangles]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.maximum(np.linalg.norm(normal, axis=1), 1e-18)
    facing_down = (normal @ plane[:3]) / length < -0.9
    flat = np.abs(height[triangles]).max(1) < tolerance
    return np.flatnonzero(facing_down & flat)


def _area_share(vertices: np.ndarray, triangles: np.ndarray, faces: np.ndarray) -> float:
    if len(triangles) == 0:
        return 0.0
    tri = vertices[triangles]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return float(area[faces].sum() / max(area.sum(), 1e-18))


def _mean_spacing(points: np.ndarray) -> float:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    return float(np.mean(cloud.compute_nearest_neighbor_distance()))


def _base_points(points: np.ndarray, plane: np.ndarray, spacing: float) -> np.ndarray:
    """Points on the support plane filling the product's footprint (the outline of its lowest band, closed)."""
    import cv2

    up = plane[:3]
    height = points @ up + plane[3]
    top = float(np.quantile(height, 0.99))
    low = points[height < height.min() + max(0.05 * top, 3 * spacing)]
    if len(low) < 20:
        return np.empty((0, 3))
    # A 2D raster in the plane: footprint cells, closed (small gaps) and filled (the inside of a ring of walls).
    e1 = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    cell = 2 * spacing
    uv = np.stack([low @ e1, low @ e2], axis=1)
    origin = uv.min(0) - 4 * cell
    ij = np.floor((uv - origin) / cell).astype(int)
    size = ij.max(0) + 5
    if size.max() > 4000:  # footprint absurdly large compared with the spacing: not a standing product
        return np.empty((0, 3))
    raster = np.zeros((size[1], size[0]), np.uint8)
    raster[ij[:, 1], ij[:, 0]] = 255
    raster = cv2.morphologyEx(raster, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    contours, _ = cv2.findContours(raster, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(raster, contours, -1, 255, thickness=cv2.FILLED)
    rows, cols = np.nonzero(raster)
    u = origin[0] + (cols + 0.5) * cell
    v = origin[1] + (rows + 0.5) * cell
    return np.outer(u, e1) + np.outer(v, e2) - plane[3] * up


def _clean(mesh: o3d.geometry.TriangleMesh) -> tuple[o3d.geometry.TriangleMesh, int]:
    """Remove degenerate/duplicate faces, non-manifold edges and small islands; returns the mesh and islands removed."""
    mesh.remove_degenerate_triangles()
    mesh.remove_duplicated_triangles()
    mesh.remove_duplicated_vertices()
    mesh.remove_non_manifold_edges()
    removed = 0
    if len(mesh.triangles):
        labels, sizes, _ = mesh.cluster_connected_triangles()
        labels, sizes = np.asarray(labels), np.asarray(sizes)
        small = sizes < _MIN_ISLAND_SHARE * sizes.max()
        removed = int(small.sum())
        if removed:
            mesh.remove_triangles_by_mask(small[labels])
    mesh.remove_unreferenced_vertices()
    return mesh, removed


def cap_base(mesh: o3d.geometry.TriangleMesh, plane: np.ndarray, tolerance: float
             ) -> tuple[o3d.geometry.TriangleMesh, int]:
    """Cut the mesh at ``tolerance`` above the support plane and close the cut with a flat cap on the plane.

    Vertices under the table are lifted onto it, the faces lying within ``tolerance`` of it are removed, the rims
    left there are moved onto the plane and each is triangulated in it (ear clipping; a fan where the rim's outline
    is not simple), facing down. Returns the mesh and the number of rims capped (0: the mesh does not reach the
    plane, e.g. a product the isolation lifted off it).
    """
    up, offset = plane[:3], plane[3]
    vertices = np.asarray(mesh.vertices).copy()
    height = vertices @ up + offset
    below = height < 0
    vertices[below] -= np.outer(height[below], up)  # nothing of the product is under the table
    height = np.maximum(height, 0.0)
    mesh.vertices = o3d.utility.Vector3dVector(vertices)
    triangles = np.asarray(mesh.triangles)
    # Removing faces makes no edge non-manifold, so no full clean here (it costs ~8 s on a 300k-face mesh).
    mesh.remove_triangles_by_mask((height[triangles] < tolerance).all(axis=1))
    mesh.remove_unreferenced_vertices()
    vertices = np.asarray(mesh.vertices).copy()
    triangles = np.asarray(mesh.triangles)
    height = vertices @ up + offset
    rims = [rim for rim, _ in boundary_cycles(boundary_edges(triangles)) if (height[rim] < tolerance).all()]
    if not rims:
        return mesh, 0
    e1 = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    new_vertices, caps = [], []
    for rim in rims:
        vertices[rim] -= np.outer(height[rim], up)
        # A rim edge a->b runs along its face's winding (most do: boundary_cycles); the cap runs the rim backwards.
        polygon = rim[::-1]
        flat = np.stack([vertices[polygon] @ e1, vertices[polygon] @ e2], axis=1)
        triangles_2d = triangulate_polygon(flat)
        if triangles_2d is not None:
            caps.append(polygon[triangles_2d])
            continue
        centre = len(vertices) + len(new_vertices)
        new_vertices.append(vertices[rim].mean(0))
        caps.append(np.column_stack([polygon, np.roll(polygon, -1), np.full(len(polygon), centre)]))
    all_vertices = np.concatenate([vertices, *([np.array(new_vertices)] if new_vertices else [])])
    capped = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(all_vertices),
                                       o3d.utility.Vector3iVector(np.concatenate([triangles, *caps])))
    return capped, len(rims)


def decimate(mesh: o3d.geometry.TriangleMesh, max_faces: int) -> tuple[o3d.geometry.TriangleMesh, int, int]:
    """Quadric decimation to at most ``max_faces``, keeping the mesh closed; returns (mesh, islands removed, holes
    closed). Vertex colours are kept (decimation averages them). The mesh itself when already within budget."""
    if len(mesh.triangles) <= max_faces:
        return mesh, 0, 0
    mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(_DECIMATION_ROOM * max_faces))
    mesh, islands = _clean(mesh)
    mesh, holes = close_holes(mesh)  # the cleaning removes the non-manifold edges decimation can make
    return mesh, islands, holes


def close_holes(mesh: o3d.geometry.TriangleMesh) -> tuple[o3d.geometry.TriangleMesh, int]:
    """Close every hole with a fan around its rim's centroid; returns the mesh and the number of holes closed.

    One fan per rim cycle (a vertex where two holes touch gets one fan on each side), so every new edge has exactly
    two faces and the mesh is closed in one pass, with no cleaning after it. (Open3D 0.20's tensor ``fill_holes``
    returned garbage vertices and crashed decimation on a test can.)
    """
    triangles = np.asarray(mesh.triangles)
    vertices = np.asarray(mesh.vertices)
    rims = boundary_cycles(boundary_edges(triangles))
    if not rims:
        return mesh, 0
    centres = np.array([vertices[rim].mean(0) for rim, _ in rims])
    fans = []
    for k, (rim, forward) in enumerate(rims):
        # A rim edge a->b runs along its face's winding; its fan face runs it backwards (b, a, centre) to match.
        a, b = rim, np.roll(rim, -1)
        centre = np.full(len(rim), len(vertices) + k)
        fans.append(np.column_stack([np.where(forward, b, a), np.where(forward, a, b), centre]))
    closed = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.concatenate([vertices, centres])),
                                       o3d.utility.Vector3iVector(np.concatenate([triangles, *fans])))
    if mesh.has_vertex_colors():  # a fan's centre takes its rim's mean colour
        colours = np.asarray(mesh.vertex_colors)
        rim_colours = np.array([colours[rim].mean(0) for rim, _ in rims])
        closed.vertex_colors = o3d.utility.Vector3dVector(np.concatenate([colours, rim_colours]))
    return closed, len(rims)


def _transfer_colors(vertices: np.ndarray, points: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Mean colour of the nearest cloud points of each vertex."""
    index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(np.ascontiguousarray(points)))
    index.knn_index()
    k = min(_COLOR_NEIGHBOURS, len(points))
    nearest, _ = index.knn_search(o3d.core.Tensor(np.ascontiguousarray(vertices)), k)
    return colors[nearest.numpy()].mean(axis=1)


def _to_y_up(up: np.ndarray | None) -> np.ndarray:
    """Rotation taking the world's up direction to glTF's +y (z up when ``up`` is None)."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    target = np.array([0.0, 1.0, 0.0])
    axis = np.cross(up, target)
    s, c = np.linalg.norm(axis), float(up @ target)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx  # Rodrigues


def export_mesh(mesh: o3d.geometry.TriangleMesh, run_dir: Path, artifacts: tuple[Artifact, Artifact, Artifact],
                up: np.ndarray | None = None) -> list[Artifact]:
    """Write the mesh as PLY, GLB and OBJ (+ .mtl) at the paths of ``artifacts`` (in that order); returns them.

    PLY and OBJ stay in world coordinates. glTF is y-up by definition, so the GLB is rotated at this boundary so
    that ``up`` (a world direction; z when None, as in synthetic captures and reliefs) becomes +y, and moved to stand
    on y = 0 centred on the y axis; a viewer then shows the product standing where it orbits. Vertex colours go to
    GLB as COLOR_0 and to OBJ as ``v x y z r g b``.
    """
    import trimesh

    ply, glb, obj = (a.path(run_dir) for a in artifacts)
    ply.parent.mkdir(parents=True, exist_ok=True)
    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.triangles)
    has_colors = mesh.has_vertex_colors() and len(mesh.vertex_colors) == len(vertices)
    rgb = np.asarray(mesh.vertex_colors) if has_colors else np.full((len(vertices), 3), 0.7)
    rgba = np.concatenate([np.clip(rgb * 255 + 0.5, 0, 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)

    o3d.io.write_triangle_mesh(str(ply), mesh, write_ascii=False, write_vertex_colors=has_colors)

    y_up = vertices @ _to_y_up(up).T
    if len(y_up):  # viewers orbit the origin: stand the model on y = 0, centred on the y axis
        lo, hi = y_up.min(0), y_up.max(0)
        y_up = y_up - np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    scene_mesh = trimesh.Trimesh(vertices=y_up, faces=faces, vertex_colors=rgba, process=False)
    glb.write_bytes(scene_mesh.export(file_type="glb"))

    mtl = obj.with_suffix(".mtl")
    mtl.write_text("newmtl product\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n", encoding="utf-8")
    with open(obj, "w", encoding="utf-8") as fh:
        fh.write(f"# Product Studio mesh: {len(vertices)} vertices, {len(faces)} faces; colours: v x y z r g b\n")
        fh.write(f"mtllib {mtl.name}\nusemtl product\n")
        np.savetxt(fh, np.concatenate([vertices, rgb], axis=1), fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
        np.savetxt(fh, faces + 1, fmt="f %d %d %d")
    return list(artifacts)
