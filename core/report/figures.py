"""Plotly figure builders for the viewer and the diagnostics pages.

Builders are pure functions returning ``go.Figure`` (no Streamlit, no files), so they can be tested and reused in
reports; their inputs come from the run readers (core/report/runs.py). The only conversion is for display: the 3D
view's "up" follows the cameras' image-up direction, because SfM worlds have an arbitrary orientation.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.geometry import PinholeCamera
from core.report.runs import SparseView

logger = logging.getLogger(__name__)

MAX_DENSE_POINTS = 200_000
"""A browser stays responsive up to about this many points in one scatter."""
MAX_SPARSE_POINTS = 100_000
MAX_MESH_FACES = 300_000

_GREY = np.array([170, 170, 170], dtype=np.uint8)


def decimate(points: np.ndarray, colors: np.ndarray, max_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of at most ``max_points`` (fixed seed, so the view does not flicker between reruns)."""
    if len(points) <= max_points:
        return points, colors
    keep = np.sort(np.random.default_rng(seed).choice(len(points), size=max_points, replace=False))
    return points[keep], colors[keep]


# --- 3D builders ---------------------------------------------------------------------------------------------

def _plain(text: str) -> str:
    """User text (photo names) for Plotly, which renders a subset of HTML (<b>, <a href>) in labels and hovers."""
    return html.escape(str(text), quote=False)


def _rgb_strings(colors: np.ndarray) -> list[str]:
    return [f"rgb({r},{g},{b})" for r, g, b in np.asarray(colors, dtype=np.uint8).tolist()]


def frustum_size(cameras: Sequence[PinholeCamera], points: np.ndarray | None = None) -> float:
    """A frustum depth that reads well: a fraction of the distance between cameras and the scene's centre."""
    centers = np.array([c.center for c in cameras]) if cameras else np.zeros((0, 3))
    if points is not None and len(points):
        target = np.median(points, axis=0)
    elif len(centers):
        target = centers.mean(axis=0)
    else:
        return 1.0
    if not len(centers):
        return 1.0
    distance = float(np.median(np.linalg.norm(centers - target, axis=1)))
    return max(distance * 0.12, 1e-6)


def frustum_lines(camera: PinholeCamera, depth: float) -> np.ndarray:
    """(16, 3) polyline tracing a camera's frustum (apex to the four image corners at ``depth``), NaN-separated."""
    w, h = camera.width, camera.height
    corners_px = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    rays = np.linalg.solve(camera.K, np.column_stack([corners_px, np.ones(4)]).T).T  # z = 1 in camera frame
    corners = (rays * depth - camera.t) @ camera.R  # camera -> world: R^T (x - t)
    apex = camera.center
    gap = np.full(3, np.nan)
    a, b, c, d = corners
    return np.array([apex, a, b, apex, c, d, apex, gap, a, b, c, d, a, gap, apex, apex])


def camera_traces(cameras: Sequence[PinholeCamera], names: Sequence[str], size: float,
                  color: str = "#d62728") -> list[go.Scatter3d]:
    """One trace per camera (hover shows its photo); they share one legend entry so one click hides them all."""
    traces = []
    for i, (camera, name) in enumerate(zip(cameras, names, strict=True)):
        lines = frustum_lines(camera, size)
        traces.append(go.Scatter3d(
            x=lines[:, 0], y=lines[:, 1], z=lines[:, 2], mode="lines", line={"color": color, "width": 3},
            name="Cameras", legendgroup="cameras", showlegend=i == 0, hovertext=_plain(name), hoverinfo="text",
            connectgaps=False))
    return traces


def point_trace(points: np.ndarray, colors: np.ndarray, name: str, size: float = 1.5,
                max_points: int = MAX_DENSE_POINTS) -> go.Scatter3d:
    points, colors = decimate(points, colors, max_points)
    return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers", name=name,
                        legendgroup=name, marker={"size": size, "color": _rgb_strings(colors)}, hoverinfo="skip")


