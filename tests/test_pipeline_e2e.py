"""End to end on a tiny generated capture: photos -> capture -> SfM -> dense -> mesh, measured against ground truth."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from core.config import preset_config
from core.geometry import compare_poses
from core.manifest import load_manifest, photo_names_by_working_image
from core.pipeline import list_photos, run_pipeline
from core.scene import cameras_from_model
from core.synthetic import CaptureGroundTruth, CaptureSpec, render_capture

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def tiny_capture(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    spec = CaptureSpec(num_views=12, width=320, height=240, elevations_deg=(30.0,), seed=3)
    return render_capture(spec, tmp_path_factory.mktemp("capture"))


@pytest.fixture(scope="module")
def tiny_run(tiny_capture: CaptureGroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    config = preset_config("preview")
    config.depth_prior.enabled = False
    messages: list[tuple[float, str]] = []
    manifest = run_pipeline(list_photos(tiny_capture.image_dir), run_dir, config,
                            progress=lambda f, m: messages.append((f, m)))
    assert manifest.status == "done", manifest.failure_reason
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # progress only moves forward
    return run_dir


def test_every_photo_is_placed_accurately(tiny_capture: CaptureGroundTruth, tiny_run: Path) -> None:
    manifest = load_manifest(tiny_run)
    sfm = manifest.stage("sfm")
    assert sfm is not None and sfm.metrics["photos_registered"] == 12
    # The sparse model is a COLMAP binary model that pycolmap opens.
    model = pycolmap.Reconstruction(str(tiny_run / manifest.artifacts["sparse_model"]))
    assert model.num_reg_images() == 12 and model.num_points3D() > 500

    working_to_original = photo_names_by_working_image(manifest.photos)
    estimated = {working_to_original[n]: c for n, c in cameras_from_model(tiny_run / "sparse").items()}
    names = sorted(estimated)
    errors = compare_poses([estimated[n] for n in names], [tiny_capture.cameras[n] for n in names])
    size = tiny_capture.object_diagonal
    logger.warning("tiny capture: rotation error median %.3f°, centre error median %.2f%% of the object size",
                   np.median(errors.rotation_deg), 100 * np.median(errors.center_error) / size)
    assert np.median(errors.rotation_deg) < 1.0
    assert np.median(errors.center_error) < 0.01 * size


def test_findings_name_photos_as_the_user_named_them(tmp_path: Path) -> None:
    """Stages speak of working copies (007_IMG.jpg); the record shows the user's names (IMG.jpg)."""
    from core.manifest import Finding, RunManifest, StageRecord
    from core.pipeline import _record_output
    from core.stage import StageOutput

    finding = Finding("warning", "007_IMG_12.jpg and 007_IMG_12 disagree", "retake 007_IMG_12.jpg")
    output = StageOutput(ok=False, failure="Nothing fused from 007_IMG_12.jpg.", findings=[finding])
    record = StageRecord("fusion")
    failure = _record_output(RunManifest.new({}), record, output, tmp_path, {"007_IMG_12.jpg": "IMG 12.JPG",
                                                                             "007_IMG_12": "IMG 12.JPG"})
    assert failure == "Nothing fused from IMG 12.JPG."
    assert record.findings[0].message == "IMG 12.JPG and IMG 12.JPG disagree"
    assert record.findings[0].hint == "retake IMG 12.JPG"
    assert record.findings[-1] == Finding("error", failure)


def test_manifest_records_everything_a_reviewer_needs(tiny_run: Path) -> None:
    manifest = load_manifest(tiny_run)
    assert [s.status for s in manifest.stages] == ["done"] * len(manifest.stages)
    assert all(s.seconds >= 0 for s in manifest.stages) and manifest.stage("sfm").seconds > 0
    stages = ["capture", "sfm", "depth", "depth_prior", "fusion", "isolation", "mesh"]
    assert [s.name for s in manifest.stages] == stages
    assert len(manifest.photos) == 12 and all(len(p.sha256) == 64 for p in manifest.photos)
    assert manifest.config["preset"] == "preview"
    assert {"pycolmap", "open3d-cpu", "numpy"} <= set(manifest.environment["versions"])
    for key, relative in manifest.artifacts.items():
        assert (tiny_run / relative).exists(), key


