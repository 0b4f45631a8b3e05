"""Job backends: where a job's worker runs. The store (SQLite) stays the one record of every job's state.

    local   worker processes on this machine (the default: nothing to install or start)
    ray     tasks on a Ray cluster (``PRODUCT_STUDIO_BACKEND=ray``, ``RAY_ADDRESS=host:port`` or ``ray://host:10001``;
            code in core/jobs/ray_backend.py)

The dispatcher (core/jobs/dispatch.py) claims queued jobs in the store, hands each to the backend with a fresh attempt
token, and asks the backend what became of the workers of active jobs. A worker proves it is the job's current
worker with that token (``Store.begin_attempt``) and records who it is: host, pid and the process's start time. The
local backend only ever signals a process that is provably that worker (same host, same pid, same start time, and
the job's token in its environment where it can be read): a pid reused by another process is never signalled.

A job's worker asks for the cores (and a GPU, where the cluster has one) its preset needs (``job_resources``); the
stages use the cores they are given (``core.config.cpu_budget``), not the machine's count.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from core.config import CPUS_ENV
from core.jobs.store import REPO_ROOT, Job, Store

logger = logging.getLogger(__name__)

BACKEND_ENV = "PRODUCT_STUDIO_BACKEND"
"""``local`` (default) or ``ray``."""
MAX_JOBS_ENV = "PRODUCT_STUDIO_MAX_JOBS"
WORKER_ENV = "PRODUCT_STUDIO_WORKER"
"""Module run as the worker (default ``core.jobs.worker``; the tests' timed stand-ins name their own)."""
TOKEN_ENV = "PRODUCT_STUDIO_JOB_TOKEN"
"""The attempt token a local worker process is started with (it proves the process is the job's worker)."""
DEFAULT_WORKER = "core.jobs.worker"

MAX_ATTEMPTS = 3
"""Workers a job may lose before it fails. One lost machine, pre-emption or kill is routine and the job resumes from
its last finished stage; a job whose worker dies three times is most likely killing it itself (out of memory), and
the failure message says what to do instead."""

WorkerState = Literal["pending", "alive", "dead", "unknown"]
"""What a backend knows of an active job's worker: ``pending`` (handed over, not started yet), ``alive``, ``dead``
(gone: the job may resume in a new attempt), ``unknown`` (this process cannot tell, e.g. a worker on another host)."""


@dataclass(frozen=True)
class JobResources:
    cpus: int
    gpus: float = 0.0


PRESET_CPUS = {"test": 1, "preview": 2, "balanced": 2, "full": 4}
"""Cores a job of each preset asks for. Measured (benchmarks/RESULTS.md, throughput): four preview SKUs on 2 cores
took 74 s each with 2 cores per job but 90 s with 1, so one job does not keep two cores fully busy (SfM and the
depth stage's two threads do, the other stages mostly run on one); two cores per job is the default and
PRODUCT_STUDIO_JOB_CPUS fits jobs to a cluster's nodes. The test preset's tiny images need one."""


JOB_CPUS_ENV = "PRODUCT_STUDIO_JOB_CPUS"
"""Cores every job asks for, overriding the preset's (an operator fitting jobs to a cluster's nodes)."""


def job_resources(preset: str, gpus_available: float = 0.0) -> JobResources:
    """What a job of ``preset`` asks its backend for: cores (``$PRODUCT_STUDIO_JOB_CPUS`` or the preset's), and one
    GPU where the cluster has one (the dense stages run on CUDA when torch sees a GPU)."""
    configured = os.environ.get(JOB_CPUS_ENV, "").strip()
    cpus = int(configured) if configured.isdigit() and int(configured) > 0 else PRESET_CPUS.get(preset, 2)
    return JobResources(cpus, 1.0 if gpus_available >= 1 and preset != "test" else 0.0)


def max_concurrent_jobs() -> int:
    """``$PRODUCT_STUDIO_MAX_JOBS``, or one job per two cores (a run uses every core it is given)."""
    configured = os.environ.get(MAX_JOBS_ENV, "").strip()
    if configured:
        if not configured.isdigit():
            raise ValueError(f"{MAX_JOBS_ENV}={configured!r} is not a whole number; set it to e.g. 2 or unset it.")
        return max(1, int(configured))
    return max(1, (os.cpu_count() or 2) // 2)


def thread_environment(cpus: int) -> dict[str, str]:
    """Environment that keeps a worker's libraries (OpenMP in Open3D and torch, BLAS, OpenCV) to ``cpus`` threads;
    set before they are imported."""
    value = str(max(1, cpus))
    return {CPUS_ENV: value, "OMP_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def limit_threads(cpus: int) -> None:
    """Hold this worker process to ``cpus`` threads (environment, and the thread pools already loaded)."""
    os.environ.update(thread_environment(cpus))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(max(1, cpus))
    try:
        import cv2

        cv2.setNumThreads(max(1, cpus))
    except ImportError:
        pass


class JobBackend(ABC):
    """Runs job workers somewhere; the dispatcher keeps the store up to date with what it reports."""

    name: str

    @abstractmethod
    def capacity(self) -> int | None:
        """Jobs that may be active at once (None: hand every queued job over, the backend queues them itself)."""

    @abstractmethod
    def start(self, store: Store, job: Job) -> None:
        """Start a worker for a job claimed in the store (status 'starting', with its attempt token)."""

    @abstractmethod
    def worker_states(self, store: Store, jobs: list[Job]) -> dict[str, WorkerState]:
        """What became of the workers of these active jobs of this backend."""

    @abstractmethod
    def stop(self, store: Store, job: Job) -> bool:
        """Stop the job's worker (hung, or a cancel it did not answer); False when there is no worker that is
        provably the job's to stop."""


# --- the local backend: worker processes on this machine ----------------------------------------------------------

HOST = socket.gethostname()

_children: dict[str, subprocess.Popen] = {}
"""Workers this process started, by job id; polled so finished ones do not linger as zombies."""


class LocalBackend(JobBackend):
    """``python -m core.jobs.worker JOB_ID`` processes, at most ``max_concurrent_jobs`` at once. Liveness comes from
    the worker's identity (host, pid, start time, token), so workers and the dispatcher share one machine."""

    name = "local"

    def capacity(self) -> int | None:
        return max_concurrent_jobs()

    def start(self, store: Store, job: Job) -> None:
        store.log_path(job).parent.mkdir(parents=True, exist_ok=True)
        cpus = max(1, (os.cpu_count() or 2) // max_concurrent_jobs())  # the machine shared between the slots
        env = {**os.environ, "PRODUCT_STUDIO_DATA": str(store.root), "PYTHONUNBUFFERED": "1",
               TOKEN_ENV: job.token or "", **thread_environment(cpus)}
        module = os.environ.get(WORKER_ENV, DEFAULT_WORKER)
        try:
            with open(store.log_path(job), "ab") as log:
                # A new session: the worker outlives a restart of the Streamlit server that started it.
                process = subprocess.Popen([sys.executable, "-m", module, job.id], cwd=REPO_ROOT, env=env,
                                           stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
        except OSError as exc:
            store.finish(job.id, "failed", error=f"The worker could not be started ({exc}).")
            return
        _children[job.id] = process
        logger.info("started worker %d for job %s", process.pid, job.id)

    def worker_states(self, store: Store, jobs: list[Job]) -> dict[str, WorkerState]:
        for job_id, child in list(_children.items()):
            if child.poll() is not None:
                del _children[job_id]
        states: dict[str, WorkerState] = {}
        for job in jobs:
            if job.pid is None:
                states[job.id] = "pending"  # claimed; its worker has not reported yet
            elif job.worker_host is not None and job.worker_host != HOST:
                states[job.id] = "unknown"
            else:
                states[job.id] = "alive" if job_worker_process(job) is not None else "dead"
        return states

    def stop(self, store: Store, job: Job) -> bool:
        process = job_worker_process(job)
        if process is None:
            logger.warning("job %s: no process is provably its worker; nothing was signalled", job.id)
            return False
        try:
            process.kill()  # psutil checks the start time again right before signalling
        except Exception as exc:  # psutil.NoSuchProcess / AccessDenied: it is gone, or not ours to stop
            logger.warning("job %s: could not stop worker %d (%s)", job.id, process.pid, exc)
            return False
        logger.warning("job %s: stopped worker %d", job.id, process.pid)
        return True


def job_worker_process(job: Job):  # -> psutil.Process | None
    """The running process that is provably ``job``'s current worker, or None.

    Proof: the recorded pid runs on this host, its start time is the one the worker recorded (a reused pid belongs
    to a process started later), it is not a zombie, and where its environment can be read it carries the job's
    attempt token.
    """
    import psutil

    if job.pid is None or job.worker_started is None or (job.worker_host or HOST) != HOST:
        return None
    try:
        process = psutil.Process(job.pid)
        if abs(process.create_time() - job.worker_started) > 0.05:  # psutil's start times are exact to 1/100 s
            return None
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        try:
            token = process.environ().get(TOKEN_ENV)
        except psutil.AccessDenied:
            token = None  # another user's process: the start time alone must do (it cannot be our worker anyway)
        if token is not None and token != job.token:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def process_identity(pid: int | None = None) -> tuple[int, str, float]:
    """(pid, host, start time) of this process (or ``pid``): what a worker records about itself."""
    import psutil

    process = psutil.Process(pid)
    return process.pid, HOST, process.create_time()


# --- choosing one ---------------------------------------------------------------------------------------------------

_backends: dict[str, JobBackend] = {}


def backend_named(name: str) -> JobBackend:
    """The backend ``name`` (one instance per process: Ray's keeps its cluster connection)."""
    if name not in _backends:
        if name == "local":
            _backends[name] = LocalBackend()
        elif name == "ray":
            from core.jobs.ray_backend import RayBackend

            _backends[name] = RayBackend()
        else:
            raise ValueError(f"unknown job backend {name!r}; set {BACKEND_ENV} to 'local' or 'ray'")
    return _backends[name]


def current_backend() -> JobBackend:
    """The backend new jobs go to: ``$PRODUCT_STUDIO_BACKEND`` (default local)."""
    return backend_named(os.environ.get(BACKEND_ENV, "").strip().lower() or "local")
