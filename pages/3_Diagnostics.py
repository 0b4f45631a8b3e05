"""Diagnostics: time per stage, one panel per stage from the run record, and every finding with its advice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core import figures, jobs
from core.manifest import RunManifest, StageRecord, photo_names_by_working_image
from core.store import Job
from pages._ui import BAD_ICON, LEVEL_ICONS, OK_ICON, esc, run_links, run_picker_or_stop, setup, thumbnails

store = setup("Diagnostics", ":material/monitoring:")
st.title(":material/monitoring: Diagnostics")
NOT_AVAILABLE = "Not available for this run."


@st.cache_data(max_entries=4, show_spinner="Reading the camera model…")
def load_sparse(path: str, mtime: float) -> figures.SparseView:
    return figures.read_sparse_model(Path(path))


@st.cache_data(max_entries=2, show_spinner="Reading the mesh…")
def mesh_boundary_edges(path: str, mtime: float) -> tuple[int, int]:
    _, triangles, _ = figures.read_mesh(Path(path))
    return len(triangles), figures.boundary_edge_count(triangles)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("_", " "): v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


def artifact(manifest: RunManifest, run_dir: Path, key: str) -> Path | None:
    rel = manifest.artifacts.get(key)
    return run_dir / rel if rel and (run_dir / rel).exists() else None


def show_findings(stage: StageRecord) -> None:
    for finding in stage.findings:
        text = esc(finding.message)
        if finding.hint:
            text += f"  \n**What to do:** {esc(finding.hint)}"
        show = {"error": st.error, "warning": st.warning}.get(finding.level, st.info)
        show(text, icon=LEVEL_ICONS.get(finding.level))


def panel_capture(manifest: RunManifest, run_dir: Path, stage: StageRecord) -> None:
    thumbs = thumbnails(store, job)
    rows = [{"photo": p.name, "status": p.status, "size": f"{p.width}×{p.height}" if p.width else "",
             "reason / warnings": p.reason or " ".join(p.warnings)} for p in manifest.photos]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    rejected = [p for p in manifest.photos if p.status == "rejected" and p.name in thumbs]
    if rejected:
        st.caption("Rejected photos")
        cols = st.columns(6)
        for i, photo in enumerate(rejected):
            cols[i % 6].image(str(thumbs[photo.name]), caption=photo.name, width="stretch")


def panel_sfm(manifest: RunManifest, run_dir: Path, stage: StageRecord) -> None:
    metrics = stage.metrics
    model = artifact(manifest, run_dir, "sparse_model")
    sparse = load_sparse(str(model), model.stat().st_mtime) if model else None

    st.markdown("**Which photos were placed**")
    per_photo = metrics.get("per_photo") if isinstance(metrics.get("per_photo"), list) else None
    if per_photo is None and sparse is not None:
        placed_names = set(sparse.names)
        per_photo = [{"name": Path(p.working_image).name, "photo": p.name,
                      "registered": Path(p.working_image).name in placed_names}
                     for p in manifest.photos if p.working_image]
    if per_photo:
        thumbs = thumbnails(store, job)
        placed = sum(bool(p.get("registered")) for p in per_photo)
        st.caption(f"{placed} of {len(per_photo)} photos placed.")
        cols = st.columns(8)
        for i, entry in enumerate(per_photo):
            name = str(entry.get("photo") or entry.get("name") or "?")
            with cols[i % 8]:
                if name in thumbs:
                    st.image(str(thumbs[name]), width="stretch")
                st.caption((f"{OK_ICON} placed" if entry.get("registered") else f"{BAD_ICON} not placed")
                           + f" · {esc(name)}")
    else:
        st.caption(NOT_AVAILABLE)

    left, right = st.columns(2)
    with left:
        st.markdown("**Reprojection error**")
        hist = metrics.get("reprojection_error_histogram")
        if isinstance(hist, dict) and hist.get("counts"):
            st.plotly_chart(figures.histogram_figure(hist["edges"], hist["counts"], "reprojection error (pixels)"),
                            key="reproj")
        elif sparse is not None and len(sparse.errors):
            st.plotly_chart(figures.reprojection_histogram(sparse.errors), key="reproj")
        else:
            st.caption(NOT_AVAILABLE)
    with right:
        st.markdown("**Track lengths** (photos that see each point)")
        hist = metrics.get("track_length_histogram")
        if isinstance(hist, dict) and hist.get("counts"):
            st.plotly_chart(figures.histogram_figure(hist["edges"], hist["counts"], "track length"), key="tracks")
        elif sparse is not None and len(sparse.track_lengths):
            st.plotly_chart(figures.track_length_histogram(sparse.track_lengths), key="tracks")
        else:
            st.caption(NOT_AVAILABLE)

    st.markdown("**Which photos matched which**")
    matches_file = artifact(manifest, run_dir, "sfm_matches")
    matches = figures.read_match_matrix(matches_file) if matches_file else None
    if matches is not None:
        names, matrix = matches
        by_working = photo_names_by_working_image(manifest.photos)
        st.plotly_chart(figures.match_matrix_figure([by_working.get(n, n) for n in names], matrix), key="matches")
    else:
        st.caption(NOT_AVAILABLE)


def panel_depth(manifest: RunManifest, run_dir: Path, stage: StageRecord) -> None:
    # The prior writes its own maps under its stage name; the stereo stage's maps are "depth_maps".
    folder = artifact(manifest, run_dir, stage.name)
    if folder is None and stage.name != "depth_prior":
        folder = artifact(manifest, run_dir, "depth_maps")
    files = sorted(folder.glob("*.npz")) if folder and folder.is_dir() else []
    if not files:
        st.caption("Depth maps: " + NOT_AVAILABLE)
        return
    # Depth files are named after the working images (possibly with an index prefix): show the user's photo names.
    by_working = {Path(working).stem: name for working, name in photo_names_by_working_image(manifest.photos).items()}

    def photo_name(path: Path) -> str:
        return next((name for stem, name in by_working.items()
                     if path.stem == stem or path.stem.endswith(f"_{stem}")), path.stem)

    chosen = st.selectbox("Photo", files, format_func=photo_name, key=f"depth-{stage.name}")
    from core.mvs import load_depth_view  # every depth stage writes this one layout (save_depth_view)

    try:
        view = load_depth_view(chosen)
    except (OSError, KeyError, ValueError):  # a file cut short by a crashed run
        st.caption(NOT_AVAILABLE)
        return
    depth, confidence, image = view.depth, view.confidence, view.image
    valid = float(np.isfinite(depth).mean())
    title = f"{photo_name(chosen)} · {valid:.0%} of pixels have a depth"
    from core.depth_prior import load_prior_view

    prior = load_prior_view(chosen)
    if prior is not None:
        title += f" · {prior.stereo_fraction:.0%} from stereo, {prior.prior_fraction:.0%} from the prior"
    st.plotly_chart(figures.depth_view_figure(depth, confidence, image, title=title,
                                              prior=prior.prior_depth if prior else None), key=f"dv-{stage.name}")


def panel_fusion(manifest: RunManifest, run_dir: Path, stage: StageRecord) -> None:
    metrics = stage.metrics
    kept_keys = ("kept_depths", "points_kept", "kept", "fused_points", "points")
    kept = next((metrics[k] for k in kept_keys if k in metrics), None)
    dropped = {k: v for k, v in metrics.items() if isinstance(v, int | float) and
               (k.startswith("dropped") or k.startswith("removed") or k.startswith("rejected"))}
    if kept is None and not dropped:
        st.caption("Points kept and dropped: " + NOT_AVAILABLE)
        return
    st.plotly_chart(figures.fusion_figure(int(kept or 0), dropped), key="fusion")


def panel_mesh(manifest: RunManifest, run_dir: Path, stage: StageRecord) -> None:
    metrics = stage.metrics
    faces, holes = metrics.get("faces"), metrics.get("holes")
    mesh = artifact(manifest, run_dir, "mesh")
    boundary = None
    if mesh is not None and (faces is None or holes is None):
        faces_read, boundary = mesh_boundary_edges(str(mesh), mesh.stat().st_mtime)
        faces = faces if faces is not None else faces_read
    cols = st.columns(3)
    cols[0].metric("Faces", f"{faces:,}" if isinstance(faces, int) else "–")
    cols[1].metric("Holes", holes if holes is not None else "–")
    cols[2].metric("Open edges", boundary if boundary is not None else metrics.get("boundary_edges", "–"))


def show_logs(job: Job, run_dir: Path) -> None:
    """For failed runs: the end of the worker's and the pipeline's logs, to send to support."""
    if job.status != "failed":
        return
    with st.expander("Technical details (for support)"):
        for title, path in (("Worker log", store.log_path(job)), ("Run log", run_dir / "logs" / "run.log")):
            tail = jobs.log_tail(path)
            if tail:
                st.caption(title)
                st.code(tail, language=None)  # st.code shows text verbatim: nothing in a log is rendered


PANELS = {"capture": panel_capture, "sfm": panel_sfm, "depth": panel_depth, "depth_maps": panel_depth,
          "mvs": panel_depth, "depth_prior": panel_depth, "fusion": panel_fusion, "mesh": panel_mesh}

job = run_picker_or_stop(store)
run_dir = store.run_dir(job)
manifest = jobs.read_manifest(run_dir)
if manifest is None:
    st.info(f"This run has no record yet (it is {job.status}).")
    show_logs(job, run_dir)
    run_links(job)
    st.stop()

verdict, why = jobs.quality_verdict(job, manifest)
c1, c2, c3 = st.columns(3)
c1.metric("Status", manifest.status)
c2.metric("Quality", verdict)
c3.metric("Total time", jobs.format_duration(sum(s.seconds for s in manifest.stages)))
if manifest.failure_reason:
    st.error(esc(manifest.failure_reason))
st.caption(esc(why))

st.subheader("Time per stage")
if manifest.stages:
    times = [(jobs.stage_label(s.name, manifest.mode), s.seconds) for s in manifest.stages]
    st.plotly_chart(figures.stage_times_figure(times), key="times")
else:
    st.caption(NOT_AVAILABLE)

findings = manifest.all_findings()
st.subheader(f"Findings ({len(findings)})")
if not findings:
    st.caption("Nothing to report.")
for stage in manifest.stages:
    if stage.findings:
        st.markdown(f"**{esc(jobs.stage_label(stage.name, manifest.mode))}**")
        show_findings(stage)

st.subheader("Stages")
for stage in manifest.stages:
    title = jobs.stage_label(stage.name, manifest.mode)
    with st.expander(f"{title} — {stage.status}, {stage.seconds:.1f} s", expanded=stage.status == "failed"):
        panel = PANELS.get(stage.name)
        if panel is not None:
            panel(manifest, run_dir, stage)
        numbers = scalar_metrics(stage.metrics)
        if numbers:
            st.caption("Numbers")
            st.dataframe([{"metric": k, "value": str(v)} for k, v in numbers.items()], hide_index=True,
                         width="stretch")
show_logs(job, run_dir)
run_links(job)
