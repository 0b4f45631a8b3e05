"""Meshing an oriented cloud of a product standing on a table, and exports that reload in other tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import trimesh

from core.artifacts import MESH_GLB, MESH_OBJ, MESH_PLY
from core.config import MeshConfig
from core.geometry import boundary_loops
from core.stages.isolation import IsolatedCloud
from core.stages.mesh import export_mesh, run_mesh

MESH = (MESH_PLY, MESH_GLB, MESH_OBJ)

RADIUS, HEIGHT = 0.04, 0.12


def _can_cloud(spacing: float = 0.002) -> IsolatedCloud:
    """A can's visible surface (side and lid; the base on the table is never seen) with outward normals."""
    rng = np.random.default_rng(0)
    n_side = int(2 * np.pi * RADIUS * HEIGHT / spacing**2)
    a, z = rng.uniform(0, 2 * np.pi, n_side), rng.uniform(0.002, HEIGHT, n_side)
    side = np.stack([RADIUS * np.cos(a), RADIUS * np.sin(a), z], 1)
    side_n = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], 1)
    n_top = int(np.pi * RADIUS**2 / spacing**2)
    r, b = RADIUS * np.sqrt(rng.uniform(0, 1, n_top)), rng.uniform(0, 2 * np.pi, n_top)
    top = np.stack([r * np.cos(b), r * np.sin(b), np.full(n_top, HEIGHT)], 1)
    points = np.concatenate([side, top]) + rng.normal(0, 0.0002, (n_side + n_top, 3))
    normals = np.concatenate([side_n, np.tile([0, 0, 1.0], (n_top, 1))])
    colors = np.where(points[:, 2:3] > HEIGHT / 2, [200, 30, 30], [240, 240, 240]).astype(np.uint8)
    return IsolatedCloud(points=points, colors=colors, normals=normals, voxel_size=spacing,
                         up=np.array([0, 0, 1.0]), plane=np.array([0, 0, 1.0, 0]))


def test_mesh_of_a_can_is_closed_coloured_and_on_budget(tmp_path: Path) -> None:
    result = run_mesh(_can_cloud(), tmp_path, MeshConfig(target_faces=4000, poisson_depth=8))
    assert result.ok, result.failure
    m = result.metrics
    assert 2000 < m["faces"] <= 4000 and m["base_points_added"] > 0
    mesh = result.mesh
    vertices = np.asarray(mesh.vertices)
    # On the can's surface: side vertices at the radius, the rest on the lid or the base.
    radial = np.linalg.norm(vertices[:, :2], axis=1)
    on_surface = (np.abs(radial - RADIUS) < 0.003) | (np.abs(vertices[:, 2] - HEIGHT) < 0.003) | \
                 (np.abs(vertices[:, 2]) < 0.003)
    assert on_surface.mean() > 0.97
    assert vertices[:, 2].min() > -0.004 and vertices[:, 2].max() < HEIGHT + 0.004
    assert m["holes"] == boundary_loops(np.asarray(mesh.triangles))[0] and m["holes"] <= 2
    colors = np.asarray(mesh.vertex_colors)
    assert np.allclose(colors[vertices[:, 2] > 0.9 * HEIGHT].mean(0), [200 / 255, 30 / 255, 30 / 255], atol=0.05)
    assert result.artifacts == list(MESH) and all(a.path(tmp_path).is_file() for a in MESH)


