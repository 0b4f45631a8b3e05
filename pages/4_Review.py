"""Review: every run with its quality verdict and decision; approve or reject with a note; the full history."""

from __future__ import annotations

import os

import streamlit as st

from core.jobs.status import review_row
from core.report.runs import read_manifest
from pages._ui import VERDICT_ICONS, esc, first_thumbnail, job_title, run_links, setup, when

store = setup("Review", ":material/fact_check:")
st.title(":material/fact_check: Review")
st.caption("Approve the models that may go to the shop. Every decision is kept with who made it and when.")

all_jobs = store.list_jobs()
if not all_jobs:
    st.info("Nothing to review yet.")
    st.stop()

latest = store.latest_reviews()
rows = [review_row(job, read_manifest(store.run_dir(job)), latest.get(job.id)) for job in all_jobs]

f1, f2, f3 = st.columns([2, 2, 3])
decisions = f1.multiselect("Decision", ["pending", "approved", "rejected"], default=[])
statuses = f2.multiselect("Status", ["done", "failed", "cancelled", "running", "queued"], default=[])
search = f3.text_input("Search SKU or product")
shown = [r for r in rows if (not decisions or r["decision"] in decisions) and (not statuses or r["status"] in statuses)
         and (not search or search.lower() in f"{r['SKU']} {r['product']}".lower())]
st.dataframe([{k: v for k, v in r.items() if k not in ("id", "why")} for r in shown], hide_index=True,
             width="stretch")
st.caption(f"{len(shown)} of {len(rows)} runs.")

ids = [r["id"] for r in shown]
if not ids:
    st.stop()
wanted = st.query_params.get("job")
by_id = {j.id: j for j in all_jobs}
if wanted and wanted not in by_id:
    st.warning("The run in the link does not exist (any more); pick one below.")
elif wanted and wanted not in ids:
    st.info("The run in the link is hidden by the filters above; showing the first one that matches.")
chosen = st.selectbox("Run to review", ids, index=ids.index(wanted) if wanted in ids else 0,
                      format_func=lambda i: f"{job_title(by_id[i])} · {when(by_id[i].created)}")
if chosen != wanted:
    st.query_params["job"] = chosen
job = by_id[chosen]
row = next(r for r in rows if r["id"] == chosen)

left, right = st.columns([1, 2])
with left:
    thumb = first_thumbnail(store, job)
    if thumb:
        st.image(str(thumb), width="stretch")
with right:
    st.markdown(f"### {esc(job.product_name or 'Unnamed product')}")
    st.markdown(f"SKU **{esc(job.sku) or '–'}** · {job.preset} · {job.status} · "
                f"quality {VERDICT_ICONS.get(row['quality'], '')} {row['quality']}")
    st.caption(esc(row["why"]))
    run_links(job)

# Only a run with a 3D model can go to the shop; any run can be rejected with a note.
approvable = row["quality"] in ("good", "check", "poor")
flash = st.session_state.pop("review_flash", None)
if flash:
    st.success(flash)
def authenticated_reviewer() -> str | None:
    """Who is reviewing: the reverse proxy's user header (``PRODUCT_STUDIO_AUTH_HEADER``), else a login against the
    reviewers in the store (``python -m core.cli.users add NAME``); None while nobody is logged in. With neither
    set up, decisions carry the name typed in (the page says so)."""
    header = os.environ.get("PRODUCT_STUDIO_AUTH_HEADER", "").strip()
    if header:
        user = (st.context.headers.get(header) or "").strip()
        if not user:
            st.error(f"Reviewing needs a login through the studio's proxy (no {esc(header)} header came with this "
                     "request).")
        return user or None
    if not store.users():
        return ""
    if st.session_state.get("reviewer_login"):
        st.caption(f"Logged in as **{esc(st.session_state['reviewer_login'])}**.")
        if st.button("Log out"):
            st.session_state.pop("reviewer_login")
            st.rerun()
        return st.session_state["reviewer_login"]
    with st.form("login-form"):
        st.markdown("**Log in to review**")
        name = st.text_input("Reviewer", max_chars=80)
        password = st.text_input("Password", type="password", max_chars=200)
        if st.form_submit_button("Log in"):
            if store.check_password(name, password):
                st.session_state["reviewer_login"] = name.strip()
                st.rerun()
            st.error("Unknown reviewer or wrong password.")
    return None


login = authenticated_reviewer()
if login is None:
    st.stop()
with st.form("decision", clear_on_submit=True):
    st.markdown("**Your decision**")
    if login:
        reviewer = login
    else:
        reviewer = st.text_input("Your name", value=st.session_state.get("reviewer", ""), max_chars=80)
        st.caption("Anyone can review under any name until reviewers are added (python -m core.cli.users add NAME).")
    choices = ["approved", "rejected"] if approvable else ["rejected"]
    decision = st.radio("Decision", choices, horizontal=True,
                        format_func=lambda d: "Approve for the shop" if d == "approved" else "Reject")
    if not approvable:
        st.caption("This run cannot be approved: " + esc(row["why"]))
    elif row["quality"] != "good":
        st.caption("Check the findings in Diagnostics before approving: " + esc(row["why"]))
    note = st.text_area("Note (what is good or what must change)", max_chars=2000)
    if st.form_submit_button("Save decision", type="primary"):
        if not reviewer.strip():
            st.error("Enter your name so the decision can be traced.")
        else:
            store.add_review(job.id, reviewer, decision, note)
            st.session_state["reviewer"] = reviewer.strip()
            st.session_state["review_flash"] = f"Saved: {decision}."
            st.rerun()  # redraw the dashboard with the new decision

history = store.reviews(job.id)
st.markdown("**Decision history**")
if history:
    st.dataframe([{"when": when(r.created), "who": r.reviewer, "decision": r.decision, "note": r.note}
                  for r in reversed(history)], hide_index=True, width="stretch")
else:
    st.caption("No decisions yet.")
