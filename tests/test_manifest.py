"""The run record: round trip, atomic writes, environment captured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.config import PipelineConfig, preset_config
from core.manifest import Finding, PhotoRecord, RunManifest, StageRecord, load_manifest


def test_manifest_round_trips_and_records_versions(tmp_path: Path) -> None:
    manifest = RunManifest.new(preset_config("preview").to_dict())
    manifest.photos.append(PhotoRecord("a.jpg", "originals/000_a.jpg", 10, "00" * 32))
    metrics = {"photos_registered": np.int64(12), "ratio": np.float32(0.5)}  # numpy scalars, as stages produce
    manifest.stages.append(StageRecord("sfm", "done", 1.5, metrics, [Finding("warning", "few photos", "take more")]))
    manifest.artifacts["sparse_model"] = "sparse"
    manifest.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.stages[0].findings[0].hint == "take more"
    assert loaded.stages[0].metrics["photos_registered"] == 12
    assert loaded.photos[0].name == "a.jpg"
    assert loaded.environment["versions"]["numpy"] == np.__version__
    assert "pycolmap" in loaded.environment["versions"]
    assert PipelineConfig.from_dict(loaded.config).dense.max_side == preset_config("preview").dense.max_side
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
    assert preview.dense.max_side < balanced.dense.max_side < full.dense.max_side
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("ultra")  # type: ignore[arg-type]
