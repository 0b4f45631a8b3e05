"""New capture: name the product, upload photos (checked one by one as they arrive), pick a preset, start.

With ?job=ID in the URL the page shows that job's live progress instead, so users can leave and come back.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.advice import CAPTURE_GUIDE
from core.config import PRESET_DESCRIPTIONS, PRESETS, CaptureConfig
from core.jobs import intake
from core.jobs.store import UploadedPhoto
from core.report.runs import open_run
from pages._ui import BAD_ICON, OK_ICON, WARN_ICON, esc, job_title, render_job_panel, run_links, setup, thumbnails
from pages._ui import sticker as sticker_ui

store = setup("New capture", ":material/add_a_photo:")
MIN_PHOTOS = CaptureConfig().min_photos
PHOTOS_PER_ROW = 6


def show_job(job_id: str) -> None:
    for problem in st.session_state.pop("depth_problems", []):
        st.warning(esc(problem))
    render_job_panel(store, job_id)
    job = store.get_job(job_id)
    if job is None:
        return
    if job.is_final:
        if job.mode == "sticker" and job.status == "done":
            sticker_ui.show_result(open_run(store.run_dir(job)))
        run_links(job)
        if job.status in ("failed", "cancelled") and st.button(
                "Run it again with the same photos",
                help="Starts a new run with the same photos and settings that keeps the stages this run finished "
                     "(a copy of them; from the beginning when the disk has no room for it). This run stays as it "
                     "was."):
            new = intake.retry_job(store, job)
            st.query_params["job"] = new.id
            st.rerun()
    rows = store.photos(job.id)
    thumbs = thumbnails(store, job)
    accepted_rows = sum(r.accepted for r in rows)
    with st.expander(f"Photos of this job ({accepted_rows} of {len(rows)} passed the upload checks)"):
        for start in range(0, len(rows), PHOTOS_PER_ROW):
            for col, row in zip(st.columns(PHOTOS_PER_ROW), rows[start:start + PHOTOS_PER_ROW], strict=False):
                if row.name in thumbs:
                    col.image(str(thumbs[row.name]), width="stretch")
                col.caption((f"{OK_ICON} " if row.accepted else f"{BAD_ICON} ") + esc(row.name)
                            + ("" if row.accepted else f" — {esc(row.reason)}"))
    if st.button("Start another capture"):
        del st.query_params["job"]
        st.rerun()


def draft_folder() -> Path:
    """The folder where this browser session's photos wait until Start (a fresh one after each job)."""
    current = st.session_state.get("draft_dir")
    if current and Path(current).is_dir():
        return Path(current)
    folder = store.new_draft_dir()
    st.session_state.update(draft_dir=str(folder), intake={}, next_position=0)
    return folder


def receive(files: list) -> list[UploadedPhoto]:
    """Store and check newly added files once; forget the ones the user removed from the list."""
    folder = draft_folder()
    received: dict[str, list[UploadedPhoto]] = st.session_state.setdefault("intake", {})
    keys = [upload.file_id for upload in files]
    for key in [k for k in received if k not in keys]:  # removed first: a photo taken out may come back in
        intake.discard_intake(folder, received.pop(key))
    for upload in files:
        key = upload.file_id
        if key not in received:
            with st.spinner(f"Checking {upload.name}…"):
                kept = sum(p.accepted for photos in received.values() for p in photos)  # removed ones do not count
                received[key] = intake.receive_upload(folder, upload.name, upload.getvalue(), kept,
                                                      position=st.session_state.get("next_position", 0))
            st.session_state["next_position"] = st.session_state.get("next_position", 0) + max(1, len(received[key]))
    return [photo for key in keys for photo in received[key]]


def show_checks(photos: list[UploadedPhoto]) -> None:
    folder = draft_folder()
    accepted = [p for p in photos if p.accepted]
    st.markdown(f"**{len(accepted)} of {len(photos)} photos accepted.**")
    for start in range(0, len(photos), PHOTOS_PER_ROW):
        for col, photo in zip(st.columns(PHOTOS_PER_ROW), photos[start:start + PHOTOS_PER_ROW], strict=False):
            with col:
                if photo.thumbnail:
                    st.image(str(folder / "thumbs" / photo.thumbnail), width="stretch")
                if photo.accepted:
                    st.caption(f"{OK_ICON} {esc(photo.name)} · {photo.width}×{photo.height}")
                    for warning in photo.warnings:
                        st.caption(f"{WARN_ICON} {esc(warning)}")
                else:
                    st.caption(f"{BAD_ICON} {esc(photo.reason)}")


