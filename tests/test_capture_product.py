"""Capture checks judged on the product: white sweeps, black cloths, plain products, turntables, grouped findings."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.synthetic import CaptureSpec, render_capture
from core import advice
from core.config import CaptureConfig
from core.stages.capture import run_capture


def _studio_photo(background: int, product_level: int, seed: int = 0, size: tuple[int, int] = (640, 480),
                  printed: bool = True, tint: tuple[float, float, float] = (1.0, 0.85, 0.7)) -> np.ndarray:
    """A product (a printed or plain box, lit from the left) on a uniform backdrop of grey level ``background``."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = np.full((h, w, 3), background, np.float32)
    x0, x1, y0, y1 = w // 3, 2 * w // 3, h // 4, 3 * h // 4
    face = np.full((y1 - y0, x1 - x0, 3), product_level, np.float32) * np.array(tint)
    if printed:
        for _ in range(40):  # a few printed marks
            cx, cy = rng.integers(5, x1 - x0 - 5), rng.integers(5, y1 - y0 - 5)
            colour = tuple(float(v) for v in rng.uniform(40, 200, 3))
            cv2.circle(face, (int(cx), int(cy)), int(rng.integers(3, 12)), colour, -1)
    face[:, : (x1 - x0) // 2] *= 0.8 if product_level < 255 else 1.0  # the shaded side (none when burnt out)
    image[y0:y1, x0:x1] = face
    image += rng.normal(0, 1.5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(folder: Path, name: str, rgb: np.ndarray, quality: int = 92) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return path


def _capture(paths: list[Path], run_dir: Path):
    return run_capture(paths, run_dir, CaptureConfig(working_max_side=640))


def test_a_well_exposed_product_on_a_white_sweep_or_black_cloth_does_not_warn(tmp_path: Path) -> None:
    white = _studio_photo(background=255, product_level=150, seed=1)
    black = _studio_photo(background=4, product_level=150, seed=2)
    # Judged on the whole frame these would warn: most pixels are clipped white or near black.
    assert (cv2.cvtColor(white, cv2.COLOR_RGB2GRAY) > 250).mean() > advice.BRIGHT_FRACTION
    assert (cv2.cvtColor(black, cv2.COLOR_RGB2GRAY) < 16).mean() > advice.DARK_FRACTION
    paths = [_save(tmp_path / "in", "sweep.jpg", white), _save(tmp_path / "in", "cloth.jpg", black),
             _save(tmp_path / "in", "sweep2.jpg", _studio_photo(255, 150, seed=3))]
    result = _capture(paths, tmp_path / "run")
    for record in result.photos:
        assert record.warnings == [], (record.name, record.warnings)
        assert 0.12 < record.metrics["product_fraction"] < 0.22  # the box covers a sixth of the frame


def test_an_overexposed_product_warns_naming_the_product(tmp_path: Path) -> None:
    # Clipped white: no detail left on the product.
    burnt = _studio_photo(background=90, product_level=255, seed=4, printed=False, tint=(1.0, 1.0, 1.0))
    result = _capture([_save(tmp_path / "in", "burnt.jpg", burnt)], tmp_path / "run")
    warnings = result.photos[0].warnings
    assert any("the product is overexposed" in w for w in warnings), warnings


def test_a_sharp_plain_product_is_not_called_blurry_and_a_blurred_one_is(tmp_path: Path) -> None:
    plain = _studio_photo(background=235, product_level=170, seed=5, printed=False)
    # Little texture: the variance of the Laplacian on a 512 px copy (the old measure, threshold 60) calls it blurry.
    small = cv2.resize(cv2.cvtColor(plain, cv2.COLOR_RGB2GRAY), (512, 384), interpolation=cv2.INTER_AREA)
    assert cv2.Laplacian(small, cv2.CV_64F).var() < 60
    blurred = [cv2.GaussianBlur(plain, (0, 0), 4.0) for _ in range(3)]
    paths = [_save(tmp_path / "in", "sharp.jpg", plain)]
    paths += [_save(tmp_path / "in", f"shaky_{i}.jpg", b, quality=80 + i) for i, b in enumerate(blurred)]
    result = _capture(paths, tmp_path / "run")
    by_name = {r.name: r for r in result.photos}
    assert not any("blurry" in w for w in by_name["sharp.jpg"].warnings)
    assert all(any("looks blurry" in w for w in by_name[f"shaky_{i}.jpg"].warnings) for i in range(3))
    # One finding names the three blurry photos, instead of three findings.
    blurry = [f for f in result.findings if "blurry" in f.message]
    assert len(blurry) == 1 and all(f"shaky_{i}.jpg" in blurry[0].message for i in range(3))
    assert blurry[0].message.startswith("3 photo(s) look blurry")


@pytest.fixture(scope="module")
def turntable(tmp_path_factory: pytest.TempPathFactory):
    spec = CaptureSpec(object="procedural-box", mode="turntable", support="none", backdrop="plain", num_views=8,
                       width=320, height=240, elevations_deg=(30.0,), image_format="png", write_depth=False,
                       write_masks=False)
    return render_capture(spec, tmp_path_factory.mktemp("turntable"))


def test_turntable_photos_whose_product_turned_are_not_near_duplicates(turntable, tmp_path: Path) -> None:
    from core.stages.capture import _dhash

    photos = [turntable.image_dir / n for n in turntable.image_names]
    images = [cv2.imread(str(p))[:, :, ::-1] for p in photos]
    # The still backdrop fills the frame: whole-frame hashes of some turned views are within the 10-bit threshold.
    nearest = [min((_dhash(np.ascontiguousarray(images[i])) ^ _dhash(np.ascontiguousarray(images[j]))).bit_count()
                   for j in range(i)) for i in range(1, len(images))]
    assert min(nearest) <= 10
    # A real duplicate (the same photo exported again) must still be caught.
    again = _save(tmp_path / "in", "view_000 again.jpg", np.ascontiguousarray(images[0]), quality=85)
    result = _capture([*photos, again], tmp_path / "run")
    flagged = [r.name for r in result.photos if any("nearly identical" in w for w in r.warnings)]
    assert flagged == ["view_000 again.jpg"]
