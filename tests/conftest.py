"""Shared fixtures: a private studio data folder, small real photos, and a finished run folder with real artefacts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `pytest` (not only `python -m pytest`) must find the core package
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def studio_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data folder that the store, the pages and any worker process use (PRODUCT_STUDIO_DATA)."""
    root = tmp_path / "studio-data"
    root.mkdir()
    monkeypatch.setenv("PRODUCT_STUDIO_DATA", str(root))
    return root


def build_tiny_model(folder: Path, head_spread: float = 0.0) -> Path:
    """A ~140k-parameter randomly initialised Depth Anything saved like a real checkpoint (no network).

    ``head_spread`` > 0 re-draws the head's weights: a fresh head predicts ~0 everywhere, which some tests cannot use.
    """
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=70, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8)
    model = DepthAnythingForDepthEstimation(config)
    if head_spread:
        with torch.no_grad():
            for parameter in model.head.parameters():
                parameter.normal_(0, head_spread)
            model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        '{"image_processor_type": "DPTImageProcessor", "image_mean": [0.485, 0.456, 0.406], '
        '"image_std": [0.229, 0.224, 0.225], "ensure_multiple_of": 14, "keep_aspect_ratio": true}', encoding="utf-8")
    return folder


@pytest.fixture
def no_depth_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No depth model anywhere: no environment variable, an empty models/ folder and an empty Hugging Face cache."""
    from core.stages.depth_prior import model

    monkeypatch.delenv(model.ENV_VAR, raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(model, "MODELS_DIR", tmp_path / "models")
    return tmp_path


def write_photos(folder: Path, count: int = 4, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Path]:
    """Small textured JPEGs (random blocks: sharp, well exposed) named like camera files."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 255, size=(size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
        path = folder / f"IMG_{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture
def photo_files(tmp_path: Path) -> list[Path]:
    return write_photos(tmp_path / "photos")


def make_run_folder(run_dir: Path, num_cameras: int = 6) -> Path:
    """A finished run folder as the pipeline leaves it, with real files: a COLMAP model, PLY cloud and mesh,
    GLB/OBJ exports, one depth map, the match matrix and a manifest written through core.manifest."""
    import open3d as o3d
    import pycolmap

    from core.artifacts import DEPTH_MAPS, FUSION_POINTS, MESH_GLB, MESH_OBJ, MESH_PLY, SFM_MATCHES, SFM_MODEL
    from core.manifest import ArtifactRecord, Finding, PhotoRecord, RunManifest, StageRecord
    from core.photos import Photo

    run_dir.mkdir(parents=True, exist_ok=True)
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_cameras_per_rig, options.num_frames_per_rig = 1, 1, num_cameras
    options.num_points3D = 300
    database = pycolmap.Database.open(str(run_dir / "synthetic.db"))
    reconstruction = pycolmap.synthesize_dataset(options, database)
    database.close()
    (run_dir / "synthetic.db").unlink()
    sparse_dir = SFM_MODEL.path(run_dir)
    sparse_dir.mkdir(parents=True)
    reconstruction.write(str(sparse_dir))
    names = sorted(im.name for im in reconstruction.images.values())

    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=20)
    sphere.compute_vertex_normals()
    vertices = np.asarray(sphere.vertices)
    sphere.vertex_colors = o3d.utility.Vector3dVector((vertices + 1) / 2)
    MESH_PLY.path(run_dir).parent.mkdir(parents=True)
    for artifact in (MESH_PLY, MESH_OBJ, MESH_GLB):
        o3d.io.write_triangle_mesh(str(artifact.path(run_dir)), sphere)
    cloud = sphere.sample_points_uniformly(number_of_points=5000)
    FUSION_POINTS.path(run_dir).parent.mkdir(parents=True)
    o3d.io.write_point_cloud(str(FUSION_POINTS.path(run_dir)), cloud)

    from core.geometry import PinholeCamera, intrinsics_from_fov, look_at
    from core.stages.depth import DepthMap, save_depth_map

    photos = [Photo(i, f"user photo {i}.jpg", n) for i, n in enumerate(names)]
    depth_dir = DEPTH_MAPS.path(run_dir)
    depth_dir.mkdir(parents=True)
    R, t = look_at(np.array([0.0, -4.0, 0.0]), np.zeros(3))
    camera = PinholeCamera(intrinsics_from_fov(64, 48, 60), R, t, 64, 48)
    depth = np.full((48, 64), 3.0, dtype=np.float32)
    depth[:5] = np.nan
    save_depth_map(DepthMap(photos[0], camera, depth, np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64),
                            np.zeros((48, 64, 3), dtype=np.uint8)), depth_dir / f"{photos[0].stem}.npz")

    matrix = np.full((len(names), len(names)), 40)
    np.fill_diagonal(matrix, 0)
    SFM_MATCHES.path(run_dir).write_text(json.dumps({"images": names, "inlier_matches": matrix.tolist()}))

    manifest = RunManifest.new({"preset": "preview"})
    manifest.photos = [PhotoRecord(index=p.index, name=p.name, original=f"capture/originals/{p.working}",
                                   size_bytes=1000, sha256="0" * 64, working=p.working) for p in photos]
    manifest.photos.append(PhotoRecord(index=len(names), name="blurry <b>.jpg", original="capture/originals/x.jpg",
                                       size_bytes=10, sha256="1", status="rejected",
                                       reason="blurry <b>.jpg: too blurry; retake it."))
    manifest.stages = [
        StageRecord("capture", "done", 0.5, {"photos_accepted": len(names)},
                    [Finding("warning", "Only 6 usable photos.", "Take 20-40 photos.")]),
        StageRecord("sfm", "done", 2.0, {
            "registered": len(names),
            "reprojection_error_histogram": {"edges": [0, 0.5, 1.0, 1.5], "counts": [200, 80, 20]},
            "track_length_histogram": {"edges": [2, 3, 4], "counts": [100, 150, 50]},
            "per_photo": [{"name": n, "photo": f"user photo {i}.jpg", "registered": True, "keypoints": 500,
                           "matched_neighbours": len(names) - 1, "observations": 200} for i, n in enumerate(names)]},
                    [Finding("info", "All photos placed.")]),
        StageRecord("depth", "done", 3.0, {"photos": 1}),
        StageRecord("fusion", "done", 1.0, {"kept_depths": 5000, "dropped_inconsistent": 1200,
                                            "dropped_low_confidence": 300}),
        StageRecord("mesh", "done", 1.5, {"faces": len(sphere.triangles), "holes": 0, "boundary_edges": 0}),
    ]
    manifest.artifacts = {a.key: ArtifactRecord(a.run_path) for a in (SFM_MODEL, FUSION_POINTS, MESH_PLY, MESH_GLB,
                                                                       MESH_OBJ, DEPTH_MAPS, SFM_MATCHES)}
    manifest.status = "done"
    manifest.save(run_dir)
    return run_dir


