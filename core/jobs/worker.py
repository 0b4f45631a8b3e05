"""The worker process: runs one job's pipeline to its end, reporting progress and a heartbeat to the store.

    python -m core.jobs.worker JOB_ID          (the local backend starts it with the job's attempt token)

Jobs run in worker *processes*, never in the Streamlit server, so a reload, a page switch or a crash of the UI never
touches a running reconstruction. On a Ray cluster the same ``run_worker`` runs inside a Ray task
(core/jobs/ray_backend.py). The database is the only channel: the worker writes stage, fraction, message and a
heartbeat; pages read them and may set a cancel flag, which the worker answers at its next progress report (or, when
a stage is silent, after a grace time). A worker first proves it is the job's current one (``Store.begin_attempt``
with its attempt token); a later attempt of the same job resumes the run from its last finished stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from core.config import PipelineConfig, preset_config
from core.jobs.backend import TOKEN_ENV, process_identity
from core.jobs.dispatch import CANCEL_GRACE_S, HEARTBEAT_S, dispatch, mark_manifest, write_failure
from core.jobs.intake import job_photo_paths
from core.jobs.store import Job, Store
from core.manifest import RunManifest
from core.progress import Cancelled, ProgressEvent, ProgressListener

logger = logging.getLogger(__name__)

PROGRESS_WRITE_S = 0.5
"""Minimum time between progress writes, so chatty stages do not hammer the database."""

RunJob = Callable[[Job, list[Path], list[str], Path, PipelineConfig, ProgressListener], RunManifest]
"""What a worker runs for a job: (job, photo files, the user's names, run folder, config, listener) -> record."""


def run_job(job: Job, photos: list[Path], names: list[str], run_dir: Path, config: PipelineConfig,
            listener: ProgressListener) -> RunManifest:
    """The pipeline of the job's mode, with the job's id as the run's id, resuming what an earlier attempt finished."""
    from core.pipeline import run_stages

    return run_stages(job.mode, photos, run_dir, config, listener, names, run_id=job.id, resume=True)


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat fresh, enforces cancel requests that stages do not answer in time, and stops a
    worker whose job was handed to another worker meanwhile."""

    def __init__(self, store: Store, job: Job, token: str, redispatch: bool) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job.id}")
        self.store, self.job, self.token, self.redispatch = store, job, token, redispatch
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.store.heartbeat(self.job.id)
                current = self.store.get_job(self.job.id)
            except Exception:  # a locked or briefly unavailable database must not kill the run
                logger.warning("heartbeat failed", exc_info=True)
                continue
            if current and current.token != self.token and not self.stopped.is_set():
                logger.warning("job %s was handed to another worker; this one stops", self.job.id)
                os._exit(4)
            if current and current.cancel_requested and time.time() - current.cancel_requested > CANCEL_GRACE_S:
                logger.warning("job %s did not stop within %.0f s of the cancel request; exiting", self.job.id,
                               CANCEL_GRACE_S)
                self.store.finish(self.job.id, "cancelled", message="Cancelled by the user.", token=self.token)
                mark_manifest(self.store.run_dir(self.job), "cancelled", "Cancelled by the user.")
                if self.redispatch:
                    dispatch(self.store)  # the slot is free: start the next queued job before leaving
                os._exit(3)  # the pipeline is inside a long call that cannot be interrupted from Python


def job_config(job: Job) -> PipelineConfig:
    """The configuration the job was submitted with (its preset's when none was recorded)."""
    if job.config_json and job.config_json != "{}":
        return PipelineConfig.from_dict(json.loads(job.config_json))
    return preset_config(job.preset)  # type: ignore[arg-type]


def run_worker(store: Store, job_id: str, run: RunJob = run_job, token: str | None = None,
               redispatch: bool = True) -> str:
    """Run one job to its end in this process; returns its final status.

    ``token`` is the attempt token the job was handed out with (default ``$PRODUCT_STUDIO_JOB_TOKEN``); without one
    a queued job is taken over directly (running a job by hand). A worker whose token is not the job's current one
    leaves the job alone. ``redispatch``: hand a freed slot to the next queued job (local workers).
    """
    job = store.get_job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    if job.is_final:
        return job.status
    token = token or os.environ.get(TOKEN_ENV) or store.take_queued(job_id)
    pid, host, process_started = process_identity()
    resuming = job.attempts > 0
    job = store.begin_attempt(job_id, token or "", pid, host, process_started,
                              f"Worker started (attempt {job.attempts + 1}), resuming from the last finished stage"
                              if resuming else "Worker started")
    if job is None:
        current = store.get_job(job_id)
        logger.warning("job %s is not this worker's to run (it is %s); leaving it", job_id,
                       current.status if current else "gone")
        return current.status if current else "failed"
    assert token is not None
    run_dir = store.run_dir(job)
    heartbeat = _Heartbeat(store, job, token, redispatch)
    heartbeat.start()
    last = {"write": 0.0, "stage": ""}

    def listener(event: ProgressEvent) -> None:
        now = time.time()
        if now - last["write"] < PROGRESS_WRITE_S and event.stage == last["stage"] and event.overall < 1.0:
            return
        last.update(write=now, stage=event.stage)
        store.update_progress(job_id, event.stage, event.overall, event.message[:300])
        if store.cancel_requested(job_id):
            raise Cancelled(f"job {job_id} cancelled by the user")

    status, error, message = "failed", "", ""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        photos, names = job_photo_paths(store, job)
        manifest = run(job, photos, names, run_dir, job_config(job), listener)
        status = manifest.status if manifest.status in ("done", "failed", "cancelled") else "done"
        error = manifest.failure_reason if status == "failed" else ""
        message = "Finished" if status == "done" else (error or status)
    except Cancelled:
        status, message = "cancelled", "Cancelled by the user."
    except OSError as exc:  # an unwritable run folder or a full disk: say so, not "internal error" or memory
        logger.error("job %s cannot write its run folder:\n%s", job_id, traceback.format_exc())
        error = message = write_failure(exc)
    except Exception as exc:
        logger.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        error = f"Internal error in '{last['stage'] or 'start-up'}': {exc}. Your photos are kept; retry or report it."
        message = error
    finally:
        heartbeat.stopped.set()
    if store.finish(job_id, status, error=error, message=message, token=token):  # type: ignore[arg-type]
        if status != "done":
            mark_manifest(run_dir, status, error or message)
        logger.info("job %s finished: %s", job_id, status)
    return status


def main(argv: list[str] | None = None, run: RunJob = run_job) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.jobs.worker", description="Product Studio job worker: "
                                     "run one queued job, then start the next ones")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store()
    status = run_worker(store, args.job_id, run)
    dispatch(store)  # hand the freed slot to the next queued job, even when no page is open
    return 0 if status in ("done", "cancelled", "failed") else 1


if __name__ == "__main__":
    sys.exit(main())
