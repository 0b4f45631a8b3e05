"""Capture stage: check the user's photos before spending minutes on them.

Every photo is stored untouched under a generated name (the user's name is display-only), then checked:
format, size, decompression bombs, multi-frame files, corruption, exact duplicates (rejected, with a reason that
names the file and the fix) and blur, exposure, near-duplicates, mixed cameras (warnings). Accepted photos get an
EXIF-oriented, downscaled working copy for reconstruction, with the EXIF focal length in working pixels.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core import advice
from core.artifacts import CAPTURE_IMAGES, CAPTURE_ORIGINALS, file_sha256
from core.config import CaptureConfig
from core.manifest import PhotoRecord
from core.photos import Photo
from core.progress import StageProgress, no_progress
from core.stages import StageOutput

logger = logging.getLogger(__name__)

try:  # HEIC/HEIF from phones, when the optional pillow-heif is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
    _HEIF = True
except ImportError:  # pragma: no cover - optional
    _HEIF = False

ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "TIFF": "TIFF", "MPO": "JPEG"}
if _HEIF:
    ACCEPTED_FORMATS.update({"HEIF": "HEIC", "HEIC": "HEIC"})
FORMAT_HINT = "use JPEG, PNG, WebP or TIFF" + (" (or HEIC)" if _HEIF else "")

# EXIF tags (baseline IFD and Exif sub-IFD).
_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL = 0x010F, 0x0110
_TAG_FOCAL, _TAG_FOCAL_35MM = 0x920A, 0xA405
_TAG_FOCAL_PLANE_XRES, _TAG_FOCAL_PLANE_UNIT = 0xA20E, 0xA210
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # inch, cm, mm, um


@dataclass
class PhotoCheck:
    """What the checks found for one photo file (the capture stage and the app's upload checks use the same)."""

    status: Literal["accepted", "rejected"]
    reason: str = ""
    """Why the photo is rejected, naming the file and the fix (empty when ok)."""
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    """Width after EXIF orientation."""
    height: int | None = None
    focal_px: float | None = None
    """Focal length in original-resolution pixels from EXIF, when it can be derived."""
    focal_mm: float | None = None
    focal_35mm: float | None = None
    camera: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


def _rejected(reason: str) -> PhotoCheck:
    return PhotoCheck("rejected", reason)


@dataclass
class CaptureResult(StageOutput):
    """Accepted photos with working copies, and the record of every input photo."""

    photos: list[PhotoRecord] = field(default_factory=list)
    image_dir: Path | None = None
    """Folder of the working copies (the only images SfM sees)."""
    shared_camera: bool = True
    """All accepted photos seem to come from one camera at one resolution."""
    focal_px: float | None = None
    """Median EXIF focal length in working pixels, when every accepted photo has one and they share a camera."""

    @property
    def accepted(self) -> list[Photo]:
        """The accepted photos, the identity every later stage receives."""
        return [p.photo for p in self.photos if p.status == "accepted"]


def safe_stem(name: str, max_length: int = 40) -> str:
    """A file-system-safe version of a user's file name stem (no separators, no dots at the start)."""
    stem = Path(name.replace("\\", "/")).name
    stem = Path(stem).stem if "." in stem else stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")
    return (stem or "photo")[:max_length]


def inspect_photo(path: Path, config: CaptureConfig, display_name: str | None = None) -> PhotoCheck:
    """Check one photo file; never raises for bad input (the reason says what is wrong and how to fix it)."""
    check, _ = _read_photo(Path(path), config, display_name or Path(path).name)
    return check


def _read_photo(path: Path, config: CaptureConfig, name: str) -> tuple[PhotoCheck, np.ndarray | None]:
    """Check and decode a photo; returns the check and the oriented RGB pixels (None when rejected)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return _rejected(f"{name}: cannot be read ({exc.strerror}); upload it again."), None
    if size == 0:
        return _rejected(f"{name}: the file is empty (0 bytes); export or copy the photo again."), None
    if size > config.max_file_bytes:
        limit = _human_size(config.max_file_bytes)
        return _rejected(f"{name}: the file is {_human_size(size)}, over the {limit} limit; export it as a "
                                 "JPEG of at most a few thousand pixels per side."), None

    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit below, before decoding, with a clearer message
    try:
        with Image.open(path) as img:
            fmt = (img.format or "").upper()
            if fmt not in ACCEPTED_FORMATS:
                kind = img.format or "this"
                return _rejected(f"{name}: {kind} files are not supported; {FORMAT_HINT}."), None
            width, height = img.size
            if width * height > config.max_pixels:
                megapixels, limit = width * height / 1e6, config.max_pixels / 1e6
                return _rejected(f"{name}: declares {width}×{height} pixels ({megapixels:.0f} MP), over the "
                                         f"{limit:.0f} MP limit, so it was not decoded; resize it below the limit "
                                         "and upload it again."), None
            if getattr(img, "n_frames", 1) > 1 and fmt != "MPO":
                return _rejected(f"{name}: has {img.n_frames} frames (animated or multi-page); upload single "
                                         "still photos instead."), None
            exif = img.getexif()
            img.load()  # full decode: truncated or corrupt files fail here
            oriented = ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        return _rejected(f"{name}: is not an image (or not one we can read); {FORMAT_HINT}."), None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _rejected(f"{name}: is corrupt or truncated ({exc}); copy it from the camera again."), None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit

    width, height = oriented.size
    if min(width, height) < config.min_side:
        return _rejected(f"{name}: is only {width}×{height} pixels; photos need at least {config.min_side} "
                                 "pixels on the shorter side. Upload the full-size photo."), None

    rgb = np.asarray(oriented)
    check = PhotoCheck("accepted", width=width, height=height)
    _read_exif_focal(exif, width, height, check)
    _measure_quality(rgb, check)
    check.warnings.extend(advice.quality_warnings(name, check.metrics))
    return check, rgb


def _read_exif_focal(exif: Image.Exif, width: int, height: int, check: PhotoCheck) -> None:
    """Focal length from EXIF, converted to pixels of the oriented image when possible."""
    make = str(exif.get(_TAG_MAKE, "")).strip("\x00 ")
    model = str(exif.get(_TAG_MODEL, "")).strip("\x00 ")
    check.camera = " ".join(part for part in (make, model) if part) or None
    sub = exif.get_ifd(_EXIF_IFD)
    focal_mm = _positive_float(sub.get(_TAG_FOCAL))
    focal_35 = _positive_float(sub.get(_TAG_FOCAL_35MM))
    check.focal_mm, check.focal_35mm = focal_mm, focal_35
    long_side = max(width, height)
    if focal_35:
        # 35 mm equivalent refers to a 36 mm wide frame along the long side.
        check.focal_px = focal_35 / 36.0 * long_side
    elif focal_mm:
        xres = _positive_float(sub.get(_TAG_FOCAL_PLANE_XRES))
        unit_mm = _MM_PER_UNIT.get(int(sub.get(_TAG_FOCAL_PLANE_UNIT, 2) or 2))
        if xres and unit_mm:
            # Focal-plane resolution is in pixels per unit of the unrotated sensor width (the long side).
            check.focal_px = focal_mm * xres / unit_mm


def _human_size(num_bytes: float) -> str:
    if num_bytes >= 1e6:
        return f"{num_bytes / 1e6:.0f} MB"
    return f"{num_bytes / 1e3:.0f} kB" if num_bytes >= 1e3 else f"{num_bytes:.0f} bytes"


def _positive_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _measure_quality(rgb: np.ndarray, check: PhotoCheck) -> None:
    """Sharpness and exposure, measured on a small grey copy so the numbers do not depend on resolution."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = 512 / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    check.metrics.update(sharpness=round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 1),
                         dark_fraction=round(float((grey < 16).mean()), 3),
                         bright_fraction=round(float((grey > 250).mean()), 3))


