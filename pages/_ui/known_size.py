"""The Viewer's "Set the real size from two points" control: pick two points on a photo, give the distance between
them, and the asset is made again at that size (a new run that resumes the old one: only the asset stage runs)."""

from __future__ import annotations

from functools import partial

import streamlit as st

from core.jobs import intake
from core.jobs.store import Job, Store
from core.known_distance import KnownDistance, KnownDistanceError
from core.report import asset_view
from core.report.runs import RunView
from pages._ui import PAGE_NEW, esc


def _keys(job: Job) -> dict[str, str]:
    """The control's widget keys, per run (another run's picks never show on this one)."""
    return {name: f"pick-{name}-{job.id}" for name in ("photo", "x1", "y1", "x2", "y2", "mm", "next", "chart",
                                                         "apply")}


def _on_click(keys: dict[str, str]) -> None:
    """A click on the photo sets the first point, the next one the second, the one after the first again."""
    event = st.session_state.get(keys["chart"])
    points = (event or {}).get("selection", {}).get("points", [])
    if not points:
        return
    which = st.session_state.get(keys["next"], 1)
    st.session_state[keys[f"x{which}"]], st.session_state[keys[f"y{which}"]] = (float(points[0]["x"]),
                                                                               float(points[0]["y"]))
    st.session_state[keys["next"]] = 3 - which


def _reset_points(keys: dict[str, str]) -> None:
    for name in ("x1", "y1", "x2", "y2"):
        st.session_state.pop(keys[name], None)
    st.session_state[keys["next"]] = 1


def control(store: Store, job: Job, run: RunView, checks: dict) -> None:
    """The control (inside an expander of the Viewer's asset section); opens on the picks the asset was sized by."""
    photos = asset_view.pick_photos(run)
    if not photos:
        st.info("No photo of this run was placed by structure from motion, so no points can be picked.")
        return
    keys = _keys(job)
    names = [p.name for p in photos]
    current = checks.get("known_distance") or {}
    if keys["photo"] not in st.session_state and current.get("photo") in names:
        (x1, y1), (x2, y2) = current["pixels"]
        st.session_state.update({keys["photo"]: current["photo"], keys["x1"]: x1, keys["y1"]: y1, keys["x2"]: x2,
                                 keys["y2"]: y2, keys["mm"]: current["mm"]})
    st.caption("Click the two ends of a distance you know on one photo (the width of a label, a lid's diameter, a "
               "ruler in the shot): the first click sets point 1, the next point 2. Fine-tune them in pixels below, "
               "enter the true distance, and the asset is made again at that size; only the asset stage runs again. "
               "It replaces a known height, width or depth.")
    name = st.selectbox("Photo", names, key=keys["photo"], on_change=partial(_reset_points, keys))
    photo = photos[names.index(name)]
    width, height = photo.original_size
    points = [(st.session_state[keys[f"x{i}"]], st.session_state[keys[f"y{i}"]])
              if st.session_state.get(keys[f"x{i}"]) is not None and st.session_state.get(keys[f"y{i}"]) is not None
              else None for i in (1, 2)]
    st.plotly_chart(asset_view.pick_figure(photo, points), key=keys["chart"], on_select=partial(_on_click, keys),
                    selection_mode="points", config={"displaylogo": False, "scrollZoom": True})
    cols = st.columns(5)
    values = []
    for i in (1, 2):
        x = cols[2 * i - 2].number_input(f"Point {i} x (pixels)", 0.0, float(width), value=None, step=1.0,
                                         key=keys[f"x{i}"])
        y = cols[2 * i - 1].number_input(f"Point {i} y (pixels)", 0.0, float(height), value=None, step=1.0,
                                         key=keys[f"y{i}"])
        values.append(None if x is None or y is None else (float(x), float(y)))
    mm = cols[4].number_input("Distance (mm)", min_value=0.0, max_value=100_000.0, value=None, step=1.0,
                              key=keys["mm"])
    st.caption(f"Pixels of {esc(name)} as you see it at full size ({width}×{height}), from its top-left corner.")
    missing = [what for what, v in (("point 1", values[0]), ("point 2", values[1]), ("the distance", mm))
               if v is None or (what == "the distance" and not v > 0)]
    if st.button("Make the asset at this size", type="primary", disabled=bool(missing), key=keys["apply"]):
        known = KnownDistance(name, values[0], values[1], float(mm))  # type: ignore[arg-type]
        try:
            measured = asset_view.measure_picks(run, known)
        except KnownDistanceError as exc:
            st.error(esc(str(exc)))
            return
        new = intake.retry_job(store, job, intake.known_distance_changes(name, values[0], values[1], float(mm)))
        size = asset_view.size_with_picks(run, checks, measured)
        said = f" The model will be {size['width']:.0f} mm wide × {size['height']:.0f} mm high × " \
               f"{size['depth']:.0f} mm deep." if size else ""
        st.success(f"Queued a new run that makes the asset at this size.{said}")
        st.page_link(PAGE_NEW, label="Follow its progress", icon=":material/timer:", query_params={"job": new.id})
    elif missing:
        st.caption("To make it: set " + ", ".join(missing) + ".")
