"""Real size from two points picked on a photo, on a rendered capture whose true size is known: real capture and
SfM (pycolmap), the true product mesh carried into the SfM frame, the picks cast onto it, the asset's size measured."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open3d as o3d
import pytest

from benchmarks.synthetic import CaptureSpec, render_capture
from core.cli.run import list_photos
from core.config import AssetConfig, preset_config
from core.geometry import umeyama_similarity
from core.gltf_validator import validate_gltf, validator_available
from core.known_distance import (
    KnownDistance,
    KnownDistanceError,
    cast,
    measure_known_distance,
    parse_known_distance,
)
from core.stages.asset import run_asset
from core.stages.mesh import MeshResult

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.skipif(not validator_available(), reason="needs ./studio setup (Node.js, gltf-validator)")

ORIGINAL, WORKING = (400, 300), 320
"""The photos are rendered larger than the working copies SfM sees (a 0.8 resize the picks must go through)."""


@pytest.fixture(scope="module")
def placed(tmp_path_factory: pytest.TempPathFactory):
    """A 12-photo orbit, its capture and SfM run for real; the true mesh in the SfM frame; the user's names."""
    from core.scene import load_sparse_scene
    from core.stages.capture import run_capture
    from core.stages.sfm import run_sfm

    truth = render_capture(CaptureSpec(num_views=12, width=ORIGINAL[0], height=ORIGINAL[1], elevations_deg=(30.0,),
                                       seed=3, write_depth=False), tmp_path_factory.mktemp("capture"))
    run_dir = tmp_path_factory.mktemp("run")
    config = preset_config("test").with_changes({"capture": {"working_max_side": WORKING}})
    photos = list_photos(truth.image_dir)
    capture = run_capture(photos, run_dir, config.capture)
    sfm = run_sfm(capture, run_dir, config.sfm)
    assert sfm.ok, sfm.failure
    scene = load_sparse_scene(sfm.undistorted_dir, sfm.photos)
    # The true mesh carried into the SfM frame by the similarity between the true and the estimated camera centres.
    names = [p.name for p in scene.photos]
    similarity = umeyama_similarity(np.array([truth.cameras[n].center for n in names]),
                                    np.array([c.center for c in scene.cameras]))
    mesh = o3d.io.read_triangle_mesh(str(truth.mesh_path))
    gt_vertices = np.asarray(mesh.vertices).copy()
    mesh.vertices = o3d.utility.Vector3dVector(similarity.apply(gt_vertices))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.full((len(gt_vertices), 3), 0.6))
    up = similarity.R @ np.array([0.0, 0.0, 1.0])  # the renders are z up
    return SimpleNamespace(truth=truth, run_dir=run_dir, capture=capture, sfm=sfm, scene=scene, mesh=mesh,
                           gt_faces=np.asarray(mesh.triangles), gt_vertices=gt_vertices, similarity=similarity,
                           isolation=SimpleNamespace(up=up))


def _true_points(placed, photo: str, pixels: np.ndarray) -> np.ndarray:
    """Where the true camera's rays through ``pixels`` (original photo) meet the true mesh (metres)."""
    camera = placed.truth.cameras[photo]
    rays = np.column_stack([pixels, np.ones(len(pixels))]) @ np.linalg.inv(camera.K).T @ camera.R
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    return cast(placed.gt_vertices, placed.gt_faces, np.repeat(camera.center[None], len(rays), axis=0), rays)


def _product_pixels(placed, photo: str) -> list[list[float]]:
    """Two pixels on the product in ``photo`` (original size): its projected top and bottom, 15 % inside."""
    camera = placed.truth.cameras[photo]
    lo, hi = placed.truth.bbox_min, placed.truth.bbox_max
    centre = (lo + hi) / 2
    ends = np.array([[*centre[:2], lo[2]], [*centre[:2], hi[2]]])
    uv, _ = camera.project(ends)
    return (uv + 0.15 * (uv[::-1] - uv)).tolist()  # each end 15 % toward the other: on the face, not its edge


