"""Operator settings and storage (issue 15): bad values are one line, the data folder has a quota, and retention
deletes surplus sample runs (the hostile zips and photos are in test_jobs.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.jobs import intake
from core.settings import SettingsError, checked_data_dir, env_int
from tests.conftest import write_photos


def test_bad_operator_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.jobs.backend import max_concurrent_jobs

    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "two")
    with pytest.raises(SettingsError, match="PRODUCT_STUDIO_MAX_JOBS='two' is not a whole number"):
        max_concurrent_jobs()
    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "0")
    with pytest.raises(SettingsError, match="below 1"):
        max_concurrent_jobs()
    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "3")
    assert max_concurrent_jobs() == 3
    assert env_int("PRODUCT_STUDIO_UNSET_FOR_TEST", 7) == 7
    a_file = tmp_path / "data.txt"
    a_file.write_text("x")
    with pytest.raises(SettingsError, match="is a file, not a folder"):
        checked_data_dir(a_file)
    assert checked_data_dir(tmp_path / "new" / "data").is_dir()


def test_quota_refuses_uploads_with_the_reason(studio_data: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    photo = write_photos(tmp_path / "p", count=1)[0].read_bytes()
    (studio_data / "runs").mkdir()
    (studio_data / "runs" / "old.bin").write_bytes(b"x" * 2_000_000)
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_QUOTA_GB", "0.002")
    refused = intake.receive_upload(studio_data / "drafts" / "d", "IMG_1.jpg", photo, existing=0)
    assert not refused[0].accepted and "data folder is full" in refused[0].reason
    monkeypatch.setenv("PRODUCT_STUDIO_DATA_QUOTA_GB", "1")
    assert intake.receive_upload(studio_data / "drafts" / "d", "IMG_1.jpg", photo, existing=0)[0].accepted


def test_retention_keeps_the_newest_sample_runs(studio_data: Path, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    from core.jobs.store import Store

    store = Store(studio_data)
    photos_dir = studio_data / "uploads" / "x"
    photos_dir.mkdir(parents=True)
    jobs = []
    for _ in range(4):
        job = store.create_job(product_name="Sample product", sku="SAMPLE", preset="test", config_json="{}",
                               photos_dir=photos_dir)
        store.finish(job.id, "done")
        store.run_dir(job).mkdir(parents=True)
        jobs.append(job)
        time.sleep(0.01)
    other = store.create_job(product_name="Mug", sku="M1", preset="test", config_json="{}", photos_dir=photos_dir)
    store.finish(other.id, "done")
    monkeypatch.setenv("PRODUCT_STUDIO_SAMPLE_RUNS", "2")
    deleted = store.apply_retention()
    assert sorted(deleted) == sorted(j.id for j in jobs[:2])
    assert store.get_job(jobs[0].id) is None and not store.run_dir(jobs[0]).exists()
    assert store.get_job(jobs[3].id) is not None and store.get_job(other.id) is not None
    assert photos_dir.is_dir()  # shared with jobs that stay


def test_finished_runs_nobody_approved_expire_after_the_operators_days(studio_data: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 12: retention for runs: with PRODUCT_STUDIO_RUN_DAYS set, finished runs older than that are
    deleted unless approved; running and recent runs stay (0, the default, keeps every run)."""
    from core.jobs.store import Store

    store = Store(studio_data)
    photos_dir = studio_data / "uploads" / "y"
    photos_dir.mkdir(parents=True)
    made = {}
    for name in ("old", "old approved", "recent", "old running"):
        job = store.create_job(product_name=name, sku=name, preset="test", config_json="{}", photos_dir=photos_dir)
        if name != "old running":
            store.finish(job.id, "done")
        store.run_dir(job).mkdir(parents=True)
        made[name] = job
    for name in ("old", "old approved", "old running"):
        store._update(made[name].id, created=time.time() - 10 * 86400, updated=time.time() - 10 * 86400)
    store.add_review(made["old approved"].id, "Rita", "approved", "")
    assert store.apply_retention() == []  # the default keeps every run
    monkeypatch.setenv("PRODUCT_STUDIO_RUN_DAYS", "7")
    assert store.apply_retention() == [made["old"].id]
    assert not store.run_dir(made["old"]).exists()
    assert all(store.get_job(made[n].id) is not None for n in ("old approved", "recent", "old running"))
    monkeypatch.setenv("PRODUCT_STUDIO_RUN_DAYS", "a week")
    with pytest.raises(SettingsError, match="PRODUCT_STUDIO_RUN_DAYS='a week'"):
        store.apply_retention()


def test_deployment_defaults_listen_locally_and_show_no_tracebacks() -> None:
    """Issue 15 item 12: the server binds to this machine only and never shows tracebacks (pages/_ui shows an id)."""
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert config["client"]["showErrorDetails"] == "none"
