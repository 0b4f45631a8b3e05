"""Texture stage on a small real pipeline run: a UV atlas and the baked base colour reproducing them."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.synthetic import CaptureGroundTruth, CaptureSpec, render_capture
from core.cli.run import list_photos
from core.config import preset_config
from core.manifest import load_manifest
from core.photos import PhotoSet
from core.pipeline import run_pipeline
from core.scene import load_sparse_scene
from core.stages.texture import atlas_layout, load_textured, render_mesh

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    # A packaging-printed box, 16 photos of 480x360 on two rings: the test preset meshes it in ~25 s.
    spec = CaptureSpec(object="procedural-box", num_views=16, width=480, height=360, seed=5)
    return render_capture(spec, tmp_path_factory.mktemp("capture"))


@pytest.fixture(scope="module")
def run(capture: CaptureGroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    config = preset_config("test").with_changes({"depth_prior": {"enabled": False}})
    manifest = run_pipeline(list_photos(capture.image_dir), run_dir, config)
    assert manifest.status == "done", manifest.failure_reason
    return run_dir


def test_atlas_is_square_power_of_two_with_uvs_inside(run: Path) -> None:
    manifest = load_manifest(run)
    assert [s.name for s in manifest.stages][-3:] == ["mesh", "texture", "asset"]
    assert {"texture.mesh", "texture.base_color"} <= set(manifest.artifacts)
    textured = load_textured(run)
    assert textured.uv.shape == (len(textured.vertices), 2)
    assert textured.uv.min() >= 0.0 and textured.uv.max() <= 1.0
    atlas = cv2.imread(str(textured.base_color))
    assert atlas.shape[0] == atlas.shape[1] and atlas.shape[0] & (atlas.shape[0] - 1) == 0
    # The texel at the centre of every face carries colour (no black inside charts), and so does the whole atlas
    # (gutters filled).
    tri_uv = textured.uv[textured.faces].mean(1)
    size = atlas.shape[0]
    centres = atlas[(tri_uv[:, 1] * size).astype(int), (tri_uv[:, 0] * size).astype(int)]
    assert (centres.max(1) == 0).mean() < 0.002  # unbaked texels are 0 (dark print is legitimately near it)
    assert (atlas.max(2) == 0).mean() < 1e-4
    metrics = manifest.stage("texture").metrics
    assert metrics["texture_size"] == size and metrics["unseen_share"] < 0.3  # the bottom is unseen


def test_texture_reproduces_the_photos_better_than_vertex_colours(run: Path) -> None:
    import open3d as o3d

    manifest = load_manifest(run)
    scene = load_sparse_scene(run / manifest.artifacts["sfm.undistorted"].path, PhotoSet(manifest.accepted_photos))
    textured = load_textured(run)
    atlas = cv2.cvtColor(cv2.imread(str(textured.base_color)), cv2.COLOR_BGR2RGB)
    mesh = o3d.io.read_triangle_mesh(str(run / manifest.artifacts["mesh.ply"].path))
    mask_dir = run / manifest.artifacts["masks.images"].path
    gains = []
    for k in (0, 5):
        camera, photo = scene.cameras[k], scene.photos[k]
        image = cv2.cvtColor(cv2.imread(str(scene.image_paths[k])), cv2.COLOR_BGR2RGB).astype(np.float32)
        mask = cv2.imread(str(mask_dir / f"{photo.stem}.png"), cv2.IMREAD_GRAYSCALE) > 127
        tex, hit_t = render_mesh(textured.vertices, textured.faces, camera, uv=textured.uv, texture=atlas)
        col, hit_v = render_mesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), camera,
                                 vertex_colors=np.asarray(mesh.vertex_colors))
        inside = mask & hit_t & hit_v
        assert inside.sum() > 0.75 * mask.sum()  # a 320 px, 10k-face model misses a thin rim

        def psnr(a: np.ndarray, region: np.ndarray = inside, ref: np.ndarray = image) -> float:
            return float(10 * np.log10(255.0**2 / np.mean((a[region] - ref[region]) ** 2)))

        logger.warning("photo %d: textured %.2f dB, vertex colours %.2f dB", k, psnr(tex), psnr(col))
        gains.append(psnr(tex) - psnr(col))
    # Measured +0.9 and +0.4 dB here with the single-photo bake (not re-measured since blending): the test
    # preset's mesh misses part of the box, so much of the error is the geometry's, which no texture fixes; the
    # texture must still win on every photo.
    assert min(gains) > 0.1


def test_load_textured_round_trips(run: Path) -> None:
    manifest = load_manifest(run)
    with np.load(run / manifest.artifacts["texture.mesh"].path) as data:
        vertices, faces, uv = data["vertices"], data["faces"], data["uv"]
    loaded = load_textured(run)
    assert np.array_equal(loaded.vertices, vertices) and np.array_equal(loaded.faces, faces)
    assert np.array_equal(loaded.uv, uv) and loaded.base_color.is_file()
    assert loaded.vertices.dtype == np.float64 and loaded.faces.max() < len(loaded.vertices)


def test_atlas_grows_when_faces_would_get_too_few_texels() -> None:
    assert atlas_layout(100_000, 2048) == (2048, 9)
    size, cell = atlas_layout(400_000, 1024)
    assert size == 4096 and cell >= 6
