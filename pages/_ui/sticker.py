"""The sticker mode's pieces of the pages: the theme picker (New capture) and the result (job page, Viewer)."""

from __future__ import annotations

import json

import streamlit as st

from core.jobs.store import Job
from core.report import runs
from core.report.runs import RunView
from core.stages.sticker.themes import THEMES, match_theme
from pages._ui import esc

OWN_WORDS = "My own words…"
DOWNLOADS = [("GLB (3D sticker)", "sticker.glb", ".glb", "model/gltf-binary"),
             ("PNG (transparent)", "sticker.png", ".png", "image/png"),
             ("WebP (WhatsApp, Telegram)", "sticker.webp", ".webp", "image/webp")]


def theme_picker() -> str:
    """A theme from the list or the user's own words; says which theme will be used and why."""
    choice = st.selectbox("Sticker theme", [t.name for t in THEMES] + [OWN_WORDS], index=8, key="sticker-theme")
    prompt = choice
    if choice == OWN_WORDS:
        prompt = st.text_input("Theme in your own words", max_chars=200, key="sticker-prompt",
                               placeholder="e.g. my grumpy cat as a retro 80s poster")
    match = match_theme(prompt)
    st.caption(f"Theme used: **{esc(match.theme.name)}** — {esc(match.reason)}.")
    return prompt


def theme_record(run: RunView) -> dict | None:
    path = run.artifact("sticker.theme")
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def show_result(run: RunView, width: int = 320) -> None:
    """The sticker PNG and which theme it used and why."""
    png = run.artifact("sticker.png")
    if png is None:
        return
    record = theme_record(run) or {}
    left, right = st.columns([1, 2])
    left.image(str(png), width=width)
    if record:
        right.markdown(f"**Theme: {esc(record.get('theme_name', ''))}** — {esc(record.get('reason', ''))}.")
        asked = record.get("prompt") or ""
        right.caption(f"You asked for: {esc(asked) if asked else 'no theme (the default)'}. "
                      f"{esc(record.get('stylizer_note', ''))}")


def downloads(run: RunView, job: Job) -> None:
    base = runs.download_stem(job.sku, job.product_name, job.id)
    for col, (label, key, suffix, mime) in zip(st.columns(len(DOWNLOADS)), DOWNLOADS, strict=True):
        path = run.artifact(key)
        col.download_button(f"Download {label}", data=(lambda p=path: p.read_bytes()) if path else b"",
                            file_name=f"{base}_sticker{suffix}", mime=mime, disabled=path is None,
                            key=f"download-{key}", help=None if path else "This run has no such file yet.")
