"""Accuracy and speed of the pipeline on ground-truth captures; writes benchmarks/RESULTS.md and results.json.

    python -m benchmarks.run [--captures soup_orbit,fuze_turntable,...] [--presets preview,balanced] [--quick]

For every capture it (a) renders it with benchmarks.synthetic into benchmarks/out/captures/ (once; --rerender to redo),
(b) runs ``python -m core.pipeline PHOTOS --out RUN --preset P`` as a subprocess, measuring wall time and the peak
resident memory of the process tree, and (c) evaluates the run against the ground truth (benchmarks.evaluate):
photos placed, camera errors after a similarity alignment, and the dense points and the mesh in the ground-truth
frame (precision/recall/F-score at 0.5 % and 1 % of the object's diagonal, accuracy, completeness).
Public photo sets with known cameras (Middlebury templeSparseRing, Strecha Herz-Jesus-P8) are scored on camera
placement only. Captures whose source data is missing are skipped with the reason.

This is a measurement tool, not a test: it takes minutes per capture on a laptop-class CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.evaluate import (
    SHARED_DATA,
    GroundTruthSurface,
    PoseReport,
    evaluate_poses,
    load_depth_maps_cloud,
    load_points,
    read_middlebury_par,
    read_strecha_folder,
    sample_mesh,
)
from benchmarks.synthetic import CaptureSpec, load_ground_truth, render_capture
from benchmarks.synthetic.renderer import NOVEL_DIR, render_novel_views
from core.geometry import PinholeCamera, silhouette_iou
from core.report.runs import RunView, open_run
from core.scene import cameras_from_model

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DATA_ROOT = SHARED_DATA
MODELS = DATA_ROOT / "product_models"


@dataclass(frozen=True)
class SyntheticCapture:
    """A ground-truth capture to render and reconstruct."""

    name: str
    description: str
    spec: Callable[[bool], CaptureSpec]
    """quick -> the capture's spec (quick: fewer, smaller photos)."""
    needs: Path | None = None
    """Source data that must exist (a product model folder)."""


def _size(quick: bool) -> dict[str, Any]:
    return dict(num_views=12, width=640, height=480) if quick else dict(num_views=24, width=1024, height=768)


SYNTHETIC: dict[str, SyntheticCapture] = {c.name: c for c in [
    SyntheticCapture(
        "soup_orbit", "YCB tomato soup can (scan), orbit, textured mat, plain studio",
        lambda q: CaptureSpec(object=str(MODELS / "005_tomato_soup_can"), mode="orbit", support="textured",
                              backdrop="plain", **_size(q)),
        MODELS / "005_tomato_soup_can"),
    SyntheticCapture(
        "fuze_turntable", "FUZE bottle (scan), turntable with a textured plate, plain sweep backdrop",
        lambda q: CaptureSpec(object=str(MODELS / "fuze_bottle"), mode="turntable", support="textured",
                              backdrop="plain", **_size(q)),
        MODELS / "fuze_bottle"),
    SyntheticCapture(
        "soup_turntable_textured_backdrop", "YCB soup can (scan), turntable with a textured plate in front of a "
        "textured backdrop (the still background must not decide the cameras)",
        lambda q: CaptureSpec(object=str(MODELS / "005_tomato_soup_can"), mode="turntable", support="textured",
                              backdrop="textured", **_size(q)),
        MODELS / "005_tomato_soup_can"),
    SyntheticCapture(
        "fuze_turntable_plain_plate", "hard case: FUZE bottle on a plain turntable plate, one ring, plain backdrop "
        "(the static shadow and plate edge mislead SfM)",
        lambda q: CaptureSpec(object=str(MODELS / "fuze_bottle"), mode="turntable", support="plain",
                              backdrop="plain", elevations_deg=(30.0,), **_size(q)),
        MODELS / "fuze_bottle"),
    SyntheticCapture(
        "plain_bottle_turntable_plain_plate", "flipped-camera case: plain procedural bottle (the same from every side) "
        "on a plain turntable plate, one ring, plain backdrop (SfM folds or mirrors cameras; the trust checks must "
        "catch it)",
        lambda q: CaptureSpec(object="procedural-bottle", product_texture="plain", mode="turntable", support="plain",
                              backdrop="plain", elevations_deg=(30.0,), **_size(q))),
    SyntheticCapture(
        "fuze_turntable_plain_plate_folded", "flipped-camera case: the plain-plate turntable above at 640x480, where "
        "incremental mapping places every photo with a wrong turn between them (120-177° off); must not end done",
        lambda q: CaptureSpec(object=str(MODELS / "fuze_bottle"), mode="turntable", support="plain",
                              backdrop="plain", elevations_deg=(30.0,), num_views=12 if q else 24, width=640,
                              height=480),
        MODELS / "fuze_bottle"),
    SyntheticCapture(
        "cracker_box_orbit", "YCB cracker box (scan), orbit, textured mat, plain studio (flat printed faces, sharp "
        "edges)",
        lambda q: CaptureSpec(object=str(MODELS / "003_cracker_box"), mode="orbit", support="textured",
                              backdrop="plain", **_size(q)),
        MODELS / "003_cracker_box"),
    SyntheticCapture(
        "plain_box", "plain-coloured procedural box (low texture), orbit, textured mat, plain studio",
        lambda q: CaptureSpec(object="procedural-box", product_texture="plain", mode="orbit", support="textured",
                              backdrop="plain", **_size(q))),
    SyntheticCapture(
        "textured_bottle", "procedural bottle with a rich label texture, orbit, textured mat (like the sample)",
        lambda q: CaptureSpec(object="procedural-bottle", mode="orbit", support="textured", backdrop="plain",
                              **_size(q))),
]}
SYNTHETIC.update({f"soup_orbit_{views}": SyntheticCapture(
    f"soup_orbit_{views}", f"the soup-can orbit with {views} photos (time and memory against the number of photos)",
    (lambda q, views=views: CaptureSpec(object=str(MODELS / "005_tomato_soup_can"), mode="orbit", support="textured",
                                        backdrop="plain", **{**_size(q), "num_views": views})),
    MODELS / "005_tomato_soup_can") for views in (48, 96)})