def test_the_can_is_watertight_with_its_unseen_base_capped_flat(tmp_path: Path) -> None:
    result = run_mesh(_can_cloud(), tmp_path, MeshConfig(target_faces=4000, poisson_depth=8))
    m = result.metrics
    assert m["boundary_edges"] == 0 and m["closed"] == 1 and m["watertight"] == 1
    assert m["base_capped"] == 1 and m["base_cycles_capped"] == 1
    vertices, triangles = np.asarray(result.mesh.vertices), np.asarray(result.mesh.triangles)
    assert trimesh.Trimesh(vertices, triangles, process=False).is_watertight
    # The base is the can's footprint on the table (z = 0): about pi r^2 of flat, downward faces.
    tri = vertices[triangles]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    base = (np.abs(tri[:, :, 2]).max(1) < 1e-9) & (cross[:, 2] < 0)
    assert m["base_faces"] >= base.sum() > 0
    assert 0.5 * np.linalg.norm(cross[base], axis=1).sum() == pytest.approx(np.pi * RADIUS**2, rel=0.1)
    assert vertices[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # nothing under the table


def test_every_hole_is_closed_without_a_support_plane(tmp_path: Path) -> None:
    cloud = _can_cloud()
    cloud.plane = None  # no table found: the open bottom is closed like any other hole, and not called a base
    result = run_mesh(cloud, tmp_path, MeshConfig(target_faces=4000, poisson_depth=8))
    m = result.metrics
    assert m["boundary_edges"] == 0 and m["base_capped"] == 0 and m["holes_filled"] >= 1


def test_exports_reload_with_the_same_faces(tmp_path: Path) -> None:
    mesh = o3d.geometry.TriangleMesh.create_box(0.1, 0.2, 0.4).subdivide_midpoint(2)
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertices) / np.array([0.1, 0.2, 0.4]))
    assert export_mesh(mesh, tmp_path, MESH) == list(MESH)
    paths = {a.key: a.path(tmp_path) for a in MESH}
    faces = len(mesh.triangles)

    ply = o3d.io.read_triangle_mesh(str(paths["mesh.ply"]))
    assert len(ply.triangles) == faces and ply.has_vertex_colors()
    assert np.allclose(ply.get_max_bound(), [0.1, 0.2, 0.4])

    glb = trimesh.load(paths["mesh.glb"], force="mesh", process=False)
    assert len(glb.faces) == faces
    # glTF is y-up: the box's height (world z, 0.4) is along y, and the vertex colours came through as COLOR_0.
    assert np.allclose(glb.bounds[1] - glb.bounds[0], [0.1, 0.4, 0.2], atol=1e-6)
    assert np.allclose(glb.bounds[0], [-0.05, 0, -0.1], atol=1e-6)  # standing on y = 0, centred on the y axis
    assert glb.visual.kind == "vertex" and len(glb.visual.vertex_colors) == len(glb.vertices)
    assert glb.visual.vertex_colors[:, :3].std() > 10

    obj = trimesh.load(paths["mesh.obj"], force="mesh", process=False)
    assert len(obj.faces) == faces
    obj3d = o3d.io.read_triangle_mesh(str(paths["mesh.obj"]))  # reads 'v x y z r g b' colours
    assert len(obj3d.triangles) == faces and obj3d.has_vertex_colors()
    expected = np.sort(np.asarray(mesh.vertex_colors), axis=0)
    assert np.allclose(np.sort(np.asarray(obj3d.vertex_colors), axis=0), expected, atol=1e-3)
    assert (tmp_path / "mesh" / "mesh.mtl").is_file()


def test_export_without_colours_and_with_another_up(tmp_path: Path) -> None:
    mesh = o3d.geometry.TriangleMesh.create_box(0.1, 0.2, 0.4)
    export_mesh(mesh, tmp_path, MESH, up=np.array([0, -1.0, 0]))  # e.g. OpenCV camera axes, y down
    glb = trimesh.load(MESH_GLB.path(tmp_path), force="mesh", process=False)
    assert len(glb.faces) == 12
    assert np.allclose(glb.bounds[1] - glb.bounds[0], [0.1, 0.2, 0.4], atol=1e-6)  # y extent stays the 0.2 side


def test_boundary_loops() -> None:
    assert boundary_loops(np.array([[0, 1, 2]])) == (1, 3)
    tetra = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])
    assert boundary_loops(tetra) == (0, 0)
    assert boundary_loops(np.array([[0, 1, 2], [3, 4, 5]])) == (2, 6)


def test_too_few_points_fail_with_reason(tmp_path: Path) -> None:
    cloud = IsolatedCloud(points=np.zeros((10, 3)), colors=np.zeros((10, 3), np.uint8), normals=np.zeros((10, 3)))
    result = run_mesh(cloud, tmp_path, MeshConfig())
    assert not result.ok and "points" in result.failure


@pytest.mark.parametrize("up", [None, np.array([0, 0, 1.0])])
def test_z_up_is_the_default(tmp_path: Path, up: np.ndarray | None) -> None:
    mesh = o3d.geometry.TriangleMesh.create_box(0.1, 0.2, 0.4)
    export_mesh(mesh, tmp_path, MESH, up=up)
    glb = trimesh.load(MESH_GLB.path(tmp_path), force="mesh", process=False)
    assert glb.bounds[1][1] - glb.bounds[0][1] == pytest.approx(0.4)
