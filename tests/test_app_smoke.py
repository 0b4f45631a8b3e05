"""Every page loads without an exception, with an empty studio and with a finished run (real artefacts)."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, write_photos
from streamlit.testing.v1 import AppTest

from core.jobs.store import Job, Store
from core.report.runs import read_manifest

PAGES = ["Home.py", "pages/1_New_capture.py", "pages/2_Viewer.py", "pages/3_Diagnostics.py", "pages/4_Review.py"]


def _run(page: str, job_id: str | None = None, timeout: float = 60) -> AppTest:
    # Start at the entry script like a browser does, so links between pages resolve.
    app = AppTest.from_file(str(REPO_ROOT / "Home.py"), default_timeout=timeout)
    if page != "Home.py":
        app.switch_page(page)
    if job_id:
        app.query_params["job"] = job_id
    return app.run()


def _texts(app: AppTest) -> str:
    parts = [e.value for e in app.markdown] + [e.value for e in app.caption] + [e.value for e in app.info]
    parts += [e.value for e in app.warning] + [e.value for e in app.error] + [e.value for e in app.success]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_on_an_empty_studio(page: str, studio_data: Path) -> None:
    app = _run(page)
    assert not app.exception, app.exception


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_with_a_finished_run(page: str, finished_job) -> None:
    app = _run(page, finished_job.id)
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]


def test_viewer_shows_the_scene_and_downloads(finished_job) -> None:
    app = _run("pages/2_Viewer.py", finished_job.id)
    assert len(app.get("plotly_chart")) == 1
    assert len(app.get("download_button")) == 3
    assert len(app.toggle) == 4  # mesh, dense, sparse, cameras


def test_viewer_shows_the_textured_asset_its_checks_and_downloads(finished_job) -> None:
    from types import SimpleNamespace

    import numpy as np
    import open3d as o3d

    from core.artifacts import checksum
    from core.config import AssetConfig
    from core.manifest import ArtifactRecord, load_manifest
    from core.stages.asset import run_asset
    from core.stages.mesh import MeshResult

    run_dir = Store().run_dir(finished_job)
    sphere = o3d.geometry.TriangleMesh.create_sphere(0.05, resolution=12)
    sphere.vertex_colors = o3d.utility.Vector3dVector(np.asarray(sphere.vertices) * 10 + 0.5)
    result = run_asset(None, MeshResult(mesh=sphere), SimpleNamespace(up=np.array([0, 0, 1.0])), None, run_dir,
                       AssetConfig(height_mm=100, texture_size=256, profiles=("shopify", "amazon")))
    manifest = load_manifest(run_dir)
    for artifact in result.artifacts:
        manifest.artifacts[artifact.key] = ArtifactRecord(artifact.run_path, *checksum(artifact.path(run_dir)))
    manifest.save(run_dir)
    app = _run("pages/2_Viewer.py", finished_job.id)
    assert not app.exception, app.exception
    text = _texts(app)
    assert "Real size: 100 mm wide × 100 mm high × 100 mm deep" in text
    assert "Shopify" in text and "Amazon" in text and "the variant passes" in text  # 256 px: Amazon's variant
    labels = [b.label for b in app.get("download_button")]
    assert {"Download GLB", "Download USDZ", "Download OBJ + MTL + PNG (zip)", "Download Amazon (passes)"} <= set(
        labels), labels


def test_diagnostics_shows_every_stage_and_escapes_user_text(finished_job) -> None:
    app = _run("pages/3_Diagnostics.py", finished_job.id)
    assert len(app.expander) == 5
    assert len(app.get("plotly_chart")) >= 5  # times, reprojection, tracks, matches, depth, fusion
    text = _texts(app)
    assert "Take 20-40 photos" in text.replace("\\", "")
    assert "<b>" not in text  # the rejected photo's name is shown escaped


def _failed_job_without_mesh(tmp_path: Path) -> tuple[Store, Job]:
    """A job whose SfM failed: it has photos and a reason, but no 3D result."""
    from core.jobs.intake import submit_folder

    store = Store()
    write_photos(tmp_path / "p")
    job = submit_folder(store, tmp_path / "p", product_name="No mesh", sku="N", start=False)
    store.mark_running(job.id, pid=os.getpid())
    store.finish(job.id, "failed", error="COLMAP could not place the cameras.")
    return store, job


def test_viewer_without_mesh_says_so(studio_data: Path, tmp_path: Path) -> None:
    store, job = _failed_job_without_mesh(tmp_path)
    app = _run("pages/2_Viewer.py", job.id)
    assert not app.exception
    assert "no 3D result" in _texts(app)
    store.log_path(job).parent.mkdir(parents=True, exist_ok=True)
    store.log_path(job).write_text("Traceback ...\nRuntimeError: <b>boom</b>\n")
    app = _run("pages/3_Diagnostics.py", job.id)
    assert not app.exception, app.exception
    assert "RuntimeError: <b>boom</b>" in app.code[0].value  # shown verbatim, for support


def test_review_records_a_decision(finished_job) -> None:
    app = _run("pages/4_Review.py", finished_job.id)
    form_inputs = [t for t in app.text_input if t.label == "Your name"]
    form_inputs[0].set_value("Rita <i>")
    app.text_area[0].set_value("Looks **great**")
    next(b for b in app.button if b.label == "Save decision").click()
    app.run()
    assert not app.exception
    history = Store().reviews(finished_job.id)
    assert [(r.reviewer, r.decision, r.note) for r in history] == [("Rita <i>", "approved", "Looks **great**")]


def test_new_capture_checks_uploads_and_starts_a_job(studio_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_STUDIO_WORKER", "tests.slow_worker")
    *photos, zipped = write_photos(tmp_path / "p", count=4)  # the zip's photo is another one: copies are refused
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil/IMG_0100.jpg", zipped.read_bytes())
        zf.writestr("notes.txt", b"not a photo")
    uploads = [(p.name, p.read_bytes(), "image/jpeg") for p in photos]
    uploads += [("broken.jpg", b"not really a jpeg", "image/jpeg"), ("more.zip", archive.getvalue(), "application/zip")]

    app = _run("pages/1_New_capture.py")
    app.text_input[0].set_value("Mug <script>alert(1)</script>")
    app.text_input[1].set_value("MUG-1")
    app.get("file_uploader")[0].set_value(uploads)
    app.run()
    assert not app.exception, app.exception
    text = _texts(app)
    assert "4 of 5 photos accepted" in text.replace("\\", "")
    assert "broken.jpg" in text.replace("\\", "")
    drafts = list((studio_data / "drafts").iterdir())
    stored = sorted(p.name for p in drafts[0].iterdir() if p.is_file())
    assert all(".." not in name and "/" not in name for name in stored)
    assert not (studio_data / "evil").exists()

    next(n for n in app.number_input if n.label.startswith("Length in millimetres")).set_value(95.0)
    start = next(b for b in app.button if b.label == "Start")
    start.click()
    app.run()
    assert not app.exception, app.exception
    job_id = app.query_params["job"]
    job = Store().get_job(job_id)
    assert job is not None and job.product_name == "Mug <script>alert(1)</script>"
    assert json.loads(job.config_json)["asset"]["height_mm"] == 95.0  # the known size reaches the job's config
    deadline = time.time() + 60
    while time.time() < deadline and not Store().get_job(job_id).is_final:
        time.sleep(0.5)
    job = Store().get_job(job_id)
    assert job.status == "done", (job.status, job.error)
    app = _run("pages/1_New_capture.py", job_id)
    assert not app.exception
    assert "Finished" in _texts(app)


def test_new_capture_relief_mode_takes_exactly_one_photo(studio_data: Path, tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "p", count=2)
    app = _run("pages/1_New_capture.py")
    app.text_input[0].set_value("Poster")
    app.get("file_uploader")[0].set_value([(p.name, p.read_bytes(), "image/jpeg") for p in photos])
    app.radio[0].set_value("relief")
    app.run()
    assert not app.exception, app.exception
    assert "upload exactly one accepted photo for a relief (2 so far)" in _texts(app)
    assert next(b for b in app.button if b.label == "Start").disabled

    app.get("file_uploader")[0].set_value([(photos[0].name, photos[0].read_bytes(), "image/jpeg")])
    app.run()
    assert not app.exception, app.exception
    assert "exactly one" not in _texts(app) and "at least" not in _texts(app)


def test_review_of_a_run_without_mesh_offers_only_reject(studio_data: Path, tmp_path: Path) -> None:
    _, job = _failed_job_without_mesh(tmp_path)
    app = _run("pages/4_Review.py", job.id)
    assert not app.exception
    assert app.radio[0].options == ["Reject"]
    assert "cannot be approved" in _texts(app)


def test_sample_button_queues_the_sample(studio_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = REPO_ROOT / "assets" / "sample" / "images"
    if not sample.is_dir() or not any(sample.iterdir()):
        pytest.skip("the sample capture is not installed")
    monkeypatch.setenv("PRODUCT_STUDIO_WORKER", "tests.slow_worker")
    app = _run("Home.py")
    next(b for b in app.button if b.label == "Try it on the sample product").click()
    app.run()
    assert not app.exception, app.exception
    (job,) = Store().list_jobs()
    assert job.sku == "SAMPLE" and job.preset == "preview"
    assert len(Store().photos(job.id)) == len([p for p in sample.iterdir() if p.is_file()])
    deadline = time.time() + 60
    while time.time() < deadline and not Store().get_job(job.id).is_final:
        time.sleep(0.5)
    assert Store().get_job(job.id).status == "done"


def test_job_page_cancels_a_running_job(studio_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.jobs.intake import submit_folder

    monkeypatch.setenv("PRODUCT_STUDIO_WORKER", "tests.slow_worker")
    monkeypatch.setenv("PRODUCT_STUDIO_TEST_STEPS", "300")
    monkeypatch.setenv("PRODUCT_STUDIO_TEST_STEP_S", "0.2")
    write_photos(tmp_path / "p")
    store = Store()
    job = submit_folder(store, tmp_path / "p", product_name="Long", sku="L")
    deadline = time.time() + 60
    while time.time() < deadline and store.get_job(job.id).stage != "work":
        time.sleep(0.3)
    app = _run("pages/1_New_capture.py", job.id)
    assert not app.exception, app.exception
    assert "running" in _texts(app)
    next(b for b in app.button if b.label == "Cancel this run").click()
    app.run()
    assert not app.exception, app.exception
    while time.time() < deadline and not store.get_job(job.id).is_final:
        time.sleep(0.3)
    assert store.get_job(job.id).status == "cancelled"


HOSTILE = ["![x](http://127.0.0.1:9/px.png)", "<img src=http://127.0.0.1:9/a.png>", "[click](javascript:alert(1))",
           "**bold** `code` :red[red] $x$"]


def _rendered(app: AppTest) -> list[str]:
    """Every string the page hands to Streamlit's markdown renderer (text elements, page-link labels, progress
    texts, toasts)."""
    parts = [str(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "success", "toast")
             for e in app.get(kind)]
    for kind in ("page_link", "progress"):
        for element in app.get(kind):
            proto = element.proto
            parts += [str(getattr(proto, field)) for field in ("label", "text") if hasattr(proto, field)]
    return parts


@pytest.mark.parametrize("page", PAGES)
def test_hostile_names_are_never_rendered_as_markup(page: str, studio_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 6: product names and SKUs with Markdown images, links and HTML reach every page (the queue
    link on Home included) only escaped."""
    from core.jobs import intake

    monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "1")
    photos = write_photos(tmp_path / "p", count=3)[0].parent
    store = Store()
    jobs = [intake.submit_folder(store, photos, product_name=name, sku=name, start=False) for name in HOSTILE]
    store.take_queued(jobs[0].id)  # one in the queue's running list, the others waiting
    app = _run(page, jobs[0].id)
    assert not app.exception, app.exception
    rendered = _rendered(app)
    assert any("127" in text for text in rendered) or page != "Home.py"  # the names did reach the page
    for text in rendered:
        for name in HOSTILE:
            assert name not in text, (page, text)
        assert "](" not in text.replace("\\](", "").replace("\\]\\(", ""), (page, text)


