"""A turntable in front of a textured backdrop: the still background must not decide where the cameras go."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic import CaptureGroundTruth, CaptureSpec, render_capture
from core.cli.run import list_photos
from core.config import SfmConfig, preset_config
from core.geometry import compare_poses
from core.photos import PhotoSet
from core.scene import cameras_from_model
from core.stages.capture import run_capture
from core.stages.sfm import run_sfm, static_background_masks


@pytest.fixture(scope="module")
def turntable(tmp_path_factory: pytest.TempPathFactory) -> CaptureGroundTruth:
    spec = CaptureSpec(mode="turntable", backdrop="textured", support="textured", num_views=16, width=480,
                       height=360, elevations_deg=(25.0, 40.0), write_depth=False, write_masks=False, seed=5)
    return render_capture(spec, tmp_path_factory.mktemp("turntable"))


def test_turntable_with_textured_backdrop_is_reconstructed_in_the_product_frame(turntable: CaptureGroundTruth,
                                                                                 tmp_path: Path) -> None:
    config = preset_config("preview")
    capture = run_capture(list_photos(turntable.image_dir), tmp_path, config.capture)
    result = run_sfm(capture, tmp_path, config.sfm)
    assert result.ok, result.failure
    assert result.metrics["static_background_fraction"] > 0.3
    assert any("turntable" in f.message for f in result.findings)
    photo_set = PhotoSet(capture.accepted)
    estimated = {photo_set.by_working(n).name: c for n, c in cameras_from_model(result.model_dir).items()}
    names = sorted(estimated)
    assert len(names) == 16
    # Ground truth is in the product's frame: without the masks, the cameras land at the tripod (~90-140° off).
    errors = compare_poses([estimated[n] for n in names], [turntable.cameras[n] for n in names])
    assert np.median(errors.rotation_deg) < 1.0


def test_walk_around_captures_get_no_masks(turntable: CaptureGroundTruth, tmp_path: Path) -> None:
    orbit = render_capture(CaptureSpec(num_views=8, width=320, height=240, backdrop="textured", write_depth=False,
                                       write_masks=False, seed=6), tmp_path / "orbit")
    names = orbit.image_names
    assert static_background_masks(orbit.image_dir, names, tmp_path / "masks", SfmConfig()) is None
    assert not (tmp_path / "masks").exists()
