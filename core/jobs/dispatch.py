"""Dispatching jobs to local worker processes, and noticing the ones that died.

Whoever touches the queue (a page load, a new job, a worker that finishes) calls ``dispatch``, which first marks
dead jobs as failed and then starts queued jobs while slots are free. A transaction in ``Store.claim_queued`` keeps
the limit even when several processes dispatch at once. Liveness uses process ids, so workers and the app must share
one machine. The worker process is ``python -m core.jobs.worker JOB_ID`` (``$PRODUCT_STUDIO_WORKER`` names another
module with the same command line, for the tests' short, timed stand-in).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.jobs.store import REPO_ROOT, Job, Store
from core.manifest import MANIFEST_NAME, ManifestError, load_manifest

logger = logging.getLogger(__name__)

MAX_JOBS_ENV = "PRODUCT_STUDIO_MAX_JOBS"
WORKER_ENV = "PRODUCT_STUDIO_WORKER"
"""Module run as the worker process (default ``core.jobs.worker``)."""
HEARTBEAT_S = 5.0
"""How often a worker proves it is alive, even while a stage reports no progress."""
STALE_AFTER_S = 180.0
"""A worker silent for this long is considered hung and is stopped."""
START_TIMEOUT_S = 120.0
"""A claimed job whose worker never reported is failed after this long."""
CANCEL_GRACE_S = 30.0
"""A worker that does not stop this long after a cancel request stops itself (stages may not report often)."""

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
            module = os.environ.get(WORKER_ENV, "core.jobs.worker")
            process = subprocess.Popen([sys.executable, "-m", module, job.id], cwd=REPO_ROOT, env=env,
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
    except (OSError, ManifestError):
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
