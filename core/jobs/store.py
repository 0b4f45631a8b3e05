"""All data access of the studio: jobs, uploaded photos and review decisions in SQLite, plus the data folder layout.

Everything the app and the workers persist goes through this module, so a server database (and object storage
for the folders) could replace it later without touching pages or workers. SQLite runs in WAL mode so the
Streamlit server and several worker processes can read while one writes; every call opens its own short
connection, which is safe across threads and processes.

Layout of the data folder (``PRODUCT_STUDIO_DATA``, default ``<repo>/data``)::

    studio.db               jobs, photos, reviews
    uploads/<job_id>/       the user's photos under generated names (+ thumbs/, depth/); never deleted by a run
    runs/<job_id>/          the run folder the pipeline writes (manifest.json and artefacts; run id = job id)
    drafts/<draft_id>/      photos being checked on the New capture page, before a job exists
    logs/<job_id>.log       each worker's own log
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from core.manifest import new_run_id

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "PRODUCT_STUDIO_DATA"
DB_NAME = "studio.db"

JobStatus = Literal["queued", "starting", "running", "done", "failed", "cancelled"]
JobMode = Literal["multi_view", "relief", "sticker"]
"""What a job makes: a model from several photos, a relief or a cartoon sticker from one (core.pipeline.MODES)."""
ACTIVE_STATUSES: tuple[JobStatus, ...] = ("starting", "running")
FINAL_STATUSES: tuple[JobStatus, ...] = ("done", "failed", "cancelled")
Decision = Literal["approved", "rejected"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    product_name TEXT NOT NULL DEFAULT '',
    sku TEXT NOT NULL DEFAULT '',
    preset TEXT NOT NULL,
    config_json TEXT NOT NULL DEFAULT '{}',
    mode TEXT NOT NULL DEFAULT 'multi_view',
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    fraction REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    started REAL,
    updated REAL,
    heartbeat REAL,
    finished REAL,
    pid INTEGER,
    cancel_requested REAL,
    run_dir TEXT NOT NULL,
    photos_dir TEXT NOT NULL,
    depth_dir TEXT,
    retry_of TEXT,
    backend TEXT NOT NULL DEFAULT 'local',
    token TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker_host TEXT,
    worker_started REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE TABLE IF NOT EXISTS photos (
    job_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    stored TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    warnings TEXT NOT NULL DEFAULT '',
    width INTEGER,
    height INTEGER,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_job ON reviews(job_id, created);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    password_hash BLOB NOT NULL,
    created REAL NOT NULL
);
"""
SCHEMA_VERSION = 3
"""PRAGMA user_version of the database; ``_migrate`` brings older databases up to it."""

_V3_JOB_COLUMNS = {"backend": "TEXT NOT NULL DEFAULT 'local'", "token": "TEXT",
                   "attempts": "INTEGER NOT NULL DEFAULT 0", "worker_host": "TEXT", "worker_started": "REAL"}
"""Columns version 3 added to jobs: which backend runs the job, and who its worker is (core/jobs/backend.py)."""


def data_dir() -> Path:
    """The data folder: ``$PRODUCT_STUDIO_DATA`` or ``<repo>/data``."""
    configured = os.environ.get(DATA_ENV, "").strip()
    return Path(configured).expanduser().resolve() if configured else REPO_ROOT / "data"


