"""The textured asset as the Viewer shows it: a self-contained ``<model-viewer>`` page, the checks, the downloads.

The page inlines model-viewer's JavaScript from the npm package in assets/web (installed by ./studio setup; never a
CDN) and the GLB as a data: URI, so the component needs nothing from any server. GLBs over ``INLINE_MAX_BYTES`` are
not inlined (the web profile's variant is offered instead, when there is one).
"""

from __future__ import annotations

import base64
import html
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.artifacts import ASSET_CHECKS, ASSET_GLB, ASSET_MTL, ASSET_NORMAL, ASSET_OBJ, ASSET_TEXTURE, ASSET_USDZ
from core.gltf_validator import WEB_DIR

MODEL_VIEWER_JS = WEB_DIR / "node_modules" / "@google" / "model-viewer" / "dist" / "model-viewer.min.js"
INLINE_MAX_BYTES = 20_000_000
"""The browser receives the GLB base64-encoded inside the page (4/3 larger); the web profile uses the same cap."""


@dataclass
class AssetDownload:
    label: str
    path: Path | None
    """A file to send; None for the OBJ bundle (``obj_bundle`` builds the zip)."""
    file_suffix: str
    mime: str


def read_checks(run_dir: Path) -> dict | None:
    path = ASSET_CHECKS.path(run_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def viewer_glb(run_dir: Path, checks: dict | None) -> Path | None:
    """The GLB to show: the asset, or the web profile's variant when the asset is too large to inline."""
    glb = ASSET_GLB.path(run_dir)
    if not glb.is_file():
        return None
    if glb.stat().st_size <= INLINE_MAX_BYTES:
        return glb
    web = (checks or {}).get("profiles", {}).get("web", {})
    candidate = Path(run_dir) / web.get("file", "")
    inside = candidate.resolve().is_relative_to(Path(run_dir).resolve())
    return candidate if inside and candidate.is_file() and candidate.stat().st_size <= INLINE_MAX_BYTES else None


def size_caption(size_mm: dict | None) -> str:
    if not size_mm:
        return ("Real size unknown (no known dimension was given); shown in reconstruction units. Set it from two "
                "points on a photo below.")
    return (f"Real size: {size_mm['width']:.0f} mm wide × {size_mm['height']:.0f} mm high × "
            f"{size_mm['depth']:.0f} mm deep.")


def model_viewer_html(glb: Path, alt: str, height_px: int = 520) -> str:
    """A complete HTML document showing ``glb`` in ``<model-viewer>`` with orbit, zoom and AR; raises
    FileNotFoundError naming the set-up step when model-viewer is not installed."""
    if not MODEL_VIEWER_JS.is_file():
        raise FileNotFoundError(f"{MODEL_VIEWER_JS} is missing; run ./studio setup (it installs the npm packages)")
    script = MODEL_VIEWER_JS.read_text(encoding="utf-8").replace("</script", "<\\/script")
    data = base64.b64encode(glb.read_bytes()).decode("ascii")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<style>html,body{{margin:0;background:#f4f4f4}} model-viewer{{width:100%;height:{height_px - 10}px}}</style>
<script type="module">{script}</script></head><body>
<model-viewer id="asset" src="data:model/gltf-binary;base64,{data}" alt="{html.escape(alt)}" camera-controls
 touch-action="pan-y" ar ar-modes="webxr scene-viewer quick-look" shadow-intensity="1" exposure="1"
 environment-image="neutral"></model-viewer>
<script>
const viewer = document.getElementById('asset');
viewer.addEventListener('load', () => {{ document.body.dataset.loaded = 'true'; }});
viewer.addEventListener('error', (e) => {{ document.body.dataset.loaded = 'error'; }});
</script></body></html>"""


def downloads(run_dir: Path, checks: dict | None) -> list[AssetDownload]:
    """One per format, then one per marketplace profile (the file that passes it, or the asset)."""
    run_dir = Path(run_dir)
    items = [AssetDownload("GLB", _existing(ASSET_GLB.path(run_dir)), ".glb", "model/gltf-binary"),
             AssetDownload("USDZ", _existing(ASSET_USDZ.path(run_dir)), ".usdz", "model/vnd.usdz+zip"),
             AssetDownload("OBJ + MTL + PNG (zip)", None if not ASSET_OBJ.path(run_dir).is_file() else Path(),
                           "_obj.zip", "application/zip")]
    for name, entry in (checks or {}).get("profiles", {}).items():
        path = (run_dir / entry["file"]).resolve()
        if path.is_relative_to(run_dir.resolve()) and path.is_file():
            mark = "passes" if entry["pass"] or (entry.get("variant") or {}).get("pass") else "fails"
            items.append(AssetDownload(f"{entry['label']} ({mark})", path, f"_{name}{path.suffix}",
                                       "model/gltf-binary" if path.suffix == ".glb" else "model/vnd.usdz+zip"))
    return items


def obj_bundle(run_dir: Path) -> bytes:
    """The OBJ with its material and textures in one zip (the OBJ names them by relative path)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for artifact in (ASSET_OBJ, ASSET_MTL, ASSET_TEXTURE, ASSET_NORMAL):
            path = artifact.path(run_dir)
            if path.is_file():
                archive.write(path, path.name)
    return buffer.getvalue()


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


# --- the real size from two points picked on a photo (Viewer) -----------------------------------------------------

PICK_GRID_COLUMNS = 200
"""Columns of the clickable grid laid over the photo (Plotly selects data points, not image pixels): 30k points at
4:3 stay smooth in the browser; a click lands within half a step (2.5 working pixels on a 1024 px copy), and the
number inputs under the photo take exact pixels."""


@dataclass
class PickPhoto:
    """A placed photo the user can pick points on: its working copy (shown) and the original's size (the picks')."""

    name: str
    image: Path
    original_size: tuple[int, int]
    working_size: tuple[int, int]


def pick_photos(run) -> list[PickPhoto]:
    """The run's photos that structure from motion placed (only their rays can be cast), in the user's order."""
    import pycolmap
    from PIL import Image

    model_dir, images = run.artifact("sfm.model"), run.artifact("capture.images")
    if run.manifest is None or model_dir is None or images is None:
        return []
    model = pycolmap.Reconstruction(str(model_dir))
    placed = {im.name for im in model.images.values() if im.has_pose}
    out = []
    for record in run.manifest.photos:
        path = images / (record.working or "")
        if record.status != "accepted" or record.working not in placed or not path.is_file() or not record.width:
            continue
        with Image.open(path) as image:
            out.append(PickPhoto(record.name, path, (record.width, record.height or 0), image.size))
    return out


def pick_figure(photo: PickPhoto, points: list[tuple[float, float] | None]):
    """The working copy drawn in the ORIGINAL photo's pixel coordinates (x right, y down, (0, 0) its top-left
    corner), an invisible grid of clickable points over it, and the picks so far (1, 2) with the line between."""
    import numpy as np
    import plotly.graph_objects as go

    width, height = photo.original_size
    sx, sy = width / photo.working_size[0], height / photo.working_size[1]
    # The working copy's own JPEG as a data URI: a 1024 px photo as a ``z`` array would be 2.4M numbers of JSON.
    source = "data:image/jpeg;base64," + base64.b64encode(photo.image.read_bytes()).decode("ascii")
    fig = go.Figure(go.Image(source=source, x0=sx / 2, dx=sx, y0=sy / 2, dy=sy, hoverinfo="skip"))
    step = width / PICK_GRID_COLUMNS
    xs, ys = np.meshgrid(np.arange(step / 2, width, step), np.arange(step / 2, height, step))
    fig.add_trace(go.Scattergl(x=xs.ravel().round(1), y=ys.ravel().round(1), mode="markers", name="click",
                               marker={"size": 6, "color": "rgba(0,0,0,0)"}, showlegend=False,
                               hovertemplate="x %{x:.0f}, y %{y:.0f}<extra></extra>"))
    picked = [(i + 1, p) for i, p in enumerate(points) if p is not None]
    if picked:
        fig.add_trace(go.Scatter(x=[p[0] for _, p in picked], y=[p[1] for _, p in picked],
                                 mode="markers+text+lines" if len(picked) == 2 else "markers+text",
                                 text=[str(i) for i, _ in picked], textposition="top center", hoverinfo="skip",
                                 marker={"size": 11, "color": "#e63946", "line": {"width": 2, "color": "white"}},
                                 line={"color": "#e63946", "width": 2}, textfont={"color": "#e63946", "size": 16},
                                 # A click selects a grid point; Plotly then dims every other point, picks too.
                                 unselected={"marker": {"opacity": 1}, "textfont": {"color": "#e63946"}},
                                 showlegend=False))
    fig.update_xaxes(range=[0, width], visible=False, constrain="domain")
    fig.update_yaxes(range=[height, 0], visible=False, scaleanchor="x")
    fig.update_layout(height=min(600, int(700 * height / max(width, 1))), margin={"l": 0, "r": 0, "t": 0, "b": 0},
                      hovermode="closest")
    return fig


def measure_picks(run, known):
    """The picks of ``known`` (a KnownDistance) found on the run's mesh, as the asset stage will find them
    (core/known_distance.py); KnownDistanceError naming the photo and the fix when they cannot be used."""
    from core.known_distance import KnownDistanceError, measure_known_distance
    from core.report.runs import read_mesh

    mesh = run.artifact("mesh.ply")
    if run.manifest is None or mesh is None:
        raise KnownDistanceError("This run has no mesh to measure on yet.")
    vertices, faces, _ = read_mesh(mesh)
    return measure_known_distance(known, run.manifest.photos, run.artifact("sfm.model"), vertices, faces)


def size_with_picks(run, checks: dict, measured) -> dict[str, float] | None:
    """The asset's width, height and depth in mm once scaled by ``measured`` (a MeasuredDistance): the mesh in the
    asset frame of ``checks`` (its rotation; its scale divided out)."""
    import numpy as np

    from core.report.runs import read_mesh

    transform = np.asarray(checks.get("asset_from_reconstruction") or np.eye(4), np.float64)
    mesh = run.artifact("mesh.ply")
    if mesh is None:
        return None
    vertices, _, _ = read_mesh(mesh)
    linear = transform[:3, :3]
    rotation = linear / np.cbrt(np.linalg.det(linear))
    extent = np.ptp(vertices @ rotation.T, axis=0) * measured.metres_per_unit * 1000
    return {k: round(float(v), 1) for k, v in zip(("width", "height", "depth"), extent, strict=True)}


def picks_caption(checks: dict | None) -> str:
    """How the asset's size was set, when by two points on a photo ('' otherwise)."""
    picks = (checks or {}).get("known_distance")
    if not picks:
        return ""
    (x1, y1), (x2, y2) = picks["pixels"]
    return (f"Sized by two points on {picks['photo']}: ({x1:.0f}, {y1:.0f}) to ({x2:.0f}, {y2:.0f}), "
            f"{picks['mm']:g} mm apart.")
