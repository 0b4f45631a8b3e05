"""Streamlit pieces the pages share: page setup, the run picker, the live job panel, safe text.

Not a page (Streamlit only lists ``pages/*.py``). Everything here renders; the work happens in core.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.jobs import dispatch, status
from core.jobs.store import Job, Store, data_dir
from core.report.runs import read_manifest, stage_label
from core.settings import SettingsError, checked_data_dir

# Material icons ship with Streamlit, so they render everywhere (emoji need a system font).
OK_ICON, BAD_ICON, WARN_ICON = ":green[:material/check_circle:]", ":red[:material/cancel:]", \
    ":orange[:material/warning:]"
STATUS_ICONS = {"queued": ":material/schedule:", "starting": ":material/rocket_launch:",
                "running": ":blue[:material/autorenew:]", "done": OK_ICON, "failed": ":red[:material/error:]",
                "cancelled": ":gray[:material/block:]"}
VERDICT_ICONS = {"good": ":green[:material/verified:]", "check": WARN_ICON, "poor": ":red[:material/report:]",
                 "failed": ":red[:material/error:]", "incomplete": ":orange[:material/pending:]",
                 "pending": ":material/schedule:", "cancelled": ":gray[:material/block:]"}
LEVEL_ICONS = {"info": ":material/info:", "warning": ":material/warning:", "error": ":material/error:"}
POLL_SECONDS = 2.0
logger = logging.getLogger("product_studio.pages")

PAGE_NEW = "pages/1_New_capture.py"
PAGE_VIEWER = "pages/2_Viewer.py"
PAGE_DIAGNOSTICS = "pages/3_Diagnostics.py"
PAGE_REVIEW = "pages/4_Review.py"


@st.cache_resource
def _store(root: str) -> Store:
    store = Store(Path(root))
    store.apply_retention()  # old drafts, surplus sample runs, expired runs: once per server start is enough
    return store


def setup(title: str, icon: str = ":material/deployed_code:") -> Store:
    """Page config, logging, the page's error boundary, the store; and a dispatch, so queued jobs start whenever
    anyone opens a page."""
    st.set_page_config(page_title=f"{title} · Product Studio", page_icon=icon, layout="wide")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _install_error_boundary()
    try:
        store = _store(str(checked_data_dir(data_dir())))
        dispatch.dispatch(store)
    except SettingsError as exc:  # an operator's setting: one line, no traceback
        st.error(f"The studio is not set up correctly: {exc}")
        st.stop()
    return store


def _install_error_boundary() -> None:
    """Route an unexpected exception anywhere in this page run (script, fragments, widget callbacks) to
    ``show_unexpected_error``. Streamlit reads the handler from the run's context at the moment of the exception
    (``ScriptRunContext.on_script_error``, the hook behind ``st.App(on_script_error=...)``); setting it here covers
    every page without wrapping each page's code. st.stop/st.rerun are not exceptions of the page and never get here.
    """
    ctx = get_script_run_ctx()
    if ctx is not None and hasattr(ctx, "on_script_error"):
        ctx.on_script_error = show_unexpected_error
    else:  # another Streamlit: its own generic message still shows no traceback (client.showErrorDetails = none)
        logger.warning("this Streamlit has no on_script_error hook; unexpected errors show its generic message")


def show_unexpected_error(exc: Exception) -> bool:
    """The page boundary: the traceback goes to the server log under a short id, the browser gets one line with that
    id (never the traceback or server paths). Returns True: Streamlit shows nothing more."""
    error_id = uuid.uuid4().hex[:8]
    logger.error("unexpected error %s on a page: %s: %s", error_id, type(exc).__name__, exc, exc_info=exc)
    st.error(f"Something went wrong on this page (error {error_id}). Reload the page to try again; if it happens "
             f"again, give an admin the error id {error_id}: the details are in the server log under it.",
             icon=":material/error:")
    return True


@contextmanager
def shown_if_intact(what: str) -> Iterator[None]:
    """One part of a page drawn from a run's record: when the record's numbers there have the wrong shape (a damaged
    or hand-edited record), that part says so and the rest of the page still shows."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        logger.warning("%s: the run record is damaged here (%s: %s)", what, type(exc).__name__, exc)
        st.warning(f"{esc(what)}: this part of the run's record is damaged, so it cannot be shown.")


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def esc(text: str | None) -> str:
    """User text made inert for st.markdown (no links, images, HTML or formatting sneak in)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text or "")).replace("\n", " ")


def when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "–"


def job_title(job: Job) -> str:
    """Plain text (for widgets, which never render markdown)."""
    name = job.product_name or "Unnamed product"
    return f"{name} · {job.sku}" if job.sku else name


def job_label(job: Job) -> str:
    """Plain text for select boxes (they show markdown and icon codes literally)."""
    return f"{job_title(job)} · {when(job.created)} · {job.status}"


def run_picker(store: Store, label: str = "Run", statuses: tuple[str, ...] | None = None) -> Job | None:
    """Choose a run; the choice lives in the URL (?job=...), so links and reloads land on the same run."""
    all_jobs = store.list_jobs(statuses)
    if not all_jobs:
        return None
    ids = [j.id for j in all_jobs]
    wanted = st.query_params.get("job")
    if wanted and wanted not in ids:
        missing = store.get_job(wanted)
        if missing is None:
            st.warning("The run in the link does not exist (any more); pick another one.")
        else:
            all_jobs.insert(0, missing)
            ids.insert(0, missing.id)
    index = ids.index(wanted) if wanted in ids else 0
    by_id = {j.id: j for j in all_jobs}
    chosen = st.selectbox(label, ids, index=index, format_func=lambda i: job_label(by_id[i]))
    if chosen != wanted:
        st.query_params["job"] = chosen
    return by_id[chosen]


def run_picker_or_stop(store: Store) -> Job:
    """``run_picker``, ending the page with a pointer to New capture when there is no run yet."""
    job = run_picker(store)
    if job is None:
        st.info("No runs yet. Start a capture first.")
        st.page_link(PAGE_NEW, label="New capture", icon=":material/add_a_photo:")
        st.stop()
    return job


def thumbnails(store: Store, job: Job) -> dict[str, Path]:
    """The user's photo name -> its upload thumbnail."""
    folder = store.photos_dir(job) / "thumbs"
    found = {}
    for row in store.photos(job.id):
        if row.thumbnail and (folder / row.thumbnail).is_file():
            found[row.name] = folder / row.thumbnail
    return found


