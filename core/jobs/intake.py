"""Intake: photos (or a .zip of photos) received from a browser or a folder, stored under generated names, checked
with the capture stage's own checks, and turned into queued jobs.

Nothing here raises for bad user input: every refused file comes back as an ``UploadedPhoto`` with a reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.advice import over_size_limit
from core.config import CaptureConfig, preset_config
from core.jobs.dispatch import dispatch
from core.jobs.store import REPO_ROOT, Job, JobMode, Store, UploadedPhoto
from core.manifest import MANIFEST_NAME, new_run_id

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
    name = PurePosixPath(name.replace("\\", "/")).name or "unnamed"
    if len(name) <= 120:
        return name
    suffix = PurePosixPath(name).suffix[:10]  # a long name is shortened in its stem: the extension stays
    return f"{name[:119 - len(suffix)]}…{suffix}"


def generated_name(position: int, name: str) -> str:
    """A safe storage name: a counter plus a cleaned stem; the user's name never becomes a path as given."""
    from core.stages.capture import safe_stem

    suffix = PurePosixPath(display_name(name)).suffix.lower()
    return f"{position:03d}_{safe_stem(display_name(name))}{suffix if suffix in PHOTO_SUFFIXES else '.img'}"


def receive_upload(folder: Path, name: str, data: bytes, existing: int,
                   limits: UploadLimits = UPLOAD_LIMITS, position: int | None = None) -> list[UploadedPhoto]:
    """Store and check one uploaded file (a photo, or a .zip of photos) in ``folder``.

    ``existing`` is how many photos the folder already holds (the count limit: photos the user removed do not
    count); ``position`` numbers the stored files (default ``existing``; the app passes a counter that never goes
    back, so names stay unique). An exact copy of a photo already in the folder is refused, as the capture stage
    would (issue 15 item 10). Returns one entry per photo, accepted or refused with a reason; nothing here raises
    for bad user input.
    """
    offset = (existing if position is None else position) - existing
    # The byte budget of this draft: its photos (thumbnails are ours and small, at most one per accepted photo).
    budget = limits.max_total_bytes - sum(p.stat().st_size for p in folder.glob("*") if p.is_file())
    problem = storage_problem(folder)
    if problem:
        return [_refused(display_name(name), len(data), problem)]
    if display_name(name).lower().endswith(".zip"):
        return _receive_zip(folder, name, data, existing, limits, budget, offset)
    return [_receive_photo(folder, display_name(name), data, existing, limits, budget, offset)]


def storage_problem(folder: Path) -> str:
    """Why nothing more may be stored (the data folder over its quota, or the disk nearly full), or ''."""
    from core.settings import data_quota_bytes, min_free_bytes

    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes():
        return (f"The studio's disk is nearly full ({free / 1e9:.1f} GB free); nothing more can be stored. Ask an "
                "admin to free space (old runs are removed after the retention time).")
    quota = data_quota_bytes()
    root = folder.parent.parent if folder.parent.name == "drafts" else None
    if quota and root is not None:
        used = sum(folder_bytes(root / part) for part in ("drafts", "uploads", "runs"))
        if used >= quota:
            return (f"The studio's data folder is full ({used / 1e9:.1f} of {quota / 1e9:.1f} GB); nothing more can "
                    "be stored. Ask an admin to remove old runs or raise PRODUCT_STUDIO_DATA_QUOTA_GB.")
    return ""


def _receive_photo(folder: Path, name: str, data: bytes, position: int, limits: UploadLimits,
                   budget: int | None = None, offset: int = 0) -> UploadedPhoto:
    """Check, store and check again one photo; a rejected photo's file is deleted (nothing refused stays on disk)."""
    if position >= limits.max_photos:
        return _refused(name, len(data), f"{name}: over the limit of {limits.max_photos} photos per product; leave "
                                         "out near-duplicates.")
    if len(data) > limits.max_file_bytes:
        return _refused(name, len(data), f"{name}: {over_size_limit(len(data), limits.max_file_bytes)}; "
                                         "export it as a JPEG of a few thousand pixels per side.")
    if budget is not None and len(data) > budget:
        return _refused(name, len(data), f"{name}: the photos of this product would take more than "
                                         f"{limits.max_total_bytes / 1e9:.0f} GB; upload fewer or smaller photos.")
    if not looks_like_photo(data[:16]):
        return _refused(name, len(data), f"{name}: is not a photo (JPEG, PNG, WebP, TIFF or HEIC); it was not kept.")
    twin = _exact_copy(folder, data)
    if twin:
        return _refused(name, len(data), f"{name}: is an exact copy of a photo already uploaded ({twin}); remove "
                                         "one of them.")
    folder.mkdir(parents=True, exist_ok=True)
    stored = generated_name(position + offset, name)
    path = folder / stored
    path.write_bytes(data)
    from core.stages.capture import IN_PROCESS_PIXELS, declared_pixels, inspect_photo

    kind, pixels = declared_pixels(path)
    if kind not in ("JPEG", "MPO") and IN_PROCESS_PIXELS < pixels <= limits.max_pixels:
        photo = _check_in_child(path, name, len(data), limits)  # its whole decode stays out of this process
    else:
        check = inspect_photo(path, limits.capture_config(), name)
        photo = UploadedPhoto(name, stored, len(data), check.status, check.reason, list(check.warnings),
                              check.width, check.height)
        if check.accepted:
            make_thumbnail(path, folder / "thumbs")
    if not photo.accepted:
        path.unlink(missing_ok=True)
    return photo


