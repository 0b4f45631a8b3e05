"""The run record and the configuration: round trip, atomic writes, environment captured, old records migrated,
frozen config sections whose misspelt keys raise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.config import ALL_PRESETS, PipelineConfig, preset_config
from core.manifest import (
    SCHEMA_VERSION,
    ArtifactRecord,
    Finding,
    ManifestError,
    PhotoRecord,
    RunManifest,
    StageRecord,
    load_manifest,
)


def test_manifest_round_trips_and_records_versions(tmp_path: Path) -> None:
    manifest = RunManifest.new(preset_config("preview").to_dict())
    manifest.photos.append(PhotoRecord(0, "a.jpg", "capture/originals/000_a.jpg", 10, "00" * 32, working="000_a.jpg"))
    metrics = {"photos_registered": np.int64(12), "ratio": np.float32(0.5)}  # numpy scalars, as stages produce
    manifest.stages.append(StageRecord("sfm", "done", 1.5, metrics, [Finding("warning", "few photos", "take more")]))
    manifest.artifacts["sfm.model"] = ArtifactRecord("sfm/model", 123, "ab" * 32)
    manifest.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.stages[0].findings[0].hint == "take more"
    assert loaded.stages[0].metrics["photos_registered"] == 12
    assert loaded.photos[0].name == "a.jpg" and loaded.accepted_photos[0].working == "000_a.jpg"
    assert loaded.artifacts["sfm.model"].path == "sfm/model" and loaded.artifacts["sfm.model"].bytes == 123
    assert loaded.environment["versions"]["numpy"] == np.__version__
    assert "pycolmap" in loaded.environment["versions"]
    assert PipelineConfig.from_dict(loaded.config) == preset_config("preview")
    assert not list(tmp_path.glob(".manifest-*"))  # no temporary file left behind


def test_a_failed_write_keeps_the_previous_manifest(tmp_path: Path) -> None:
    manifest = RunManifest.new({})
    manifest.save(tmp_path)
    before = (tmp_path / "manifest.json").read_text()
    manifest.stages.append(StageRecord("sfm", metrics={"bad": object()}))
    with pytest.raises(TypeError):
        manifest.save(tmp_path)
    assert (tmp_path / "manifest.json").read_text() == before
    json.loads(before)
    assert not list(tmp_path.glob(".manifest-*"))


def test_presets_differ_in_effort() -> None:
    preview, balanced, full = (preset_config(p) for p in ("preview", "balanced", "full"))
    assert preview.mesh.target_faces < balanced.mesh.target_faces < full.mesh.target_faces
    assert preview.depth.max_side < balanced.depth.max_side < full.depth.max_side
    test = preset_config("test")
    assert test.depth.max_side < preview.depth.max_side and test.mesh.target_faces < preview.mesh.target_faces
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("ultra")  # type: ignore[arg-type]


def test_config_sections_are_frozen_and_misspelt_keys_raise() -> None:
    config = preset_config("balanced")
    with pytest.raises(AttributeError):
        config.depth.max_side = 10  # type: ignore[misc]
    changed = config.with_changes({"depth": {"num_depth_planes": 64}, "mesh": {"target_faces": 5000}})
    assert changed.depth.num_depth_planes == 64 and changed.mesh.target_faces == 5000
    assert config.depth.num_depth_planes == 96  # the original is untouched
    with pytest.raises(ValueError, match="num_depth_plane"):
        config.with_changes({"depth": {"num_depth_plane": 64}})
    with pytest.raises(ValueError, match="unknown config section 'dense'"):
        config.with_changes({"dense": {"max_side": 64}})
    with pytest.raises(ValueError, match="unknown field"):
        PipelineConfig.from_dict({**config.to_dict(), "mesh": {"target_face": 1}})
    for name in ALL_PRESETS:
        assert PipelineConfig.from_dict(preset_config(name).to_dict()) == preset_config(name)


def test_schema_1_records_are_migrated_on_load(tmp_path: Path) -> None:
    """A run written by the first landing: old photo fields, artefact keys and stage names, and its config."""
    old = {
        "run_id": "20261121-120000-abcdef", "created": "2026-11-21T12:00:00+00:00", "mode": "single_photo",
        "status": "done", "photos": [{"name": "IMG 1.jpg", "stored_as": "originals/000_IMG_1.jpg", "size_bytes": 5,
                                      "sha256": "x", "working_image": "images/000_IMG_1.jpg"}],
        "config": {"preset": "preview", "dense": {"max_side": 400, "isolate_product": False},
                   "capture": {"blur_threshold": 60.0}},
        "stages": [{"name": "mvs", "status": "done", "seconds": 1.0, "metrics": {}, "findings": []}],
        "artifacts": {"mesh": "relief.ply", "sparse_model": "sparse"},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    manifest = load_manifest(tmp_path)
    assert manifest.schema_version == SCHEMA_VERSION and manifest.mode == "relief"
    assert manifest.photos[0].original == "originals/000_IMG_1.jpg" and manifest.photos[0].working == "000_IMG_1.jpg"
    assert manifest.artifacts["relief.ply"].path == "relief.ply" and manifest.artifacts["sfm.model"].path == "sparse"
    assert manifest.stages[0].name == "depth"
    config = PipelineConfig.from_dict(manifest.config)
    assert config.depth.max_side == 400 and config.isolation.enabled is False


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "not a JSON object"),
    ('{"run_id": "x", "created": "y", "stages": [{"name": "sfm", "seconds": "slow"}]}', "wrongly typed"),
    ('{"run_id": "x", "created": "y", "photos": [{"nonsense": 1}]}', "damaged"),
    ('{"run_id": "x", "created": "y", "stages": [{"name": "sfm", "findings": [{"level": ["x"], "message": 1}]}]}',
     "wrongly typed: findings of stage 'sfm'"),
    ('{"run_id": "x", "created": "y", "schema_version": 99}', "schema version 99"),
])
def test_a_damaged_record_says_so(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ManifestError, match=problem):
        load_manifest(tmp_path)


@pytest.mark.parametrize("hostile", ["/etc/passwd", "../../../../etc/passwd", "mesh/../../outside.txt", "link.ply"])
def test_artefact_paths_are_confined_to_the_run_folder(tmp_path: Path, hostile: str) -> None:
    """Issue 15 item 7: an absolute, ``..`` or symlinked artefact path in the record is refused, never served."""
    from core.report.runs import open_run

    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "mesh").mkdir(parents=True)
    (run_dir / "mesh" / "mesh.ply").write_text("ply")
    (tmp_path / "outside.txt").write_text("secret")
    (tmp_path / "runs" / "outside.txt").write_text("secret")
    (run_dir / "link.ply").symlink_to(tmp_path / "outside.txt")
    manifest = RunManifest.new(preset_config("preview").to_dict())
    manifest.artifacts["mesh.ply"] = ArtifactRecord("mesh/mesh.ply")
    manifest.artifacts["mesh.glb"] = ArtifactRecord(hostile)
    manifest.save(run_dir)
    run = open_run(run_dir)
    assert run.artifact("mesh.ply") == (run_dir / "mesh" / "mesh.ply").resolve()
    assert run.artifact("mesh.glb") is None