def test_sfm_is_reproducible_with_a_fixed_seed(tiny_capture: CaptureGroundTruth, tiny_run: Path,
                                               tmp_path: Path) -> None:
    from core.capture import prepare_capture
    from core.sfm import run_sfm

    config = preset_config("preview")
    capture = prepare_capture(list_photos(tiny_capture.image_dir), tmp_path, config.capture)
    again = run_sfm(capture, tmp_path, config.sfm)
    first, second = cameras_from_model(tiny_run / "sparse"), cameras_from_model(again.sparse_dir)
    assert sorted(first) == sorted(second)
    for name in first:  # bit-identical, not merely close: same seed, same machine
        assert np.array_equal(first[name].R, second[name].R) and np.array_equal(first[name].t, second[name].t)


def test_large_capture_mode_closes_the_loop_by_retrieval(tiny_capture: CaptureGroundTruth, tiny_run: Path,
                                                         tmp_path: Path) -> None:
    """Above ``exhaustive_max_images`` photos are matched with capture-order neighbours plus retrieved look-alikes."""
    from core.capture import prepare_capture
    from core.sfm import retrieval_pairs, run_sfm, sequential_pairs

    names = sorted(Path(p.working_image).name for p in load_manifest(tiny_run).photos)
    retrieved = retrieval_pairs(tiny_run / "sfm" / "database.db", names, neighbours=3, seed=0)
    # The last photos of the ring look like the first ones: retrieval pairs them, which capture order cannot.
    assert retrieved & {(0, 10), (0, 11), (1, 10), (1, 11)}
    assert sequential_pairs(12, 2) >= {(0, 1), (0, 2), (0, 4), (0, 8), (10, 11)}

    config = preset_config("preview")
    config.sfm.exhaustive_max_images, config.sfm.sequential_overlap, config.sfm.retrieval_neighbours = 4, 2, 3
    capture = prepare_capture(list_photos(tiny_capture.image_dir), tmp_path, config.capture)
    result = run_sfm(capture, tmp_path, config.sfm)
    assert result.metrics["matching_mode"] == "sequential+retrieval"
    assert result.metrics["photos_registered"] == 12


def test_supplied_depth_maps_named_like_the_photos_reach_the_prior_stage(tiny_capture: CaptureGroundTruth,
                                                                         tiny_run: Path, tmp_path: Path) -> None:
    """The user names depth maps like their photos; the run renames its copies after the working images."""
    from core.pipeline import RunContext, _depth_prior
    from core.stage import no_progress

    depth_dir = tmp_path / "depth_maps"
    depth_dir.mkdir()
    for name in tiny_capture.image_names:
        depth = tiny_capture.load_depth(name)
        np.save(depth_dir / f"{Path(name).stem}.npy", np.where(np.isfinite(depth), depth, 0).astype(np.float32))

    from core.capture import prepare_capture
    from core.mvs import estimate_depth_maps
    from core.scene import load_sparse_scene
    from core.sfm import run_sfm

    config = preset_config("preview")
    config.depth_prior.depth_dir = str(depth_dir)
    photos = list_photos(tiny_capture.image_dir)
    ctx = RunContext(tmp_path / "run", config, photos, [p.name for p in photos])
    ctx.results["capture"] = prepare_capture(photos, ctx.run_dir, config.capture)
    ctx.results["sfm"] = run_sfm(ctx.results["capture"], ctx.run_dir, config.sfm)
    undistorted = ctx.results["sfm"].undistorted_dir
    ctx.results["scene"] = load_sparse_scene(undistorted / "sparse", undistorted / "images")
    ctx.results["depth"] = estimate_depth_maps(ctx.results["scene"], ctx.run_dir / "depth", config.dense)
    result = _depth_prior(ctx, no_progress)

    copies = sorted(p.name for p in (ctx.run_dir / "supplied_depth").iterdir())
    assert copies == sorted(f"{Path(p.working_image).stem}.npy" for p in ctx.results["capture"].accepted)
    assert result.metrics["prior_views"] >= 10  # ground-truth depth fits the SfM scale in (almost) every view
