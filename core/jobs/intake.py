"""Intake: photos (or a .zip of photos) received from a browser or a folder, stored under generated names, checked
with the capture stage's own checks, and turned into queued jobs.

Nothing here raises for bad user input: every refused file comes back as an ``UploadedPhoto`` with a reason.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.config import CaptureConfig, preset_config
from core.jobs.dispatch import dispatch
from core.jobs.store import REPO_ROOT, Job, JobMode, Store, UploadedPhoto
from core.manifest import new_run_id

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".mpo"}
DEPTH_SUFFIXES = {".npy", ".png"}

_CAPTURE_DEFAULTS = CaptureConfig()


@dataclass(frozen=True)
class UploadLimits:
    """What the studio accepts from a browser; per-file limits follow CaptureConfig so they are set in one place."""

    max_photos: int = 300
    """Photos per job (files in a .zip count one by one)."""
    max_file_bytes: int = _CAPTURE_DEFAULTS.max_file_bytes
    """Largest single photo."""
    max_pixels: int = _CAPTURE_DEFAULTS.max_pixels
    """Largest declared pixel count of a photo (checked before decoding)."""
    max_zip_bytes: int = 1_000_000_000
    """Largest .zip upload (keep .streamlit/config.toml server.maxUploadSize at least this, in MB)."""
    max_total_bytes: int = 3_000_000_000
    """Largest total of all photos of a job, after unpacking."""
    max_depth_files: int = 300
    """Depth maps per job."""

    def capture_config(self) -> CaptureConfig:
        return CaptureConfig(max_file_bytes=self.max_file_bytes, max_pixels=self.max_pixels)

    def describe(self) -> str:
        return (f"Up to {self.max_photos} photos, each at most {self.max_file_bytes / 1e6:.0f} MB and "
                f"{self.max_pixels / 1e6:.0f} megapixels (JPEG, PNG, WebP, TIFF), or one .zip of photos up to "
                f"{self.max_zip_bytes / 1e9:.0f} GB; {self.max_total_bytes / 1e9:.0f} GB in all.")


UPLOAD_LIMITS = UploadLimits()


def display_name(name: str) -> str:
    """The last part of a user-given file name, for display (zip members may carry folders)."""
    return PurePosixPath(name.replace("\\", "/")).name[:120] or "unnamed"


def generated_name(position: int, name: str) -> str:
    """A safe storage name: a counter plus a cleaned stem; the user's name never becomes a path as given."""
    from core.stages.capture import safe_stem

    suffix = PurePosixPath(display_name(name)).suffix.lower()
    return f"{position:03d}_{safe_stem(display_name(name))}{suffix if suffix in PHOTO_SUFFIXES else '.img'}"


def receive_upload(folder: Path, name: str, data: bytes, existing: int,
                   limits: UploadLimits = UPLOAD_LIMITS) -> list[UploadedPhoto]:
    """Store and check one uploaded file (a photo, or a .zip of photos) in ``folder``.

    ``existing`` is how many photos the folder already holds (for numbering and the count limit). Returns one entry
    per photo, accepted or refused with a reason; nothing here raises for bad user input.
    """
    full = _quota_problem(len(data))
    if full:
        return [_refused(display_name(name), len(data), f"{display_name(name)}: {full}")]
    if display_name(name).lower().endswith(".zip"):
        return _receive_zip(folder, name, data, existing, limits)
    return [_receive_photo(folder, display_name(name), data, existing, limits)]


def _quota_problem(incoming: int) -> str:
    """Why the data folder cannot take ``incoming`` more bytes under ``$PRODUCT_STUDIO_QUOTA_GB`` ('' if it can)."""
    from core.jobs.store import data_dir
    from core.settings import folder_bytes, quota_bytes

    quota = quota_bytes()
    if not quota:
        return ""
    used = folder_bytes(data_dir())
    if used + incoming <= quota:
        return ""
    return (f"the studio's storage is full ({used / 1e9:.2f} of {quota / 1e9:.2f} GB used); ask the operator to "
            "delete old runs or raise PRODUCT_STUDIO_QUOTA_GB.")


