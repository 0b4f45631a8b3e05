"""Background jobs: photo intake, a small dispatcher, and the worker process that runs the pipeline.

Jobs run in worker *processes* (``python -m core.jobs worker JOB_ID``), never in the Streamlit server, so a reload,
a page switch or a crash of the UI never touches a running reconstruction. The database (core/store.py) is the only
channel: workers write stage, fraction and a heartbeat; pages read them and may set a cancel flag.

Dispatching is deliberately simple: whoever touches the queue (a page load, a new job, a worker that finishes)
calls ``dispatch``, which first marks dead jobs as failed and then starts queued jobs while slots are free. A
transaction in ``Store.claim_queued`` keeps the limit even when several processes dispatch at once.
Liveness uses process ids, so workers and the app must share one machine (a server queue would replace this).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.config import CaptureConfig, PipelineConfig, preset_config
from core.manifest import MANIFEST_NAME, RunManifest, load_manifest
from core.stage import Cancelled
from core.store import REPO_ROOT, Job, PhotoRow, Store, new_job_id

logger = logging.getLogger(__name__)

DEFAULT_PIPELINE = "core.pipeline:run_pipeline"
RELIEF_PIPELINE = "core.pipeline:run_relief_job"
"""Single photo -> 3D relief, for jobs made from exactly one photo."""
PIPELINE_ENV = "PRODUCT_STUDIO_PIPELINE"
"""Overrides the default pipeline (``module:function``) for jobs that do not name one; for tests and experiments."""
MAX_JOBS_ENV = "PRODUCT_STUDIO_MAX_JOBS"
HEARTBEAT_S = 5.0
"""How often a worker proves it is alive, even while a stage reports no progress."""
STALE_AFTER_S = 180.0
"""A worker silent for this long is considered hung and is stopped."""
START_TIMEOUT_S = 120.0
"""A claimed job whose worker never reported is failed after this long."""
CANCEL_GRACE_S = 30.0
"""A worker that does not stop this long after a cancel request stops itself (stages may not report often)."""
PROGRESS_WRITE_S = 0.5
"""Minimum time between progress writes, so chatty stages do not hammer the database."""

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".mpo"}
DEPTH_SUFFIXES = {".npy", ".png"}

# --- intake ------------------------------------------------------------------------------------------------------

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


@dataclass
class IntakePhoto:
    """One photo received from the user, stored under a generated name and checked."""

    original_name: str
    """The user's file name: display only."""
    stored_name: str
    """Generated file name inside the draft/upload folder ('' when the file was refused before saving)."""
    size_bytes: int
    ok: bool
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None
    """Thumbnail file name inside ``thumbs/``."""

    def row(self, job_id: str, position: int) -> PhotoRow:
        return PhotoRow(job_id, position, self.original_name, self.stored_name, self.size_bytes, self.ok,
                        self.reason, "\n".join(self.warnings))


def display_name(name: str) -> str:
    """The last part of a user-given file name, for display (zip members may carry folders)."""
    return PurePosixPath(name.replace("\\", "/")).name[:120] or "unnamed"


def generated_name(position: int, name: str) -> str:
    """A safe storage name: a counter plus a cleaned stem; the user's name never becomes a path as given."""
    from core.capture import safe_stem

    suffix = PurePosixPath(display_name(name)).suffix.lower()
    return f"{position:03d}_{safe_stem(display_name(name))}{suffix if suffix in PHOTO_SUFFIXES else '.img'}"


def receive_upload(folder: Path, name: str, data: bytes, existing: int,
                   limits: UploadLimits = UPLOAD_LIMITS) -> list[IntakePhoto]:
    """Store and check one uploaded file (a photo, or a .zip of photos) in ``folder``.

    ``existing`` is how many photos the folder already holds (for numbering and the count limit). Returns one entry
    per photo, accepted or refused with a reason; nothing here raises for bad user input.
    """
    if display_name(name).lower().endswith(".zip"):
        return _receive_zip(folder, name, data, existing, limits)
    return [_receive_photo(folder, display_name(name), data, existing, limits)]