PLAIN_SPECS: dict[str, tuple[str, str, str]] = {
    # name: (object, mode, what) -- plain products on plain backdrops (issue 10); a textured mat or plate under them
    "plain_box_turntable": ("procedural-box", "turntable", "plain procedural box, turntable with a textured plate"),
    "plain_bottle_orbit": ("procedural-bottle", "orbit", "plain procedural bottle, orbit, textured mat"),
    "plain_bottle_turntable": ("procedural-bottle", "turntable", "plain procedural bottle, turntable, textured plate"),
    "banana_orbit": (str(MODELS / "011_banana_fulltex"), "orbit", "YCB banana (scan), orbit, textured mat"),
    "banana_turntable": (str(MODELS / "011_banana_fulltex"), "turntable", "YCB banana (scan), turntable"),
}
SYNTHETIC.update({name: SyntheticCapture(
    name, f"{what}, plain backdrop",
    (lambda q, obj=obj, mode=mode: CaptureSpec(object=obj, product_texture="plain", mode=mode, support="textured",
                                               backdrop="plain", **_size(q))),
    Path(obj) if obj.startswith("/") else None) for name, (obj, mode, what) in PLAIN_SPECS.items()})
PLAIN_CAPTURES = ("plain_box", *PLAIN_SPECS)
"""``--captures plain``: the plain products of issue 10 (F-score and silhouette IoU of the mesh)."""
SURFACE_ARTIFACTS = ("depth.maps", "depth_prior.maps", "fusion.points", "isolation.points", "mesh.ply")
"""Manifest artefacts scored against the true surface: per-view depth maps (folders of .npz: stereo, then merged
with the depth prior), the fused cloud before and after product isolation, and the final mesh."""
UNCAPPED_MESH = "mesh.ply without the base cap"
"""The mesh scored without the faces of its flat base cap (reported beside the whole mesh)."""
BASE_CAP_TOLERANCE = 0.01
"""Cap faces lie within this share of the object diagonal of the ground-truth table."""
SILENT_WRONG_DEG = 5.0
"""A run that ends done must place every photo within this rotation error (issue 10: never silently wrong)."""
DEFAULT_CAPTURES = ("soup_orbit", "fuze_turntable", "soup_turntable_textured_backdrop", "plain_box")
QUICK_CAPTURES = ("textured_bottle", "plain_box")


@dataclass(frozen=True)
class RealPhotoSet:
    """Public photos with known cameras (poses only: no ground-truth surface)."""

    name: str
    image_dir: Path
    read_cameras: Callable[[], dict[str, PinholeCamera]]


REAL: dict[str, RealPhotoSet] = {s.name: s for s in [
    RealPhotoSet("middlebury_templeSparseRing", DATA_ROOT / "middlebury_templeSparseRing",
                 lambda: read_middlebury_par(DATA_ROOT / "middlebury_templeSparseRing" / "templeSR_par.txt")),
    RealPhotoSet("strecha_Herz-Jesus-P8", DATA_ROOT / "strecha_Herz-Jesus-P8" / "images",
                 lambda: read_strecha_folder(DATA_ROOT / "strecha_Herz-Jesus-P8" / "cameras")),
]}


