"""SfM verdicts: numbers in, plain-language advice out (pure function, no reconstruction needed)."""

from __future__ import annotations

from core.sfm import sfm_findings


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
    assert "20-30 degree steps" in hints and "textured mat" in hints
    assert "3 separate groups" in messages
    assert "reprojection error is 2.10 px" in messages
    assert "seen in only 2.4 photos" in messages
    assert "features per photo" in messages


def test_nothing_placed_is_an_error() -> None:
    findings = sfm_findings({"photos_usable": 12, "photos_registered": 0})
    assert findings[0].level == "error" and "None of the 12 photos" in findings[0].message
