"""The ground-truth capture generator: depth, masks, cameras and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.evaluate import SHARED_DATA
from benchmarks.synthetic import (
    CaptureGroundTruth,
    CaptureSpec,
    load_ground_truth,
    read_cameras_json,
    render_capture,
)
from core.geometry import backproject_depth

SMALL = dict(num_views=4, width=160, height=120, image_format="png")


def _mesh_distance(gt: CaptureGroundTruth, points: np.ndarray) -> np.ndarray:
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(gt.mesh_path))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


@pytest.fixture(scope="module")
def orbit(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    return render_capture(CaptureSpec(object="procedural-bottle", **SMALL), tmp_path_factory.mktemp("orbit"))


@pytest.fixture(scope="module")
def turntable(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    spec = CaptureSpec(object="procedural-box", mode="turntable", elevations_deg=(30.0,), **SMALL)
    return render_capture(spec, tmp_path_factory.mktemp("turntable"))


def test_files_written(orbit: CaptureGroundTruth) -> None:
    assert len(orbit.image_names) == 4
    for name in orbit.image_names:
        image = cv2.imread(str(orbit.image_dir / name))
        assert image.shape == (120, 160, 3)
        assert name in orbit.depth_paths and name in orbit.mask_paths
    assert orbit.mesh_path.exists()
    assert orbit.object_diagonal > 0.05


@pytest.mark.parametrize("capture", ["orbit", "turntable"])
def test_product_depth_lies_on_the_object_mesh(capture: str, request: pytest.FixtureRequest) -> None:
    gt: CaptureGroundTruth = request.getfixturevalue(capture)
    for name in gt.image_names:
        mask = gt.load_mask(name)
        points = backproject_depth(gt.load_depth(name), gt.cameras[name], mask)
        assert len(points) > 200
        dist = _mesh_distance(gt, points)
        # float32 ray casting at ~0.5 m: micrometres
        assert np.max(dist) < 1e-4 * gt.object_diagonal * 10
        assert np.median(dist) < 1e-5


def test_masks_match_the_object_depth(orbit: CaptureGroundTruth) -> None:
    for name in orbit.image_names:
        mask = orbit.load_mask(name)
        depth = orbit.load_depth(name)
        assert mask.any()
        assert np.all(np.isfinite(depth[mask]))
        # Off the product, finite depth belongs to the mat/backdrop: farther from the mesh than on it.
        off = ~mask & np.isfinite(depth)
        points = backproject_depth(np.where(off, depth, np.nan), orbit.cameras[name])
        assert np.median(_mesh_distance(orbit, points)) > 1e-3


def test_cameras_json_round_trip(orbit: CaptureGroundTruth, tmp_path: Path) -> None:
    again = load_ground_truth(orbit.root)
    assert again.image_names == orbit.image_names
    for name in orbit.image_names:
        a, b = orbit.cameras[name], again.cameras[name]
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.R, b.R)
        np.testing.assert_allclose(a.t, b.t)
        np.testing.assert_allclose(a.R @ a.R.T, np.eye(3), atol=1e-9)
    records = json.loads((orbit.root / "cameras.json").read_text())
    assert set(records[0]) == {"name", "K", "R", "t", "width", "height"}
    assert read_cameras_json(orbit.root / "cameras.json").keys() == orbit.cameras.keys()
    assert again.spec == orbit.spec


def test_turntable_cameras_are_in_the_object_frame(turntable: CaptureGroundTruth) -> None:
    # The camera is fixed in the studio, but in the object's frame it circles the product at constant height.
    centres = np.array([c.center for c in turntable.camera_list()])
    assert np.ptp(centres[:, 2]) < 1e-9
    radii = np.linalg.norm(centres[:, :2], axis=1)
    assert np.ptp(radii) < 1e-9
    azimuths = np.unwrap(np.arctan2(centres[:, 1], centres[:, 0]))
    np.testing.assert_allclose(np.abs(np.diff(azimuths)), 2 * np.pi / 4, atol=1e-9)
    # A product corner projects where the mask says the product is.
    for name in turntable.image_names:
        cam, mask = turntable.cameras[name], turntable.load_mask(name)
        uv, _ = cam.project(((turntable.bbox_min + turntable.bbox_max) / 2)[None])
        col, row = np.floor(uv[0]).astype(int)
        assert mask[row, col]
        ys, xs = np.nonzero(mask)
        centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        assert np.linalg.norm(centroid - uv[0]) < 0.1 * cam.width


def test_same_seed_same_images(tmp_path: Path) -> None:
    spec = CaptureSpec(object="procedural-box", num_views=2, width=96, height=72, image_format="png")
    a = render_capture(spec, tmp_path / "a")
    b = render_capture(spec, tmp_path / "b")
    for name in a.image_names:
        assert (a.image_dir / name).read_bytes() == (b.image_dir / name).read_bytes()
    c = render_capture(CaptureSpec(**{**spec.__dict__, "seed": spec.seed + 1}), tmp_path / "c")
    assert (a.image_dir / a.image_names[0]).read_bytes() != (c.image_dir / c.image_names[0]).read_bytes()


def test_obj_texture_orientation(tmp_path: Path) -> None:
    """OBJ convention: vt v = 0 is the bottom row of the texture image (a red top half must render on top)."""
    model = tmp_path / "quad"
    model.mkdir()
    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32] = (0, 0, 255)  # BGR red, top rows of the image
    texture[32:] = (255, 0, 0)  # blue, bottom rows
    cv2.imwrite(str(model / "tex.png"), texture)
    (model / "quad.mtl").write_text("newmtl m\nmap_Kd tex.png\n")
    (model / "quad.obj").write_text(
        "mtllib quad.mtl\n"
        "v 0 -0.05 0\nv 0 0.05 0\nv 0 0.05 0.1\nv 0 -0.05 0.1\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "f 1/1 2/2 3/3 4/4\n")
    spec = CaptureSpec(object=str(model), num_views=1, width=120, height=90, elevations_deg=(10.0,),
                       support="none", backdrop="none", noise_sigma=0.0, image_format="png")
    gt = render_capture(spec, tmp_path / "cap")
    name = gt.image_names[0]
    rgb = cv2.cvtColor(cv2.imread(str(gt.image_dir / name)), cv2.COLOR_BGR2RGB).astype(float)
    mask = gt.load_mask(name)
    rows = np.nonzero(mask.any(axis=1))[0]
    top, bottom = rows[: len(rows) // 3], rows[-len(rows) // 3:]
    top_rgb = rgb[top][mask[top]].mean(0)
    bottom_rgb = rgb[bottom][mask[bottom]].mean(0)
    assert top_rgb[0] > 3 * top_rgb[2]
    assert bottom_rgb[2] > 3 * bottom_rgb[0]


@pytest.mark.skipif(not (SHARED_DATA / "product_models" / "fuze_bottle").exists(),
                    reason="product scans not present in ../shared/data")
def test_scanned_product_renders(tmp_path: Path) -> None:
    spec = CaptureSpec(object=str(SHARED_DATA / "product_models" / "fuze_bottle"), num_views=2, width=120, height=90,
                       image_format="png")
    gt = render_capture(spec, tmp_path)
    assert 0.2 < gt.object_diagonal < 0.3  # 0.073 x 0.074 x 0.215 m
    name = gt.image_names[0]
    points = backproject_depth(gt.load_depth(name), gt.cameras[name], gt.load_mask(name))
    assert np.median(_mesh_distance(gt, points)) < 1e-5