# --------------------------------------------------------------------------------------------------------------
# Running the pipeline
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RunMeasurement:
    """One pipeline subprocess: how it ended, how long, how much memory."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    """Peak resident memory of the pipeline process and its children (sampled every 0.2 s)."""
    stderr_tail: str = ""


def _tree_rss(proc: Any) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_pipeline_cli(photos: Path, run_dir: Path, preset: str, extra_args: list[str] | None = None,
                     timeout_s: float = 3600) -> RunMeasurement:
    """``python -m core.pipeline PHOTOS --out RUN --preset P`` in a subprocess, timed, with peak memory."""
    import psutil

    cmd = [sys.executable, "-m", "core.pipeline", str(photos), "--out", str(run_dir), "--preset", preset,
           *(extra_args or [])]
    logger.info("running %s", " ".join(cmd))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.stderr.log", "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err)
        ps = psutil.Process(proc.pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, _tree_rss(ps))
                except psutil.NoSuchProcess:
                    return
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    tail = (run_dir.parent / f"{run_dir.name}.stderr.log").read_text(encoding="utf-8", errors="replace")[-2000:]
    measurement = RunMeasurement(returncode, round(wall, 1), round(peak / 2**20, 1), tail)
    _measurement_path(run_dir).write_text(json.dumps(measurement.__dict__), encoding="utf-8")
    return measurement


def _measurement_path(run_dir: Path) -> Path:
    """Beside the run folder: how its pipeline process ended, its wall time and peak memory (for ``--rescore``)."""
    return run_dir.parent / f"{run_dir.name}.measurement.json"


def previous_measurement(run_dir: Path) -> RunMeasurement | None:
    """The measurement of an earlier pipeline run into ``run_dir``, when it finished and was recorded."""
    path = _measurement_path(run_dir)
    if not path.exists() or not (run_dir / "manifest.json").exists():
        return None
    return RunMeasurement(**json.loads(path.read_text(encoding="utf-8")))


def _sfm_cameras(run: RunView) -> dict[str, PinholeCamera]:
    """The run's SfM cameras keyed by the user's photo names (the model names the working copies)."""
    model = run.artifact("sfm.model")
    if model is None:
        return {}
    return {run.photo_name(name): cam for name, cam in cameras_from_model(model).items()}


def evaluate_run(run_dir: Path, truth_cameras: dict[str, PinholeCamera], scale_reference: float,
                 surface: GroundTruthSurface | None, truth_masks: dict[str, np.ndarray] | None = None,
                 novel_dir: Path | None = None) -> dict[str, Any]:
    """Poses and (when a ground-truth surface is given) dense points and mesh of a finished or failed run."""
    run = open_run(run_dir)
    manifest = run.manifest
    out: dict[str, Any] = {
        "status": manifest.status if manifest else run.problem,
        "failure_reason": manifest.failure_reason if manifest else "",
        "stages": {s.name: s.seconds for s in manifest.stages} if manifest else {},
    }
    poses: PoseReport = evaluate_poses(_sfm_cameras(run), truth_cameras, scale_reference)
    out["poses"] = poses.to_dict()
    if truth_masks:
        out["masks"] = mask_scores(run, truth_masks)
    fusion = next((s for s in manifest.stages if s.name == "fusion"), None) if manifest else None
    if fusion is not None:  # the hull gate's decision and its measure
        out["fusion_hull"] = "yes" if fusion.metrics.get("silhouettes") else "no"
        if "stereo_coverage" in fusion.metrics:
            out["fusion_hull"] += f" (stereo coverage {fusion.metrics['stereo_coverage']:.2f})"
    if surface is None:
        return out
    for key in SURFACE_ARTIFACTS:
        path = run.artifact(key)
        if path is None:
            continue
        if poses.alignment is None:
            out[key] = {"error": "fewer than 3 photos placed: no alignment to the ground truth"}
            continue
        if path.is_dir():  # a folder of per-photo depth maps
            points, faces = load_depth_maps_cloud(path), 0
        else:
            points, faces = load_points(path)
        report = surface.evaluate(points, poses.alignment).to_dict()
        report["faces"] = faces
        report["total_points"] = len(points)
        if key == "mesh.ply" and truth_masks:
            report.update(_mesh_checks(run, path, poses.alignment, truth_cameras, truth_masks))
        out[key] = report
        if key == "mesh.ply" and report.get("base_capped"):
            out[UNCAPPED_MESH] = _uncapped_mesh_score(path, poses.alignment, surface, scale_reference)
    if novel_dir is not None and poses.alignment is not None:
        out["appearance"] = novel_view_appearance(run, poses.alignment, novel_dir)
        if run.artifact("texture.normal") is not None:
            out["shading_normals"] = novel_view_normal_error(run, poses.alignment, novel_dir, surface)
    return out


def mask_scores(run: RunView, truth_masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """IoU of the masks stage's masks with the true ones, per photo with its confidence (empty: no masks)."""
    import cv2

    from core.segmentation import mask_iou

    folder = run.artifact("masks.images")
    if folder is None or run.manifest is None:
        return {}
    stage = next((s for s in run.manifest.stages if s.name == "masks"), None)
    confidence = stage.metrics.get("per_photo", {}) if stage else {}
    per_photo = {}
    for photo in run.manifest.accepted_photos:
        path, truth = folder / f"{photo.stem}.png", truth_masks.get(photo.name)
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
        if mask is None or truth is None:
            continue
        if truth.shape[1] > mask.shape[1] + 4:  # a smaller working size (preview): the truth at that size first
            size = (mask.shape[1] + 2, mask.shape[0] + 2)
            truth = cv2.resize(truth.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
        dh, dw = truth.shape[0] - mask.shape[0], truth.shape[1] - mask.shape[1]
        if dh < 0 or dw < 0 or dh % 2 or dw % 2:
            continue
        # COLMAP's undistortion of the renders' (near-zero) distortion trims a pixel at every border (1024x768 ->
        # 1022x766, principal point 1 px less): the true mask trimmed the same way.
        truth = truth[dh // 2:truth.shape[0] - dh // 2, dw // 2:truth.shape[1] - dw // 2]
        per_photo[photo.name] = {"iou": round(mask_iou(mask > 127, truth), 4),
                                 "confidence": confidence.get(photo.name, {}).get("confidence")}
    if not per_photo:
        return {}
    ious = [v["iou"] for v in per_photo.values()]
    return {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)), "per_photo": per_photo}


def novel_view_appearance(run: Any, alignment: Any, novel_dir: Path) -> dict[str, Any]:
    """PSNR over the product's true mask in held-out views, of the vertex-coloured mesh and the textured model
    (both moved into the ground-truth frame by the camera alignment), and the share of mask pixels each covers.

    PSNR is over the mask pixels the model covers (the misses are counted by coverage, not as black pixels).
    """
    import cv2

    from benchmarks.synthetic import read_cameras_json
    from core.stages.texture import load_textured, render_mesh

    cameras = read_cameras_json(novel_dir / "cameras.json")
    models: dict[str, dict[str, Any]] = {}
    mesh_path = run.artifact("mesh.ply")
    if mesh_path is not None:
        import open3d as o3d

        mesh = o3d.io.read_triangle_mesh(str(mesh_path))
        models["vertex_colours"] = dict(vertices=alignment.apply(np.asarray(mesh.vertices)),
                                        faces=np.asarray(mesh.triangles), vertex_colors=np.asarray(mesh.vertex_colors))
    if run.artifact("texture.mesh") is not None:
        textured = load_textured(run.run_dir)
        atlas = cv2.cvtColor(cv2.imread(str(textured.base_color)), cv2.COLOR_BGR2RGB)
        models["textured"] = dict(vertices=alignment.apply(textured.vertices), faces=textured.faces, uv=textured.uv,
                                  texture=atlas)
    out: dict[str, Any] = {"views": len(cameras)}
    for label, model in models.items():
        errors, covered, total = [], 0, 0
        for name, camera in cameras.items():
            truth = cv2.cvtColor(cv2.imread(str(novel_dir / "images" / name)), cv2.COLOR_BGR2RGB).astype(np.float32)
            mask = cv2.imread(str(novel_dir / "masks" / name), cv2.IMREAD_GRAYSCALE) > 127
            image, hit = render_mesh(camera=camera, **model)
            inside = mask & hit
            errors.append(((image[inside] - truth[inside]) ** 2).ravel())
            covered, total = covered + int(inside.sum()), total + int(mask.sum())
        mse = float(np.mean(np.concatenate(errors))) if covered else float("nan")
        out[label] = {"psnr_db": round(10 * np.log10(255.0**2 / mse), 2) if covered else None,
                      "coverage": round(covered / max(total, 1), 4)}
    return out


