"""Capture stage: every kind of bad input gets a file-specific reason, and the good photos still go through."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from core.config import CaptureConfig
from core.stages.capture import inspect_photo, run_capture, safe_stem

RNG = np.random.default_rng(7)


def textured(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A sharp, feature-rich RGB image (smoothed noise at two scales)."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(0, 255, (height // 16, width // 16, 3)).astype(np.float32), (width, height))
    fine = rng.uniform(-60, 60, (height, width, 3)).astype(np.float32)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def save(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    Image.fromarray(rgb).save(path, **kwargs)
    return path


def png_bomb(width: int, height: int) -> bytes:
    """A small PNG that declares a huge size (a decompression bomb): valid header, a token of pixel data."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture()
def corpus(tmp_path: Path) -> dict[str, Path]:
    """Three good photos and one file of every kind of bad input."""
    src = tmp_path / "upload"
    src.mkdir()
    files = {f"good{i}": save(src / f"good{i}.jpg", textured(seed=i), quality=92) for i in range(3)}
    files["copy"] = src / "good0 copy.jpg"
    files["copy"].write_bytes(files["good0"].read_bytes())
    files["text"] = src / "notes.jpg"
    files["text"].write_text("this is not a photo")
    files["empty"] = src / "empty.png"
    files["empty"].write_bytes(b"")
    data = files["good1"].read_bytes()
    files["truncated"] = src / "truncated.jpg"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["tiny"] = save(src / "tiny.png", textured(120, 90))
    files["bomb"] = src / "bomb.png"
    files["bomb"].write_bytes(png_bomb(30000, 30000))
    frames = [Image.fromarray(textured(320, 240, seed=s)) for s in (10, 11)]
    files["animated"] = src / "animated.webp"
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:], duration=100)
    files["gif"] = src / "logo.gif"
    frames[0].save(files["gif"])
    files["blurry"] = save(src / "blurry.jpg", cv2.GaussianBlur(textured(seed=5), (0, 0), 12), quality=92)
    files["traversal"] = save(src / "odd name ..%2F..%2Fetc passwd.webp", textured(seed=6), format="WEBP")
    files["bmp"] = save(src / "scan.bmp", textured(seed=8))
    return files


