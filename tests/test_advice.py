"""What the studio tells users (core/advice.py): numbers in, plain-language findings out (pure functions, no
reconstruction needed), and one capture routine everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import advice
from core.advice import sfm_findings

ROOT = Path(__file__).resolve().parents[1]


def per_photo(placed: int, total: int) -> list[dict]:
    return [{"name": f"{i:03d}.jpg", "photo": f"IMG_{i}.jpg", "registered": i < placed} for i in range(total)]


def test_all_placed_is_good_news() -> None:
    findings = sfm_findings({"photos_usable": 24, "photos_registered": 24, "num_models": 1,
                             "mean_reprojection_error_px": 0.6, "mean_track_length": 5.2, "keypoints_median": 4000,
                             "per_photo": per_photo(24, 24)})
    assert [f.level for f in findings] == ["info"]
    assert "All 24 photos were placed" in findings[0].message


def test_few_placed_names_the_photos_and_says_what_to_do() -> None:
    findings = sfm_findings({"photos_usable": 24, "photos_registered": 9, "num_models": 3, "other_model_sizes": [5, 4],
                             "mean_reprojection_error_px": 2.1, "mean_track_length": 2.4, "keypoints_median": 300,
                             "per_photo": per_photo(9, 24)})
    messages = " ".join(f.message for f in findings)
    hints = " ".join(f.hint for f in findings)
    assert findings[0].level == "error"
    assert "Only 9 of 24 photos were placed (38%)" in messages
    assert "IMG_9.jpg" in messages and "IMG_0.jpg" not in messages
    assert "every 15-20 degrees" in hints and "textured mat" in hints  # core.advice.ROUTINE, the one routine
    assert "3 separate groups" in messages
    assert "reprojection error is 2.10 px" in messages
    assert "seen in only 2.4 photos" in messages
    assert "features per photo" in messages


def test_nothing_placed_is_an_error() -> None:
    findings = sfm_findings({"photos_usable": 12, "photos_registered": 0})
    assert findings[0].level == "error" and "None of the 12 photos" in findings[0].message


@pytest.mark.parametrize("metrics, expected", [
    ({"edge_blur_px": 2.5, "dark_fraction": 0.0, "bright_fraction": 0.0, "product_found": 0.8}, ["looks blurry"]),
    ({"edge_blur_px": 0.3, "dark_fraction": 0.7, "bright_fraction": 0.0, "product_found": 0.8},
     ["the product is mostly dark (70%"]),
    ({"edge_blur_px": 0.3, "dark_fraction": 0.0, "bright_fraction": 0.5, "product_found": 0.0},
     ["the photo is overexposed (50%"]),  # no product found: the whole frame was judged, and it says so
    ({"edge_blur_px": -1.0, "dark_fraction": 0.1, "bright_fraction": 0.1}, []),  # -1: no edges, no verdict
])
def test_photo_quality_warnings(metrics: dict, expected: list[str]) -> None:
    warnings = advice.quality_warnings("IMG 3.JPG", metrics)
    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected, strict=True):
        assert warning.startswith("IMG 3.JPG: ") and fragment in warning


def test_capture_verdicts_on_the_set() -> None:
    metrics = {"photos_given": 9, "photos_accepted": 8, "cameras": 2, "resolutions": 1}
    issues = {"blurry": ["a.jpg", "b.jpg"]}
    findings = advice.capture_findings(["bad.txt: is not an image"], issues, metrics, needed=3)
    levels = [f.level for f in findings]
    assert levels == ["error", "warning", "warning", "info", "warning"]
    assert findings[1].message == "2 photo(s) look blurry: a.jpg, b.jpg."  # one finding for both photos
    assert "2 cameras" in findings[2].message and "8 of 9 photos accepted" in findings[3].message
    assert "every 15-20 degrees" in findings[4].hint  # few photos: the capture routine
    assert "at least 3 are needed" in advice.too_few_photos(1, 4, 3, ["x.jpg: empty"])


def test_duplicates_everywhere_mean_a_product_that_looks_alike_from_every_side() -> None:
    names = [f"IMG_{i}.jpg" for i in range(6)]
    findings = advice.issue_findings({"duplicate": names}, accepted=8)
    assert len(findings) == 1 and "look the same from every side" in findings[0].message
    assert "marker" in findings[0].hint
    assert "nearly identical" in advice.issue_findings({"duplicate": names[:2]}, accepted=8)[0].message


def test_fusion_names_the_photo_that_disagrees_and_a_low_confirmed_share() -> None:
    kept = {f"IMG_{i}.jpg": 0.6 for i in range(9)} | {"moved.jpg": 0.05}
    findings = advice.fusion_findings(kept, confirmed_share=0.5)
    assert len(findings) == 1 and "moved.jpg" in findings[0].message
    low = advice.fusion_findings({"a.jpg": 0.2, "b.jpg": 0.2}, confirmed_share=0.1)
    assert len(low) == 1 and "Only 10%" in low[0].message


def test_mesh_holes_and_depth_prior_findings() -> None:
    assert not advice.mesh_findings({"holes": 0})
    assert "2 open hole" in advice.mesh_findings({"holes": 2})[0].message
    metrics = {"accepted_views": 3, "prior_views": 4, "median_residual": 0.012, "prior_fraction": 0.3,
               "stereo_fraction": 0.6, "metric_scale_spread": 0.01, "world_units_per_metre": 4.2}
    findings = advice.depth_prior_findings(metrics, "4 supplied depth maps", ["IMG_9.jpg (flipped)"])
    assert [f.level for f in findings] == ["info", "warning", "info"]
    assert "used in 3 of 4 photos" in findings[0].message and "IMG_9.jpg" in findings[1].message
    assert "1 m is 4.2 model units" in findings[2].message


def test_the_capture_routine_is_written_once() -> None:
    """The step angle of the capture routine appears in core/advice.py and nowhere else in the code."""
    sources = [p for p in (ROOT / "core").rglob("*.py")] + list((ROOT / "pages").rglob("*.py")) + [ROOT / "Home.py"]
    mentions = [p.relative_to(ROOT).as_posix() for p in sources if "15-20" in p.read_text(encoding="utf-8")]
    assert mentions == ["core/advice.py"]
    assert advice.ROUTINE in advice.CAPTURE_GUIDE


def test_silhouette_findings_say_when_shading_stereo_was_dropped() -> None:
    """A turntable's plain product whose stereo matched the moving shading: the finding says so and why; a capture
    whose stereo was kept says nothing of it."""
    from core.advice import silhouette_findings

    carved = {"hull": 1, "masks_used": 24, "hull_share": 0.57, "completion_share": 0.0}
    dropped = silhouette_findings({**carved, "plain_stereo_dropped": 62127, "plain_stereo_deep_in_hull": 0.31})
    shading = [f for f in dropped if "turned with the camera" in f.message]
    assert len(shading) == 1 and "31%" in shading[0].message and "lightbox" in shading[0].hint
    assert not [f for f in silhouette_findings(carved) if "turned with the camera" in f.message]