def test_two_picked_points_give_the_products_real_size(placed, tmp_path: Path) -> None:
    photo = placed.truth.image_names[4]
    pixels = np.array(_product_pixels(placed, photo))
    truth_points = _true_points(placed, photo, pixels)
    assert np.isfinite(truth_points).all()
    mm = 1000 * float(np.linalg.norm(truth_points[1] - truth_points[0]))
    known = KnownDistance(photo, tuple(pixels[0].tolist()), tuple(pixels[1].tolist()), round(mm, 2))
    result = run_asset(None, MeshResult(mesh=placed.mesh), placed.isolation, placed.scene, tmp_path,
                       AssetConfig(known_distance=known.text, texture_size=256, profiles=("shopify",)),
                       photos=placed.capture.photos, sfm_model=placed.sfm.model_dir)
    assert result.ok, result.failure
    metrics = result.metrics
    assert metrics["size_from"] == "known_distance" and result.checks["known_dimension"] is None
    true_size = 1000 * (placed.truth.bbox_max - placed.truth.bbox_min)  # x, y (footprint), z (height)
    size = metrics["size_mm"]
    logger.warning("two picks on %s: size %s mm, truth %s mm", photo, size, true_size.round(2))
    assert size["height"] == pytest.approx(true_size[2], rel=0.01)
    assert sorted([size["width"], size["depth"]]) == pytest.approx(sorted(true_size[:2]), rel=0.02)
    # The picks landed where the true camera's rays meet the product (a wrong resize or an ignored distortion
    # would move them along the surface): within 0.5 % of the product's size.
    record = metrics["known_distance"]
    found = np.array(record["points"])
    expected = placed.similarity.apply(truth_points)
    tolerance = 0.005 * placed.similarity.scale * placed.truth.object_diagonal
    assert np.linalg.norm(found - expected, axis=1).max() < tolerance
    assert record["photo"] == photo and record["mm"] == known.mm
    assert record["pixels"] == parse_known_distance(known.text).pixels  # as the config holds them (0.01 px)
    assert record["metres_per_unit"] == pytest.approx(known.mm / 1000 / record["distance_units"], rel=1e-6)
    assert result.checks["known_distance"] == record
    assert result.checks["profiles"]["shopify"]["pass"], result.checks["profiles"]["shopify"]
    assert validate_gltf(tmp_path / "asset" / "asset.glb").errors == 0


def test_a_distance_wins_over_a_dimension_and_a_warning_compares_them(placed, tmp_path: Path) -> None:
    photo = placed.truth.image_names[4]
    pixels = np.array(_product_pixels(placed, photo))
    mm = 1000 * float(np.linalg.norm(np.subtract(*_true_points(placed, photo, pixels))))
    true_height = 1000 * float(placed.truth.bbox_max[2] - placed.truth.bbox_min[2])
    known = KnownDistance(photo, tuple(pixels[0].tolist()), tuple(pixels[1].tolist()), mm)
    result = run_asset(None, MeshResult(mesh=placed.mesh), placed.isolation, placed.scene, tmp_path,
                       AssetConfig(height_mm=2 * true_height, known_distance=known.text, texture_size=256,
                                   profiles=("google",)),
                       photos=placed.capture.photos, sfm_model=placed.sfm.model_dir)
    assert result.ok and result.metrics["size_from"] == "known_distance"
    assert result.metrics["size_mm"]["height"] == pytest.approx(true_height, rel=0.01)
    warning = next(f for f in result.findings if "Both a known height" in f.message)
    assert photo in warning.message and "Give only one" in warning.hint
    assert re.search(r"makes the height 21\d mm \(-(49|50)\.\d % from the height given\)", warning.message)
    assert validate_gltf(tmp_path / "asset" / "asset.glb").errors == 0


def _measure(placed, known: KnownDistance, model_dir: Path | None = None):
    return measure_known_distance(known, placed.capture.photos, model_dir or placed.sfm.model_dir,
                                  np.asarray(placed.mesh.vertices), np.asarray(placed.mesh.triangles))