def _receive_photo(folder: Path, name: str, data: bytes, position: int, limits: UploadLimits) -> IntakePhoto:
    if position >= limits.max_photos:
        return IntakePhoto(name, "", len(data), False, f"{name}: over the limit of {limits.max_photos} photos per "
                                                       "product; leave out near-duplicates.")
    if len(data) > limits.max_file_bytes:
        return IntakePhoto(name, "", len(data), False,
                           f"{name}: {len(data) / 1e6:.0f} MB is over the {limits.max_file_bytes / 1e6:.0f} MB limit; "
                           "export it as a JPEG of a few thousand pixels per side.")
    folder.mkdir(parents=True, exist_ok=True)
    stored = generated_name(position, name)
    path = folder / stored
    path.write_bytes(data)
    from core.capture import inspect_photo

    check = inspect_photo(path, limits.capture_config(), display_name=name)
    photo = IntakePhoto(name, stored, len(data), check.ok, check.reason, list(check.warnings), check.width,
                        check.height)
    if check.ok:
        photo.thumbnail = make_thumbnail(path, folder / "thumbs")
    return photo


def _receive_zip(folder: Path, name: str, data: bytes, existing: int, limits: UploadLimits) -> list[IntakePhoto]:
    """Unpack a zip safely: member names are never used as paths, sizes are checked before and while reading."""
    label = display_name(name)
    if len(data) > limits.max_zip_bytes:
        return [IntakePhoto(label, "", len(data), False, f"{label}: the zip is over {limits.max_zip_bytes / 1e9:.0f} "
                                                         "GB; split it into smaller zips.")]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return [IntakePhoto(label, "", len(data), False, f"{label}: is not a valid .zip file; create it again.")]
    with archive:
        members = [m for m in archive.infolist() if _is_photo_member(m)]
        declared = sum(m.file_size for m in members)
        if declared > limits.max_total_bytes:
            return [IntakePhoto(label, "", len(data), False,
                                f"{label}: unpacks to {declared / 1e9:.1f} GB, over the "
                                f"{limits.max_total_bytes / 1e9:.0f} GB limit; upload fewer or smaller photos.")]
        if not members:
            return [IntakePhoto(label, "", len(data), False, f"{label}: holds no photos (JPEG, PNG, WebP, TIFF).")]
        results = []
        for member in members:
            member_name = display_name(member.filename)
            position = existing + len(results)
            if member.file_size > limits.max_file_bytes:
                results.append(IntakePhoto(member_name, "", member.file_size, False,
                                           f"{member_name}: {member.file_size / 1e6:.0f} MB is over the "
                                           f"{limits.max_file_bytes / 1e6:.0f} MB limit."))
                continue
            with archive.open(member) as fh:
                content = fh.read(limits.max_file_bytes + 1)  # a lying header cannot make us read more than this
            results.append(_receive_photo(folder, member_name, content, position, limits))
        return results


def _is_photo_member(member: zipfile.ZipInfo) -> bool:
    name = member.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    is_symlink = (member.external_attr >> 16) & 0o170000 == 0o120000
    # Folders (even "..") are dropped from names anyway; skip only hidden files and macOS resource forks.
    hidden = any((p.startswith(".") and p not in (".", "..")) or p == "__MACOSX" for p in parts)
    return (not member.is_dir() and not is_symlink and not hidden
            and PurePosixPath(name).suffix.lower() in PHOTO_SUFFIXES)


def discard_intake(folder: Path, photos: list[IntakePhoto]) -> None:
    """Delete the stored files of photos the user removed before starting (drafts only)."""
    for photo in photos:
        if photo.stored_name:
            (folder / photo.stored_name).unlink(missing_ok=True)
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


def receive_depth_maps(folder: Path, files: list[tuple[str, bytes]], photos: list[IntakePhoto],
                       limits: UploadLimits = UPLOAD_LIMITS) -> tuple[int, list[str]]:
    """Store depth maps under the generated names of the photos they belong to (matched by the user's stems).

    Returns how many were stored and a message for every file that was not.
    """
    by_stem = {PurePosixPath(p.original_name).stem: p for p in photos if p.ok and p.stored_name}
    stored, problems = 0, []
    for name, data in files[:limits.max_depth_files]:
        label = display_name(name)
        suffix = PurePosixPath(label).suffix.lower()
        photo = by_stem.get(PurePosixPath(label).stem)
        if suffix not in DEPTH_SUFFIXES:
            problems.append(f"{label}: depth maps must be .npy (float32) or 16-bit .png in millimetres.")
        elif photo is None:
            problems.append(f"{label}: no accepted photo has the same name; name it like its photo.")
        elif len(data) > limits.max_file_bytes:
            problems.append(f"{label}: over the {limits.max_file_bytes / 1e6:.0f} MB limit.")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{Path(photo.stored_name).stem}{suffix}").write_bytes(data)
            stored += 1
    if len(files) > limits.max_depth_files:
        problems.append(f"Only the first {limits.max_depth_files} depth maps were kept.")
    return stored, problems


