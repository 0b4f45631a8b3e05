"""Home: what the studio does, the sample product, the job queue, recent runs."""

from __future__ import annotations

import streamlit as st

from core.jobs import dispatch, intake, status
from core.report.runs import read_manifest
from pages._ui import (
    PAGE_NEW,
    STATUS_ICONS,
    VERDICT_ICONS,
    esc,
    first_thumbnail,
    job_title,
    run_links,
    setup,
    wait_hint,
    when,
)

store = setup("Home", ":material/home:")
st.title(":material/deployed_code: Product Studio")
st.markdown("Turn a set of product photos into a 3D model for the shop.  \n"
            "Upload photos from all around the product, watch the reconstruction, inspect the model, "
            "and approve what goes live.")

left, right = st.columns(2)
with left:
    st.page_link(PAGE_NEW, label="Start a new capture", icon=":material/add_a_photo:")
with right:
    sample_photos = intake.sample_photos()
    if st.button("Try it on the sample product", type="primary", disabled=not sample_photos,
                 help=None if sample_photos else "The sample photos are not installed (assets/sample/images)."):
        with st.spinner("Checking the sample photos…"):
            job = intake.submit_sample(store, preset="preview")
        st.switch_page(PAGE_NEW, query_params={"job": job.id})
    if sample_photos:
        st.caption(f"{len(sample_photos)} sample photos, preview detail.")

st.subheader("Job queue")
active = store.list_jobs(("starting", "running"))
queued = store.list_jobs(("queued",))
c1, c2, c3 = st.columns(3)
c1.metric("Running", len(active))
c2.metric("Waiting", len(queued))
c3.metric("Runs at once", dispatch.max_concurrent_jobs())
for job in active + list(reversed(queued)):
    progress = status.job_progress(job)
    cols = st.columns([3, 4, 2])
    cols[0].page_link(PAGE_NEW, label=f"{STATUS_ICONS.get(job.status, '')} {esc(job_title(job))}",
                      query_params={"job": job.id})
    cols[1].progress(progress.overall, text=esc(progress.message))
    cols[2].write(status.format_duration(progress.elapsed_s) if job.started else "waiting")

st.subheader("Recent runs")
recent = [j for j in store.list_jobs(limit=12) if j.status not in ("queued", "starting", "running")]
if not recent:
    st.info("No finished runs yet. Start a new capture or try the sample product.")
reviews = store.latest_reviews()
for row_start in range(0, len(recent), 4):
    cols = st.columns(4)
    for col, job in zip(cols, recent[row_start:row_start + 4], strict=False):
        with col.container(border=True):
            thumb = first_thumbnail(store, job)
            if thumb:
                st.image(str(thumb), width="stretch")
            verdict, _ = status.quality_verdict(job, read_manifest(store.run_dir(job)))
            st.markdown(f"**{esc(job.product_name or 'Unnamed product')}**  \n{esc(job.sku)}")
            decision = reviews.get(job.id)
            st.caption(f"{STATUS_ICONS.get(job.status, '')} {job.status} · {VERDICT_ICONS.get(verdict, '')} {verdict}"
                       f" · {when(job.created)}" + (f" · {decision.decision}" if decision else ""))
            run_links(job, stacked=True)
wait_hint()