STATIC_TEXTURE_CEILING = "static_texture_ceiling.json"
"""Cached in the capture's novel-view folder: it depends on the capture only."""


def static_texture_ceiling(gt: Any, novel_dir: Path) -> dict[str, Any]:
    """Novel-view PSNR of a *static* texture made from these photos without the mesh's error (a reference, not a
    strict bound): on the true surface, each novel pixel takes the photos' colours of its surface point, weighted by
    how large and frontal the point is in each (what the texture stage's blend approximates); and, for comparison,
    the photo nearest the novel camera (a view-dependent texture). Under lights that turn with the product (a
    turntable in front of fixed lights) the two part: no static texture can follow the shading, so the target
    "textured + 4 dB over vertex colours" is out of reach there. Cached in ``novel_dir / STATIC_TEXTURE_CEILING``."""
    import cv2
    import open3d as o3d

    from benchmarks.synthetic import read_cameras_json
    from core.geometry import camera_rays, sample_image

    cache = novel_dir / STATIC_TEXTURE_CEILING
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    mesh = o3d.io.read_triangle_mesh(str(gt.mesh_path))
    mesh.compute_triangle_normals()
    V, F = np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.uint32)
    normals = np.asarray(mesh.triangle_normals)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(F))
    photos = {n: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB).astype(np.float32)
              for n, p in gt.image_paths.items()}
    errors: dict[str, list[np.ndarray]] = {"blended": [], "nearest": []}
    for name, camera in read_cameras_json(novel_dir / "cameras.json").items():
        truth = cv2.cvtColor(cv2.imread(str(novel_dir / "images" / name)), cv2.COLOR_BGR2RGB).astype(np.float32)
        mask = cv2.imread(str(novel_dir / "masks" / name), cv2.IMREAD_GRAYSCALE).ravel() > 127
        rays = camera_rays(camera)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        idx = np.flatnonzero(np.isfinite(t) & mask)
        points = rays[idx, :3] + t[idx, None] * rays[idx, 3:]
        normal = normals[hit["primitive_ids"].numpy()[idx]]
        colours, weights, distance = [], [], []
        for photo_name, photo_camera in gt.cameras.items():
            ray = points - photo_camera.center
            dist = np.linalg.norm(ray, axis=1)
            cos = -(normal * ray).sum(1) / dist
            pix, _ = photo_camera.project(points)
            back = np.concatenate([np.broadcast_to(photo_camera.center, ray.shape), ray], 1).astype(np.float32)
            seen = (scene.cast_rays(o3d.core.Tensor(back))["t_hit"].numpy() > 0.999) & (cos > 0.1)
            seen &= (pix[:, 0] > 1) & (pix[:, 1] > 1) & (pix[:, 0] < photo_camera.width - 2)
            seen &= pix[:, 1] < photo_camera.height - 2
            colours.append(sample_image(photos[photo_name], pix[:, 0], pix[:, 1]))
            weights.append(np.where(seen, cos / dist**2, 0.0))  # the point's area in the photo, as the bake's score
            distance.append(np.where(seen, np.linalg.norm(photo_camera.center - camera.center), np.inf))
        colours_a, weights_a = np.stack(colours, 1).astype(np.float32), np.stack(weights, 1)
        have = weights_a.sum(1) > 0
        blended = (colours_a * weights_a[..., None]).sum(1) / np.maximum(weights_a.sum(1), 1e-12)[:, None]
        nearest = colours_a[np.arange(len(idx)), np.stack(distance, 1).argmin(1)]
        target = truth.reshape(-1, 3)[idx]
        errors["blended"].append(((blended - target)[have] ** 2).ravel())
        errors["nearest"].append(((nearest - target)[have] ** 2).ravel())
    out = {f"{k}_psnr_db": round(float(10 * np.log10(255.0**2 / np.mean(np.concatenate(v)))), 2)
           for k, v in errors.items()}
    cache.write_text(json.dumps(out), encoding="utf-8")
    return out


def novel_view_normal_error(run: Any, alignment: Any, novel_dir: Path, surface: GroundTruthSurface
                            ) -> dict[str, Any]:
    """Angular error of the textured model's shading normals in the held-out views, without and with its normal map
    (``shading_normal_error``)."""
    import cv2

    from benchmarks.synthetic import read_cameras_json
    from core.stages.texture import load_textured

    textured = load_textured(run.run_dir)
    vertices = alignment.apply(textured.vertices)  # rotation and scale: the tangent-space map is unchanged by both
    normal_map = cv2.cvtColor(cv2.imread(str(textured.normal_map)), cv2.COLOR_BGR2RGB)
    models = {"smooth_normals": (vertices, textured.faces, textured.uv, None),
              "normal_map": (vertices, textured.faces, textured.uv, normal_map)}
    return shading_normal_error(models, surface, read_cameras_json(novel_dir / "cameras.json"), novel_dir)


