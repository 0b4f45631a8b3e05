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
        return "Real size unknown (no known dimension was given); shown in reconstruction units."
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