def _receive_photo(folder: Path, name: str, data: bytes, position: int, limits: UploadLimits) -> UploadedPhoto:
    if position >= limits.max_photos:
        return _refused(name, len(data), f"{name}: over the limit of {limits.max_photos} photos per product; leave "
                                         "out near-duplicates.")
    if len(data) > limits.max_file_bytes:
        return _refused(name, len(data), f"{name}: {len(data) / 1e6:.1f} MB is over the limit of "
                                         f"{limits.max_file_bytes / 1e6:.0f} MB a photo; export it as a JPEG of a "
                                         "few thousand pixels per side.")
    if not looks_like_photo(data):  # checked before anything is written: a zip of zeros stores nothing
        return _refused(name, len(data), f"{name}: is not a photo (no JPEG, PNG, WebP, TIFF or HEIC header); "
                                         "upload the camera's original file.")
    folder.mkdir(parents=True, exist_ok=True)
    stored = generated_name(position, name)
    path = folder / stored
    path.write_bytes(data)
    from core.stages.capture import inspect_photo

    check = inspect_photo(path, limits.capture_config(), name)
    if check.status != "accepted":  # refused files are not kept (they would only fill the draft folder)
        path.unlink(missing_ok=True)
        return _refused(name, len(data), check.reason)
    photo = UploadedPhoto(name, stored, len(data), check.status, check.reason, list(check.warnings), check.width,
                          check.height)
    make_thumbnail(path, folder / "thumbs")
    return photo


