"""The Viewer's "Set the real size from two points" control: pick two points on a photo, give the distance between
them, and the asset is made again at that size (a new run that resumes the old one: only the asset stage runs)."""

from __future__ import annotations

import streamlit as st

from core.jobs import intake
from core.jobs.store import Job, Store
from core.known_distance import KnownDistance, KnownDistanceError
from core.report import asset_view
from core.report.runs import RunView
from pages._ui import PAGE_NEW, esc

_POINT_KEYS = (("pick-x1", "pick-y1"), ("pick-x2", "pick-y2"))
_CHART = "pick-chart"


def _on_click() -> None:
    """A click on the photo sets the first point, the next one the second, the one after the first again."""
    event = st.session_state.get(_CHART)
    points = (event or {}).get("selection", {}).get("points", [])
    if not points:
        return
    which = st.session_state.get("pick-next", 0)
    x_key, y_key = _POINT_KEYS[which]
    st.session_state[x_key], st.session_state[y_key] = float(points[0]["x"]), float(points[0]["y"])
    st.session_state["pick-next"] = 1 - which


def _reset_points() -> None:
    for x_key, y_key in _POINT_KEYS:
        st.session_state.pop(x_key, None)
        st.session_state.pop(y_key, None)
    st.session_state["pick-next"] = 0


def control(store: Store, job: Job, run: RunView, checks: dict) -> None:
    """The control (inside an expander of the Viewer's asset section)."""
    photos = asset_view.pick_photos(run)
    if not photos:
        st.info("No photo of this run was placed by structure from motion, so no points can be picked.")
        return
    st.caption("Click the two ends of a distance you know on one photo (the width of a label, a lid's diameter, a "
               "ruler in the shot): the first click sets point 1, the next point 2. Fine-tune them in pixels below, "
               "enter the true distance, and the asset is made again at that size; only the asset stage runs again. "
               "It replaces a known height, width or depth.")
    names = [p.name for p in photos]
    name = st.selectbox("Photo", names, key="pick-photo", on_change=_reset_points)
    photo = photos[names.index(name)]
    width, height = photo.original_size
    points = [(st.session_state[x], st.session_state[y]) if x in st.session_state and y in st.session_state else None
              for x, y in _POINT_KEYS]
    st.plotly_chart(asset_view.pick_figure(photo, points), key=_CHART, on_select=_on_click, selection_mode="points",
                    config={"displaylogo": False, "scrollZoom": True})
    cols = st.columns(5)
    values = []
    for i, (x_key, y_key) in enumerate(_POINT_KEYS):
        x = cols[2 * i].number_input(f"Point {i + 1} x (pixels)", 0.0, float(width), value=None, step=1.0,
                                     key=x_key)
        y = cols[2 * i + 1].number_input(f"Point {i + 1} y (pixels)", 0.0, float(height), value=None, step=1.0,
                                         key=y_key)
        values.append(None if x is None or y is None else (float(x), float(y)))
    mm = cols[4].number_input("Distance (mm)", min_value=0.0, max_value=100_000.0, value=None, step=1.0,
                              key="pick-mm")
    st.caption(f"Pixels of {esc(name)} as you see it at full size ({width}×{height}), from its top-left corner.")
    missing = [what for what, v in (("point 1", values[0]), ("point 2", values[1]), ("the distance", mm))
               if v is None or (what == "the distance" and not v > 0)]
    if st.button("Make the asset at this size", type="primary", disabled=bool(missing), key="pick-apply"):
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