def test_review_needs_a_login_once_reviewers_exist(finished_job, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 12: with reviewers in the store, decisions need a login (scrypt-hashed password) and carry the
    logged-in name, whatever name anyone would type."""
    from core.cli.users import main as users

    store = Store()
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert users(["add", "Rita", "--password-stdin"]) == 0
    assert store.users() == ["Rita"] and store.check_password("Rita", "correct horse battery")
    assert not store.check_password("Rita", "wrong password") and not store.check_password("Eve", "x" * 10)
    assert b"correct" not in store.db_path.read_bytes()
    app = _run("pages/4_Review.py", finished_job.id)
    assert not app.exception and "Log in to review" in _texts(app)
    assert not any(b.label == "Save decision" for b in app.button)
    app.text_input[-2].set_value("Rita")
    app.text_input[-1].set_value("wrong password")
    next(b for b in app.button if b.label == "Log in").click()
    app.run()
    assert "wrong password" in _texts(app).lower()
    app.text_input[-1].set_value("correct horse battery")
    next(b for b in app.button if b.label == "Log in").click()
    app.run()
    assert not app.exception, app.exception
    next(b for b in app.button if b.label == "Save decision").click()
    app.run()
    assert [r.reviewer for r in store.reviews(finished_job.id)] == ["Rita"]


@pytest.mark.parametrize("fault", ["damaged database", "damaged job row"])
def test_an_unexpected_error_shows_an_id_and_logs_the_trace(fault: str, finished_job, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    """Issue 15 item 12: an exception nobody foresaw ends the page with one line and a short error id; the traceback
    is in the server log under that id, never in the browser."""
    import re

    store = Store()
    if fault == "damaged database":
        store.db_path.write_bytes(b"this is not a database" * 100)
        for suffix in ("-wal", "-shm"):
            Path(f"{store.db_path}{suffix}").unlink(missing_ok=True)
    else:
        store._update(finished_job.id, created="yesterday")  # the Recent runs cards format it as a time
    with caplog.at_level("ERROR", logger="product_studio.pages"):
        app = _run("Home.py")
    assert not app.exception, app.exception  # Streamlit's own exception element (the traceback) is not shown
    shown = [e.value for e in app.error]
    assert len(shown) == 1 and "Something went wrong on this page" in shown[0], shown
    error_id = re.search(r"\(error ([0-9a-f]{8})\)", shown[0]).group(1)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the trace is in the server log, under the id
    for text in _texts(app).splitlines():
        assert "Traceback" not in text and "File \"" not in text and str(store.root) not in text


def _damage(run_dir: Path, change) -> None:
    record = json.loads((run_dir / "manifest.json").read_text())
    change(record)
    (run_dir / "manifest.json").write_text(json.dumps(record))


def _sfm_metrics(record: dict) -> dict:
    return next(s for s in record["stages"] if s["name"] == "sfm")["metrics"]


# Records that load (their fields have the types the pages compute with) but whose free-form numbers do not.
ODD_METRICS = {
    "photos placed as numbers": lambda r: _sfm_metrics(r).update(per_photo=[1, 2]),
    "untrusted as a number": lambda r: _sfm_metrics(r).update(per_photo=[{"photo": "a", "untrusted": 5}]),
    "histogram without edges": lambda r: _sfm_metrics(r).update(reprojection_error_histogram={"counts": [1, 2]}),
    "counts as words": lambda r: [s["metrics"].update(kept_depths="many", unseen_share="x") for s in r["stages"]],
}


@pytest.mark.parametrize("damage", list(ODD_METRICS))
def test_diagnostics_shows_what_a_damaged_record_still_holds(damage: str, finished_job) -> None:
    """Issue 15 minor: wrongly typed numbers in the record give no traceback: that panel says the record is damaged
    there, every other part of the page still shows."""
    _damage(Store().run_dir(finished_job), ODD_METRICS[damage])
    app = _run("pages/3_Diagnostics.py", finished_job.id)
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    warnings = [w.value for w in app.warning]
    assert any("this part of the run's record is damaged" in w for w in warnings), warnings
    findings = len(read_manifest(Store().run_dir(finished_job)).all_findings())
    assert [s.value for s in app.subheader][:2] == ["Time per stage", f"Findings ({findings})"]
    assert len(app.expander) >= 5  # every stage still has its panel


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("damage", ["not json", "wrongly typed findings", "wrongly typed stage"])
def test_a_damaged_record_says_so_on_every_page(page: str, damage: str, finished_job) -> None:
    """Issue 15 minor: a record that cannot be read says 'this run's record is damaged', never 'no record yet'
    and never a traceback."""
    run_dir = Store().run_dir(finished_job)
    if damage == "not json":
        (run_dir / "manifest.json").write_text("{not json")
    elif damage == "wrongly typed findings":
        _damage(run_dir, lambda r: r["stages"][0]["findings"].append({"level": ["x"], "message": {"a": 1}}))
    else:
        _damage(run_dir, lambda r: r["stages"][0].update(seconds="slow"))
    app = _run(page, finished_job.id)
    assert not app.exception, app.exception
    text = _texts(app)
    assert "no record yet" not in text and "Something went wrong" not in text
    if page in ("pages/2_Viewer.py", "pages/3_Diagnostics.py"):
        assert "record is damaged" in text, text


def test_review_says_a_linked_run_does_not_exist(finished_job) -> None:
    """Issue 15 minor: Review with an unknown ?job= says so instead of silently showing another run."""
    app = _run("pages/4_Review.py", "20990101-000000-nosuch")
    assert not app.exception, app.exception
    assert any("does not exist" in w.value for w in app.warning), [w.value for w in app.warning]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("setting", ["max jobs as a word", "data folder is a file"])
def test_bad_operator_settings_are_one_line_on_every_page(page: str, setting: str, studio_data: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 minor: PRODUCT_STUDIO_MAX_JOBS=two or a data path that is a file: one line naming the setting."""
    if setting == "max jobs as a word":
        monkeypatch.setenv("PRODUCT_STUDIO_MAX_JOBS", "two")
        expected = "PRODUCT_STUDIO_MAX_JOBS='two' is not a whole number"
    else:
        a_file = studio_data / "data.txt"
        a_file.write_text("x")
        monkeypatch.setenv("PRODUCT_STUDIO_DATA", str(a_file))
        expected = "is a file, not a folder"
    app = _run(page)
    assert not app.exception, app.exception
    assert [e.value for e in app.error] and expected in app.error[0].value, [e.value for e in app.error]
    assert "Something went wrong" not in _texts(app)


def test_review_behind_a_proxy_needs_its_user_header(finished_job, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 item 12: with PRODUCT_STUDIO_AUTH_HEADER set, a request without that header cannot decide anything
    (whatever name anyone would type)."""
    monkeypatch.setenv("PRODUCT_STUDIO_AUTH_HEADER", "X-Forwarded-User")
    app = _run("pages/4_Review.py", finished_job.id)
    assert not app.exception, app.exception
    assert any("X\\-Forwarded\\-User header" in e.value for e in app.error), [e.value for e in app.error]
    assert not any(b.label == "Save decision" for b in app.button)
    assert Store().reviews(finished_job.id) == []