job_in_url = st.query_params.get("job")
if job_in_url:
    show_job(job_in_url)
    st.stop()

st.title(":material/add_a_photo: New capture")
st.caption(CAPTURE_GUIDE)
c1, c2 = st.columns(2)
product_name = c1.text_input("Product name", max_chars=120, placeholder="e.g. Blue ceramic mug")
sku = c2.text_input("SKU", max_chars=60, placeholder="e.g. MUG-0042")

files = st.file_uploader("Product photos, or one .zip of photos", accept_multiple_files=True, key="photos",
                         type=sorted({s.lstrip(".") for s in intake.PHOTO_SUFFIXES} | {"zip"}))
st.caption(intake.UPLOAD_LIMITS.describe())
photos = receive(files or [])
if photos:
    show_checks(photos)

mode = st.radio("What to make", ["model", "relief", "sticker"], horizontal=True,
                format_func=lambda m: {"model": "3D model from several photos", "relief": "3D relief from one photo",
                                       "sticker": "3D cartoon sticker from one photo"}[m])
relief, sticker = mode == "relief", mode == "sticker"
theme = ""
if sticker:
    st.caption("A die-cut cartoon sticker of the photo's subject (one object on a plain background works best): a "
               "transparent PNG, a 512 × 512 WebP for WhatsApp and Telegram, and a puffed 3D sticker (GLB).")
    theme = sticker_ui.theme_picker()
if relief:
    st.caption("A relief is the photo with depth: the side the camera saw, not the back. It needs a depth source: the "
               "monocular depth model (if installed) or a depth map from a depth camera, below. Its scale is "
               "relative unless the depth map is metric.")
preset = st.radio("Detail", PRESETS, index=PRESETS.index("balanced"), horizontal=False,
                  format_func=lambda p: f"{p.capitalize()} — {PRESET_DESCRIPTIONS[p]}")
with st.expander("Optional: the product's real size"):
    st.caption("One known dimension from the catalogue scales the model to its real size (marketplaces need it). "
               "Width is left to right and depth front to back, as seen from the first photo.")
    s1, s2 = st.columns(2)
    size_axis = s1.selectbox("Known dimension", intake.KNOWN_DIMENSIONS, format_func=str.capitalize)
    size_mm = s2.number_input("Length in millimetres (0 = unknown)", min_value=0.0, max_value=100_000.0, value=0.0,
                              step=1.0)
with st.expander("Optional: depth maps from a depth camera"):
    st.caption("One per photo, named like the photo (IMG_0001.jpg → IMG_0001.npy): float32 .npy in the camera's "
               "units, or 16-bit .png in millimetres.")
    depth_files = st.file_uploader("Depth maps", accept_multiple_files=True, type=["npy", "png"], key="depth")
with st.expander("Optional: product masks"):
    st.caption("One per photo, named like the photo (IMG_0001.jpg → IMG_0001.png): white on the product, black "
               "elsewhere. Without them the studio finds the outline itself (best on a plain backdrop).")
    mask_files = st.file_uploader("Masks", accept_multiple_files=True, type=["png", "jpg", "jpeg", "bmp", "webp"],
                                  key="masks")

accepted = [p for p in photos if p.accepted]
blockers = []
if not product_name.strip():
    blockers.append("enter the product name")
if (relief or sticker) and len(accepted) != 1:
    blockers.append(f"upload exactly one accepted photo for a {mode} ({len(accepted)} so far)")
elif mode == "model" and len(accepted) < MIN_PHOTOS:
    blockers.append(f"upload at least {MIN_PHOTOS} accepted photos ({len(accepted)} so far)")
if st.button("Start", type="primary", disabled=bool(blockers)):
    job, problems = intake.submit_job(
        store, product_name=product_name, sku=sku, preset=preset, draft_dir=draft_folder(),
        photos=photos, mode=mode if mode != "model" else "multi_view",  # type: ignore[arg-type]
        changes={"sticker": {"theme": theme}} if sticker else intake.known_size_changes(size_axis, size_mm),
        depth_files=[(f.name, f.getvalue()) for f in depth_files or []],
        mask_files=[(f.name, f.getvalue()) for f in mask_files or []])
    for key in ("draft_dir", "intake", "next_position"):
        st.session_state.pop(key, None)
    st.session_state["depth_problems"] = problems
    st.query_params["job"] = job.id
    st.toast(f"Queued {esc(job_title(job))}")
    st.rerun()
if blockers:
    st.caption("To start: " + "; ".join(blockers) + ".")