def test_a_pick_off_the_product_fails_the_stage_naming_the_photo(placed, tmp_path: Path) -> None:
    photo = placed.truth.image_names[4]
    on_product = _product_pixels(placed, photo)[0]
    known = KnownDistance(photo, (3.0, 3.0), tuple(on_product), 80.0)  # the photo's corner: the room, not the product
    result = run_asset(None, MeshResult(mesh=placed.mesh), placed.isolation, placed.scene, tmp_path,
                       AssetConfig(known_distance=known.text, texture_size=256),
                       photos=placed.capture.photos, sfm_model=placed.sfm.model_dir)
    assert not result.ok
    assert f"On '{photo}', the first point misses the model" in result.failure
    assert "pick points on the product itself" in result.failure
    assert not any((tmp_path / "asset").iterdir())  # failed before writing anything


def test_an_unplaced_unknown_or_outside_pick_and_the_same_point_twice_say_what_to_do(placed, tmp_path: Path) -> None:
    from core.stages.sfm import drop_images

    photo = placed.truth.image_names[4]
    a, b = (tuple(p) for p in _product_pixels(placed, photo))
    record = next(p for p in placed.capture.photos if p.name == photo)
    model = drop_images(__import__("pycolmap").Reconstruction(str(placed.sfm.model_dir)), [record.working])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model.write_binary(str(model_dir))
    with pytest.raises(KnownDistanceError, match=f"'{photo}' was not placed by structure from motion"):
        _measure(placed, KnownDistance(photo, a, b, 80.0), model_dir)
    with pytest.raises(KnownDistanceError, match="is not one of this run's photos; use one of: .*" + photo):
        _measure(placed, KnownDistance("holiday.jpg", a, b, 80.0))
    with pytest.raises(KnownDistanceError, match=r"outside .* which is 400×300 pixels"):
        _measure(placed, KnownDistance(photo, a, (401.0, 10.0), 80.0))
    with pytest.raises(KnownDistanceError, match="are the same point"):
        _measure(placed, KnownDistance(photo, a, (a[0] + 4, a[1]), 80.0))
    rejected = dataclasses.replace(record, status="rejected", reason=f"{photo}: too blurry; retake it.")
    with pytest.raises(KnownDistanceError, match="was rejected .*too blurry.* pick the two points on another photo"):
        measure_known_distance(KnownDistance(photo, a, b, 80.0), [rejected], placed.sfm.model_dir,
                               np.asarray(placed.mesh.vertices), np.asarray(placed.mesh.triangles))