def mesh_trace(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None,
               name: str = "Mesh") -> go.Mesh3d:
    """The mesh with per-vertex colours (flat grey when it has none)."""
    kwargs = {"vertexcolor": _rgb_strings(colors)} if colors is not None and len(colors) == len(vertices) else \
        {"color": "lightgrey"}
    return go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=triangles[:, 0], j=triangles[:, 1],
                     k=triangles[:, 2], name=name, legendgroup=name, showlegend=True, flatshading=False,
                     lighting={"ambient": 0.6, "diffuse": 0.6, "specular": 0.1}, hoverinfo="skip", **kwargs)


def _layout_3d(fig: go.Figure, cameras: Sequence[PinholeCamera] = (), title: str = "") -> go.Figure:
    scene: dict = {"aspectmode": "data", "xaxis": {"visible": False}, "yaxis": {"visible": False},
                   "zaxis": {"visible": False}}
    if cameras:
        # Photos are usually taken upright: the average image-up direction is the world's up for display.
        up = -np.mean([c.R[1] for c in cameras], axis=0)
        if np.linalg.norm(up) > 1e-6:
            up = up / np.linalg.norm(up)
            scene["camera"] = {"up": dict(zip("xyz", up.tolist(), strict=True)),
                               "eye": dict(zip("xyz", (2.0 * _side_of(up)).tolist(), strict=True))}
    fig.update_layout(scene=scene, title=title or None, margin={"l": 0, "r": 0, "t": 30 if title else 0, "b": 0},
                      legend={"itemsizing": "constant", "yanchor": "top", "y": 0.98, "xanchor": "left", "x": 0.01},
                      height=620, uirevision="keep")  # uirevision: reruns keep the user's camera angle
    return fig