CHILD_CHECK_TIMEOUT_S = 300
"""A 99 MP PNG is checked in ~8 s on one core, thumbnail and start-up included (measured); minutes mean the machine
is overloaded."""


def _check_in_child(path: Path, name: str, size: int, limits: UploadLimits) -> UploadedPhoto:
    """The capture stage's check of one photo in a child process (core/jobs/photo_check.py), thumbnail included."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "core.jobs.photo_check", str(path), name, str(limits.max_file_bytes),
               str(limits.max_pixels)]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHILD_CHECK_TIMEOUT_S,
                              check=False)
        found = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        found = None
    if not isinstance(found, dict):
        logger.error("the check of %s failed in its child process", path)
        return _refused(name, size, f"{name}: could not be checked (too large for the studio to decode); export "
                                    "it as a JPEG of a few thousand pixels per side and upload it again.")
    return UploadedPhoto(name, path.name, size, found["status"], found["reason"], list(found["warnings"]),
                         found["width"], found["height"])


def _exact_copy(folder: Path, data: bytes) -> str:
    """The stored name of a file in ``folder`` with exactly these bytes (sha256, the capture stage's test), or ''."""
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256(data).digest()
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_size == len(data) and hashlib.sha256(path.read_bytes()).digest() == digest:
            return path.name[4:] if path.name[:3].isdigit() else path.name
    return ""


_PHOTO_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*")


def looks_like_photo(head: bytes) -> bool:
    """The first bytes are those of a JPEG, PNG, TIFF, WebP or HEIC file (a cheap type check before storing)."""
    return (head.startswith(_PHOTO_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or head[4:8] == b"ftyp")


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _refused(name: str, size: int, reason: str) -> UploadedPhoto:
    return UploadedPhoto(name, "", size, "rejected", reason)


class _DamagedZip(Exception):
    """A member could not be read as the zip declares it (the message names the problem)."""


def _zip_problem(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, _DamagedZip):
        return text
    if "CRC" in text:
        return "a photo in it is damaged (checksum mismatch)"
    if "header" in text.lower() or "magic" in text.lower():
        return "it is damaged (a file header is broken)"
    if "password" in text.lower() or "encrypted" in text.lower():
        return "it is password-protected"
    if isinstance(exc, NotImplementedError):
        return f"it uses a compression this studio cannot unpack ({text})"
    return f"its data is damaged ({type(exc).__name__})"


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limit: int) -> bytes:
    """The member's bytes, read in chunks, never more than ``limit`` + 1 (a lying header cannot make us read more);
    reading to the end makes zipfile check its CRC."""
    chunks, total = [], 0
    with archive.open(member) as fh:
        while True:
            chunk = fh.read(min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise _DamagedZip(f"{display_name(member.filename)} unpacks to more than it declares")
    if total != member.file_size:
        raise _DamagedZip(f"{display_name(member.filename)} is shorter than it declares")
    return b"".join(chunks)


def _receive_zip(folder: Path, name: str, data: bytes, existing: int, limits: UploadLimits,
                 budget: int | None = None, offset: int = 0) -> list[UploadedPhoto]:
    """Unpack a zip safely: member names are never used as paths; each member's declared size, actual size and type
    are checked before it is kept; a damaged zip is refused whole with one message and nothing of it stays."""
    label = display_name(name)
    budget = limits.max_total_bytes if budget is None else budget
    if len(data) > limits.max_zip_bytes:
        return [_refused(label, len(data), f"{label}: the zip is over {limits.max_zip_bytes / 1e9:.0f} GB; split it "
                                           "into smaller zips.")]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        return [_refused(label, len(data), f"{label}: is not a valid .zip file; create it again.")]
    with archive:
        members = [m for m in archive.infolist() if _is_photo_member(m)]
        if any(m.flag_bits & 0x1 for m in members):
            return [_refused(label, len(data), f"{label}: is password-protected (encrypted); zip the photos again "
                                               "without a password.")]
        declared = sum(m.file_size for m in members)
        if declared > min(limits.max_total_bytes, budget):
            return [_refused(label, len(data), f"{label}: unpacks to {declared / 1e9:.1f} GB, over the "
                                               f"{min(limits.max_total_bytes, budget) / 1e9:.1f} GB left for this "
                                               "product; upload fewer or smaller photos.")]
        if not members:
            return [_refused(label, len(data), f"{label}: holds no photos (JPEG, PNG, WebP, TIFF).")]
        results: list[UploadedPhoto] = []
        try:
            for member in members:
                member_name = display_name(member.filename)
                position = existing + sum(r.accepted for r in results)  # only kept photos count
                if member.file_size > limits.max_file_bytes:
                    results.append(_refused(member_name, member.file_size, f"{member_name}: "
                                            f"{over_size_limit(member.file_size, limits.max_file_bytes)}."))
                    continue
                content = _read_member(archive, member, min(limits.max_file_bytes, max(budget, 0)))
                results.append(_receive_photo(folder, member_name, content, position, limits, budget, offset))
                if results[-1].accepted:
                    budget -= len(content)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, ValueError,
                _DamagedZip) as exc:
            discard_intake(folder, results)  # nothing half-extracted stays
            logger.info("zip %s refused: %s", label, exc)
            return [_refused(label, len(data), f"{label}: {_zip_problem(exc)}; nothing from it was kept. Create the "
                                               "zip again from the original photos.")]
        return results


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

    from core.stages.capture import to_rgb8

    thumbs_dir.mkdir(parents=True, exist_ok=True)
    target = thumbs_dir / f"{path.stem}.jpg"
    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            # The photo passed the studio's own pixel limit (100 MP) before it gets here; Pillow's is 89 MP.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.thumbnail((size, size))  # first: JPEG decodes at a reduced scale, others are reduced right away
            to_rgb8(ImageOps.exif_transpose(img)).save(target, "JPEG", quality=85)
    except Exception:  # a thumbnail is a nicety; the photo check already reported real problems
        logger.warning("no thumbnail for %s", path, exc_info=True)
        return None
    return target.name


KNOWN_DIMENSIONS = ("height", "width", "depth")
"""What a catalogue may give of the product's size (the asset is scaled to it; core.config.AssetConfig)."""


def known_size_changes(axis: str, millimetres: float | None) -> dict[str, dict[str, float]]:
    """The config change for one known dimension (none when not given or not positive)."""
    if axis not in KNOWN_DIMENSIONS:
        raise ValueError(f"unknown dimension {axis!r}; one of {', '.join(KNOWN_DIMENSIONS)}")
    if millimetres is None or not millimetres > 0:
        return {}
    return {"asset": {f"{axis}_mm": float(millimetres)}}


def known_distance_changes(photo: str, first: tuple[float, float], second: tuple[float, float],
                           millimetres: float) -> dict[str, dict[str, Any]]:
    """The config change that sizes the asset by two points on a photo (core/known_distance.py); the known
    dimensions are cleared, so the distance the user just measured is the one the asset is scaled to."""
    from core.known_distance import KnownDistance, parse_known_distance

    text = parse_known_distance(KnownDistance(photo, first, second, millimetres).text).text  # checked: raises
    return {"asset": {"known_distance": text, **{f"{axis}_mm": None for axis in KNOWN_DIMENSIONS}}}


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
            problems.append(f"{label}: {over_size_limit(len(data), limits.max_file_bytes)}.")
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


def retry_job(store: Store, job: Job, changes: Mapping[str, Mapping[str, Any]] | None = None) -> Job:
    """Queue the same photos and settings again as a new job that resumes from the old run's last finished stage:
    the old run folder is copied into the new one (the worker always resumes, keeping each finished stage whose
    inputs and artefacts are unchanged, core/pipeline.py) and stays as it was. Without room for the copy (the disk's
    free-space floor, core/settings.py) the new run starts from the beginning. ``changes`` change the settings
    (``PipelineConfig.with_changes``): only the stages whose sections changed, and those after them, run again
    (a new real size: the asset stage alone)."""
    config_json = job.config_json
    if changes:
        from core.jobs.worker import job_config

        config_json = json.dumps(job_config(job).with_changes(changes).to_dict())
    # Photo rows are copied (create_job files them under the new id); the photo files themselves are shared.
    new = store.create_job(product_name=job.product_name, sku=job.sku, preset=job.preset, config_json=config_json,
                           photos_dir=store.photos_dir(job),
                           depth_dir=store.resolve(job.depth_dir) if job.depth_dir else None,
                           photos=store.photos(job.id), mode=job.mode, retry_of=job.id)
    old_dir, new_dir = store.run_dir(job), store.run_dir(new)
    if (old_dir / MANIFEST_NAME).is_file():
        needed = folder_bytes(old_dir)
        room = shutil.disk_usage(next(p for p in (new_dir, *new_dir.parents) if p.exists())).free
        from core.settings import min_free_bytes

        if room - needed < min_free_bytes():
            logger.warning("job %s starts from the beginning: no room to copy the %.1f GB of run %s", new.id,
                           needed / 1e9, job.id)
        else:
            # A real copy, not hard links: stages that run again rewrite their files in place.
            shutil.copytree(old_dir, new_dir, symlinks=True, dirs_exist_ok=True)
    dispatch(store)
    return store.get_job(new.id) or new


def job_photo_paths(store: Store, job: Job) -> tuple[list[Path], list[str]]:
    """The stored photo files of a job (those saved at upload) and the user's names for them."""
    folder = store.photos_dir(job)
    rows = [r for r in store.photos(job.id) if r.stored and (folder / r.stored).is_file()]
    return [folder / r.stored for r in rows], [r.name for r in rows]
