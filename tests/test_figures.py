"""Figure builders: the right traces, point counts and caps, on real artefacts and small arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import make_run_folder

from core.geometry import PinholeCamera, boundary_loops, intrinsics_from_fov, look_at
from core.report import figures, runs


def _ring_cameras(n: int) -> list[PinholeCamera]:
    cams = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        R, t = look_at(np.array([3 * np.cos(a), 3 * np.sin(a), 1.0]), np.zeros(3))
        cams.append(PinholeCamera(intrinsics_from_fov(640, 480, 60), R, t, 640, 480))
    return cams


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("run") / "run", num_cameras=5)


def test_sparse_figure_has_one_frustum_per_camera_with_photo_hover(run_dir: Path) -> None:
    sparse = runs.read_sparse_model(run_dir / "sfm" / "model")
    assert len(sparse.cameras) == 5 and len(sparse.points) == 300
    names = [f"photo {i}.jpg" for i in range(5)]
    fig = figures.sparse_figure(sparse, photo_names=names)
    frusta = [t for t in fig.data if t.legendgroup == "cameras"]
    assert len(frusta) == 5
    assert [t.hovertext for t in frusta] == names
    assert sum(t.showlegend for t in frusta) == 1  # one legend entry toggles all cameras
    points = [t for t in fig.data if t.name == "Sparse points"]
    assert len(points) == 1 and len(points[0].x) == 300


def test_frustum_apex_is_camera_centre_and_corners_in_front() -> None:
    cam = _ring_cameras(1)[0]
    lines = figures.frustum_lines(cam, depth=0.5)
    assert np.allclose(lines[0], cam.center)
    corners = lines[1:3]
    assert np.all(cam.world_to_cam(corners)[:, 2] == pytest.approx(0.5))


def test_dense_cloud_is_decimated_to_the_cap() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(250_000, 3))
    colors = rng.integers(0, 255, size=(250_000, 3), dtype=np.uint8)
    fig = figures.dense_figure(points, colors)
    assert len(fig.data) == 1 and len(fig.data[0].x) == figures.MAX_DENSE_POINTS
    small = figures.dense_figure(points[:1000], colors[:1000])
    assert len(small.data[0].x) == 1000


def test_mesh_trace_carries_vertex_colours(run_dir: Path) -> None:
    vertices, triangles, colors = runs.read_mesh(run_dir / "mesh" / "mesh.ply")
    assert colors is not None
    fig = figures.mesh_figure(vertices, triangles, colors)
    (mesh,) = fig.data
    assert isinstance(mesh, go.Mesh3d)
    assert len(mesh.i) == len(triangles) and len(mesh.vertexcolor) == len(vertices)
    assert boundary_loops(triangles)[1] == 0  # a sphere is closed


def test_boundary_edges_count_a_hole() -> None:
    quad = np.array([[0, 1, 2], [0, 2, 3]])
    assert boundary_loops(quad)[1] == 4


def test_scene_figure_toggles_layers_without_dropping_them(run_dir: Path) -> None:
    mesh = runs.read_mesh(run_dir / "mesh" / "mesh.ply")
    dense = runs.read_point_cloud(run_dir / "fusion" / "points.ply")
    sparse = runs.read_sparse_model(run_dir / "sfm" / "model")
    fig = figures.scene_figure(mesh=mesh, dense=dense, sparse=sparse,
                               show={"mesh": True, "dense": False, "sparse": True, "cameras": False})
    by_name = {}
    for trace in fig.data:
        by_name.setdefault(trace.name, []).append(trace.visible)
    assert by_name["Mesh"] == [True]
    assert by_name["Dense points"] == ["legendonly"]
    assert by_name["Sparse points"] == [True]
    assert by_name["Cameras"] == ["legendonly"] * 5


def test_2d_diagnostics_figures(run_dir: Path) -> None:
    depth = np.random.default_rng(1).uniform(1, 2, size=(30, 40)).astype(np.float32)
    depth[0, 0] = np.nan
    fig = figures.depth_view_figure(depth, np.ones_like(depth), np.zeros((30, 40, 3), np.uint8), title="a")
    assert [type(t).__name__ for t in fig.data] == ["Image", "Heatmap", "Heatmap"]
    with_prior = figures.depth_view_figure(depth, np.ones_like(depth), None, prior=depth * 1.01)
    assert [t.name for t in with_prior.data] == ["Depth (camera z)", "Confidence", "Depth prior (aligned)"]
    assert with_prior.data[2].zmin == with_prior.data[0].zmin  # one colour range for depth and prior
    times = figures.stage_times_figure([("capture", 1.0), ("sfm", 5.5)])
    assert list(times.data[0].y) == ["capture", "sfm"]
    hist = figures.histogram_figure([0, 1, 2], [5, 3], "err")
    assert list(hist.data[0].y) == [5, 3]
    names, matrix = runs.read_match_matrix(run_dir / "sfm" / "matches.json")
    heat = figures.match_matrix_figure(names, matrix)
    assert np.asarray(heat.data[0].z).shape == (5, 5)
    fusion = figures.fusion_figure(100, {"dropped_inconsistent": 30, "dropped_background": 5})
    assert list(fusion.data[0].x) == ["kept", "dropped inconsistent", "dropped background"]
    assert runs.read_match_matrix(run_dir / "missing.json") is None


def test_user_names_are_escaped_for_plotly(run_dir: Path) -> None:
    sparse = runs.read_sparse_model(run_dir / "sfm" / "model")
    names = ['<a href="http://x">click</a>.jpg'] * 5
    fig = figures.sparse_figure(sparse, photo_names=names)
    assert all("<a" not in t.hovertext for t in fig.data if t.legendgroup == "cameras")
    heat = figures.match_matrix_figure(["<b>a</b>.jpg"], np.zeros((1, 1)))
    assert list(heat.data[0].x) == ["&lt;b&gt;a&lt;/b&gt;.jpg"]
