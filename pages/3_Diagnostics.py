"""Diagnostics: time per stage, one panel per stage from the run record, and every finding with its advice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core.advice import LOW_MASK_CONFIDENCE
from core.jobs.status import format_duration, log_tail, quality_verdict
from core.jobs.store import Job
from core.manifest import StageRecord
from core.report import figures, runs
from pages._ui import (
    BAD_ICON,
    LEVEL_ICONS,
    OK_ICON,
    esc,
    run_links,
    run_picker_or_stop,
    setup,
    shown_if_intact,
    thumbnails,
)

store = setup("Diagnostics", ":material/monitoring:")
st.title(":material/monitoring: Diagnostics")
NOT_AVAILABLE = "Not available for this run."


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("_", " "): v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


def show_findings(stage: StageRecord) -> None:
    for finding in stage.findings:
        text = esc(finding.message)
        if finding.hint:
            text += f"  \n**What to do:** {esc(finding.hint)}"
        show = {"error": st.error, "warning": st.warning}.get(finding.level, st.info)
        show(text, icon=LEVEL_ICONS.get(finding.level))


def histogram(hist: Any, axis: str, key: str) -> None:
    if isinstance(hist, dict) and hist.get("counts"):
        st.plotly_chart(figures.histogram_figure(hist["edges"], hist["counts"], axis), key=key)
    else:
        st.caption(NOT_AVAILABLE)


def panel_capture(run: runs.RunView, stage: StageRecord) -> None:
    assert run.manifest is not None
    thumbs = thumbnails(store, job)
    rows = [{"photo": p.name, "status": p.status, "size": f"{p.width}×{p.height}" if p.width else "",
             "reason / warnings": p.reason or " ".join(p.warnings)} for p in run.manifest.photos]
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    rejected = [p for p in run.manifest.photos if p.status == "rejected" and p.name in thumbs]
    if rejected:
        st.caption("Rejected photos")
        cols = st.columns(6)
        for i, photo in enumerate(rejected):
            cols[i % 6].image(str(thumbs[photo.name]), caption=photo.name, width="stretch")


def panel_sfm(run: runs.RunView, stage: StageRecord) -> None:
    metrics = stage.metrics
    st.markdown("**Which photos were placed**")
    per_photo = metrics.get("per_photo") if isinstance(metrics.get("per_photo"), list) else None
    if per_photo:
        thumbs = thumbnails(store, job)
        placed = sum(bool(p.get("registered")) for p in per_photo)
        st.caption(f"{placed} of {len(per_photo)} photos placed.")
        cols = st.columns(8)
        for i, entry in enumerate(per_photo):
            name = str(entry.get("photo", "?"))
            with cols[i % 8]:
                if name in thumbs:
                    st.image(str(thumbs[name]), width="stretch")
                if entry.get("untrusted"):  # placed, but failed the trust checks (core/stages/sfm/trust.py)
                    state = f"{BAD_ICON} untrusted ({esc(', '.join(entry['untrusted']))})"
                else:
                    state = f"{OK_ICON} placed" if entry.get("registered") else f"{BAD_ICON} not placed"
                st.caption(state + f" · {esc(name)}")
    else:
        st.caption(NOT_AVAILABLE)

    left, right = st.columns(2)
    with left:
        st.markdown("**Reprojection error**")
        histogram(metrics.get("reprojection_error_histogram"), "reprojection error (pixels)", "reproj")
    with right:
        st.markdown("**Track lengths** (photos that see each point)")
        histogram(metrics.get("track_length_histogram"), "track length", "tracks")

    st.markdown("**Which photos matched which**")
    matches_file = run.artifact("sfm.matches")
    matches = runs.read_match_matrix(matches_file) if matches_file else None
    if matches is not None:
        names, matrix = matches
        st.plotly_chart(figures.match_matrix_figure([run.photo_name(n) for n in names], matrix), key="matches")
    else:
        st.caption(NOT_AVAILABLE)


def panel_masks(run: runs.RunView, stage: StageRecord) -> None:
    overlays = run.mask_overlays()
    if not overlays:
        st.caption("Product masks: " + NOT_AVAILABLE)
        return
    st.caption("The product's outline in every photo (the backdrop dimmed); masks with a low confidence do not "
               "carve the visual hull.")
    cols = st.columns(4)
    for i, (photo, overlay, confidence) in enumerate(overlays):
        with cols[i % 4]:
            st.image(overlay, width="stretch")
            icon = OK_ICON if confidence >= LOW_MASK_CONFIDENCE else BAD_ICON
            st.caption(f"{icon} {esc(photo.name)} · confidence {confidence:.2f}")


def panel_depth(run: runs.RunView, stage: StageRecord) -> None:
    maps = run.depth_maps(stage.name)
    if not maps:
        st.caption("Depth maps: " + NOT_AVAILABLE)
        return
    by_name = {photo.name: (photo, path) for photo, path in maps}
    chosen = st.selectbox("Photo", list(by_name), key=f"depth-{stage.name}")
    photo, path = by_name[chosen]
    depth_map = runs.read_depth_map(path)
    if depth_map is None:  # a file cut short by a crashed run
        st.caption(NOT_AVAILABLE)
        return
    valid = float(np.isfinite(depth_map.depth).mean())
    title = f"{photo.name} · {valid:.0%} of pixels have a depth"
    prior = run.prior_view(photo) if stage.name == "depth_prior" else None
    if prior is not None:
        title += f" · {prior.stereo_fraction:.0%} from stereo, {prior.prior_fraction:.0%} from the prior"
    st.plotly_chart(figures.depth_view_figure(depth_map.depth, depth_map.confidence, depth_map.image, title=title,
                                              prior=prior.prior_depth if prior else None), key=f"dv-{stage.name}")


def panel_fusion(run: runs.RunView, stage: StageRecord) -> None:
    metrics = stage.metrics
    dropped = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k.startswith("dropped")}
    if "kept_depths" not in metrics:
        st.caption("Depths kept and dropped: " + NOT_AVAILABLE)
        return
    st.plotly_chart(figures.fusion_figure(int(metrics["kept_depths"]), dropped), key="fusion")


def panel_mesh(run: runs.RunView, stage: StageRecord) -> None:
    metrics = stage.metrics
    faces = metrics.get("faces")
    cols = st.columns(4)
    cols[0].metric("Faces", f"{faces:,}" if isinstance(faces, int) else "–")
    cols[1].metric("Holes", metrics.get("holes", "–"))
    cols[2].metric("Open edges", metrics.get("boundary_edges", "–"))
    cols[3].metric("Base capped", "yes" if metrics.get("base_capped") else "no",
                   help="The underside no photo sees, closed flat on the table (marked in the mesh numbers).")


def panel_texture(run: runs.RunView, stage: StageRecord) -> None:
    metrics = stage.metrics
    cols = st.columns(3)
    cols[0].metric("Texture", f"{metrics.get('texture_size', '–')} px")
    cols[1].metric("Photos used", metrics.get("views_used", "–"))
    cols[2].metric("Unseen faces", f"{100 * metrics.get('unseen_share', 0):.1f} %",
                   help="Faces no photo sees (usually the base); they take the mesh's colours.")
    atlas = run.artifact("texture.base_color")
    if atlas is not None:
        st.image(str(atlas), caption="Base-colour atlas (every face has its own cell)", width=360)


def show_logs(job: Job, run_dir: Path) -> None:
    """For failed runs: the end of the worker's and the pipeline's logs, to send to support."""
    if job.status != "failed":
        return
    with st.expander("Technical details (for support)"):
        for title, path in (("Worker log", store.log_path(job)), ("Run log", run_dir / "logs" / "run.log")):
            tail = log_tail(path)
            if tail:
                st.caption(title)
                st.code(tail, language=None)  # st.code shows text verbatim: nothing in a log is rendered


PANELS = {"capture": panel_capture, "sfm": panel_sfm, "masks": panel_masks, "depth": panel_depth,
          "depth_prior": panel_depth,
          "fusion": panel_fusion, "mesh": panel_mesh, "texture": panel_texture}

job = run_picker_or_stop(store)
run = runs.open_run(store.run_dir(job))
manifest = run.manifest
if manifest is None:
    st.info(esc(run.problem) + f" (The job is {job.status}.)")
    show_logs(job, run.run_dir)
    run_links(job)
    st.stop()

verdict, why = quality_verdict(job, manifest)
c1, c2, c3 = st.columns(3)
c1.metric("Status", manifest.status)
c2.metric("Quality", verdict)
c3.metric("Total time", format_duration(sum(s.seconds for s in manifest.stages)))
if manifest.failure_reason:
    st.error(esc(manifest.failure_reason))
st.caption(esc(why))

st.subheader("Time per stage")
if manifest.stages:
    times = [(runs.stage_label(s.name, manifest.mode), s.seconds) for s in manifest.stages]
    st.plotly_chart(figures.stage_times_figure(times), key="times")
else:
    st.caption(NOT_AVAILABLE)

findings = manifest.all_findings()
st.subheader(f"Findings ({len(findings)})")
if not findings:
    st.caption("Nothing to report.")
for stage in manifest.stages:
    if stage.findings:
        st.markdown(f"**{esc(runs.stage_label(stage.name, manifest.mode))}**")
        show_findings(stage)

st.subheader("Stages")
for stage in manifest.stages:
    title = runs.stage_label(stage.name, manifest.mode)
    with st.expander(f"{title} — {stage.status}, {stage.seconds:.1f} s", expanded=stage.status == "failed"):
        panel = PANELS.get(stage.name)
        if panel is not None:
            with shown_if_intact(title):
                panel(run, stage)
        numbers = scalar_metrics(stage.metrics)
        if numbers:
            st.caption("Numbers")
            st.dataframe([{"metric": k, "value": str(v)} for k, v in numbers.items()], hide_index=True,
                         width="stretch")
show_logs(job, run.run_dir)
run_links(job)