def test_the_viewer_sets_the_real_size_from_two_points(placed, studio_data: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest: the Viewer's control on a finished run with real capture, SfM, mesh and asset files, the asset sized
    by two picks (over a wrong height): the control opens on them; new picks are checked on the mesh and a new run
    is queued with the known distance (the dimension cleared)."""
    import json
    import os
    import shutil
    import time

    from streamlit.testing.v1 import AppTest

    from core.artifacts import CAPTURE_IMAGES, MESH_PLY, SFM_MODEL, checksum
    from core.jobs.intake import submit_folder
    from core.jobs.store import Store
    from core.manifest import ArtifactRecord, RunManifest, StageRecord

    monkeypatch.setenv("PRODUCT_STUDIO_WORKER", "tests.slow_worker")
    store = Store()
    job = submit_folder(store, placed.truth.image_dir, product_name="Box", sku="BOX", preset="preview", start=False)
    run_dir = store.run_dir(job)
    for artifact in (CAPTURE_IMAGES, SFM_MODEL):
        shutil.copytree(artifact.path(placed.run_dir), artifact.path(run_dir))
    MESH_PLY.path(run_dir).parent.mkdir(parents=True)
    o3d.io.write_triangle_mesh(str(MESH_PLY.path(run_dir)), placed.mesh)
    true_height = 1000 * float(placed.truth.bbox_max[2] - placed.truth.bbox_min[2])
    photo = placed.truth.image_names[4]
    (x1, y1), (x2, y2) = _product_pixels(placed, photo)
    mm = round(1000 * float(np.linalg.norm(np.subtract(*_true_points(placed, photo, np.array([[x1, y1], [x2, y2]]))))),
               2)
    first = KnownDistance(photo, (x1, y1), (x2 + 5, y2), mm)
    asset = run_asset(None, MeshResult(mesh=placed.mesh), placed.isolation, placed.scene, run_dir,
                      AssetConfig(height_mm=1.5 * true_height, known_distance=first.text, texture_size=256,
                                  profiles=("web",)), photos=placed.capture.photos, sfm_model=placed.sfm.model_dir)
    assert asset.ok and validate_gltf(run_dir / "asset" / "asset.glb").errors == 0
    manifest = RunManifest.new(preset_config("preview").to_dict())
    manifest.photos = placed.capture.photos
    manifest.stages = [StageRecord(name, "done", 1.0) for name in ("capture", "sfm", "mesh", "asset")]
    manifest.artifacts = {a.key: ArtifactRecord(a.run_path, *checksum(a.path(run_dir)))
                          for a in (CAPTURE_IMAGES, SFM_MODEL, MESH_PLY, *asset.artifacts)}
    manifest.status = "done"
    manifest.save(run_dir)
    store.mark_running(job.id, pid=os.getpid())
    store.finish(job.id, "done", message="Finished")

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "Home.py"), default_timeout=60)
    app.switch_page("pages/2_Viewer.py")
    app.query_params["job"] = job.id
    app.run()
    assert not app.exception, app.exception
    assert "Set the real size from two points" in [e.label for e in app.expander]
    assert any(f"Sized by two points on {photo}" in c.value.replace("\\", "") for c in app.caption)
    assert len(app.get("plotly_chart")) == 2  # the photo to click on, and the reconstruction
    # The control opens on the picks the asset was sized by.
    def key(name: str) -> str:
        return f"pick-{name}-{job.id}"

    assert app.selectbox(key=key("photo")).value == photo
    assert [app.number_input(key=key(k)).value for k in ("x1", "y1", "x2", "y2", "mm")] == pytest.approx(
        [*first.pixels[0], *first.pixels[1], mm], abs=0.01)
    # A pick off the product is refused at once, naming the photo; no run is queued.
    for name, value in (("x1", 3.0), ("y1", 3.0), ("x2", x2)):
        app.number_input(key=key(name)).set_value(value)
    app.run()  # as in a browser: the inputs are sent before the click
    app.button(key=key("apply")).click().run()
    assert not app.exception, app.exception
    assert any(f"On '{photo}', the first point misses the model" in e.value.replace("\\", "") for e in app.error)
    assert len(store.list_jobs()) == 1
    app.number_input(key=key("x1")).set_value(x1)
    app.number_input(key=key("y1")).set_value(y1)
    app.run()
    app.button(key=key("apply")).click().run()
    assert not app.exception, app.exception
    said = [e.value.replace("\\", "") for e in app.success]
    assert any("Queued a new run that makes the asset at this size" in t for t in said), said
    # The size it will have: the distance is the true one, so the true height (the asset now says 1.5 times it).
    assert any(f"{true_height:.0f} mm high" in t or f"{true_height + 1:.0f} mm high" in t
               or f"{true_height - 1:.0f} mm high" in t for t in said), (said, true_height)
    new = next(j for j in store.list_jobs() if j.id != job.id)
    config = json.loads(new.config_json)["asset"]
    assert new.retry_of == job.id and config["height_mm"] is None
    assert parse_known_distance(config["known_distance"]) == parse_known_distance(
        KnownDistance(photo, (x1, y1), (x2, y2), mm).text)
    deadline = time.time() + 60  # the stand-in worker: let it finish before the data folder goes
    while time.time() < deadline and not store.get_job(new.id).is_final:
        time.sleep(0.5)
