"""Capture stage: check the user's photos before spending minutes on them.

Every photo is stored untouched under a generated name (the user's name is display-only), then checked:
format, size, decompression bombs, multi-frame files, corruption, exact duplicates (rejected, with a reason that
names the file and the fix) and blur, exposure, near-duplicates, mixed cameras (warnings). Blur and exposure are
judged on the product (``core.segmentation``), not on the white sweep or black cloth around it, and near-duplicates
on the product's surroundings too, so turntable photos whose product turned are not flagged. Accepted photos get an
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
from core.segmentation import segment_product
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
_TAG_MAKE, _TAG_MODEL, _TAG_ORIENTATION = 0x010F, 0x0110, 0x0112
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
    region: np.ndarray | None = field(default=None, repr=False)
    """The product's region in the small copy the quality was measured on (None when rejected)."""

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
    issues: dict[str, list[str]] = field(default_factory=dict)
    """Kind of photo problem (``advice.QUALITY_ISSUES``) -> the photos (user's names) it applies to."""

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
    """Check one photo file; never raises for bad input (the reason says what is wrong and how to fix it).

    The pixels are decoded bounded (the checks measure on a ``_QUALITY_SIDE`` copy): a JPEG at a reduced scale
    inside the decoder, other formats reduced right after decoding, so a 99 MP photo costs Pillow's one decoded
    buffer (4 bytes a pixel; PNG and TIFF cannot decode smaller) instead of ~1.3 GB of full-size copies. The app
    checks photos above ``IN_PROCESS_PIXELS`` that are not JPEG in a child process (core/jobs/photo_check.py)."""
    check, _ = _read_photo(Path(path), config, display_name or Path(path).name, decode_side=2 * _QUALITY_SIDE)
    return check


IN_PROCESS_PIXELS = 24_000_000
"""Above this, a non-JPEG photo (decoded whole: 4 bytes a pixel, ~100 MB at 24 MP) is not decoded in a long-lived
process such as the app's server. Measured on a 99 MP upload: the checking process peaked at 1.4 GB with full-size
copies, 0.45 GB with the bounded decode of a PNG, 58 MB with the PNG checked in the child, 101 MB for a JPEG."""


def declared_pixels(path: Path) -> tuple[str, int]:
    """The format and pixel count a photo's header declares (no pixels decoded); ('', 0) when unreadable."""
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read; the checks apply their own limit
    try:
        with Image.open(path) as img:
            return (img.format or "").upper(), img.size[0] * img.size[1]
    except Exception:  # not an image Pillow knows: the check itself names the problem
        return "", 0
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


_ROTATED_ORIENTATIONS = {5, 6, 7, 8}
"""EXIF orientations that swap width and height for display."""


def _read_photo(path: Path, config: CaptureConfig, name: str, decode_side: int | None = None
                ) -> tuple[PhotoCheck, np.ndarray | None]:
    """Check and decode a photo; returns the check and the oriented RGB pixels (None when rejected). With
    ``decode_side`` the pixels come back with a longer side of about that much (never more than twice), the
    width and height in the check are still the photo's own."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return _rejected(f"{name}: cannot be read ({exc.strerror}); upload it again."), None
    if size == 0:
        return _rejected(f"{name}: the file is empty (0 bytes); export or copy the photo again."), None
    if size > config.max_file_bytes:
        return _rejected(f"{name}: {advice.over_size_limit(size, config.max_file_bytes)}; export it as a "
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
            full_size = (height, width) if exif.get(_TAG_ORIENTATION) in _ROTATED_ORIENTATIONS else (width, height)
            if decode_side:
                img.draft("RGB", (decode_side, decode_side))  # JPEG: decode at 1/2..1/8 scale; others: no-op
            img.load()  # the whole file is decoded: truncated or corrupt files fail here
            decoded = img
            if decode_side and max(img.size) >= 2 * decode_side:
                decoded = img.reduce(max(img.size) // decode_side)  # box filter, like the checks' INTER_AREA
                decoded.info.update(img.info)  # keeps the EXIF orientation for exif_transpose
            oriented = to_rgb8(ImageOps.exif_transpose(decoded))
            del decoded
    except UnidentifiedImageError:
        rgb_float = _read_float_tiff(path)  # Pillow cannot open float RGB TIFFs; OpenCV can
        if rgb_float is None:
            return _rejected(f"{name}: is not an image (or not one we can read); {FORMAT_HINT}."), None
        oriented, exif = Image.fromarray(rgb_float), Image.Exif()
        full_size = oriented.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _rejected(f"{name}: is corrupt or truncated ({exc}); copy it from the camera again."), None
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit

    width, height = full_size if decode_side else oriented.size
    if min(width, height) < config.min_side:
        return _rejected(f"{name}: is only {width}×{height} pixels; photos need at least {config.min_side} "
                                 "pixels on the shorter side. Upload the full-size photo."), None

    rgb = np.asarray(oriented)
    check = PhotoCheck("accepted", width=width, height=height)
    _read_exif_focal(exif, width, height, check)
    check.region = _measure_quality(rgb, check)
    check.warnings.extend(advice.quality_warnings(name, check.metrics))
    return check, rgb


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB of any Pillow mode. ``convert("RGB")`` clips 16-bit and 32-bit greyscale to white and float
    images to black (issue 15 item 9), so those are scaled to 0..255 first: 16-bit by its full range, integers
    above 16 bits and floats above 1 by their maximum, floats in 0..1 by 255."""
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img.convert("RGB")
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return Image.fromarray(_scale_to_uint8(values, sixteen_bit=img.mode.startswith("I;16"))).convert("RGB")