def submit_job(store: Store, *, product_name: str, sku: str, preset: str, draft_dir: Path,
               photos: list[IntakePhoto], depth_files: list[tuple[str, bytes]] | None = None,
               pipeline: str | None = None, start: bool = True) -> tuple[Job, list[str]]:
    """Turn a checked draft into a queued job: its photos move to ``uploads/<job_id>`` and stay there for good."""
    job_id = new_job_id()
    photos_dir = store.root / "uploads" / job_id
    photos_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(draft_dir), photos_dir)
    problems: list[str] = []
    depth_dir = None
    if depth_files:
        count, problems = receive_depth_maps(photos_dir / "depth", depth_files, photos)
        depth_dir = photos_dir / "depth" if count else None
    config = preset_config(preset)  # type: ignore[arg-type]
    if depth_dir is not None:
        config.depth_prior.depth_dir = str(depth_dir)
    job = store.create_job(product_name=product_name.strip(), sku=sku.strip(), preset=preset,
                           config_json=json.dumps(config.to_dict()), photos_dir=photos_dir, depth_dir=depth_dir,
                           photos=[p.row(job_id, i) for i, p in enumerate(photos)], pipeline=pipeline, job_id=job_id)
    if start:
        dispatch(store)
    return store.get_job(job.id) or job, problems


def submit_folder(store: Store, folder: Path, *, product_name: str, sku: str, preset: str = "preview",
                  pipeline: str | None = None, start: bool = True) -> Job:
    """Queue a job on a folder of photos already on disk (the bundled sample); the photos are copied in."""
    draft = store.new_draft_dir()
    photos: list[IntakePhoto] = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES):
        photos.extend(receive_upload(draft, path.name, path.read_bytes(), len(photos)))
    job, _ = submit_job(store, product_name=product_name, sku=sku, preset=preset, draft_dir=draft, photos=photos,
                        pipeline=pipeline, start=start)
    return job


SAMPLE_PHOTOS = REPO_ROOT / "assets" / "sample" / "images"
"""The bundled sample capture (generated by core/synthetic.py)."""
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
                           photos=store.photos(job.id), pipeline=job.pipeline, retry_of=job.id)
    dispatch(store)
    return store.get_job(new.id) or new


def job_photo_paths(store: Store, job: Job) -> tuple[list[Path], list[str]]:
    """The stored photo files of a job (those saved at upload) and the user's names for them."""
    folder = store.photos_dir(job)
    rows = [r for r in store.photos(job.id) if r.stored_name and (folder / r.stored_name).is_file()]
    return [folder / r.stored_name for r in rows], [r.original_name for r in rows]


# --- dispatching -------------------------------------------------------------------------------------------------

_children: list[subprocess.Popen] = []
"""Workers this process started; polled so finished ones do not linger as zombies."""


