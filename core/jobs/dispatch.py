"""Dispatching jobs to the job backend, and noticing workers that died, hung or ignored a cancel.

Whoever touches the queue (a page load, a new job, a worker that finishes, the batch command) calls ``dispatch``,
which first reaps (asks each active job's backend what became of its worker) and then hands queued jobs to the
current backend while it has room. A transaction in ``Store.claim_queued`` keeps the limit even when several
processes dispatch at once. A job whose worker died goes back to the queue and resumes from its last finished stage
in a new attempt (at most ``MAX_ATTEMPTS``); the backends are in core/jobs/backend.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from core import advice
from core.jobs.backend import (
    MAX_ATTEMPTS,
    MAX_JOBS_ENV,
    WORKER_ENV,
    JobBackend,
    backend_named,
    current_backend,
    max_concurrent_jobs,
)
from core.jobs.store import ACTIVE_STATUSES, Job, Store
from core.manifest import MANIFEST_NAME, ManifestError, load_manifest

logger = logging.getLogger(__name__)

__all__ = ["MAX_JOBS_ENV", "WORKER_ENV", "cancel", "dispatch", "mark_manifest", "max_concurrent_jobs", "reap"]

HEARTBEAT_S = 5.0
"""How often a worker proves it is alive, even while a stage reports no progress."""
STALE_AFTER_S = 180.0
"""A worker silent for this long is considered hung and is stopped."""
START_TIMEOUT_S = 120.0
"""A job handed to local workers whose worker never reported is failed after this long."""
CANCEL_GRACE_S = 30.0
"""A worker that does not stop this long after a cancel request stops itself (stages may not report often)."""


def dispatch(store: Store, max_active: int | None = None, backend: JobBackend | None = None) -> list[Job]:
    """Reap, then hand queued jobs to ``backend`` (the current one) while it has room. Returns the jobs started."""
    reap(store)
    backend = backend or current_backend()
    capacity = max_active or backend.capacity()
    started = []
    for job in store.claim_queued(capacity, backend.name, message=f"Starting a worker ({backend.name})"):
        try:
            backend.start(store, job)
        except Exception as exc:  # an unreachable cluster must not break the page that dispatched
            logger.error("backend %s could not start job %s: %s", backend.name, job.id, exc)
            store.requeue(job.id, f"Waiting: the {backend.name} backend is not reachable ({exc}).")
            break
        started.append(job)
    return started


def reap(store: Store, now: float | None = None) -> list[str]:
    """Deal with active jobs whose worker died, hung or ignored a cancel; returns their ids. Run folders stay."""
    now = time.time() if now is None else now
    reaped = []
    active = store.list_jobs(ACTIVE_STATUSES)
    by_backend: dict[str, list[Job]] = {}
    for job in active:
        by_backend.setdefault(job.backend, []).append(job)
    for name, jobs in by_backend.items():
        try:
            backend = backend_named(name)
            states = backend.worker_states(store, jobs)
        except Exception as exc:
            logger.warning("cannot ask the %s backend about its workers: %s", name, exc)
            continue
        for job in jobs:
            if _reap_one(store, backend, job, states.get(job.id, "unknown"), now):
                reaped.append(job.id)
    return reaped


def _reap_one(store: Store, backend: JobBackend, job: Job, state: str, now: float) -> bool:
    verdict: tuple[str, str] | None = None
    if state == "pending":
        if job.cancel_requested and now - job.cancel_requested > CANCEL_GRACE_S:
            backend.stop(store, job)  # still waiting for a worker: a late one finds the job final and leaves
            verdict = ("cancelled", "Cancelled before it started.")
        elif backend.capacity() is not None and now - (job.updated or job.created) > START_TIMEOUT_S:
            verdict = ("failed", "The worker never started. Retry the job; if it happens again, tell an admin.")
    elif state == "dead":
        if job.cancel_requested:
            verdict = ("cancelled", "Cancelled (the worker had stopped).")
        elif job.attempts == 0:  # its worker died before it even started: running it again would do the same
            verdict = ("failed", "The worker stopped before it started on the job. Retry the job; if it happens "
                                 "again, tell an admin (the job's log says why).")
        elif job.attempts < MAX_ATTEMPTS:
            message = (f"The worker stopped during '{job.stage or 'start-up'}' (attempt {job.attempts} of "
                       f"{MAX_ATTEMPTS}); resuming from the last finished stage.")
            if store.requeue(job.id, message):
                logger.warning("job %s: worker lost, queued again to resume (attempt %d)", job.id, job.attempts)
                return True
            return False
        else:
            verdict = ("failed", f"The worker stopped unexpectedly during '{job.stage or 'start-up'}' {job.attempts} "
                                 "times (it was killed or ran out of memory). Finished stages and your photos are "
                                 "kept; retry the job, or use the preview preset.")
    elif job.cancel_requested and now - job.cancel_requested > 2 * CANCEL_GRACE_S:
        backend.stop(store, job)
        verdict = ("cancelled", "Cancelled (the worker was stopped).")
    elif job.heartbeat and now - job.heartbeat > STALE_AFTER_S:
        backend.stop(store, job)
        verdict = ("failed", f"The worker stopped responding during '{job.stage}' for over "
                             f"{STALE_AFTER_S / 60:.0f} minutes and was stopped. Retry the job.")
    if verdict is None:
        return False
    status, reason = verdict
    store.finish(job.id, status, error=reason if status == "failed" else "", message=reason)  # type: ignore[arg-type]
    mark_manifest(store.run_dir(job), status, reason)
    logger.warning("job %s marked %s: %s", job.id, status, reason)
    return True


def cancel(store: Store, job_id: str) -> Job | None:
    """Cancel a job: a queued one at once, a running one at its next progress report (or after a grace time)."""
    job = store.request_cancel(job_id)
    if job is not None and job.status == "cancelled":
        mark_manifest(store.run_dir(job), "cancelled", "Cancelled by the user.")
    return job


def write_failure(exc: OSError) -> str:
    """The message for a run folder that cannot be written (core/advice.py)."""
    return advice.cannot_write(exc)


def mark_manifest(run_dir: Path, status: str, reason: str) -> bool:
    """Record a final status in a run's manifest when the pipeline could not (a killed or cancelled worker).
    Never raises: a run folder that cannot be written is logged and False returned (the store keeps the status)."""
    try:
        return _mark_manifest(run_dir, status, reason)
    except OSError as exc:
        logger.warning("cannot record status %s in %s: %s", status, run_dir, exc)
        return False


def _mark_manifest(run_dir: Path, status: str, reason: str) -> bool:
    if not (run_dir / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = load_manifest(run_dir)
    except (OSError, ManifestError):
        logger.warning("manifest of %s unreadable; status not recorded there", run_dir, exc_info=True)
        return False
    if manifest.status != "running":
        return False
    manifest.status = status  # type: ignore[assignment]
    manifest.failure_reason = reason if status == "failed" else manifest.failure_reason
    for stage in manifest.stages:
        if stage.status == "running":
            stage.status = "failed"
    manifest.save(run_dir)
    return True