def _scale_to_uint8(values: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    if sixteen_bit or (values.dtype.kind != "f" and 255 < top <= 65535):
        scale = 255.0 / 65535.0
    elif values.dtype.kind == "f" and top <= 1.0:
        scale = 255.0
    else:
        scale = 255.0 / top if top > 255 else 1.0
    return np.clip(values * scale, 0, 255).round().astype(np.uint8)


def _read_float_tiff(path: Path) -> np.ndarray | None:
    """RGB uint8 of a TIFF Pillow cannot open (float or 16-bit colour), or None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.ndim not in (2, 3):
        return None
    data = np.nan_to_num(data.astype(np.float64) if data.dtype.kind == "f" else data, nan=0.0, posinf=0.0,
                         neginf=0.0)
    rgb = _scale_to_uint8(data, sixteen_bit=data.dtype == np.uint16)
    if rgb.ndim == 2:
        return np.dstack([rgb] * 3)
    return np.ascontiguousarray(rgb[:, :, 2::-1] if rgb.shape[2] >= 3 else np.dstack([rgb[:, :, 0]] * 3))


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


def _positive_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if np.isfinite(number) and number > 0 else None


_QUALITY_SIDE = 512
"""Quality is measured on a copy with this longer side, so the numbers do not depend on resolution."""
_SEGMENT_SIDE = 320
"""The product region for the checks is segmented at this size (~0.2 s a photo; the checks need no fine outline)."""
_MIN_PRODUCT_SHARE, _MAX_PRODUCT_SHARE = 0.005, 0.9
"""A product region outside these shares of the frame is not believed (the whole frame is judged instead)."""
_MIN_REGION_CONFIDENCE = 0.3
"""Segmentations less confident than this are not believed either."""
_MIN_EDGE_STEP = 4.0
"""Grey levels per pixel below which no edge is crisp (8-bit sensor noise is 1-2)."""
_MIN_CONTRAST = 40.0
"""Grey-level range (2-98 %) above which a frame without crisp edges is blurred rather than featureless."""
_MIN_EDGE_PIXELS = 30
"""Edge crest pixels needed to judge blur (fewer: no verdict)."""
_MAX_BLUR_PX = 20.0
"""Blur estimates are capped here (the ratio flattens out)."""
_THUMBNAIL_SIDE = 160
"""Side of the thumbnails the product's surroundings are compared on (near-duplicates)."""


def product_region(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Where the product is in a (small) photo: the segmentation's mask when plausible, else the whole frame.

    Shops shoot on white sweeps and black cloths: judged on the whole frame every such photo is "overexposed" or
    "mostly dark"; judged on the product it is not. Returns (mask, the segmentation's confidence; 0 = fallback).
    """
    segmentation = segment_product(rgb, max_side=_SEGMENT_SIDE, iterations=2)
    share = float(segmentation.mask.mean())
    if not _MIN_PRODUCT_SHARE <= share <= _MAX_PRODUCT_SHARE or segmentation.confidence < _MIN_REGION_CONFIDENCE:
        return np.ones(rgb.shape[:2], bool), 0.0
    return segmentation.mask, segmentation.confidence


def edge_blur_px(grey: np.ndarray, region: np.ndarray) -> float:
    """Blur of the strongest edges in ``region``: the Gaussian sigma in pixels of a blurred step (NaN: no edges).

    Re-blurring a step edge blurred by sigma with s lowers its gradient peak to C / sqrt(2 pi (sigma^2 + s^2)), so
    the ratio of the peaks after s = 1 and s = 2 gives sigma whatever the edge's contrast (Hu and de Haan 2006):
    a plain product's few outline edges are judged as fairly as a printed one's many, where the variance of the
    Laplacian mostly measures how much texture there is. Measured on 512 px copies of 1024 px renders: sharp 0.0,
    blurred by sigma 1 / 2 / 3 px: 0.65-0.7 / 1.55-1.6 / 2.4-2.6; on 8 px random blocks blurred by 6 and 12: 3.9 and
    5.3 (edges closer than the blur interact; the estimate stays monotonic).
    """
    g0 = grey.astype(np.float32)

    def gradient(sigma: float) -> np.ndarray:
        blurred = cv2.GaussianBlur(g0, (0, 0), sigma)
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # Sobel's gain on a unit slope
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        return np.sqrt(gx * gx + gy * gy)

    if not region.any():
        return float("nan")
    g1, g2 = gradient(1.0), gradient(2.0)
    top = float(np.quantile(g1[region], 0.98))
    contrast = float(np.subtract(*np.quantile(g0[region], [0.98, 0.02])))
    if top < _MIN_EDGE_STEP and contrast < _MIN_CONTRAST:
        return float("nan")  # featureless: nothing to judge by
    crest = (g1 >= cv2.dilate(g1, np.ones((3, 3), np.uint8))) & region & (g1 > 0.3 * top)
    if crest.sum() < _MIN_EDGE_PIXELS:
        return float("nan")
    ratio = g1[crest] / np.maximum(cv2.dilate(g2, np.ones((3, 3), np.uint8))[crest], 1e-6)
    ratio = np.clip(ratio, 1.0 + 1e-3, None)
    sigma2 = (4.0 - ratio**2) / (ratio**2 - 1.0)
    return float(np.sqrt(np.clip(np.median(sigma2), 0.0, _MAX_BLUR_PX**2)))


def _measure_quality(rgb: np.ndarray, check: PhotoCheck) -> np.ndarray:
    """Blur and exposure of the product (not the backdrop) on a small copy; returns that copy's product region."""
    scale = _QUALITY_SIDE / max(rgb.shape[:2])
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    small = np.ascontiguousarray(small)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    region, found = product_region(small)
    band = cv2.dilate(region.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # the outline is the product's
    blur = edge_blur_px(grey, band)
    values = grey[region]
    check.metrics.update(
        sharpness=round(float(cv2.Laplacian(grey, cv2.CV_64F)[band].var()), 1),
        edge_blur_px=round(blur, 2) if np.isfinite(blur) else -1.0,
        dark_fraction=round(float((values < 16).mean()), 3), bright_fraction=round(float((values > 250).mean()), 3),
        product_fraction=round(float(region.mean()), 3), product_found=round(found, 2))
    return region


def _dhash(rgb: np.ndarray) -> int:
    """A 256-bit difference hash: near-identical photos (a burst, a re-export) have hashes a few bits apart.

    16x16 rather than the usual 8x8: orbit photos of one product on one mat agree at 8x8 more often than not.
    """
    grey = cv2.cvtColor(cv2.resize(rgb, (17, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


@dataclass(frozen=True)
class PhotoPrint:
    """What the near-duplicate check keeps of a photo: its hash, a thumbnail and the product's box in it."""

    name: str
    whole: int
    thumbnail: np.ndarray
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1) of the product as shares of the frame (the whole frame when not found)."""


def photo_print(name: str, small: np.ndarray, region: np.ndarray) -> PhotoPrint:
    rows, cols = np.nonzero(region)
    h, w = region.shape
    box = (0.0, 0.0, 1.0, 1.0) if len(rows) == 0 or region.all() else (
        cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)
    scale = _THUMBNAIL_SIDE / max(small.shape[:2])
    thumbnail = cv2.resize(small, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return PhotoPrint(name, _dhash(small), thumbnail, box)


def near_duplicates(a: PhotoPrint, b: PhotoPrint) -> bool:
    """Both the whole frames and the product's surroundings (the union of their boxes, grown by a tenth) match.

    On a turntable the backdrop fills most of the frame and never moves, so whole-frame hashes of photos whose
    product has turned agree; the product's own surroundings tell them apart.
    """
    if (a.whole ^ b.whole).bit_count() > advice.NEAR_DUPLICATE_BITS:
        return False
    x0, y0 = min(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x1, y1 = max(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    pad_x, pad_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    h, w = a.thumbnail.shape[:2]
    c0, c1 = int(max(0.0, x0 - pad_x) * w), int(np.ceil(min(1.0, x1 + pad_x) * w))
    r0, r1 = int(max(0.0, y0 - pad_y) * h), int(np.ceil(min(1.0, y1 + pad_y) * h))
    if c1 - c0 < 4 or r1 - r0 < 4 or a.thumbnail.shape != b.thumbnail.shape:
        return True
    crop_a = np.ascontiguousarray(a.thumbnail[r0:r1, c0:c1])
    crop_b = np.ascontiguousarray(b.thumbnail[r0:r1, c0:c1])
    return (_dhash(crop_a) ^ _dhash(crop_b)).bit_count() <= advice.NEAR_DUPLICATE_BITS


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
    prints: list[PhotoPrint] = []
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

        for kind in advice.quality_issues(check.metrics):
            result.issues.setdefault(kind, []).append(name)
        assert check.region is not None
        this = photo_print(name, cv2.resize(rgb, check.region.shape[::-1], interpolation=cv2.INTER_AREA),
                           check.region)
        twin = next((other.name for other in prints if near_duplicates(other, this)), None)
        if twin:
            record.warnings.append(advice.near_duplicate(name, twin))
            result.issues.setdefault("duplicate", []).append(name)
        prints.append(this)

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
    result.findings = advice.capture_findings(reasons, result.issues, result.metrics, needed)
    result.artifacts = [CAPTURE_ORIGINALS, CAPTURE_IMAGES]
    if len(accepted) < needed:
        result.ok = False
        result.failure = advice.too_few_photos(len(accepted), len(sources), needed, reasons)
    progress(1.0, f"{len(accepted)} of {advice.count(len(sources), 'photo')} accepted")
    return result


def _safe_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