@dataclass
class Job:
    """One reconstruction job as the database holds it (times are Unix seconds)."""

    id: str
    product_name: str
    sku: str
    preset: str
    config_json: str
    mode: JobMode
    status: JobStatus
    stage: str
    fraction: float
    message: str
    error: str
    created: float
    started: float | None
    updated: float | None
    heartbeat: float | None
    finished: float | None
    pid: int | None
    cancel_requested: float | None
    run_dir: str
    """Run folder relative to the data folder (or absolute when outside it)."""
    photos_dir: str
    depth_dir: str | None
    retry_of: str | None
    backend: str = "local"
    """The job backend its worker was handed to ("local" or "ray"; core/jobs/backend.py)."""
    token: str | None = None
    """Secret of the current attempt, given to its worker: only that worker may report for the job."""
    attempts: int = 0
    """Workers that started on the job (a job whose worker died resumes in a new attempt, up to a limit)."""
    worker_host: str | None = None
    """Host name of the current worker (with ``pid`` and ``worker_started``: the worker's identity)."""
    worker_started: float | None = None
    """Start time of the worker process (Unix seconds), so a reused pid is never taken for the worker."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass
class UploadedPhoto:
    """A photo the user uploaded: their name for it (display only), the generated name it is stored under, and
    what the upload checks (the capture stage's own, core.stages.capture.inspect_photo) found."""

    name: str
    """The user's file name (a zip member's last part): display only, never a path."""
    stored: str
    """Generated file name inside the draft/upload folder ('' when the file was refused before saving)."""
    size_bytes: int
    status: Literal["accepted", "rejected"]
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def thumbnail(self) -> str | None:
        """File name of its thumbnail inside ``thumbs/`` (made for accepted photos)."""
        return f"{Path(self.stored).stem}.jpg" if self.stored and self.accepted else None


@dataclass
class Review:
    id: int
    job_id: str
    reviewer: str
    decision: Decision
    note: str
    created: float


class Store:
    """The studio database and data folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / DB_NAME
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            _migrate(conn)
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- folders -------------------------------------------------------------------------------------------------

    def resolve(self, stored: str) -> Path:
        """A folder path as recorded in the database, made absolute."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def _relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path.resolve())

    def run_dir(self, job: Job) -> Path:
        return self.resolve(job.run_dir)

    def photos_dir(self, job: Job) -> Path:
        return self.resolve(job.photos_dir)

    def prune_drafts(self, max_age_s: float | None = None) -> int:
        """Delete draft folders nobody turned into a job (closed tabs) after ``$PRODUCT_STUDIO_DRAFT_HOURS``;
        returns how many went."""
        import shutil

        from core.settings import draft_retention_s

        drafts = self.root / "drafts"
        cutoff = time.time() - (draft_retention_s() if max_age_s is None else max_age_s)
        removed = 0
        for folder in drafts.iterdir() if drafts.is_dir() else []:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def apply_retention(self, sample_sku: str = "SAMPLE") -> list[str]:
        """The operator's retention (core/settings.py): old drafts, sample runs beyond the newest
        ``$PRODUCT_STUDIO_SAMPLE_RUNS``, and finished runs nobody approved older than ``$PRODUCT_STUDIO_RUN_DAYS``.
        Returns the ids of the jobs deleted (their rows, run and photo folders)."""
        from core.settings import run_retention_s, sample_runs_kept

        self.prune_drafts()
        finished = [j for j in self.list_jobs() if j.is_final]  # newest first
        approved = {job_id for job_id, review in self.latest_reviews().items() if review.decision == "approved"}
        doomed = [j for j in finished if j.sku == sample_sku][sample_runs_kept():]
        max_age = run_retention_s()
        if max_age > 0:
            cutoff = time.time() - max_age
            doomed += [j for j in finished if j.sku != sample_sku and j.id not in approved
                       and (j.updated or j.created) < cutoff]
        for job in doomed:
            self.delete_job(job)
        return [j.id for j in doomed]

    def delete_job(self, job: Job) -> None:
        """Remove a finished job: its rows and its run folder (and its photos, unless another job shares them)."""
        import shutil

        assert job.is_final, "only finished jobs are deleted"
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            shared = conn.execute("SELECT COUNT(*) FROM jobs WHERE photos_dir = ? AND id != ?",
                                  (job.photos_dir, job.id)).fetchone()[0]
            for table, column in (("photos", "job_id"), ("reviews", "job_id"), ("jobs", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (job.id,))
            conn.execute("COMMIT")
        shutil.rmtree(self.run_dir(job), ignore_errors=True)
        if not shared and job.photos_dir and self.photos_dir(job) != self.root:
            shutil.rmtree(self.photos_dir(job), ignore_errors=True)
        logger.info("deleted job %s (retention)", job.id)

    def log_path(self, job: Job) -> Path:
        """The worker's own log (start-up and crashes); the pipeline also logs into RUN_DIR/logs/run.log."""
        return self.root / "logs" / f"{job.id}.log"

    def new_draft_dir(self) -> Path:
        """A fresh folder for photos being checked before a job exists."""
        path = self.root / "drafts" / uuid.uuid4().hex[:12]
        path.mkdir(parents=True)
        return path

    # --- jobs ----------------------------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN ourselves where several statements must be atomic.
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        try:
            yield conn
        finally:
            conn.close()

    def create_job(self, *, product_name: str, sku: str, preset: str, config_json: str, photos_dir: Path,
                   photos: list[UploadedPhoto] | None = None, depth_dir: Path | None = None,
                   mode: JobMode = "multi_view", retry_of: str | None = None, job_id: str | None = None) -> Job:
        """Queue a job whose photos already sit in ``photos_dir``; its run folder is ``runs/<job_id>``."""
        job_id = job_id or new_run_id()
        run_dir = self.root / "runs" / job_id
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO jobs (id, product_name, sku, preset, config_json, mode, status, created, run_dir,"
                " photos_dir, depth_dir, retry_of, message) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, product_name, sku, preset, config_json, mode, now, self._relative(run_dir),
                 self._relative(photos_dir), self._relative(depth_dir) if depth_dir else None, retry_of,
                 "Waiting for a free worker"))
            for position, p in enumerate(photos or []):
                conn.execute(
                    "INSERT INTO photos (job_id, position, name, stored, size_bytes, status, reason, warnings, width,"
                    " height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, position, p.name, p.stored, p.size_bytes, p.status, p.reason, "\n".join(p.warnings),
                     p.width, p.height))
            conn.execute("COMMIT")
        logger.info("queued job %s (%s, %d photos)", job_id, preset, len(photos or []))
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> Job | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, statuses: tuple[str, ...] | None = None, limit: int | None = None) -> list[Job]:
        """Jobs, newest first."""
        sql, args = "SELECT * FROM jobs", []
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args.extend(statuses)
        sql += " ORDER BY created DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as conn:
            return [_job(r) for r in conn.execute(sql, args).fetchall()]

    def claim_queued(self, max_active: int | None, backend: str = "local",
                     message: str = "Starting a worker") -> list[Job]:
        """Atomically move the oldest queued jobs to 'starting' while fewer than ``max_active`` are active (None: all
        of them, for a backend that queues by resources itself). Each claimed job gets a new attempt token."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one dispatcher at a time decides, so the limit holds across processes
            active = conn.execute(
                f"SELECT COUNT(*) FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE_STATUSES))})",
                ACTIVE_STATUSES).fetchone()[0]
            free = -1 if max_active is None else max(0, max_active - active)
            rows = conn.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT ?",
                                (free,)).fetchall()
            now = time.time()
            for row in rows:
                conn.execute("UPDATE jobs SET status = 'starting', updated = ?, heartbeat = ?, message = ?,"
                             " backend = ?, token = ?, pid = NULL, worker_host = NULL, worker_started = NULL"
                             " WHERE id = ?",
                             (now, now, message, backend, uuid.uuid4().hex, row["id"]))
            conn.execute("COMMIT")
        return [j for j in (self.get_job(r["id"]) for r in rows) if j is not None]

    def take_queued(self, job_id: str) -> str | None:
        """Claim one queued job for a worker started by hand (not by a backend); returns its attempt token."""
        token, now = uuid.uuid4().hex, time.time()
        with self._connect() as conn:
            updated = conn.execute("UPDATE jobs SET status = 'starting', token = ?, backend = 'local', updated = ?"
                                   " WHERE id = ? AND status = 'queued'", (token, now, job_id)).rowcount
        return token if updated else None

    def mark_running(self, job_id: str, pid: int) -> None:
        now = time.time()
        self._update(job_id, status="running", pid=pid, started=now, updated=now, heartbeat=now,
                     message="Worker started")

    def begin_attempt(self, job_id: str, token: str, pid: int, host: str, process_started: float,
                      message: str = "Worker started") -> Job | None:
        """A worker starts on a job it was handed: records who it is and counts the attempt. None when the job is
        not its own any more (finished, cancelled, or handed to another worker with a new token)."""
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            updated = conn.execute(
                "UPDATE jobs SET status = 'running', pid = ?, worker_host = ?, worker_started = ?, attempts = attempts"
                " + 1, started = COALESCE(started, ?), updated = ?, heartbeat = ?, message = ? WHERE id = ? AND"
                f" token = ? AND status IN ({','.join('?' * len(ACTIVE_STATUSES))})",
                (pid, host, process_started, now, now, now, message, job_id, token, *ACTIVE_STATUSES)).rowcount
            conn.execute("COMMIT")
        return self.get_job(job_id) if updated else None

    def requeue(self, job_id: str, message: str) -> bool:
        """Put an active job whose worker was lost back in the queue, to resume in a new attempt; False when it was
        not active any more."""
        now = time.time()
        with self._connect() as conn:
            updated = conn.execute(
                "UPDATE jobs SET status = 'queued', token = NULL, pid = NULL, worker_host = NULL, worker_started ="
                f" NULL, updated = ?, message = ? WHERE id = ? AND status IN ({','.join('?' * len(ACTIVE_STATUSES))})",
                (now, message, job_id, *ACTIVE_STATUSES)).rowcount
        return bool(updated)

    def update_progress(self, job_id: str, stage: str, fraction: float, message: str) -> None:
        now = time.time()
        self._update(job_id, stage=stage, fraction=float(fraction), message=message, updated=now, heartbeat=now)

    def heartbeat(self, job_id: str) -> None:
        self._update(job_id, heartbeat=time.time())

    def finish(self, job_id: str, status: JobStatus, error: str = "", message: str = "",
               token: str | None = None) -> bool:
        """Record a final status, unless the job already has one (the first verdict wins). With ``token`` (a worker
        reporting), only while that worker's attempt is the job's current one. True when recorded."""
        now = time.time()
        sql = ("UPDATE jobs SET status = ?, error = ?, message = ?, finished = ?, updated = ?"
               f" WHERE id = ? AND status NOT IN ({','.join('?' * len(FINAL_STATUSES))})")
        args: tuple[Any, ...] = (status, error, message or status, now, now, job_id, *FINAL_STATUSES)
        if token is not None:
            sql, args = sql + " AND token = ?", (*args, token)
        with self._connect() as conn:
            return bool(conn.execute(sql, args).rowcount)

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; flag an active one so its worker stops at the next progress report."""
        now = time.time()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE jobs SET status = 'cancelled', finished = ?, updated = ?, message = ?"
                         " WHERE id = ? AND status = 'queued'", (now, now, "Cancelled before it started", job_id))
            conn.execute("UPDATE jobs SET cancel_requested = ?, message = ? WHERE id = ? AND status IN (?, ?)"
                         " AND cancel_requested IS NULL", (now, "Cancelling…", job_id, *ACTIVE_STATUSES))
            conn.execute("COMMIT")
        return self.get_job(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0] is not None)

    def _update(self, job_id: str, **values: Any) -> None:
        columns = {f.name for f in fields(Job)}
        unknown = set(values) - columns
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._connect() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))

    # --- photos --------------------------------------------------------------------------------------------------

    def photos(self, job_id: str) -> list[UploadedPhoto]:
        """The job's uploaded photos in upload order."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM photos WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()
        return [UploadedPhoto(r["name"], r["stored"], r["size_bytes"], r["status"], r["reason"],
                              [w for w in r["warnings"].split("\n") if w], r["width"], r["height"]) for r in rows]

    # --- reviews -------------------------------------------------------------------------------------------------

    def add_review(self, job_id: str, reviewer: str, decision: Decision, note: str = "") -> Review:
        if decision not in ("approved", "rejected"):
            raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
        if self.get_job(job_id) is None:
            raise KeyError(f"no job {job_id}")
        with self._connect() as conn:
            cur = conn.execute("INSERT INTO reviews (job_id, reviewer, decision, note, created) VALUES (?, ?, ?, ?, ?)",
                               (job_id, reviewer.strip() or "anonymous", decision, note, time.time()))
            review_id = cur.lastrowid
        logger.info("review of %s: %s by %s", job_id, decision, reviewer)
        return next(r for r in self.reviews(job_id) if r.id == review_id)

    # --- reviewers (users with scrypt-hashed passwords) ------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a reviewer, or set a new password for one (scrypt, a random salt per user)."""
        name = name.strip()
        if not name or len(password) < 8:
            raise ValueError("a reviewer needs a name and a password of at least 8 characters")
        salt = os.urandom(16)
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO users (name, salt, password_hash, created) VALUES (?, ?, ?, ?)",
                         (name, salt, _password_hash(password, salt), time.time()))

    def remove_user(self, name: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM users WHERE name = ?", (name.strip(),)).rowcount > 0

    def users(self) -> list[str]:
        with self._connect() as conn:
            return [r["name"] for r in conn.execute("SELECT name FROM users ORDER BY name")]

    def check_password(self, name: str, password: str) -> bool:
        import hmac

        with self._connect() as conn:
            row = conn.execute("SELECT salt, password_hash FROM users WHERE name = ?", (name.strip(),)).fetchone()
        if row is None:
            _password_hash(password, b"0" * 16)  # same work for unknown names: no timing hint
            return False
        return hmac.compare_digest(_password_hash(password, row["salt"]), row["password_hash"])

    def reviews(self, job_id: str | None = None) -> list[Review]:
        """Decision history, oldest first (of one job, or of all)."""
        sql, args = "SELECT * FROM reviews", ()
        if job_id is not None:
            sql, args = sql + " WHERE job_id = ?", (job_id,)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY created, id", args).fetchall()
        return [Review(**dict(r)) for r in rows]

    def latest_reviews(self) -> dict[str, Review]:
        """The current decision per job (the most recent one)."""
        return {r.job_id: r for r in self.reviews()}


def _password_hash(password: str, salt: bytes) -> bytes:
    """scrypt with n=2**14, r=8, p=1 (the interactive-login parameters of the scrypt paper; ~50 ms, 16 MB)."""
    import hashlib

    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _job(row: sqlite3.Row) -> Job:
    return Job(**dict(row))


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database of an older version up to SCHEMA_VERSION (version 1: dotted pipeline names, photo columns
    original_name / stored_name / ok; version 2: no backend or worker identity columns)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version >= SCHEMA_VERSION or "jobs" not in tables:
        return
    columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    for name, declaration in _V3_JOB_COLUMNS.items():
        if name not in columns:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
    columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    if "pipeline" in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'multi_view'")
        conn.execute("UPDATE jobs SET mode = 'relief' WHERE pipeline LIKE '%relief%'")
        conn.execute("ALTER TABLE jobs DROP COLUMN pipeline")
    photo_columns = {r[1] for r in conn.execute("PRAGMA table_info(photos)")}
    if "original_name" in photo_columns:
        conn.execute("ALTER TABLE photos RENAME COLUMN original_name TO name")
        conn.execute("ALTER TABLE photos RENAME COLUMN stored_name TO stored")
        conn.execute("ALTER TABLE photos ADD COLUMN status TEXT NOT NULL DEFAULT 'accepted'")
        conn.execute("UPDATE photos SET status = CASE WHEN ok THEN 'accepted' ELSE 'rejected' END")
        conn.execute("ALTER TABLE photos DROP COLUMN ok")
        conn.execute("ALTER TABLE photos ADD COLUMN width INTEGER")
        conn.execute("ALTER TABLE photos ADD COLUMN height INTEGER")
    logger.info("database migrated from version %d to %d", version, SCHEMA_VERSION)
