"""The Ray backend: every job runs as a Ray task on a cluster (``PRODUCT_STUDIO_BACKEND=ray``).

    RAY_ADDRESS=HOST:6379          a cluster started with ``ray start --head`` (this machine joins as a driver)
    RAY_ADDRESS=ray://HOST:10001   the same through Ray Client
    (unset)                        a private Ray instance on this machine, living as long as the dispatching process

Ray does the scheduling: every queued job is handed over at once with the resources its preset needs
(``core.jobs.backend.job_resources``) and Ray runs as many as the cluster has room for, on any node. The tasks are
owned by one detached actor (``JobOwner``), so they do not die with the short-lived process that dispatched them (a
page load, the batch command), and any process can ask it what became of a job's task. When a Ray worker dies (node
lost, killed, out of memory) Ray runs the task again, up to ``MAX_ATTEMPTS`` in all, on any node, and the new attempt
resumes the run from its last finished stage. That is why run folders and the studio database must be on storage
every node sees at the same path (``PRODUCT_STUDIO_DATA``), and the studio installed at the same path on every node.
The store stays the one record of every job's state: the task runs the same ``run_worker`` as a local worker process.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from pathlib import Path

import ray

from core.jobs.backend import (
    DEFAULT_WORKER,
    MAX_ATTEMPTS,
    WORKER_ENV,
    JobBackend,
    WorkerState,
    job_resources,
    limit_threads,
)
from core.jobs.store import REPO_ROOT, Job, Store

logger = logging.getLogger(__name__)

NAMESPACE = "product_studio"
OWNER_NAME = "job-owner"
CONNECT_GRACE_S = 30.0
"""A job handed over this recently may not have reached the owner yet (another process is submitting it)."""


@ray.remote(max_calls=1)  # a fresh process per job: no memory or thread settings carried from the job before
def run_job_task(data_root: str, job_id: str, token: str, worker_module: str) -> str:
    """One attempt at a job, inside a Ray worker: the same ``run_worker`` as a local worker process."""
    from core.jobs.worker import run_worker

    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
    limit_threads(cpus)  # the cores Ray gave this task, not the node's count
    store = Store(Path(data_root))
    job = store.get_job(job_id)
    if job is None:
        return "failed"
    store.log_path(job).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(store.log_path(job), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logger.info("ray task for job %s on %s with %d CPU(s)", job_id, ray.get_runtime_context().get_node_id(), cpus)
        run = importlib.import_module(worker_module).run_job
        return run_worker(store, job_id, run, token=token, redispatch=False)
    except Exception as exc:  # the worker could not even start: a failure of the job, not of the Ray worker
        logger.exception("job %s could not run in its Ray task", job_id)
        store.finish(job_id, "failed", error=f"The Ray worker could not run the job ({type(exc).__name__}: {exc}).",
                     token=token)
        return "failed"
    finally:
        root.removeHandler(handler)
        handler.close()


@ray.remote(num_cpus=0, max_restarts=-1)
class JobOwner:
    """Owns the jobs' tasks (a task lives as long as its owner) and says what became of them."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[str, ray.ObjectRef]] = {}

    def submit(self, job_id: str, token: str, data_root: str, worker_module: str, cpus: int, gpus: float) -> None:
        ref = run_job_task.options(num_cpus=cpus, num_gpus=gpus, max_retries=MAX_ATTEMPTS - 1, retry_exceptions=False,
                                   name=f"product-studio-job-{job_id}").remote(data_root, job_id, token, worker_module)
        self._tasks[job_id] = (token, ref)

    def states(self, tokens: dict[str, str | None]) -> dict[str, tuple[str, str]]:
        """Per job id: ('running', '') while it runs or waits for resources; ('ended', how) when its last attempt is
        over (returned, cancelled, or its worker died once too often); ('unknown', '') when it was not handed to
        this owner with that token."""
        states = {}
        for job_id, token in tokens.items():
            entry = self._tasks.get(job_id)
            if entry is None or entry[0] != token:
                states[job_id] = ("unknown", "")
                continue
            ready, _ = ray.wait([entry[1]], timeout=0)
            if not ready:
                states[job_id] = ("running", "")
                continue
            try:
                how = f"returned {ray.get(entry[1])}"
            except Exception as exc:  # WorkerCrashedError after the last retry, TaskCancelledError, ...
                how = f"{type(exc).__name__}: {str(exc)[:300]}"
            states[job_id] = ("ended", how)
            del self._tasks[job_id]
        return states

    def cancel(self, job_id: str) -> bool:
        entry = self._tasks.get(job_id)
        if entry is None:
            return False
        ray.cancel(entry[1], force=True)  # kills the worker process running it; a cancelled task is not retried
        return True


class RayBackend(JobBackend):
    name = "ray"

    def __init__(self) -> None:
        self._owner: ray.actor.ActorHandle | None = None

    def _connect(self) -> ray.actor.ActorHandle:
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS", "").strip() or None
            options = {} if address else {"include_dashboard": False}
            logger.info("connecting to Ray at %s", address or "a new local instance")
            # PYTHONPATH: the workers import the studio from where it is installed (the same path on every node).
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}, **options)
        if self._owner is None:
            self._owner = JobOwner.options(name=OWNER_NAME, namespace=NAMESPACE, lifetime="detached",
                                           get_if_exists=True).remote()
        return self._owner

    def capacity(self) -> int | None:
        return None  # Ray queues the tasks by the resources they ask for

    def start(self, store: Store, job: Job) -> None:
        owner = self._connect()
        resources = job_resources(job.preset, ray.cluster_resources().get("GPU", 0.0))
        worker_module = os.environ.get(WORKER_ENV, DEFAULT_WORKER)
        ray.get(owner.submit.remote(job.id, job.token, str(store.root.resolve()), worker_module, resources.cpus,
                                    resources.gpus))
        store._update(job.id, message=f"Waiting for a Ray worker with {resources.cpus} CPU(s)"
                      + (" and a GPU" if resources.gpus else ""))
        logger.info("job %s handed to Ray (%d CPUs, %.0f GPUs)", job.id, resources.cpus, resources.gpus)

    def worker_states(self, store: Store, jobs: list[Job]) -> dict[str, WorkerState]:
        owner = self._connect()
        raw = ray.get(owner.states.remote({job.id: job.token for job in jobs}), timeout=60)
        now = time.time()
        states: dict[str, WorkerState] = {}
        for job in jobs:
            state, how = raw.get(job.id, ("unknown", ""))
            if how:
                logger.warning("job %s: its Ray task ended (%s)", job.id, how)
            if state == "running":
                states[job.id] = "pending" if job.pid is None else "alive"
            elif state == "unknown" and job.status == "starting" and now - (job.updated or 0) < CONNECT_GRACE_S:
                states[job.id] = "pending"  # being handed over by another process right now
            else:
                states[job.id] = "dead"  # its task is over (or its owner was restarted) and the job is not final
        return states

    def stop(self, store: Store, job: Job) -> bool:
        return bool(ray.get(self._connect().cancel.remote(job.id), timeout=60))