def first_thumbnail(store: Store, job: Job) -> Path | None:
    return next(iter(thumbnails(store, job).values()), None)


def render_job_panel(store: Store, job_id: str) -> None:
    """Live status of one job: polls the database every few seconds while it is queued or running."""
    job = store.get_job(job_id)
    if job is None:
        st.error("This job does not exist.")
        return
    st.fragment(run_every=None if job.is_final else POLL_SECONDS)(_job_panel_body)(store, job_id, job.is_final)


def _job_panel_body(store: Store, job_id: str, was_final: bool) -> None:
    dispatch.reap(store)
    job = store.get_job(job_id)
    if job is None:
        return
    if job.is_final and not was_final:
        st.rerun()  # leave polling mode: the whole page redraws once with the final state
    progress = status.job_progress(job)
    icon = STATUS_ICONS.get(job.status, "")
    st.markdown(f"#### {icon} {esc(job_title(job))} — {job.status}")
    if progress.stage and not job.is_final:
        st.markdown(f"**Now:** {esc(stage_label(progress.stage, job.mode))}")
    if job.status == "queued":
        waiting = [j.id for j in reversed(store.list_jobs(("queued",)))]
        position = waiting.index(job.id) + 1 if job.id in waiting else 1
        st.info(f"Waiting for a free worker (position {position} in the queue; "
                f"{dispatch.max_concurrent_jobs()} job(s) run at once). You can leave this page; the job keeps its "
                "place.")
    st.progress(progress.overall, text=esc(progress.message) or job.status)
    cols = st.columns(3)
    cols[0].metric("Done", f"{progress.overall:.0%}")
    cols[1].metric("Elapsed", status.format_duration(progress.elapsed_s if job.started else None))
    cols[2].metric("Time left (estimate)", status.format_duration(progress.eta_s) if job.status == "running" else "–")
    if job.status == "failed":
        st.error(esc(job.error) or "The run failed.")
    elif job.status == "cancelled":
        st.warning("The run was cancelled. Finished stages and your photos are kept.")
    elif job.status == "done":
        verdict, why = status.quality_verdict(job, read_manifest(store.run_dir(job)))
        st.success(f"Finished. Quality: {VERDICT_ICONS.get(verdict, '')} **{verdict}** — {esc(why)}  \n"
                   "Open the 3D viewer or the diagnostics below.")
    if not job.is_final:
        if job.cancel_requested:
            st.caption("Cancelling… the run stops at its next checkpoint.")
        elif st.button("Cancel this run", key=f"cancel-{job.id}", type="secondary"):
            dispatch.cancel(store, job.id)
            st.rerun()
        st.caption("This page updates by itself. You can close it: the run continues and this link brings you back.")


def run_links(job: Job, include_new: bool = False, stacked: bool = False) -> None:
    """Links to the run on the other pages; ``stacked`` for narrow places such as the cards on Home."""
    links = [(PAGE_VIEWER, "3D viewer" if stacked else "Open in 3D viewer", ":material/view_in_ar:"),
             (PAGE_DIAGNOSTICS, "Diagnostics", ":material/monitoring:"),
             (PAGE_REVIEW, "Review", ":material/fact_check:")]
    if stacked:
        for page, label, icon in links:
            st.page_link(page, label=label, icon=icon, query_params={"job": job.id})
        return
    cols = st.columns(4 if include_new else 3)
    for col, (page, label, icon) in zip(cols, links, strict=False):
        col.page_link(page, label=label, icon=icon, query_params={"job": job.id})
    if include_new:
        cols[3].page_link(PAGE_NEW, label="New capture", icon=":material/add_a_photo:")


def wait_hint() -> None:
    st.caption(f"Data folder: {data_dir()} · up to {dispatch.max_concurrent_jobs()} run(s) at once · "
               f"updated {time.strftime('%H:%M:%S')}")
