"""Single photo -> 3D relief: supplied depth maps (metric), the tiny model (relative), failures with reasons."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.config import preset_config
from core.geometry import PinholeCamera
from core.stages import depth_prior as dp
from core.stages import relief
from core.stages.depth_prior import model
from tests.conftest import build_tiny_model

WIDTH, HEIGHT, RADIUS = 320, 240, 90


def _photo_and_depth(tmp_path: Path, exif_35mm: int | None = None) -> tuple[Path, np.ndarray]:
    """A textured disc (a dome 1.0-0.9 m away) in front of a plain wall at 2 m; the photo and its true depth."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    r2 = (u - WIDTH / 2) ** 2 + (v - HEIGHT / 2) ** 2
    disc = r2 < RADIUS**2
    depth = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    depth[disc] = (1.0 - 0.1 * np.sqrt(np.clip(1 - r2 / RADIUS**2, 0, 1)))[disc]
    rng = np.random.default_rng(0)
    image = np.full((HEIGHT, WIDTH, 3), 220, np.uint8)
    image[disc] = rng.integers(0, 255, (disc.sum(), 3), dtype=np.uint8)
    path = tmp_path / "product.jpg"
    exif = Image.Exif()
    if exif_35mm:
        exif.get_ifd(0x8769)[0xA405] = exif_35mm
    Image.fromarray(image).save(path, quality=95, exif=exif.tobytes())
    return path, depth


@pytest.fixture
def config():
    return preset_config("preview").with_changes({"relief": {"target_faces": 20000},  # a 3-pixel grid
                                                  "depth_prior": {"input_size": 70}})


def build_relief(photo: Path, run_dir: Path, config, depth_file: Path | None = None) -> relief.ReliefResult:
    return relief.run_relief(photo, run_dir, config.relief, config.depth_prior, config.capture,
                             depth_file=depth_file)