def shading_normal_error(models: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
                         surface: GroundTruthSurface, cameras: dict[str, PinholeCamera], novel_dir: Path
                         ) -> dict[str, Any]:
    """Per model (vertices in the ground-truth frame, faces, uv, normal map or None): mean and median angle in
    degrees between the normal a glTF viewer shades each pixel with (``core.stages.texture.shading_normals``) and
    the true surface's normal there, over the pixels of the product's true mask that the model and the truth cover."""
    import cv2
    import open3d as o3d

    from core.geometry import camera_rays
    from core.stages.texture import shading_normals

    def scene(vertices: np.ndarray, faces: np.ndarray) -> Any:
        raycast = o3d.t.geometry.RaycastingScene()
        raycast.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                              o3d.core.Tensor(np.asarray(faces, np.uint32)))
        return raycast

    truth = scene(surface.vertices, surface.triangles)
    scenes = {label: scene(m[0], m[1]) for label, m in models.items()}
    angles: dict[str, list[np.ndarray]] = {label: [] for label in models}
    for name, camera in cameras.items():
        mask = (cv2.imread(str(novel_dir / "masks" / name), cv2.IMREAD_GRAYSCALE) > 127).ravel()
        rays = camera_rays(camera)
        true_hit = truth.cast_rays(o3d.core.Tensor(rays))
        true_normal = true_hit["primitive_normals"].numpy().astype(np.float64)
        # The truth's winding is not trusted: a visible surface's normal faces the camera.
        true_normal *= np.where((true_normal * rays[:, 3:]).sum(1, keepdims=True) > 0, -1.0, 1.0)
        true_ok = np.isfinite(true_hit["t_hit"].numpy())
        hits = {label: raycast.cast_rays(o3d.core.Tensor(rays)) for label, raycast in scenes.items()}
        inside = mask & true_ok
        for hit in hits.values():  # the same pixels for every model
            inside &= np.isfinite(hit["t_hit"].numpy())
        idx = np.flatnonzero(inside)
        for label, (vertices, faces, uv, normal_map) in models.items():
            hit = hits[label]
            b = hit["primitive_uvs"].numpy()[idx].astype(np.float64)
            bary = np.stack([1 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], 1)
            face = hit["primitive_ids"].numpy()[idx].astype(np.int64)
            normal = shading_normals(np.asarray(vertices, np.float64), faces, uv, face, bary, normal_map)
            cos = np.clip((normal * true_normal[idx]).sum(1), -1.0, 1.0)
            angles[label].append(np.degrees(np.arccos(cos)))
    out: dict[str, Any] = {"views": len(cameras)}
    for label, parts in angles.items():
        a = np.concatenate(parts) if parts else np.zeros(0)
        out[label] = {"mean_deg": round(float(a.mean()), 2) if len(a) else None,
                      "median_deg": round(float(np.median(a)), 2) if len(a) else None, "pixels": len(a)}
    return out


def _uncapped_mesh_score(path: Path, alignment: Any, surface: GroundTruthSurface, diagonal: float) -> dict[str, Any]:
    """The mesh scored without its base cap: the flat, downward faces on the ground-truth table (z = 0). The cap is
    the studio's stated guess for a base no photo saw (marked in the manifest); a product whose real base is
    recessed (the soup can's, 4 mm) puts it out of tolerance, so the reconstructed surface is also scored alone."""
    vertices, triangles = read_mesh_arrays(path)
    tri = alignment.apply(vertices)[triangles]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    down = normal[:, 2] / np.maximum(np.linalg.norm(normal, axis=1), 1e-18) < -0.9
    on_table = tri[:, :, 2].max(axis=1) < BASE_CAP_TOLERANCE * diagonal
    kept = triangles[~(down & on_table)]
    report = surface.evaluate(sample_mesh(vertices, kept, 500_000), alignment).to_dict()
    report.update(faces=len(kept), cap_faces=int((down & on_table).sum()))
    return report


def _mesh_checks(run: Any, path: Path, alignment: Any, cameras: dict[str, PinholeCamera],
                 masks: dict[str, np.ndarray]) -> dict[str, Any]:
    """Silhouette IoU of the mesh (moved into the ground-truth frame) with the true masks, and whether it is closed."""
    vertices, triangles = read_mesh_arrays(path)
    names = [n for n in cameras if n in masks]
    checks: dict[str, Any] = {"silhouette_iou": silhouette_iou(alignment.apply(vertices), triangles,
                                                               [cameras[n] for n in names], [masks[n] for n in names])}
    mesh_stage = next((s for s in run.manifest.stages if s.name == "mesh"), None) if run.manifest else None
    if mesh_stage is not None:
        checks.update({k: mesh_stage.metrics.get(k) for k in ("boundary_edges", "base_capped", "base_area_share")})
    return checks


def read_mesh_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path))
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git": _git_state(),
    }


