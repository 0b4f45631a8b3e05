"""The Ray backend on a real local Ray cluster (2 CPUs, no dashboard): the batch command and the app's queue.

One cluster for the module (starting one costs ~15-20 s here). The batch runs two generated captures through the
real pipeline (test preset) on Ray while one Ray worker is killed mid-run; the killed job resumes from its last
finished stage and the results equal the local backend's. The app's queue runs on Ray with the resumable stand-in
pipeline (tests/staged_worker.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, write_photos

from benchmarks.synthetic import CaptureSpec, render_capture
from core.artifacts import checksum
from core.cli import batch
from core.config import PipelineConfig
from core.jobs import dispatch
from core.jobs.backend import BACKEND_ENV, WORKER_ENV
from core.jobs.store import Job, Store
from core.manifest import load_manifest
from core.pipeline import MULTI_VIEW_STAGES
from core.scene import cameras_from_model

ray = pytest.importorskip("ray")

PIPELINE_STAGES = [stage.name for stage in MULTI_VIEW_STAGES]


@pytest.fixture(scope="module")
def ray_cluster():
    from core.jobs.ray_backend import NAMESPACE

    if ray.is_initialized():
        ray.shutdown()
    # address="local": always a new private cluster, even when another one runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two SKUs, each a small generated capture (10 photos of 320x240 around a textured product)."""
    root = tmp_path_factory.mktemp("catalogue")
    for sku, seed in (("MUG-1", 3), ("TIN-2", 5)):
        capture = render_capture(CaptureSpec(num_views=10, width=320, height=240, elevations_deg=(30.0,), seed=seed),
                                 tmp_path_factory.mktemp(sku))
        shutil.copytree(capture.image_dir, root / sku)
    return root


