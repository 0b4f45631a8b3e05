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
from core.stages.asset import PROFILES, Profile, inspect_glb, run_asset
from core.stages.mesh import MeshResult
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


def test_the_mesh_is_watertight_with_its_unseen_base_capped(run: Path) -> None:
    import open3d as o3d
    import trimesh

    manifest = load_manifest(run)
    metrics = manifest.stage("mesh").metrics
    assert metrics["boundary_edges"] == 0 and metrics["closed"] == 1 and metrics["watertight"] == 1
    assert metrics["base_capped"] == 1 and metrics["base_faces"] > 0 and 0 < metrics["base_area_share"] < 0.5
    mesh = o3d.io.read_triangle_mesh(str(run / manifest.artifacts["mesh.ply"].path))
    assert trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), process=False).is_watertight
    asset = manifest.stage("asset").metrics
    assert asset["closed"] == 1 and asset["boundary_edges"] == 0 and asset["validator_errors"] == 0
    assert asset["base_capped"] == 1 and asset["base_faces"] == metrics["base_faces"]  # the shop sees the flag too


def test_a_variant_over_a_face_limit_is_decimated_and_baked_again(run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from types import SimpleNamespace

    import open3d as o3d

    from core.config import AssetConfig

    manifest = load_manifest(run)
    scene = load_sparse_scene(run / manifest.artifacts["sfm.undistorted"].path, PhotoSet(manifest.accepted_photos))
    mesh = o3d.io.read_triangle_mesh(str(run / manifest.artifacts["mesh.ply"].path))
    limit = len(mesh.triangles) // 3
    monkeypatch.setitem(PROFILES, "small", Profile("small", "Small", "glb", max_triangles=limit, max_texture=1024,
                                                   real_size=False))
    frame = json.loads((run / manifest.artifacts["isolation.frame"].path).read_text(encoding="utf-8"))
    result = run_asset(load_textured(run), MeshResult(mesh=mesh), SimpleNamespace(up=np.array(frame["up"])), scene,
                       tmp_path, AssetConfig(profiles=("small",)))
    entry = result.checks["profiles"]["small"]
    assert not entry["pass"] and any("triangles" in r for r in entry["reasons"])
    assert entry["variant"]["pass"], entry["variant"]["reasons"]
    variant = tmp_path / entry["variant"]["file"]
    facts = inspect_glb(variant)
    side = min(result.metrics["texture_size"], 1024)
    assert 0.8 * limit < facts.triangles <= limit and facts.textures == [(side, side)]
    assert facts.validator_errors == 0
    # Baked again from the photos (not the full asset's atlas squeezed): its texture reproduces a photo, and the
    # decimated surface is still closed.
    import trimesh

    glb = trimesh.load(variant, force="mesh", process=False)
    welded = trimesh.Trimesh(glb.vertices, glb.faces, process=True)
    assert welded.is_watertight
    atlas = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"))
    camera = scene.cameras[0]
    image = cv2.cvtColor(cv2.imread(str(scene.image_paths[0])), cv2.COLOR_BGR2RGB).astype(np.float32)
    back = np.linalg.inv(np.array(result.metrics["asset_from_reconstruction"]))
    vertices = glb.vertices @ back[:3, :3].T + back[:3, 3]
    rendered, hit = render_mesh(vertices, glb.faces, camera, uv=glb.visual.uv * [1, -1] + [0, 1], texture=atlas)
    psnr = 10 * np.log10(255.0**2 / np.mean((rendered[hit] - image[hit]) ** 2))
    logger.warning("variant of %d faces: %.2f dB on photo 0", facts.triangles, psnr)
    assert psnr > 18


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


def test_faces_well_inside_the_mesh_outline_take_a_photo_that_a_wrong_mask_would_deny(tmp_path: Path) -> None:
    import open3d as o3d

    from core.geometry import PinholeCamera, look_at
    from core.stages.texture import _OUTLINE_MARGIN, _face_scores

    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=0.1, resolution=30)
    V, F = np.asarray(sphere.vertices), np.asarray(sphere.triangles)
    R, t = look_at(np.array([0.0, -0.5, 0.0]), np.zeros(3))
    camera = PinholeCamera(K=np.array([[400.0, 0, 160], [0, 400.0, 120], [0, 0, 1]]), R=R, t=t, width=320, height=240)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 128, np.uint8))
    pix, _ = camera.project(V[F].mean(1))
    from_centre = np.hypot(pix[:, 0] - 160, pix[:, 1] - 120)
    outline_px = 400 * 0.1 / np.sqrt(0.5**2 - 0.1**2)  # the sphere's silhouette radius in pixels
    margin_px = _OUTLINE_MARGIN * np.hypot(320, 240)
    facing = -(np.cross(V[F][:, 1] - V[F][:, 0], V[F][:, 2] - V[F][:, 0]) @ camera.viewing_direction) > 0

    # A mask that lost the whole product (as an untrusted mask may): the faces well inside the outline still
    # take the photo, the rim (where a bulging mesh meets the backdrop) does not.
    scores, _ = _face_scores(V, F, [camera], [photo], [np.zeros((240, 320), bool)])
    inner = facing & (from_centre < outline_px - 2 * margin_px)
    rim = facing & (from_centre > outline_px - 0.5 * margin_px)
    assert inner.sum() > 50 and rim.sum() > 10
    assert (scores[inner, 0] > 0).mean() > 0.95
    assert (scores[rim, 0] > 0).mean() < 0.05
    # A right mask gives the rim back (those not seen too obliquely: measured 20 % of this 2-pixel band).
    scores, _ = _face_scores(V, F, [camera], [photo], [np.ones((240, 320), bool)])
    assert (scores[rim, 0] > 0).mean() > 0.15