def test_bad_inputs_are_named_with_their_reason_and_good_photos_go_through(corpus: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    photos = list(corpus.values())
    result = run_capture(photos, run_dir, CaptureConfig())
    by_name = {record.name: record for record in result.photos}

    expected_reasons = {
        "good0 copy.jpg": "exact copy of 'good0.jpg'",
        "notes.jpg": "is not an image",
        "empty.png": "empty (0 bytes)",
        "truncated.jpg": "corrupt or truncated",
        "tiny.png": "only 120×90 pixels",
        "bomb.png": "over the 100 MP limit, so it was not decoded",
        "animated.webp": "2 frames",
        "logo.gif": "GIF files are not supported",
        "scan.bmp": "BMP files are not supported",
    }
    for name, fragment in expected_reasons.items():
        record = by_name[name]
        assert record.status == "rejected", name
        assert record.reason.startswith(name + ":"), record.reason
        assert fragment in record.reason, record.reason

    accepted = {r.name for r in result.accepted}
    assert accepted == {"good0.jpg", "good1.jpg", "good2.jpg", "blurry.jpg", "odd name ..%2F..%2Fetc passwd.webp"}
    assert result.ok
    assert any("looks blurry" in w for w in by_name["blurry.jpg"].warnings)
    assert not by_name["good0.jpg"].warnings

    # Originals are kept untouched (even rejected ones), under generated names inside the run folder.
    for record in result.photos:
        stored = (run_dir / record.original).resolve()
        assert stored.is_relative_to(run_dir.resolve())
        assert stored.read_bytes() == corpus_path(corpus, record.name).read_bytes()
    assert all("/" not in Path(r.original).name and ".." not in Path(r.original).name for r in result.photos)
    # Working copies exist for accepted photos only.
    assert sorted(p.name for p in (run_dir / "capture" / "images").iterdir()) == sorted(
        photo.working for photo in result.accepted)
    # Findings repeat each rejection as an error.
    errors = [f.message for f in result.findings if f.level == "error"]
    assert len(errors) == len(expected_reasons)


def corpus_path(corpus: dict[str, Path], name: str) -> Path:
    return next(p for p in corpus.values() if p.name == name)


def test_too_few_usable_photos_fails_with_an_actionable_reason(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = run_capture([corpus["good0"], corpus["text"], corpus["empty"]], tmp_path / "run", CaptureConfig())
    assert not result.ok
    assert "Only 1 of 3 photos can be used; at least 3 are needed" in result.failure
    assert "notes.jpg" in result.failure


def test_exif_orientation_is_applied_and_focal_length_read(tmp_path: Path) -> None:
    rgb = textured(640, 480)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    exif[0x010F], exif[0x0110] = "Acme", "Cam 1"
    exif.get_ifd(0x8769)[0xA405] = 28  # 28 mm equivalent
    path = tmp_path / "portrait.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    check = inspect_photo(path, CaptureConfig())
    assert check.accepted
    assert (check.width, check.height) == (480, 640)
    assert check.camera == "Acme Cam 1"
    assert check.focal_px == pytest.approx(28 / 36 * 640)

    result = run_capture([path] * 1, tmp_path / "run", CaptureConfig(working_max_side=320), min_photos=1)
    record = result.photos[0]
    working = cv2.imread(str(tmp_path / "run" / "capture" / "images" / record.working))
    assert working.shape[:2] == (320, 240)  # oriented, then downscaled
    assert record.focal_px == pytest.approx(28 / 36 * 640 / 2, rel=1e-3)


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = save(tmp_path / "big.png", textured())
    check = inspect_photo(path, CaptureConfig(max_file_bytes=1000))
    assert not check.accepted
    size = path.stat().st_size
    assert check.reason.startswith(f"big.png: {size / 1e3:,.1f} kB is over the 1.0 kB limit;"), check.reason
    # Near the limit the sizes differ in the message too (issue 15: never '60 MB is over the 60 MB limit').
    check = inspect_photo(path, CaptureConfig(max_file_bytes=size - 1))
    assert f"{size:,} bytes is over the {size - 1:,}-byte limit" in check.reason, check.reason


def test_mixed_cameras_warn(tmp_path: Path) -> None:
    paths = [save(tmp_path / f"a{i}.jpg", textured(640, 480, seed=i)) for i in range(2)]
    paths.append(save(tmp_path / "b.jpg", textured(800, 600, seed=9)))
    result = run_capture(paths, tmp_path / "run", CaptureConfig())
    assert not result.shared_camera
    assert any("resolutions" in f.message for f in result.findings)


def test_heic_is_read_when_supported(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "phone.heic"
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(textured())).save(buffer, quality=90)
    path.write_bytes(buffer.getvalue())
    assert inspect_photo(path, CaptureConfig()).accepted


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\IMG_01.JPG", "IMG_01"),
    ("  ..hidden.png", "hidden"),
    ("привет мир.jpg", "photo"),
    ("a" * 300 + ".jpg", "a" * 40),
])
def test_safe_stem(name: str, expected: str) -> None:
    assert safe_stem(name) == expected


@pytest.mark.parametrize("kind", ["grey16.png", "rgb16.png", "rgb16.tif", "grey_float.tif", "rgb_float.tif"])
def test_high_bit_depth_photos_are_converted_not_clipped(tmp_path: Path, kind: str) -> None:
    """Issue 15 item 9: 16-bit and float photos become faithful 8-bit working copies (not white, not black)."""
    rgb8 = textured(400, 300)
    grey8 = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY)
    bgr8 = rgb8[:, :, ::-1]
    data = {"grey16.png": grey8.astype(np.uint16) * 257, "rgb16.png": bgr8.astype(np.uint16) * 257,
            "rgb16.tif": bgr8.astype(np.uint16) * 257, "grey_float.tif": grey8.astype(np.float32) / 255,
            "rgb_float.tif": bgr8.astype(np.float32) / 255}[kind]
    path = tmp_path / kind
    assert cv2.imwrite(str(path), data)
    result = run_capture([path], tmp_path / "run", CaptureConfig(), min_photos=1)
    record = result.photos[0]
    assert record.status == "accepted", record.reason
    working = cv2.imread(str(result.image_dir / record.working))[:, :, ::-1]
    expected = np.dstack([grey8] * 3) if "grey" in kind else rgb8
    # Compared smoothed: the JPEG working copy subsamples colour noise; white or black would be ~100 off.
    smooth = [cv2.GaussianBlur(a.astype(np.float32), (0, 0), 3) for a in (working, expected)]
    assert np.abs(smooth[0] - smooth[1]).mean() < 6
    assert not any("overexposed" in w for w in record.warnings)