def max_concurrent_jobs() -> int:
    """``$PRODUCT_STUDIO_MAX_JOBS``, or one job per two cores (a run uses every core it is given)."""
    configured = os.environ.get(MAX_JOBS_ENV, "").strip()
    if configured:
        return max(1, int(configured))
    return max(1, (os.cpu_count() or 2) // 2)


def dispatch(store: Store, max_active: int | None = None) -> list[Job]:
    """Fail dead jobs, then start queued ones while fewer than ``max_active`` run. Returns the jobs started."""
    reap(store)
    started = []
    for job in store.claim_queued(max_active or max_concurrent_jobs()):
        _spawn_worker(store, job)
        started.append(job)
    return started


def _spawn_worker(store: Store, job: Job) -> None:
    store.log_path(job).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PRODUCT_STUDIO_DATA": str(store.root), "PYTHONUNBUFFERED": "1"}
    try:
        with open(store.log_path(job), "ab") as log:
            # A new session: the worker outlives a restart of the Streamlit server that started it.
            process = subprocess.Popen([sys.executable, "-m", "core.jobs", "worker", job.id], cwd=REPO_ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
    except OSError as exc:
        store.finish(job.id, "failed", error=f"The worker could not be started ({exc}).")
        return
    _children.append(process)
    store._update(job.id, pid=process.pid)
    logger.info("started worker %d for job %s", process.pid, job.id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child that nobody waited for still answers kill(0): look at its state
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def reap(store: Store, now: float | None = None) -> list[str]:
    """Mark jobs whose worker died, hung or ignored a cancel; returns their ids. Run folders are left as they are."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    now = time.time() if now is None else now
    reaped = []
    for job in store.list_jobs(("starting", "running")):
        verdict: tuple[str, str] | None = None
        if job.pid is None:
            if now - (job.updated or job.created) > START_TIMEOUT_S:
                verdict = ("failed", "The worker never started. Retry the job; if it happens again, tell an admin.")
        elif not pid_alive(job.pid):
            verdict = ("failed", f"The worker stopped unexpectedly during '{job.stage or 'start-up'}' (it was "
                                 "killed or ran out of memory). Finished stages and your photos are kept; "
                                 "retry the job, or use the preview preset.")
        elif job.cancel_requested and now - job.cancel_requested > 2 * CANCEL_GRACE_S:
            _kill(job.pid)
            verdict = ("cancelled", "Cancelled (the worker was stopped).")
        elif job.heartbeat and now - job.heartbeat > STALE_AFTER_S:
            _kill(job.pid)
            verdict = ("failed", f"The worker stopped responding during '{job.stage}' for over "
                                 f"{STALE_AFTER_S / 60:.0f} minutes and was stopped. Retry the job.")
        if verdict:
            status, reason = verdict
            store.finish(job.id, status, error=reason if status == "failed" else "", message=reason)  # type: ignore[arg-type]
            mark_manifest(store.run_dir(job), status, reason)
            reaped.append(job.id)
            logger.warning("job %s marked %s: %s", job.id, status, reason)
    return reaped


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def cancel(store: Store, job_id: str) -> Job | None:
    """Cancel a job: a queued one at once, a running one at its next progress report (or after a grace time)."""
    job = store.request_cancel(job_id)
    if job is not None and job.status == "cancelled":
        mark_manifest(store.run_dir(job), "cancelled", "Cancelled by the user.")
    return job


def mark_manifest(run_dir: Path, status: str, reason: str) -> None:
    """Record a final status in a run's manifest when the pipeline could not (a killed or cancelled worker)."""
    if not (run_dir / MANIFEST_NAME).is_file():
        return
    try:
        manifest = load_manifest(run_dir)
    except (OSError, ValueError, TypeError):
        logger.warning("manifest of %s unreadable; status not recorded there", run_dir, exc_info=True)
        return
    if manifest.status != "running":
        return
    manifest.status = status  # type: ignore[assignment]
    manifest.failure_reason = reason if status == "failed" else manifest.failure_reason
    for stage in manifest.stages:
        if stage.status == "running":
            stage.status = "failed"
    manifest.save(run_dir)


# --- progress as the pages show it -------------------------------------------------------------------------------

@dataclass
class JobProgress:
    stage: str
    overall: float
    """Share of the whole run that is done."""
    elapsed_s: float
    eta_s: float | None
    message: str


def job_progress(job: Job, now: float | None = None) -> JobProgress:
    """Stage, overall fraction (the pipeline reports it weighted by stage), elapsed time and a rough ETA."""
    now = time.time() if now is None else now
    end = job.finished if job.is_final and job.finished else now
    elapsed = max(0.0, end - job.started) if job.started else 0.0
    overall = 1.0 if job.status == "done" else min(max(job.fraction, 0.0), 1.0)
    eta = None
    if job.status == "running" and overall > 0.02 and elapsed > 5:
        eta = elapsed * (1 - overall) / overall
    return JobProgress(job.stage, overall, elapsed, eta, job.message)


def stage_label(name: str, mode: str = "multi_view") -> str:
    """What the user reads for a stage: the pipeline's own label, else the internal name made readable."""
    try:
        from core.pipeline import MULTI_VIEW_STAGES, SINGLE_PHOTO_STAGES
    except ImportError:  # the pipeline module is optional for the pages that only read runs
        return name.replace("_", " ").capitalize()
    stages = SINGLE_PHOTO_STAGES if mode == "single_photo" else MULTI_VIEW_STAGES
    labels = {s.name: s.label for s in stages}
    return labels.get(name) or name.replace("_", " ").capitalize()


def read_manifest(run_dir: Path) -> RunManifest | None:
    """The run's manifest, or None when the run has not written one yet (or it cannot be read)."""
    try:
        return load_manifest(run_dir)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        logger.warning("cannot read the manifest in %s", run_dir, exc_info=True)
        return None


def quality_verdict(job: Job, manifest: RunManifest | None) -> tuple[str, str]:
    """A one-word verdict for reviewers and the reason behind it."""
    if job.status in ("queued", "starting", "running"):
        return "pending", "The run has not finished."
    if job.status == "cancelled":
        return "cancelled", "The run was cancelled."
    if job.status == "failed" or manifest is None or manifest.status != "done":
        reason = job.error or (manifest.failure_reason if manifest else "") or "The run did not finish."
        return "failed", reason
    findings = manifest.all_findings()
    errors = [f for _, f in findings if f.level == "error"]
    warnings = [f for _, f in findings if f.level == "warning"]
    if "mesh" not in manifest.artifacts and "mesh_glb" not in manifest.artifacts:
        return "incomplete", "The run finished without a mesh."
    if errors:
        return "poor", errors[0].message
    if warnings:
        return "check", f"{len(warnings)} warning(s): {warnings[0].message}"
    return "good", "No problems found."


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for support ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# --- the worker process ------------------------------------------------------------------------------------------

PipelineFn = Callable[..., RunManifest]


def load_pipeline(dotted: str | None) -> PipelineFn:
    """``module:function``; tests inject a small real pipeline this way, the app always uses the default."""
    module_name, _, function = (dotted or os.environ.get(PIPELINE_ENV) or DEFAULT_PIPELINE).partition(":")
    return getattr(importlib.import_module(module_name), function)


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat fresh and enforces cancel requests that stages do not answer in time."""

    def __init__(self, store: Store, job: Job) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job.id}")
        self.store, self.job = store, job
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.store.heartbeat(self.job.id)
                current = self.store.get_job(self.job.id)
            except Exception:  # a locked or briefly unavailable database must not kill the run
                logger.warning("heartbeat failed", exc_info=True)
                continue
            if current and current.cancel_requested and time.time() - current.cancel_requested > CANCEL_GRACE_S:
                logger.warning("job %s did not stop within %.0f s of the cancel request; exiting", self.job.id,
                               CANCEL_GRACE_S)
                self.store.finish(self.job.id, "cancelled", message="Cancelled by the user.")
                mark_manifest(self.store.run_dir(self.job), "cancelled", "Cancelled by the user.")
                dispatch(self.store)  # the slot is free: start the next queued job before leaving
                os._exit(3)  # the pipeline is inside a long call that cannot be interrupted from Python


def _stage_from_manifest(run_dir: Path) -> str:
    manifest = read_manifest(run_dir)
    if manifest is None:
        return ""
    running = [s.name for s in manifest.stages if s.status == "running"]
    return running[-1] if running else (manifest.stages[-1].name if manifest.stages else "")


def run_worker(store: Store, job_id: str) -> str:
    """Run one job to its end in this process; returns its final status."""
    job = store.get_job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    if job.is_final:
        return job.status
    run_dir = store.run_dir(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    store.mark_running(job_id, os.getpid())
    heartbeat = _Heartbeat(store, job)
    heartbeat.start()
    last = {"write": 0.0, "stage": ""}

    def progress(fraction: float, message: str) -> None:
        now = time.time()
        if now - last["write"] < PROGRESS_WRITE_S and fraction < 1.0:
            return
        stage = _stage_from_manifest(run_dir) or last["stage"]
        last.update(write=now, stage=stage)
        store.update_progress(job_id, stage, min(max(fraction, 0.0), 1.0), message[:300])
        if store.cancel_requested(job_id):
            raise Cancelled(f"job {job_id} cancelled by the user")

    status, error, message = "failed", "", ""
    try:
        photos, names = job_photo_paths(store, job)
        config = PipelineConfig.from_dict(json.loads(job.config_json)) if job.config_json != "{}" else \
            preset_config(job.preset)  # type: ignore[arg-type]
        pipeline = load_pipeline(job.pipeline)
        kwargs = {"display_names": names} if "display_names" in inspect.signature(pipeline).parameters else {}
        manifest = pipeline(photos, run_dir, config, progress=progress, **kwargs)
        status = manifest.status if manifest.status in ("done", "failed", "cancelled") else "done"
        error = manifest.failure_reason if status == "failed" else ""
        message = "Finished" if status == "done" else (error or status)
    except Cancelled:
        status, message = "cancelled", "Cancelled by the user."
    except Exception as exc:
        logger.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        error = f"Internal error in '{last['stage'] or 'start-up'}': {exc}. Your photos are kept; retry or report it."
        message = error
    finally:
        heartbeat.stopped.set()
    if status != "done":
        mark_manifest(run_dir, status, error or message)
    store.finish(job_id, status, error=error, message=message)  # type: ignore[arg-type]
    logger.info("job %s finished: %s", job_id, status)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs", description="Product Studio job worker")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one queued job, then start the next ones")
    worker.add_argument("job_id")
    sub.add_parser("dispatch", help="mark dead jobs and start queued ones")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store()
    if args.command == "worker":
        status = run_worker(store, args.job_id)
        dispatch(store)  # hand the freed slot to the next queued job, even when no page is open
        return 0 if status in ("done", "cancelled", "failed") else 1
    dispatch(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