def _dhash(rgb: np.ndarray) -> int:
    """A 256-bit difference hash: near-identical photos (a burst, a re-export) have hashes a few bits apart.

    16x16 rather than the usual 8x8: orbit photos of one product on one mat agree at 8x8 more often than not.
    """
    grey = cv2.cvtColor(cv2.resize(rgb, (17, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def working_name(index: int, name: str, suffix: str) -> str:
    """The generated file name of a photo inside the run: a counter and a cleaned stem (never the user's path)."""
    return f"{index:03d}_{safe_stem(name)}{suffix}"


def run_capture(sources: list[Path], run_dir: Path, config: CaptureConfig, progress: StageProgress = no_progress,
                names: list[str] | None = None, min_photos: int | None = None) -> CaptureResult:
    """Store the originals, check every photo, and write working copies of the accepted ones.

    ``names`` are the user's names for ``sources`` (e.g. upload names); they are shown, never used as paths.
    ``min_photos`` overrides ``config.min_photos`` (1 for a single-photo relief).
    """
    names = names or [p.name for p in sources]
    needed = config.min_photos if min_photos is None else min_photos
    originals_dir, image_dir = CAPTURE_ORIGINALS.path(run_dir), CAPTURE_IMAGES.path(run_dir)
    originals_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    result = CaptureResult(image_dir=image_dir)
    seen_sha: dict[str, str] = {}
    hashes: list[tuple[str, int]] = []
    cameras: set[str] = set()
    sizes: set[tuple[int, int]] = set()
    focals: list[float | None] = []
    started = time.perf_counter()

    for index, (source, name) in enumerate(zip(sources, names, strict=True)):
        progress(index / max(len(sources), 1), f"checking {name}")
        stored = originals_dir / working_name(index, name, _safe_suffix(source))
        shutil.copyfile(source, stored)  # the untouched original, kept even when rejected (always copied: a file
        # left by an earlier run under the same generated name must never stand in for this one)
        record = PhotoRecord(index=index, name=name, original=str(stored.relative_to(run_dir)),
                             size_bytes=stored.stat().st_size, sha256=file_sha256(stored))
        result.photos.append(record)
        if record.sha256 in seen_sha:
            record.status, record.reason = "rejected", (f"{name}: is an exact copy of '{seen_sha[record.sha256]}'; "
                                                        "remove one of them.")
            continue
        seen_sha[record.sha256] = name

        check, rgb = _read_photo(stored, config, name)
        record.warnings, record.metrics = check.warnings, check.metrics
        record.width, record.height, record.camera = check.width, check.height, check.camera
        if not check.accepted or rgb is None:
            record.status, record.reason = "rejected", check.reason
            continue

        scale = min(1.0, config.working_max_side / max(rgb.shape[:2]))
        if scale < 1:
            size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        working = image_dir / f"{stored.stem}.jpg"
        cv2.imwrite(str(working), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        record.working = working.name
        record.focal_px = None if check.focal_px is None else round(check.focal_px * scale, 2)
        focals.append(record.focal_px)
        cameras.add(check.camera or "unknown camera")
        sizes.add((rgb.shape[1], rgb.shape[0]))

        digest = _dhash(rgb)
        twin = next((other for other, h in hashes if (h ^ digest).bit_count() <= advice.NEAR_DUPLICATE_BITS), None)
        if twin:
            record.warnings.append(advice.near_duplicate(name, twin))
        hashes.append((name, digest))

    accepted = [p for p in result.photos if p.status == "accepted"]
    rejected = [p for p in result.photos if p.status == "rejected"]
    result.shared_camera = len(cameras) <= 1 and len(sizes) <= 1
    if result.shared_camera and focals and all(f is not None for f in focals):
        result.focal_px = float(np.median([f for f in focals if f is not None]))
    result.metrics = {
        "photos_given": len(sources),
        "photos_accepted": len(accepted),
        "photos_rejected": len(rejected),
        "photos_with_warnings": sum(1 for p in accepted if p.warnings),
        "cameras": len(cameras),
        "resolutions": len(sizes),
        "exif_focal_px": result.focal_px,
        "seconds_per_photo": round((time.perf_counter() - started) / max(len(sources), 1), 3),
    }
    reasons = [p.reason for p in rejected]
    result.findings = advice.capture_findings(reasons, [w for p in accepted for w in p.warnings], result.metrics,
                                              needed)
    result.artifacts = [CAPTURE_ORIGINALS, CAPTURE_IMAGES]
    if len(accepted) < needed:
        result.ok = False
        result.failure = advice.too_few_photos(len(accepted), len(sources), needed, reasons)
    progress(1.0, f"{len(accepted)} of {len(sources)} photos accepted")
    return result


def _safe_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