def _git_state() -> str:
    """The commit the pipeline code came from, and whether core/ had uncommitted changes (a shared tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "core"], cwd=REPO_ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (core/ had uncommitted changes)" if dirty else "")


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return format(value, spec)


def write_report(results: dict[str, Any], md_path: Path, json_path: Path) -> None:
    json_path.write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    m = results["machine"]
    first_command = results["command"].split("; then ")[0]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{first_command}` on {m['date']}.",
        f"Machine: {m['cpu_count']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, {m['platform']}, Python {m['python']};"
        f" load average at start {m['load_avg_at_start']} (the machine is shared: timings are indicative).",
        f"Code: commit {m.get('git', 'unknown')}.",
        *[f"Appended later: `{a['command']}` on {a['date']} at commit {a.get('git', 'unknown')}, load average "
          f"{a['load_avg_at_start']}." for a in results.get("appended", [])],
        "",
        "Poses: SfM cameras matched to ground truth by photo name, aligned by a 7-DoF similarity on the camera "
        "centres; centre error relative to the object's bounding-box diagonal. Surfaces: dense points / points "
        "sampled on the mesh moved into the ground-truth frame, cropped to the object's box enlarged by 5 %; "
        "P/R/F at tau = 0.5 % and 1 % of the box diagonal; accuracy = mean rec->GT, completeness = mean GT->rec "
        "(visible GT surface only), in millimetres.",
        "",
    ]
    wrong_done = [f"{cap['name']}/{run['preset']} (max {run['poses']['max_rotation_deg']:.1f}°)"
                  for cap in results["captures"] for run in cap.get("runs", [])
                  if run.get("status") == "done" and run.get("poses", {}).get("max_rotation_deg", 0) > SILENT_WRONG_DEG]
    lines += [f"Silently wrong (a run ended `done` with a photo placed more than {SILENT_WRONG_DEG:.0f}° wrong): "
              + (", ".join(wrong_done) if wrong_done else "none") + ".", ""]
    for cap in results["captures"]:
        lines += [f"## {cap['name']}", "", cap.get("description", ""), ""]
        if cap.get("skipped"):
            lines += [f"Skipped: {cap['skipped']}", ""]
            continue
        if "render_seconds" in cap:
            lines += [f"Rendered {cap['num_photos']} photos {cap['size']} in {cap['render_seconds']:.1f} s; "
                      f"object diagonal {1000 * cap['object_diagonal_m']:.0f} mm.", ""]
        lines += ["| preset | status | wall s | peak MB | placed | correctly placed | rot med ° | rot max ° | "
                  "centre med % | stage seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for run in cap["runs"]:
            p = run.get("poses", {})
            stages = ", ".join(f"{k} {v:.0f}" for k, v in run.get("stages", {}).items())
            lines.append(
                f"| {run['preset']} | {run.get('status', '?')} | {_fmt(run.get('wall_s'), '.0f')} | "
                f"{_fmt(run.get('peak_rss_mb'), '.0f')} | {p.get('num_registered', 0)}/{p.get('num_images', 0)} | "
                f"{_correct(p)} | {_fmt(p.get('median_rotation_deg'))} | {_fmt(p.get('max_rotation_deg'))} | "
                f"{_fmt(100 * p.get('median_center_error_rel', np.nan))} | "
                f"{stages} |")
        surface_rows = []
        for run in cap["runs"]:
            for key in _surface_keys(run):
                s = run.get(key)
                if not s:
                    continue
                if "error" in s:
                    surface_rows.append(f"| {run['preset']} | {key} | {s['error']} | | | | | | |")
                    continue
                surface_rows.append(
                    f"| {run['preset']} | {key} | {s['num_points']} | {s.get('faces', 0)} | "
                    f"{_fmt(s['precision'][0], '.2f')} / {_fmt(s['precision'][1], '.2f')} | "
                    f"{_fmt(s['recall'][0], '.2f')} / {_fmt(s['recall'][1], '.2f')} | "
                    f"{_fmt(s['fscore'][0], '.2f')} / {_fmt(s['fscore'][1], '.2f')} | "
                    f"{_fmt(1000 * s['accuracy'], '.2f')} | {_fmt(1000 * s['completeness'], '.2f')} |")
        if surface_rows:
            lines += ["", "| preset | surface | points in box | faces | precision 0.5%/1% | recall 0.5%/1% | "
                      "F 0.5%/1% | accuracy mm | completeness mm |", "|---|---|---|---|---|---|---|---|---|",
                      *surface_rows]
        mesh_rows = [f"| {run['preset']} | {_fmt(m['silhouette_iou']['mean'])} | {_fmt(m['silhouette_iou']['min'])} | "
                     f"{m.get('boundary_edges', '–')} | {'yes' if m.get('base_capped') else 'no'} |"
                     for run in cap["runs"] if (m := run.get("mesh.ply")) and "silhouette_iou" in m]
        if mesh_rows:
            lines += ["", "| preset | mesh silhouette IoU mean | min | open edges | base capped |",
                      "|---|---|---|---|---|", *mesh_rows]
        mask_rows = [f"| {run['preset']} | {_fmt(m['iou_mean'])} | {_fmt(m['iou_min'])} | "
                     f"{run.get('fusion_hull', '–')} |" for run in cap["runs"] if (m := run.get("masks"))]
        if mask_rows:
            lines += ["", "| preset | computed masks IoU with the true masks, mean | min | visual hull used |",
                      "|---|---|---|---|", *mask_rows]
        look_rows = [f"| {run['preset']} | {a['views']} | {_fmt(a.get('vertex_colours', {}).get('psnr_db'), '.2f')} | "
                     f"{_fmt(a.get('textured', {}).get('psnr_db'), '.2f')} | "
                     f"{_fmt(a.get('vertex_colours', {}).get('coverage'))} | "
                     f"{_fmt(a.get('textured', {}).get('coverage'))} |"
                     for run in cap["runs"] if (a := run.get("appearance"))]
        if look_rows:
            lines += ["", "Novel views (held out, rendered from the models after the camera alignment; PSNR over the "
                      "true mask's covered pixels):", "",
                      "| preset | views | PSNR vertex colours dB | PSNR textured dB | coverage vertex | "
                      "coverage textured |", "|---|---|---|---|---|---|", *look_rows]
            if ceiling := cap.get("static_texture_ceiling"):
                lines += ["", f"On the true surface, the photos blended as the bake blends them reach "
                          f"{ceiling['blended_psnr_db']:.2f} dB in these views (a static texture without the mesh's "
                          f"error), the photo nearest each view {ceiling['nearest_psnr_db']:.2f} dB (where the two "
                          "part, the lights turn with the product and no static texture follows the shading)."]
        for run in cap["runs"]:
            if run.get("failure_reason"):
                lines += ["", f"{run['preset']}: {run['failure_reason']}"]
        lines.append("")
    lines += growth_table(results["captures"])
    kept = kept_sections(md_path)
    md_path.write_text("\n".join(lines) + ("\n" + "\n\n".join(kept.values()) + "\n" if kept else ""), encoding="utf-8")


def growth_table(captures: list[dict[str, Any]]) -> list[str]:
    """Time and peak memory against the number of photos: each capture ``NAME_<photos>`` beside ``NAME``, per preset
    (the report's lines; none when no such family was run)."""
    by_name = {cap["name"]: cap for cap in captures if cap.get("runs")}
    families: dict[str, list[dict[str, Any]]] = {}
    for name, cap in by_name.items():
        base = re.sub(r"_\d+$", "", name)
        if base != name and base in by_name:
            families.setdefault(base, [by_name[base]]).append(cap)
    lines: list[str] = []
    for base, members in families.items():
        lines += [f"## Growth with the number of photos ({base})", "",
                  "| preset | photos | status | wall s | peak MB | sfm s | depth s | seconds per photo | "
                  "mesh F 0.5%/1% |",
                  "|---|---|---|---|---|---|---|---|---|"]
        rows = [(run["preset"], cap.get("num_photos", 0), run) for cap in members for run in cap["runs"]]
        for preset, photos, run in sorted(rows, key=lambda r: (r[0], r[1])):
            stages, mesh = run.get("stages", {}), run.get("mesh.ply") or {}
            f = mesh.get("fscore") or [None, None]
            wall = run.get("wall_s")
            per_photo = wall / photos if wall and photos else None
            lines.append(f"| {preset} | {photos} | {run.get('status', '?')} | {_fmt(wall, '.0f')} | "
                         f"{_fmt(run.get('peak_rss_mb'), '.0f')} | {_fmt(stages.get('sfm'), '.0f')} | "
                         f"{_fmt(stages.get('depth'), '.0f')} | {_fmt(per_photo, '.1f')} | "
                         f"{_fmt(f[0], '.2f')} / {_fmt(f[1], '.2f')} |")
        lines.append("")
    return lines


_SECTION = re.compile(r"<!-- begin: ([\w-]+) -->.*?<!-- end: \1 -->", re.S)
"""A section of RESULTS.md written by another benchmark (benchmarks/throughput.py); kept when this one rewrites."""


def kept_sections(md_path: Path) -> dict[str, str]:
    """The other benchmarks' sections of ``md_path`` by name."""
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    return {m[1]: m[0] for m in _SECTION.finditer(text)}


def write_section(md_path: Path, name: str, body: str) -> None:
    """Put ``body`` into ``md_path`` as the section ``name`` (replacing an earlier one, kept by write_report)."""
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else "# Benchmark results\n"
    block = f"<!-- begin: {name} -->\n{body.strip()}\n<!-- end: {name} -->"
    old = kept_sections(md_path).get(name)
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    md_path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the captures and runs of ``new`` added; a run of the same capture and preset is replaced."""
    merged = dict(old)
    merged["command"] = f"{old.get('command', '')}; then {new['command']}"
    # The code may have moved between invocations (a shared tree): keep when and at which commit each ran.
    merged["appended"] = [*old.get("appended", []), {"command": new["command"], **new["machine"]}]
    captures = {c["name"]: c for c in old.get("captures", [])}
    for cap in new["captures"]:
        if cap["name"] in captures and not cap.get("skipped"):
            runs = {r["preset"]: r for r in captures[cap["name"]].get("runs", [])}
            runs.update({r["preset"]: r for r in cap["runs"]})
            captures[cap["name"]] = {**captures[cap["name"]], **cap, "runs": list(runs.values())}
        elif cap["name"] not in captures:
            captures[cap["name"]] = cap
    merged["captures"] = list(captures.values())
    return merged


def bench_synthetic(capture: SyntheticCapture, presets: list[str], quick: bool, out_root: Path,
                    rerender: bool, variants: list[tuple[str, list[str]]], rescore: bool = False) -> dict[str, Any]:
    """Render (once) and reconstruct one capture with every preset and pipeline-argument variant (``rescore``:
    score the earlier run of a preset again instead, when it finished and its measurement was recorded).

    A variant is (label, extra CLI arguments); the argument ``{gt_depth}`` stands for the capture's ground-truth
    depth folder (an oracle depth prior).
    """
    result: dict[str, Any] = {"name": capture.name, "description": capture.description, "runs": []}
    if capture.needs is not None and not capture.needs.exists():
        result["skipped"] = f"source data {capture.needs} is not there"
        print(f"skip {capture.name}: {result['skipped']}")
        return result
    spec = capture.spec(quick)
    cap_dir = out_root / "captures" / (capture.name + ("_quick" if quick else ""))
    if rerender or not (cap_dir / "capture.json").exists():
        print(f"render {capture.name} -> {cap_dir}")
        gt = render_capture(spec, cap_dir)
    else:
        gt = load_ground_truth(cap_dir)
    summary = json.loads((cap_dir / "capture.json").read_text(encoding="utf-8"))
    result.update(num_photos=len(gt.image_names), size=f"{spec.width}x{spec.height}",
                  render_seconds=summary.get("render_seconds", float("nan")), object_diagonal_m=gt.object_diagonal)
    surface = GroundTruthSurface.from_mesh(gt.mesh_path, gt.camera_list())
    novel = cap_dir / NOVEL_DIR
    if rerender or not (novel / "cameras.json").exists():  # held-out views for the appearance measure
        render_novel_views(spec, cap_dir)
        (novel / STATIC_TEXTURE_CEILING).unlink(missing_ok=True)
    result["static_texture_ceiling"] = static_texture_ceiling(gt, novel)
    for preset, (label, extra) in [(p, v) for p in presets for v in variants]:
        name = preset + (f"+{label}" if label else "")
        run_dir = out_root / "runs" / f"{cap_dir.name}_{name}"
        measurement = previous_measurement(run_dir) if rescore else None
        if measurement is None:
            _clear(run_dir)
            print(f"pipeline {capture.name} / {name} ...", flush=True)
            extra = [a.replace("{gt_depth}", str(cap_dir / "depth")) for a in extra]
            measurement = run_pipeline_cli(gt.image_dir, run_dir, preset, extra)
        else:
            print(f"rescoring the earlier run {run_dir}", flush=True)
        run = {"preset": name, "returncode": measurement.returncode, "wall_s": measurement.wall_s,
               "peak_rss_mb": measurement.peak_rss_mb}
        masks = {n: gt.load_mask(n) for n in gt.image_names if n in gt.mask_paths}
        run.update(evaluate_run(run_dir, gt.cameras, gt.object_diagonal, surface, masks, novel))
        if measurement.returncode != 0 and not run.get("failure_reason"):
            last_lines = measurement.stderr_tail.strip().splitlines()
            run["failure_reason"] = last_lines[-1] if last_lines else f"exit code {measurement.returncode}"
        _print_run(capture.name, run)
        result["runs"].append(run)
    return result


def bench_real(photo_set: RealPhotoSet, preset: str, out_root: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"name": photo_set.name, "description": "public photos with known cameras (poses only)",
                              "runs": []}
    if not photo_set.image_dir.exists():
        result["skipped"] = f"{photo_set.image_dir} is not there"
        print(f"skip {photo_set.name}: {result['skipped']}")
        return result
    truth = photo_set.read_cameras()
    centres = np.array([c.center for c in truth.values()])
    scale = float(np.linalg.norm(centres.max(0) - centres.min(0)))  # no object box: relative to the camera spread
    photos = out_root / "photos" / photo_set.name
    if not photos.exists():  # only the images with cameras (the folders also hold text files)
        photos.mkdir(parents=True)
        for name in truth:
            (photos / name).symlink_to(photo_set.image_dir / name)
    run_dir = out_root / "runs" / f"{photo_set.name}_{preset}"
    _clear(run_dir)
    print(f"pipeline {photo_set.name} / {preset} ...", flush=True)
    measurement = run_pipeline_cli(photos, run_dir, preset)
    run = {"preset": preset, "returncode": measurement.returncode, "wall_s": measurement.wall_s,
           "peak_rss_mb": measurement.peak_rss_mb, "centre_error_relative_to": "camera spread"}
    run.update(evaluate_run(run_dir, truth, scale, None))
    _print_run(photo_set.name, run)
    result["runs"].append(run)
    return result


def _clear(run_dir: Path) -> None:
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)


def _surface_keys(run: dict[str, Any]) -> list[str]:
    """The surfaces scored in ``run``: today's artefact keys, then older names kept in results.json (dense_points,
    mesh, ...), so that rewriting RESULTS.md after --append does not drop the tables of earlier runs."""
    older = [k for k, v in run.items() if k not in SURFACE_ARTIFACTS and isinstance(v, dict) and "fscore" in v]
    return [*SURFACE_ARTIFACTS, *older]


def _correct(poses: dict[str, Any]) -> str:
    """Photos placed within CORRECT_ROTATION_DEG of the truth, of all ('–' for results from before it was counted)."""
    return f"{poses['num_correct']}/{poses.get('num_images', 0)}" if "num_correct" in poses else "–"


def _print_run(name: str, run: dict[str, Any]) -> None:
    p = run.get("poses", {})
    line = (f"  {name}/{run['preset']}: {run.get('status')} in {run['wall_s']:.0f} s, peak {run['peak_rss_mb']:.0f} MB,"
            f" placed {p.get('num_registered')}/{p.get('num_images')}, correctly placed {_correct(p)},"
            f" rot {_fmt(p.get('median_rotation_deg'))} deg (max {_fmt(p.get('max_rotation_deg'))})")
    for key in SURFACE_ARTIFACTS:
        s = run.get(key)
        if s and "fscore" in s:
            line += f", {key} F@1% {s['fscore'][1]:.3f}"
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--captures", default=None,
                        help=f"comma-separated, from {', '.join([*SYNTHETIC, *REAL])} "
                             f"(default: {', '.join([*DEFAULT_CAPTURES, *REAL])})")
    parser.add_argument("--presets", default="preview,balanced", help="comma-separated presets")
    parser.add_argument("--quick", action="store_true",
                        help="12 photos of 640x480, preview preset, procedural captures only (unless --captures)")
    parser.add_argument("--pipeline-args", default="",
                        help="extra arguments for core.pipeline on the synthetic captures, e.g. '--no-depth-prior'")
    parser.add_argument("--tag", default="", help="label of runs made with --pipeline-args (shown after the preset)")
    parser.add_argument("--gt-depth-prior", action="store_true",
                        help="also run every synthetic capture with its ground-truth depth as the depth prior")
    parser.add_argument("--only-gt-depth-prior", action="store_true",
                        help="with --gt-depth-prior: skip the runs without it (e.g. to --append them to a report)")
    parser.add_argument("--append", action="store_true",
                        help="add these results to the existing results.json (same capture: runs are merged by preset)")
    parser.add_argument("--rerender", action="store_true", help="render the captures again even if present")
    parser.add_argument("--rescore", action="store_true",
                        help="score finished earlier runs again (their recorded time and memory) instead of running")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="work folder (git-ignored)")
    parser.add_argument("--report", type=Path, default=BENCH_DIR,
                        help="folder for RESULTS.md and results.json (default: benchmarks/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.captures:
        names = [n.strip() for n in args.captures.split(",") if n.strip()]
        names = [m for n in names for m in (PLAIN_CAPTURES if n == "plain" else (n,))]
    else:
        names = list(QUICK_CAPTURES) if args.quick else [*DEFAULT_CAPTURES, *REAL]
    unknown = [n for n in names if n not in SYNTHETIC and n not in REAL]
    if unknown:
        parser.error(f"unknown capture(s) {', '.join(unknown)}")
    presets = ["preview"] if args.quick and args.presets == parser.get_default("presets") else \
        [p.strip() for p in args.presets.split(",") if p.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [(args.tag or ("custom" if args.pipeline_args else ""), shlex.split(args.pipeline_args))]
    if args.gt_depth_prior:
        oracle = ("gt-depth-prior", [*shlex.split(args.pipeline_args), "--depth-prior-dir", "{gt_depth}"])
        variants = [oracle] if args.only_gt_depth_prior else [*variants, oracle]

    results: dict[str, Any] = {"command": "python -m benchmarks.run " + " ".join(argv if argv is not None
                                                                                 else sys.argv[1:]),
                               "machine": machine_info(), "presets": presets, "quick": args.quick, "captures": []}
    args.report.mkdir(parents=True, exist_ok=True)
    previous = None
    if args.append and (args.report / "results.json").exists():
        previous = json.loads((args.report / "results.json").read_text(encoding="utf-8"))
    for name in names:
        if name in SYNTHETIC:
            results["captures"].append(bench_synthetic(SYNTHETIC[name], presets, args.quick, args.out, args.rerender,
                                                       variants, args.rescore))
        else:
            results["captures"].append(bench_real(REAL[name], presets[0], args.out))
        # Written after every capture: a long benchmark stopped half-way keeps what it measured.
        write_report(merge_results(previous, results) if previous else results, args.report / "RESULTS.md",
                     args.report / "results.json")
        print(f"wrote {args.report / 'RESULTS.md'} and {args.report / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