def _kill_once_during(store_root: Path, sku: str, stage: str, killed: dict) -> threading.Thread:
    """Kill the Ray worker running ``sku``'s job once that job reports ``stage`` (its earlier stages are done)."""

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and "pid" not in killed:
            jobs = [j for j in Store(store_root).list_jobs() if j.sku == sku] if (store_root / "studio.db").exists() \
                else []
            if jobs and jobs[0].stage == stage and jobs[0].status == "running" and jobs[0].pid:
                killed["pid"] = jobs[0].pid
                os.kill(jobs[0].pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_batch_on_ray_survives_a_killed_worker_and_equals_the_local_backend(ray_cluster, catalogue: Path,
                                                                             tmp_path: Path, capsys) -> None:
    sku_csv = tmp_path / "skus.csv"
    sku_csv.write_text("sku,name,known_dimension\nMUG-1,Blue mug,height 95 mm\nTIN-2,Tea tin,\n", encoding="utf-8")
    on_ray = tmp_path / "ray-runs"
    killed: dict = {}
    killer = _kill_once_during(on_ray, "MUG-1", "depth", killed)
    code = batch.main([str(catalogue), "--out", str(on_ray), "--backend", "ray", "--preset", "test",
                       "--csv", str(sku_csv)])
    killer.join(timeout=1)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "SKUs: 2 done, 0 failed, 0 running, 0 queued of 2" in err  # the overall progress line
    assert "pid" in killed, "the worker was never seen in the depth stage"

    store = Store(on_ray)
    rows = list(csv.DictReader((on_ray / batch.SUMMARY_NAME).read_text(encoding="utf-8").splitlines()))
    assert [(r["SKU"], r["product"], r["status"]) for r in rows] == [("MUG-1", "Blue mug", "done"),
                                                                     ("TIN-2", "Tea tin", "done")]
    assert all(r["quality"] in ("good", "check", "poor") and int(r["faces"]) > 1000 for r in rows), rows
    jobs = {j.sku: j for j in store.list_jobs()}
    assert {j.backend for j in jobs.values()} == {"ray"}
    mug = jobs["MUG-1"]
    # The CSV's known dimension reaches the job's settings where the studio has them (the asset stage's).
    config = PipelineConfig.from_dict(json.loads(mug.config_json))
    if hasattr(config, "asset"):
        assert config.asset.height_mm == 95.0
    else:
        assert "MUG-1: this studio cannot use a known size yet" in err
    assert mug.attempts == 2 and mug.pid != killed["pid"] and rows[0]["attempts"] == "2"
    assert jobs["TIN-2"].attempts == 1

    # The killed run resumed from its last finished stage: nothing lost, no stage run twice to completion.
    run_dir = store.run_dir(mug)
    manifest = load_manifest(run_dir)
    assert manifest.status == "done" and [s.name for s in manifest.stages] == PIPELINE_STAGES
    # killed in the depth stage: every stage before it is kept
    assert [s.name for s in manifest.stages if s.resumed] == PIPELINE_STAGES[:PIPELINE_STAGES.index("depth")]
    log = (run_dir / "logs" / "run.log").read_text()
    assert all(log.count(f"stage {name} done in") == 1 for name in PIPELINE_STAGES), log
    assert len(manifest.photos) == 10 and all(p.status == "accepted" for p in manifest.photos)
    for key, record in manifest.artifacts.items():
        assert checksum(run_dir / record.path) == (record.bytes, record.sha256), key

    # The same SKU on the local backend (worker processes on this machine): the same cameras, the same mesh size.
    alone = tmp_path / "one-sku"
    shutil.copytree(catalogue / "MUG-1", alone / "MUG-1")
    local = tmp_path / "local-runs"
    assert batch.main([str(alone), "--out", str(local), "--backend", "local", "--preset", "test"]) == 0
    (reference,) = Store(local).list_jobs()
    assert reference.backend == "local"
    expected = load_manifest(Store(local).run_dir(reference))
    assert _faces(expected) == _faces(manifest)
    ours = cameras_from_model(run_dir / manifest.artifacts["sfm.model"].path)
    theirs = cameras_from_model(Store(local).run_dir(reference) / expected.artifacts["sfm.model"].path)
    assert sorted(ours) == sorted(theirs) and len(ours) == 10
    for name in ours:
        assert np.allclose(ours[name].R, theirs[name].R, atol=1e-9) and np.allclose(ours[name].t, theirs[name].t,
                                                                                      atol=1e-9), name

    # Running the command again continues the batch: nothing is queued twice.
    assert batch.main([str(catalogue), "--out", str(on_ray), "--backend", "ray", "--preset", "test"]) == 0
    assert len(Store(on_ray).list_jobs()) == 2


def _faces(manifest) -> int:
    return manifest.stage("mesh").metrics["faces"]


def _wait(store: Store, job_id: str, condition, timeout: float = 90.0) -> Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        dispatch.dispatch(store)
        job = store.get_job(job_id)
        if condition(job):
            return job
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting on job {job_id}: {store.get_job(job_id)}")


def test_the_apps_queue_runs_on_ray(ray_cluster, studio_data: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """New capture -> Start with PRODUCT_STUDIO_BACKEND=ray: the job runs in a Ray task and the page follows it;
    a second job is cancelled while it runs."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(BACKEND_ENV, "ray")
    monkeypatch.setenv(WORKER_ENV, "tests.staged_worker")
    monkeypatch.setenv("PRODUCT_STUDIO_TEST_STEPS", "3")
    monkeypatch.setenv("PRODUCT_STUDIO_TEST_STEP_S", "0.5")
    photos = write_photos(tmp_path / "p", count=3)
    app = AppTest.from_file(str(REPO_ROOT / "Home.py"), default_timeout=60)
    app.switch_page("pages/1_New_capture.py")
    app.run()
    app.text_input[0].set_value("Ray mug")
    app.text_input[1].set_value("RAY-1")
    app.get("file_uploader")[0].set_value([(p.name, p.read_bytes(), "image/jpeg") for p in photos])
    app.run()
    next(b for b in app.button if b.label == "Start").click()
    app.run()
    assert not app.exception, app.exception
    store = Store()
    job = _wait(store, app.query_params["job"], lambda j: j.is_final)
    assert (job.status, job.backend, job.attempts) == ("done", "ray", 1), job.error
    assert "ray task for job" in store.log_path(job).read_text()
    manifest = load_manifest(store.run_dir(job))
    assert [s.name for s in manifest.stages] == ["capture", "work_1", "work_2", "work_3"]

    from core.jobs.intake import submit_folder

    monkeypatch.setenv("PRODUCT_STUDIO_TEST_STEPS", "100")
    long = submit_folder(store, tmp_path / "p", product_name="Long", sku="L", preset="test")
    _wait(store, long.id, lambda j: j.status == "running" and j.stage.startswith("work"))
    dispatch.cancel(store, long.id)
    long = _wait(store, long.id, lambda j: j.is_final, timeout=60)
    assert long.status == "cancelled" and load_manifest(store.run_dir(long)).status == "cancelled"