@pytest.fixture
def finished_job(studio_data: Path, tmp_path: Path):
    """A done job in the store whose run folder holds real artefacts (no worker involved)."""
    from core.jobs.intake import submit_folder
    from core.jobs.store import Store

    store = Store()
    write_photos(tmp_path / "finished-photos")
    job = submit_folder(store, tmp_path / "finished-photos", product_name="Teapot <script>", sku="SKU-1",
                        preset="preview", start=False)
    make_run_folder(store.run_dir(job))
    store.mark_running(job.id, pid=os.getpid())
    store.finish(job.id, "done", message="Finished")
    return store.get_job(job.id)


def slow_run(job, photos: list[Path], names: list[str], run_dir: Path, config, listener):
    """A real, small stand-in for the pipeline in job tests (tests/slow_worker.py runs it in worker processes): it
    copies the photos, then works in timed steps, writing a file and the manifest after each one, reporting progress
    events like core.pipeline.

    PRODUCT_STUDIO_TEST_STEPS and PRODUCT_STUDIO_TEST_STEP_S set its length.
    """
    import shutil
    import time

    from core.manifest import ArtifactRecord, PhotoRecord, RunManifest, StageRecord
    from core.progress import Cancelled, ProgressEvent

    steps = int(os.environ.get("PRODUCT_STUDIO_TEST_STEPS", "3"))
    step_s = float(os.environ.get("PRODUCT_STUDIO_TEST_STEP_S", "0.3"))
    run_dir = Path(run_dir)
    manifest = RunManifest.new(config.to_dict(), run_id=job.id)
    capture = StageRecord("capture")
    manifest.stages.append(capture)
    manifest.save(run_dir)
    (run_dir / "capture" / "originals").mkdir(parents=True, exist_ok=True)
    for i, (photo, name) in enumerate(zip(photos, names, strict=True)):
        stored = run_dir / "capture" / "originals" / f"{i:03d}{photo.suffix}"
        shutil.copyfile(photo, stored)
        manifest.photos.append(PhotoRecord(index=i, name=name, original=str(stored.relative_to(run_dir)),
                                           size_bytes=stored.stat().st_size, sha256=""))
    capture.status, capture.seconds = "done", 0.01
    manifest.artifacts["capture.originals"] = ArtifactRecord("capture/originals")
    work = StageRecord("work")
    manifest.stages.append(work)
    manifest.save(run_dir)
    (run_dir / "work").mkdir(exist_ok=True)
    try:
        for step in range(steps):
            time.sleep(step_s)
            (run_dir / "work" / f"step_{step}.txt").write_text(f"step {step} done\n")
            work.metrics["steps_done"] = step + 1
            manifest.save(run_dir)
            listener(ProgressEvent("work", "Working", (step + 1) / steps, 0.1 + 0.9 * (step + 1) / steps,
                                   f"step {step + 1} of {steps}"))
    except Cancelled:
        work.status, manifest.status, manifest.failure_reason = "failed", "cancelled", "Cancelled by the user."
        manifest.save(run_dir)
        return manifest
    work.status, work.seconds = "done", steps * step_s
    manifest.status = "done"
    manifest.save(run_dir)
    listener(ProgressEvent("work", "Finished", 1.0, 1.0, "Finished"))
    return manifest