def _side_of(up: np.ndarray) -> np.ndarray:
    """A viewing direction perpendicular to ``up`` (looking at the product from the side, slightly above)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    side = np.cross(up, helper)
    side /= np.linalg.norm(side)
    return side + 0.5 * up


def sparse_figure(sparse: SparseView, photo_names: Sequence[str] | None = None) -> go.Figure:
    """Sparse points and camera frusta; hovering a frustum shows its photo."""
    return scene_figure(sparse=sparse, photo_names=photo_names)


def dense_figure(points: np.ndarray, colors: np.ndarray, max_points: int = MAX_DENSE_POINTS) -> go.Figure:
    fig = go.Figure([point_trace(points, colors, "Dense points", max_points=max_points)])
    return _layout_3d(fig)


def mesh_figure(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None) -> go.Figure:
    return _layout_3d(go.Figure([mesh_trace(vertices, triangles, colors)]))


def scene_figure(*, mesh: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
                 dense: tuple[np.ndarray, np.ndarray] | None = None, sparse: SparseView | None = None,
                 photo_names: Sequence[str] | None = None, show: dict[str, bool] | None = None,
                 max_dense_points: int = MAX_DENSE_POINTS) -> go.Figure:
    """Mesh, dense cloud, sparse cloud and cameras in one view.

    ``show`` maps "mesh" / "dense" / "sparse" / "cameras" to visibility; hidden layers stay in the legend
    ("legendonly") so a click there brings them back.
    """
    show = show or {}

    def vis(key: str) -> bool | str:
        return True if show.get(key, True) else "legendonly"

    traces: list = []
    if mesh is not None:
        traces.append(mesh_trace(*mesh).update(visible=vis("mesh")))
    if dense is not None:
        traces.append(point_trace(*dense, "Dense points", max_points=max_dense_points).update(visible=vis("dense")))
    cameras: list[PinholeCamera] = []
    if sparse is not None:
        cameras = sparse.cameras
        traces.append(point_trace(sparse.points, sparse.colors, "Sparse points", size=2.0,
                                  max_points=MAX_SPARSE_POINTS).update(visible=vis("sparse")))
        labels = list(photo_names) if photo_names is not None else sparse.names
        size = frustum_size(sparse.cameras, sparse.points)
        traces.extend(t.update(visible=vis("cameras")) for t in camera_traces(sparse.cameras, labels, size))
    return _layout_3d(go.Figure(traces), cameras)


# --- 2D diagnostics ------------------------------------------------------------------------------------------

def depth_view_figure(depth: np.ndarray, confidence: np.ndarray | None = None, image: np.ndarray | None = None,
                      title: str = "", prior: np.ndarray | None = None) -> go.Figure:
    """The photo, its depth map, its confidence map and (when given) the aligned depth prior side by side.

    Depth and prior share one colour range so they compare at a glance; unknown depth shows as blank.
    """
    panels = [("Photo", image), ("Depth (camera z)", depth), ("Confidence", confidence),
              ("Depth prior (aligned)", prior)]
    panels = [(name, data) for name, data in panels if data is not None]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[name for name, _ in panels],
                        horizontal_spacing=0.06)
    finite = np.asarray(depth, dtype=np.float32)
    finite = finite[np.isfinite(finite)]
    depth_range = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)
    for col, (name, data) in enumerate(panels, start=1):
        if name == "Photo":
            fig.add_trace(go.Image(z=data, hoverinfo="skip"), row=1, col=col)
            continue
        values = np.asarray(data, dtype=np.float32)
        is_depth = name != "Confidence"
        zmin, zmax = depth_range if is_depth else (0.0, 1.0)
        colorbar_x = (col - 0.5) / len(panels) + 0.5 / len(panels) - 0.02
        fig.add_trace(go.Heatmap(z=np.where(np.isfinite(values), values, None), colorscale="Viridis" if is_depth
                                 else "Magma", zmin=zmin, zmax=zmax, name=name,
                                 colorbar={"x": colorbar_x, "len": 0.8, "thickness": 10}), row=1, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=_plain(title) or None, height=330, margin={"l": 0, "r": 0, "t": 50, "b": 0})
    return fig


def stage_times_figure(stages: Sequence[tuple[str, float]]) -> go.Figure:
    """Seconds per stage, as horizontal bars in run order."""
    names = [n for n, _ in stages]
    seconds = [float(s) for _, s in stages]
    fig = go.Figure(go.Bar(x=seconds, y=names, orientation="h", text=[f"{s:.1f} s" for s in seconds],
                           textposition="auto", marker_color="#4c78a8", name="seconds"))
    fig.update_layout(xaxis_title="seconds", yaxis={"autorange": "reversed"}, height=80 + 40 * max(len(names), 1),
                      margin={"l": 10, "r": 10, "t": 10, "b": 40})
    return fig


def histogram_figure(edges: Sequence[float], counts: Sequence[float], x_title: str,
                     color: str = "#4c78a8") -> go.Figure:
    """A histogram that was already binned (the manifest stores edges and counts, not every value)."""
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if len(edges) == len(counts) + 1:
        centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    else:  # integer bins given by their values (track lengths)
        centers, widths = edges[:len(counts)], np.ones(len(counts)) * 0.9
    fig = go.Figure(go.Bar(x=centers, y=counts, width=widths, marker_color=color, name="count"))
    fig.update_layout(xaxis_title=x_title, yaxis_title="points", bargap=0.02, height=300,
                      margin={"l": 10, "r": 10, "t": 10, "b": 40})
    return fig


def match_matrix_figure(names: Sequence[str], matrix: np.ndarray, value_label: str = "inlier matches") -> go.Figure:
    """Which photos matched which: a symmetric heatmap, dark where two photos share nothing."""
    matrix = np.asarray(matrix, dtype=np.float64)
    labels = [_plain(n) for n in names]
    fig = go.Figure(go.Heatmap(z=matrix, x=labels, y=labels, colorscale="Blues",
                               colorbar={"title": value_label},
                               hovertemplate="%{y} ↔ %{x}<br>%{z:.0f} " + value_label + "<extra></extra>"))
    side = min(900, 200 + 18 * len(names))
    fig.update_layout(height=side, yaxis={"autorange": "reversed"}, xaxis={"tickangle": -60},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def fusion_figure(kept: int, dropped: dict[str, float]) -> go.Figure:
    """Points kept versus dropped, by reason."""
    labels = ["kept"] + [reason.replace("_", " ") for reason in dropped]
    values = [float(kept)] + [float(v) for v in dropped.values()]
    colors = ["#54a24b"] + ["#e45756"] * len(dropped)
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colors, text=[f"{v:,.0f}" for v in values],
                           textposition="auto"))
    fig.update_layout(yaxis_title="points", height=300, margin={"l": 10, "r": 10, "t": 10, "b": 40})
    return fig