def _reload(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_relief_from_supplied_metric_depth(tmp_path: Path, config, no_depth_model: Path, fmt: str) -> None:
    photo, depth = _photo_and_depth(tmp_path)
    (tmp_path / "depth").mkdir()
    if fmt == "npy":
        np.save(tmp_path / "depth" / "product.npy", cv2.resize(depth, (160, 120), interpolation=cv2.INTER_NEAREST))
    else:
        cv2.imwrite(str(tmp_path / "depth" / "product.png"), np.round(depth * 1000).astype(np.uint16))
    result = build_relief(photo, tmp_path / "out", config, depth_file=next((tmp_path / "depth").iterdir()))
    assert result.ok, result.failure
    assert result.scale == "metric" and result.depth_source == "file"
    assert result.metrics["focal_assumed"] == 1.0 and result.metrics["background_removed"] == 1.0
    assert any("assumes a 60 degree field of view" in f.message for f in result.findings)
    assert all(a.path(tmp_path / "out").is_file() for a in result.artifacts)
    assert {a.key for a in result.artifacts} == {"relief.ply", "relief.glb", "relief.obj", "relief.depth"}
    vertices, faces = _reload(tmp_path / "out" / "relief" / "relief.ply")
    assert len(faces) > 500
    # The wall is gone; the dome's width follows from the assumed 60 degree field of view at 1 m.
    focal = 0.5 * WIDTH / np.tan(np.radians(30))
    assert vertices[:, 1].max() < 1.05
    assert np.ptp(vertices[:, 0]) == pytest.approx(2 * RADIUS / focal, rel=0.1)
    assert np.ptp(vertices[:, 2]) == pytest.approx(2 * RADIUS / focal, rel=0.1)  # z is up: the dome stands upright


def test_relief_uses_exif_focal_and_keeps_background_without_gap(tmp_path: Path, config, no_depth_model: Path) -> None:
    photo, _ = _photo_and_depth(tmp_path, exif_35mm=36)
    v = np.mgrid[0:HEIGHT, 0:WIDTH][0]
    slope = (1.0 + v / HEIGHT).astype(np.float32)  # a floor receding smoothly: no product/background gap
    np.save(tmp_path / "floor.npy", slope)
    result = build_relief(photo, tmp_path / "out", config, depth_file=tmp_path / "floor.npy")
    assert result.ok, result.failure
    assert result.metrics["focal_assumed"] == 0.0 and result.metrics["focal_px"] == pytest.approx(WIDTH)
    assert result.metrics["background_removed"] == 0.0
    assert result.metrics["cut_faces"] == 0 and result.metrics["covered_fraction"] == 1.0


def test_grid_mesh_cuts_discontinuities() -> None:
    depth = np.ones((40, 40), np.float32)
    depth[:, 20:] = 3.0
    camera = PinholeCamera(np.array([[50.0, 0, 20], [0, 50.0, 20], [0, 0, 1]]), np.eye(3), np.zeros(3), 40, 40)
    mesh = relief.grid_mesh(depth, np.zeros((40, 40, 3), np.uint8), camera, step=2)
    assert mesh.cut_faces == 2 * 19  # the column of cells spanning the jump
    assert len(mesh.triangles) == 2 * 19 * 19 - mesh.cut_faces
    normals = np.cross(*(mesh.vertices[mesh.triangles[:, k]] - mesh.vertices[mesh.triangles[:, 0]] for k in (1, 2)))
    assert (normals[:, 2] < 0).all()  # facing the camera (which looks along +z)


def test_relief_from_tiny_model(tmp_path: Path, config, no_depth_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_tiny_model(tmp_path / "models" / "Depth-Anything-V2-Small-hf", head_spread=0.5)  # the project's models/

    photo, _ = _photo_and_depth(tmp_path)
    # A random model's depth is noise from pixel to pixel, which the discontinuity cut would remove entirely.
    monkeypatch.setattr(relief, "GRAZING_COS", 0.0)
    result = build_relief(photo, tmp_path / "out", config)
    assert result.ok, result.failure
    assert result.scale == "relative" and result.depth_source == "model"
    assert any("relative" in f.message for f in result.findings)
    vertices, faces = _reload(tmp_path / "out" / "relief" / "relief.glb")
    assert len(vertices) > 0 and len(faces) > 0
    assert result.depth is not None and result.depth.shape == (HEIGHT, WIDTH)


def test_relief_without_depth_fails_with_a_reason(tmp_path: Path, config, no_depth_model: Path) -> None:
    photo, _ = _photo_and_depth(tmp_path)
    result = build_relief(photo, tmp_path / "out", config)
    assert not result.ok
    assert dp.ENV_VAR in result.failure and "depth map" in result.failure
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo", encoding="utf-8")
    result = build_relief(bad, tmp_path / "out", config)
    assert not result.ok and "notes.jpg" in result.failure


def test_relative_depth_gives_the_product_a_plausible_depth(tmp_path: Path, config,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative prediction (disparity up to scale and shift): the isolated product gets half its width in depth."""
    photo, depth = _photo_and_depth(tmp_path)
    location = model.ModelLocation(tmp_path, "explicit", "stub")
    stub = model.DepthModel(model=None, device="cpu", kind="relative", location=location)
    monkeypatch.setattr(dp, "find_model", lambda _config: model.ModelLookup(location, "stub"))
    monkeypatch.setattr(dp, "load_depth_model", lambda _location: stub)
    monkeypatch.setattr(dp, "predict_relative_depth", lambda _m, images, _size: [3.0 / depth + 0.4])
    result = build_relief(photo, tmp_path / "out", config)
    assert result.ok and result.scale == "relative" and result.metrics["background_removed"] == 1.0
    vertices, _ = _reload(tmp_path / "out" / "relief" / "relief.ply")
    width, deep = np.ptp(vertices[:, 0]), np.ptp(vertices[:, 1])  # x right, y away from the camera
    assert deep / width == pytest.approx(relief.PRODUCT_DEPTH_OVER_WIDTH, rel=0.2)
    assert any("as deep as it is wide" in f.message for f in result.findings)


@pytest.mark.parametrize("garbage, problem", [
    (np.zeros((0, 4), np.float32), "is empty or a single line (shape (0, 4))"),
    (np.full((120, 160), np.nan, np.float32), "holds no depth"),
    (-np.ones((120, 160), np.float32), "holds no depth"),
    (np.ones((4, 5, 6), np.float32), "expected a 2-D depth map, got shape (4, 5, 6)"),
    (np.array(["a", "b"], dtype=object), "not a NumPy .npy array of numbers"),
])
def test_a_garbage_supplied_depth_map_fails_the_relief_with_its_name(tmp_path: Path, config, no_depth_model: Path,
                                                                     garbage: np.ndarray, problem: str) -> None:
    """Issue 15 item 8 (the relief's side): a garbage depth map is named with the photo and the problem, never an
    internal error or an internal folder name."""
    photo, _ = _photo_and_depth(tmp_path)
    (tmp_path / "depth").mkdir()
    np.save(tmp_path / "depth" / "product.npy", garbage, allow_pickle=True)
    result = build_relief(photo, tmp_path / "out", config, depth_file=tmp_path / "depth" / "product.npy")
    assert not result.ok
    assert result.failure.startswith("The depth map supplied for product.jpg could not be read (product.npy: ")
    assert problem in result.failure and str(tmp_path) not in result.failure