_PHOTO_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def looks_like_photo(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG, PNG, TIFF, WebP or HEIC/HEIF file (the formats capture decodes)."""
    if data.startswith(_PHOTO_SIGNATURES):
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data[4:8] == b"ftyp" and data[8:12] in {b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"hevc"}


def _refused(name: str, size: int, reason: str) -> UploadedPhoto:
    return UploadedPhoto(name, "", size, "rejected", reason)


def _receive_zip(folder: Path, name: str, data: bytes, existing: int, limits: UploadLimits) -> list[UploadedPhoto]:
    """Unpack a zip safely: member names are never used as paths, sizes are checked before and while reading, a
    member that is not a photo is never written, and a damaged zip leaves nothing of itself behind."""
    label = display_name(name)
    if len(data) > limits.max_zip_bytes:
        return [_refused(label, len(data), f"{label}: the zip is over {limits.max_zip_bytes / 1e9:.0f} GB; split it "
                                           "into smaller zips.")]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if _is_photo_member(m)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        return [_refused(label, len(data), f"{label}: is not a valid .zip file (damaged or incomplete); create it "
                                           "again.")]
    with archive:
        if any(m.flag_bits & 0x1 for m in members):
            return [_refused(label, len(data), f"{label}: is password-protected; zip the photos again without a "
                                               "password.")]
        declared = sum(m.file_size for m in members)
        budget = limits.max_total_bytes - _stored_bytes(folder)
        if declared > budget:
            return [_refused(label, len(data), f"{label}: unpacks to {declared / 1e9:.1f} GB, over the "
                                               f"{limits.max_total_bytes / 1e9:.0f} GB a product may hold; upload "
                                               "fewer or smaller photos.")]
        if not members:
            return [_refused(label, len(data), f"{label}: holds no photos (JPEG, PNG, WebP, TIFF).")]
        results: list[UploadedPhoto] = []
        read_total = 0
        try:
            for member in members:
                member_name = display_name(member.filename)
                position = existing + sum(1 for r in results if r.accepted)
                if member.file_size > limits.max_file_bytes:
                    results.append(_refused(member_name, member.file_size, f"{member_name}: "
                                            f"{member.file_size / 1e6:.1f} MB is over the limit of "
                                            f"{limits.max_file_bytes / 1e6:.0f} MB a photo."))
                    continue
                with archive.open(member) as fh:
                    content = fh.read(limits.max_file_bytes + 1)  # a lying header cannot make us read more
                read_total += len(content)
                if read_total > budget:  # the members are bigger than their headers said
                    raise _ZipOverBudget
                results.append(_receive_photo(folder, member_name, content, position, limits))
        except _ZipOverBudget:
            discard_intake(folder, results)
            return [_refused(label, len(data), f"{label}: unpacks to more than the "
                                               f"{limits.max_total_bytes / 1e9:.0f} GB a product may hold (its "
                                               "headers understate the sizes); nothing from it was kept.")]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError,
                ValueError) as exc:
            discard_intake(folder, results)  # nothing half-extracted stays
            return [_refused(label, len(data), f"{label}: {_zip_problem(exc)}; nothing from it was kept. Create "
                                               "the zip again (or upload the photos themselves).")]
        return results


class _ZipOverBudget(Exception):
    pass


def _zip_problem(exc: BaseException) -> str:
    text = str(exc).lower()
    if "crc" in text:
        return "a photo inside it is damaged (checksum mismatch)"
    if "encrypt" in text or "password" in text:
        return "is password-protected"
    if "compression" in text or isinstance(exc, NotImplementedError):
        return "uses a compression method the studio cannot read (use standard deflate)"
    if "header" in text or "magic" in text:
        return "is damaged (a broken file header inside it)"
    return "is damaged (a photo inside it cannot be read)"


def _stored_bytes(folder: Path) -> int:
    from core.settings import folder_bytes

    return folder_bytes(folder) if folder.is_dir() else 0


def _is_photo_member(member: zipfile.ZipInfo) -> bool:
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    is_symlink = (member.external_attr >> 16) & 0o170000 == 0o120000
    # Folders (even "..") are dropped from names anyway; skip only hidden files and macOS resource forks.
    hidden = any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)
    return (not member.is_dir() and not is_symlink and not hidden
            and PurePosixPath(name).suffix.lower() in PHOTO_SUFFIXES)


def discard_intake(folder: Path, photos: list[UploadedPhoto]) -> None:
    """Delete the stored files of photos the user removed before starting (drafts only)."""
    for photo in photos:
        if photo.stored:
            (folder / photo.stored).unlink(missing_ok=True)
        if photo.thumbnail:
            (folder / "thumbs" / photo.thumbnail).unlink(missing_ok=True)


def make_thumbnail(path: Path, thumbs_dir: Path, size: int = 256) -> str | None:
    """A small oriented JPEG for grids, so pages never send full-size photos to the browser."""
    from PIL import Image, ImageOps

    thumbs_dir.mkdir(parents=True, exist_ok=True)
    target = thumbs_dir / f"{path.stem}.jpg"
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            thumb = ImageOps.exif_transpose(img).convert("RGB")
            thumb.thumbnail((size, size))
            thumb.save(target, "JPEG", quality=85)
    except Exception:  # a thumbnail is a nicety; the photo check already reported real problems
        logger.warning("no thumbnail for %s", path, exc_info=True)
        return None
    return target.name


def receive_depth_maps(folder: Path, files: list[tuple[str, bytes]], photos: list[UploadedPhoto],
                       limits: UploadLimits = UPLOAD_LIMITS) -> tuple[int, list[str]]:
    """Store depth maps under the generated names of the photos they belong to (matched by the user's stems).

    Returns how many were stored and a message for every file that was not.
    """
    return _receive_per_photo(folder, files, photos, DEPTH_SUFFIXES, "depth maps",
                              "depth maps must be .npy (float32) or 16-bit .png in millimetres", limits)


def receive_masks(folder: Path, files: list[tuple[str, bytes]], photos: list[UploadedPhoto],
                  limits: UploadLimits = UPLOAD_LIMITS) -> tuple[int, list[str]]:
    """Store product masks under the generated names of the photos they belong to (matched by the user's stems)."""
    from core.stages.masks import MASK_SUFFIXES

    return _receive_per_photo(folder, files, photos, set(MASK_SUFFIXES), "masks",
                              "masks must be images (PNG, JPEG, ...), white on the product, black elsewhere", limits)


def _receive_per_photo(folder: Path, files: list[tuple[str, bytes]], photos: list[UploadedPhoto],
                       suffixes: set[str], what: str, format_hint: str, limits: UploadLimits
                       ) -> tuple[int, list[str]]:
    """Files that belong to one photo each (depth maps, masks), stored as ``<photo's stored stem><suffix>``."""
    by_stem = {PurePosixPath(p.name).stem: p for p in photos if p.accepted and p.stored}
    stored, problems = 0, []
    for name, data in files[:limits.max_depth_files]:
        label = display_name(name)
        suffix = PurePosixPath(label).suffix.lower()
        photo = by_stem.get(PurePosixPath(label).stem)
        if suffix not in suffixes:
            problems.append(f"{label}: {format_hint}.")
        elif photo is None:
            problems.append(f"{label}: no accepted photo has the same name; name it like its photo.")
        elif len(data) > limits.max_file_bytes:
            problems.append(f"{label}: over the {limits.max_file_bytes / 1e6:.0f} MB limit.")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{Path(photo.stored).stem}{suffix}").write_bytes(data)
            stored += 1
    if len(files) > limits.max_depth_files:
        problems.append(f"Only the first {limits.max_depth_files} {what} were kept.")
    return stored, problems


def submit_job(store: Store, *, product_name: str, sku: str, preset: str, draft_dir: Path,
               photos: list[UploadedPhoto], depth_files: list[tuple[str, bytes]] | None = None,
               mode: JobMode = "multi_view", start: bool = True,
               mask_files: list[tuple[str, bytes]] | None = None,
               changes: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Job, list[str]]:
    """Turn a checked draft into a queued job: its photos move to ``uploads/<job_id>`` and stay there for good.
    ``changes`` are config changes on top of the preset (``PipelineConfig.with_changes``)."""
    job_id = new_run_id()
    photos_dir = store.root / "uploads" / job_id
    photos_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(draft_dir), photos_dir)
    problems: list[str] = []
    depth_dir = None
    if depth_files:
        count, problems = receive_depth_maps(photos_dir / "depth", depth_files, photos)
        depth_dir = photos_dir / "depth" if count else None
    config = preset_config(preset).with_changes(changes or {})  # type: ignore[arg-type]
    if depth_dir is not None:
        config = config.with_changes({"depth_prior": {"depth_dir": str(depth_dir)}})
    if mask_files:
        count, mask_problems = receive_masks(photos_dir / "masks", mask_files, photos)
        problems += mask_problems
        if count:
            config = config.with_changes({"masks": {"supplied_dir": str(photos_dir / "masks")}})
    job = store.create_job(product_name=product_name.strip(), sku=sku.strip(), preset=preset,
                           config_json=json.dumps(config.to_dict()), photos_dir=photos_dir, depth_dir=depth_dir,
                           photos=photos, mode=mode, job_id=job_id)
    if start:
        dispatch(store)
    return store.get_job(job.id) or job, problems


KNOWN_DIMENSIONS = ("height", "width", "depth")
"""What a catalogue may give of the product's size (the asset is scaled to it; core.config.AssetConfig)."""


def known_size_changes(axis: str, millimetres: float | None) -> dict[str, dict[str, float]]:
    """The config change for one known dimension (none when not given or not positive)."""
    if axis not in KNOWN_DIMENSIONS:
        raise ValueError(f"unknown dimension {axis!r}; one of {', '.join(KNOWN_DIMENSIONS)}")
    if millimetres is None or not millimetres > 0:
        return {}
    return {"asset": {f"{axis}_mm": float(millimetres)}}


def submit_folder(store: Store, folder: Path, *, product_name: str, sku: str, preset: str = "preview",
                  mode: JobMode = "multi_view", start: bool = True,
                  changes: Mapping[str, Mapping[str, Any]] | None = None) -> Job:
    """Queue a job on a folder of photos already on disk (the bundled sample); the photos are copied in."""
    draft = store.new_draft_dir()
    photos: list[UploadedPhoto] = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES):
        photos.extend(receive_upload(draft, path.name, path.read_bytes(), len(photos)))
    job, _ = submit_job(store, product_name=product_name, sku=sku, preset=preset, draft_dir=draft, photos=photos,
                        mode=mode, start=start, changes=changes)
    return job


SAMPLE_PHOTOS = REPO_ROOT / "assets" / "sample" / "images"
"""The bundled sample capture (generated by benchmarks/synthetic/)."""
SAMPLE_SKU = "SAMPLE"


def sample_photos() -> list[Path]:
    """The sample's photo files (empty when the sample is not installed)."""
    if not SAMPLE_PHOTOS.is_dir():
        return []
    return sorted(p for p in SAMPLE_PHOTOS.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def submit_sample(store: Store, preset: str = "preview", start: bool = True) -> Job:
    """Queue a run of the bundled sample product (Home's button and ``./studio sample``)."""
    return submit_folder(store, SAMPLE_PHOTOS, product_name="Sample product", sku=SAMPLE_SKU, preset=preset,
                         start=start)


def retry_job(store: Store, job: Job) -> Job:
    """Queue the same photos and settings again as a new job (the old run folder stays as it was)."""
    # Photo rows are copied (create_job files them under the new id); the photo files themselves are shared.
    new = store.create_job(product_name=job.product_name, sku=job.sku, preset=job.preset, config_json=job.config_json,
                           photos_dir=store.photos_dir(job),
                           depth_dir=store.resolve(job.depth_dir) if job.depth_dir else None,
                           photos=store.photos(job.id), mode=job.mode, retry_of=job.id)
    dispatch(store)
    return store.get_job(new.id) or new


def job_photo_paths(store: Store, job: Job) -> tuple[list[Path], list[str]]:
    """The stored photo files of a job (those saved at upload) and the user's names for them."""
    folder = store.photos_dir(job)
    rows = [r for r in store.photos(job.id) if r.stored and (folder / r.stored).is_file()]
    return [folder / r.stored for r in rows], [r.name for r in rows]
