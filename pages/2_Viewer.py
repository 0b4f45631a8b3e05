"""Viewer: the textured asset in <model-viewer> (orbit, zoom, real size, AR) with its marketplace checks and
downloads; then the run's mesh, dense cloud, sparse cloud and cameras in one interactive Plotly view."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from core.report import asset_view, figures, runs
from pages._ui import BAD_ICON, OK_ICON, PAGE_NEW, esc, known_size, run_links, run_picker_or_stop, setup
from pages._ui import sticker as sticker_ui

store = setup("Viewer", ":material/view_in_ar:")
st.title(":material/view_in_ar: 3D viewer")

# Large arrays stay in Streamlit's cache (keyed by file and modification time), never in session_state.


@st.cache_data(max_entries=4, show_spinner="Loading the mesh…")
def load_mesh(path: str, mtime: float):
    return runs.read_mesh(Path(path), max_faces=figures.MAX_MESH_FACES)


@st.cache_data(max_entries=4, show_spinner="Loading the point cloud…")
def load_cloud(path: str, mtime: float):
    points, colors = runs.read_point_cloud(Path(path))
    return figures.decimate(points, colors, figures.MAX_DENSE_POINTS)


@st.cache_data(max_entries=4, show_spinner="Loading the cameras…")
def load_sparse(path: str, mtime: float) -> runs.SparseView:
    return runs.read_sparse_model(Path(path))


def mtime(path: Path) -> float:
    return max((p.stat().st_mtime for p in [path, *path.glob("*")]), default=0.0) if path.is_dir() \
        else path.stat().st_mtime


job = run_picker_or_stop(store)

run = runs.open_run(store.run_dir(job))
manifest = run.manifest
if run.problem and job.is_final:
    st.warning(esc(run.problem))
# The single-photo relief is its own model; the product's points are the isolated cloud (the fused one before).
layers = {"mesh": run.artifact("mesh.ply") or run.artifact("relief.ply") or run.artifact("sticker.ply"),
          "dense": run.artifact("isolation.points") or run.artifact("fusion.points"),
          "sparse": run.artifact("sfm.model")}

if not any(layers.values()):
    if job.status in ("queued", "starting", "running"):
        st.info(f"This run is still {job.status}; the 3D view appears as soon as the cameras are placed.")
        st.page_link(PAGE_NEW, label="Follow its progress", icon=":material/timer:", query_params={"job": job.id})
    else:
        reason = job.error or (manifest.failure_reason if manifest else "")
        st.warning("This run has no 3D result to show" + (f": {esc(reason)}" if reason else "."))
    run_links(job)
    st.stop()

if layers["mesh"] is None:
    st.info("This run has no mesh yet" + (" (it is still running)" if not job.is_final else "")
            + ". Showing what it has so far.")

base = runs.download_stem(job.sku, job.product_name, job.id)
checks = asset_view.read_checks(run.run_dir) if run.artifact("asset.glb") else None
if checks is not None:
    st.subheader("Textured asset")
    glb = asset_view.viewer_glb(run.run_dir, checks)
    if glb is None:
        st.info("The asset is too large to show here; download it below.")
    else:
        try:
            components.html(asset_view.model_viewer_html(glb, job.product_name or "product"), height=520)
        except FileNotFoundError as exc:
            st.warning(esc(str(exc)))
    st.caption(" ".join(filter(None, [asset_view.size_caption(checks.get("size_mm")), asset_view.picks_caption(checks),
                                      "Drag to orbit, scroll to zoom; on a phone the AR button places it in the "
                                      "room."])))
    if manifest is not None and manifest.mode == "multi_view":
        with st.expander("Set the real size from two points", expanded=False):
            known_size.control(store, job, run, checks)
    for entry in checks.get("profiles", {}).values():
        variant = entry.get("variant") or {}
        if entry["pass"]:
            st.markdown(f"{OK_ICON} **{esc(entry['label'])}**: passes.")
        elif variant.get("pass"):
            st.markdown(f"{OK_ICON} **{esc(entry['label'])}**: the variant passes (the asset itself: "
                        f"{esc('; '.join(entry['reasons']))}).")
        else:
            st.markdown(f"{BAD_ICON} **{esc(entry['label'])}**: "
                        f"{esc('; '.join(variant.get('reasons') or entry['reasons']))}.")
    items = asset_view.downloads(run.run_dir, checks)
    for start in range(0, len(items), 4):
        for col, item in zip(st.columns(4), items[start:start + 4], strict=False):
            data = (lambda p=item.path: p.read_bytes()) if item.path and item.path.is_file() else \
                (lambda: asset_view.obj_bundle(run.run_dir))
            col.download_button(f"Download {item.label}", data=data, file_name=f"{base}{item.file_suffix}",
                                mime=item.mime, disabled=item.path is None, key=f"asset-{item.label}")
    st.subheader("Reconstruction")

labels = {"mesh": "Mesh", "dense": "Dense cloud", "sparse": "Sparse cloud", "cameras": "Cameras"}
available = [k for k in ("mesh", "dense", "sparse") if layers[k]] + (["cameras"] if layers["sparse"] else [])
cols = st.columns(len(available))
# With a mesh, open on the product alone (cameras span a much larger space and shrink it); without one, show all.
show = {key: col.toggle(labels[key], value=key == "mesh" or layers["mesh"] is None, key=f"show-{key}")
        for key, col in zip(available, cols, strict=True)}

mesh = load_mesh(str(layers["mesh"]), mtime(layers["mesh"])) if layers["mesh"] else None
dense = load_cloud(str(layers["dense"]), mtime(layers["dense"])) if layers["dense"] else None
sparse = load_sparse(str(layers["sparse"]), mtime(layers["sparse"])) if layers["sparse"] else None
# Cameras carry working-image names; hover shows the user's photo name instead.
photo_names = [run.photo_name(n) for n in sparse.names] if sparse is not None else None

figure = figures.scene_figure(mesh=mesh, dense=dense, sparse=sparse, photo_names=photo_names, show=show)
st.plotly_chart(figure, key="scene", config={"displaylogo": False})
details = []
if mesh is not None:
    details.append(f"mesh: {len(mesh[1]):,} faces")
if dense is not None:
    details.append(f"dense cloud: {len(dense[0]):,} points")
if sparse is not None:
    details.append(f"{len(sparse.cameras)} cameras and {len(sparse.points):,} sparse points")
st.caption("This run has " + ", ".join(details) + ". Drag to rotate, scroll to zoom, hover a camera to see its "
           "photo; the switches above (or a click on the legend) hide and show each layer.")

if manifest is not None and manifest.mode == "sticker":  # the sticker's own result and files (pages/_ui/sticker.py)
    sticker_ui.show_result(run)
    sticker_ui.downloads(run, job)
    run_links(job)
    st.stop()
st.subheader("Download the review mesh (vertex colours)" if checks is not None else "Download")
model = "relief" if manifest is not None and manifest.mode == "relief" else "mesh"
downloads = [("GLB (web, AR)", f"{model}.glb", ".glb", "model/gltf-binary"),
             ("OBJ", f"{model}.obj", ".obj", "text/plain"),
             ("PLY", f"{model}.ply", ".ply", "application/octet-stream")]
for col, (label, key, suffix, mime) in zip(st.columns(len(downloads)), downloads, strict=True):
    path = run.artifact(key)
    col.download_button(f"Download {label}", data=(lambda p=path: p.read_bytes()) if path else b"",
                        file_name=f"{base}{suffix}", mime=mime, disabled=path is None, key=f"download-{key}",
                        help=None if path else "This run has no such file yet.")
run_links(job)
