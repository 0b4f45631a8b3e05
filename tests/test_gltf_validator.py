"""The Khronos glTF validator run on every GLB the studio writes: it finds errors and passes clean files."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.gltf_validator import validate_gltf, validator_available

pytestmark = pytest.mark.skipif(not validator_available(), reason="gltf-validator not installed: run ./studio setup")


def test_clean_glb_has_no_errors(tmp_path: Path) -> None:
    import trimesh

    path = tmp_path / "box.glb"
    trimesh.creation.box().export(path)
    report = validate_gltf(path)
    assert report.ok, report.summary()
    assert report.validator_version


def test_damaged_glb_is_reported(tmp_path: Path) -> None:
    import trimesh

    good = tmp_path / "box.glb"
    trimesh.creation.box().export(good)
    data = bytearray(good.read_bytes())
    data[20:40] = b"\x00" * 20  # inside the JSON chunk
    bad = tmp_path / "damaged.glb"
    bad.write_bytes(bytes(data))
    report = validate_gltf(bad)
    assert report.errors > 0
    assert report.summary() != "no errors"
