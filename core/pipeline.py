"""Runs the stages of a run in order, writing the manifest when the run starts and after every stage.

    run_pipeline(photos, run_dir, config)        several photos -> a 3D model (MULTI_VIEW_STAGES)
    run_relief(photo, run_dir, config)           one photo -> a 3D relief (RELIEF_STAGES)
    run_sticker(photo, run_dir, config, theme)   one photo -> a 3D cartoon sticker (STICKER_STAGES)

The command line (``python -m core.pipeline``, code in core/cli/run.py) and the job worker (core/jobs/worker.py)
call the same ``run_stages``. Stages receive the typed results of the stages before them (``RunState``) and report
progress through a ``StageProgress``; listeners receive ``ProgressEvent``s.

Resuming (``resume=True``: a job whose worker died, ``--resume`` on the command line): every stage has a fingerprint
of what it is given (its config sections, the files it reads, the fingerprint of the stage before it). A stage whose
record in the earlier manifest is ``done`` with the same fingerprint, and whose artefacts still have their recorded
size and sha256, is not run again: its ``load`` rebuilds its typed result from those artefacts and its record. The
first stage that cannot be reused runs, and so does every stage after it. A stage is recorded ``done`` only in the
same atomic manifest write that records its artefacts' checksums, so a worker killed at any moment leaves either a
finished stage or one that runs again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core import advice
from core.artifacts import REGISTRY, Artifact, checksum
from core.config import PipelineConfig, preset_config
from core.manifest import (
    MANIFEST_NAME,
    ArtifactRecord,
    Finding,
    ManifestError,
    RunManifest,
    RunMode,
    StageRecord,
    load_manifest,
)
from core.progress import Cancelled, ProgressEvent, ProgressListener, StageProgress, ignore_events
from core.stages import StageOutput

if TYPE_CHECKING:  # the stages import their heavy libraries (pycolmap, Open3D, torch) only when a run needs them
    from core.scene import SparseScene
    from core.stages.asset import AssetResult
    from core.stages.capture import CaptureResult
    from core.stages.depth import DepthMaps
    from core.stages.fusion import FusedCloud
    from core.stages.isolation import IsolatedCloud
    from core.stages.masks import MasksResult
    from core.stages.mesh import MeshResult
    from core.stages.relief import ReliefResult
    from core.stages.sfm import SfmResult
    from core.stages.sticker import StickerResult
    from core.stages.texture import TextureResult

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """What one run was given and what its finished stages produced (in memory; the manifest holds the record)."""

    run_dir: Path
    config: PipelineConfig
    sources: list[Path]
    """The user's photo files."""
    names: list[str]
    """The user's names for them (display only)."""
    capture: CaptureResult | None = None
    sfm: SfmResult | None = None
    scene: SparseScene | None = None
    """The placed photos as pinhole cameras with the sparse points (loaded once SfM is done)."""
    masks: MasksResult | None = None
    depth: DepthMaps | None = None
    depth_prior: DepthMaps | None = None
    fusion: FusedCloud | None = None
    isolation: IsolatedCloud | None = None
    mesh: MeshResult | None = None
    texture: TextureResult | None = None
    relief: ReliefResult | None = None
    sticker: StickerResult | None = None
    asset: AssetResult | None = None
    """The shop-ready asset (after texture, reading ``state.texture`` where that stage exists)."""
    previous: RunManifest | None = field(default=None, repr=False)
    """The record of an earlier attempt at this run (resume), whose finished stages may be reused."""


def _reads_nothing(state: RunState) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    name: str
    """The stage's module in core/stages, its config section, run folder and artefact prefix."""
    label: str
    """What the user sees while it runs."""
    weight: float
    """Share of a typical run's time, for the overall progress bar and ETA."""
    run: Callable[[RunState, StageProgress], StageOutput]
    load: Callable[[RunState, StageRecord], StageOutput] | None = None
    """Rebuilds the stage's typed result from its artefacts and record (a resumed run); None: always run again."""
    sections: tuple[str, ...] = ()
    """Config sections the stage reads besides its own (they are part of its fingerprint)."""
    reads: Callable[[RunState], Iterable[Path]] = _reads_nothing
    """Files from outside the run folder the stage reads (their sha256 is part of its fingerprint)."""


def _capture(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.capture import run_capture

    return run_capture(state.sources, state.run_dir, state.config.capture, progress, state.names)


def _load_capture(state: RunState, record: StageRecord) -> StageOutput:
    from core.artifacts import CAPTURE_IMAGES
    from core.stages.capture import CaptureResult

    assert state.previous is not None
    metrics = record.metrics
    return CaptureResult(photos=copy.deepcopy(state.previous.photos), image_dir=CAPTURE_IMAGES.path(state.run_dir),
                         shared_camera=metrics["cameras"] <= 1 and metrics["resolutions"] <= 1,
                         focal_px=metrics.get("exif_focal_px"))


def _capture_reads(state: RunState) -> list[Path]:
    return state.sources


def _sfm(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.sfm import run_sfm

    assert state.capture is not None
    result = run_sfm(state.capture, state.run_dir, state.config.sfm, progress)
    _place_photos(state, result)
    return result


def _load_sfm(state: RunState, record: StageRecord) -> StageOutput:
    import pycolmap

    from core.artifacts import SFM_MODEL, SFM_UNDISTORTED
    from core.photos import PhotoSet
    from core.stages.sfm import SfmResult, route_colmap_log

    assert state.capture is not None
    route_colmap_log(state.run_dir)
    photos = PhotoSet(sorted(state.capture.accepted, key=lambda p: p.working))  # as run_sfm orders them
    model_dir = SFM_MODEL.path(state.run_dir)
    model = pycolmap.Reconstruction(str(model_dir))
    placed = {model.images[i].name for i in model.reg_image_ids()}
    result = SfmResult(metrics=record.metrics, model_dir=model_dir, undistorted_dir=SFM_UNDISTORTED.path(state.run_dir),
                       photos=photos, registered=[p for p in photos if p.working in placed])
    _place_photos(state, result)
    return result


def _place_photos(state: RunState, result: SfmResult) -> None:
    """The placed photos as pinhole cameras with the sparse points, for the dense stages."""
    from core.scene import load_sparse_scene

    if result.ok and result.undistorted_dir is not None:
        state.scene = load_sparse_scene(result.undistorted_dir, result.photos)


def _masks(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.masks import find_supplied_masks, run_masks

    assert state.scene is not None
    folder = state.config.masks.supplied_dir
    # The user names masks like the photo files (the app stores them under the stored uploads' names).
    supplied = find_supplied_masks(Path(folder), state.scene.photos, state.sources) if folder else None
    result = run_masks(state.scene, state.run_dir, state.config.masks, progress, supplied)
    if folder and not Path(folder).is_dir():
        from core.advice import masks_no_folder

        result.findings.insert(0, masks_no_folder(folder))
    return result


def _masks_reads(state: RunState) -> list[Path]:
    from core.stages.masks import find_supplied_masks

    folder = state.config.masks.supplied_dir
    if not folder or state.scene is None:
        return []
    return sorted(find_supplied_masks(Path(folder), state.scene.photos, state.sources).values())


def _load_masks(state: RunState, record: StageRecord) -> StageOutput:
    from core.artifacts import MASKS_IMAGES
    from core.stages.masks import MasksResult, SceneGeometry

    assert state.scene is not None
    if not record.metrics.get("masks"):  # the stage was off
        return MasksResult(metrics=record.metrics, findings=record.findings)
    per_photo = record.metrics["per_photo"]
    photos = list(state.scene.photos)
    frame = SceneGeometry.from_scene(state.scene).product_frame()
    frame.update({k: float(record.metrics[k]) for k in ("product_radius", "product_height") if k in record.metrics})
    return MasksResult(metrics=record.metrics, findings=record.findings, artifacts=[MASKS_IMAGES],
                       mask_dir=MASKS_IMAGES.path(state.run_dir).resolve(), photos=photos,
                       confidence={p.working: float(per_photo[p.name]["confidence"]) for p in photos},
                       supplied={p.working for p in photos if per_photo[p.name]["supplied"]}, **frame)


def _depth(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.depth import run_depth

    assert state.scene is not None
    masks = state.masks.search_masks(state.scene) if state.masks is not None else None
    return run_depth(state.scene, state.run_dir, state.config.depth, progress, masks)


def _load_depth(state: RunState, record: StageRecord) -> StageOutput:
    from core.artifacts import DEPTH_MAPS
    from core.stages.depth import DepthMaps, load_depth_record

    assert state.scene is not None
    folder = DEPTH_MAPS.path(state.run_dir)
    files = [folder / f"{photo.stem}.npz" for photo in state.scene.photos]
    return DepthMaps(maps=[load_depth_record(path) for path in files if path.is_file()])


def _depth_prior(state: RunState, progress: StageProgress) -> StageOutput:
    from core.advice import DEPTH_PRIOR_NO_FOLDER
    from core.stages.depth_prior import run_depth_prior
    from core.stages.depth_prior.supplied import copy_supplied_depth

    assert state.scene is not None and state.depth is not None and state.capture is not None
    depth_dir = Path(state.config.depth_prior.depth_dir) if state.config.depth_prior.depth_dir else None
    supplied = None
    if depth_dir is not None and depth_dir.is_dir():
        # The user names depth maps like the photo files; the run's copies are named like the working copies.
        supplied = copy_supplied_depth(depth_dir, state.capture.accepted, state.sources, state.run_dir)
    result = run_depth_prior(state.scene, state.depth, state.run_dir, state.config.depth_prior, progress, supplied)
    if depth_dir is not None and supplied is None:
        result.findings.insert(0, DEPTH_PRIOR_NO_FOLDER)
    return result


def _load_depth_prior(state: RunState, record: StageRecord) -> StageOutput:
    from core.artifacts import DEPTH_PRIOR_MAPS
    from core.stages.depth import DepthMapRecord, DepthMaps

    assert state.depth is not None
    folder = DEPTH_PRIOR_MAPS.path(state.run_dir)
    maps = []
    for old in state.depth.maps:  # as run_depth_prior: a merged map where the prior was used, else the stereo one
        merged = folder / f"{old.photo.stem}.npz"
        maps.append(DepthMapRecord(old.photo, old.camera, merged.resolve(), old.source_views, old.depth_range)
                    if merged.is_file() else old)
    return DepthMaps(maps=maps)


def _depth_prior_reads(state: RunState) -> list[Path]:
    depth_dir = state.config.depth_prior.depth_dir
    return _visible_files(Path(depth_dir)) if depth_dir else []


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def _fusion(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.fusion import run_fusion

    assert state.depth_prior is not None and state.scene is not None
    silhouettes = state.masks.silhouettes(state.scene) if state.masks is not None else None
    return run_fusion(state.depth_prior, state.run_dir, state.config.fusion, progress, silhouettes)


def _read_cloud(path: Path):
    """Points, uint8 colours and normals of a PLY the fusion or isolation stage wrote."""
    import numpy as np
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    colors = np.clip(np.asarray(cloud.colors) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(cloud.points).copy(), colors, np.asarray(cloud.normals).copy()


def _load_fusion(state: RunState, record: StageRecord) -> StageOutput:
    import numpy as np

    from core.artifacts import FUSION_POINTS
    from core.stages.fusion import FusedCloud

    assert state.depth_prior is not None
    points, colors, normals = _read_cloud(FUSION_POINTS.path(state.run_dir))
    metrics = record.metrics
    carved = bool(metrics.get("silhouettes"))
    return FusedCloud(points=points, colors=colors, normals=normals, cameras=[m.camera for m in state.depth_prior.maps],
                      voxel_size=float(metrics["voxel_size"]), silhouettes=carved,
                      support=np.array(metrics["support"]) if metrics.get("support") else None,
                      focus=np.array(metrics["focus"]) if carved and metrics.get("focus") else None)


def _isolation(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.isolation import run_isolation

    assert state.fusion is not None and state.scene is not None
    return run_isolation(state.fusion, state.scene, state.run_dir, state.config.isolation, progress)


def _load_isolation(state: RunState, record: StageRecord) -> StageOutput:
    import numpy as np

    from core.artifacts import ISOLATION_FRAME, ISOLATION_POINTS
    from core.stages.isolation import IsolatedCloud

    assert state.fusion is not None
    points, colors, normals = _read_cloud(ISOLATION_POINTS.path(state.run_dir))
    frame = json.loads(ISOLATION_FRAME.path(state.run_dir).read_text(encoding="utf-8"))
    return IsolatedCloud(points=points, colors=colors, normals=normals, cameras=state.fusion.cameras,
                         voxel_size=state.fusion.voxel_size, up=np.array(frame["up"]), focus=np.array(frame["focus"]),
                         plane=None if frame["plane"] is None else np.array(frame["plane"]),
                         silhouettes=state.fusion.silhouettes, support=state.fusion.support)


def _mesh(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.mesh import run_mesh

    assert state.isolation is not None and state.scene is not None
    trusted = state.masks.trusted_masks(state.scene) if state.masks is not None and state.masks.ok else None
    return run_mesh(state.isolation, state.run_dir, state.config.mesh, progress, trusted)


def _load_mesh(state: RunState, record: StageRecord) -> StageOutput:
    import open3d as o3d

    from core.artifacts import MESH_PLY
    from core.stages.mesh import MeshResult

    return MeshResult(metrics=record.metrics, mesh=o3d.io.read_triangle_mesh(str(MESH_PLY.path(state.run_dir))))


def _texture(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.texture import run_texture

    assert state.mesh is not None and state.scene is not None
    return run_texture(state.mesh, state.scene, state.masks, state.run_dir, state.config.texture, progress)


def _load_texture(state: RunState, record: StageRecord) -> StageOutput:
    from core.stages.texture import TextureResult, load_textured

    if not record.metrics.get("textured"):  # the stage was off
        return TextureResult(metrics=record.metrics, findings=record.findings)
    return load_textured(state.run_dir)


def _asset(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.asset import run_asset

    assert state.mesh is not None
    # The texture stage's result where that stage runs; else the asset bakes the mesh's vertex colours itself.
    texture = getattr(state, "texture", None)
    return run_asset(texture, state.mesh, state.isolation, state.scene, state.run_dir, state.config.asset, progress,
                     state.masks, photos=state.capture.photos if state.capture is not None else (),
                     sfm_model=state.sfm.model_dir if state.sfm is not None else None)


def _load_asset(state: RunState, record: StageRecord) -> StageOutput:
    from core.stages.asset import load_asset

    return load_asset(state.run_dir)


def _relief_capture(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.capture import run_capture

    return run_capture(state.sources, state.run_dir, state.config.capture, progress, state.names, min_photos=1)


def _relief(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.depth_prior.supplied import find_depth_file
    from core.stages.relief import run_relief

    assert state.capture is not None
    record = next(p for p in state.capture.photos if p.status == "accepted")
    config = state.config
    depth_dir = config.depth_prior.depth_dir
    depth_file = find_depth_file(Path(depth_dir), state.sources[record.index].name) if depth_dir else None
    # The stored original (EXIF intact) rather than the working copy: the relief reads the focal length itself.
    return run_relief(state.run_dir / record.original, state.run_dir, config.relief, config.depth_prior,
                      config.capture, progress, depth_file=depth_file, name=record.name)


def _relief_reads(state: RunState) -> list[Path]:
    return [*state.sources, *_depth_prior_reads(state)]


def _sticker(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.sticker import run_sticker as make_sticker

    assert state.capture is not None
    record = next(p for p in state.capture.photos if p.status == "accepted")
    config = state.config
    return make_sticker(state.run_dir / record.original, state.run_dir, config.sticker, config.depth_prior,
                        config.capture, progress, name=record.name)


def _load_sticker(state: RunState, record: StageRecord) -> StageOutput:
    from core.stages.sticker import StickerResult

    # The sticker's files are its result (nothing later reads it in memory); the pipeline restores its record.
    return StickerResult()


def _sticker_reads(state: RunState) -> list[Path]:
    return state.sources


MULTI_VIEW_STAGES: list[Stage] = [
    Stage("capture", "Checking photos", 0.03, _capture, _load_capture, reads=_capture_reads),
    Stage("sfm", "Placing cameras (structure from motion)", 0.30, _sfm, _load_sfm),
    Stage("masks", "Finding the product's outline in every photo", 0.08, _masks, _load_masks, reads=_masks_reads),
    Stage("depth", "Estimating depth per photo (multi-view stereo)", 0.35, _depth, _load_depth),
    Stage("depth_prior", "Adding the monocular depth prior", 0.05, _depth_prior, _load_depth_prior,
          reads=_depth_prior_reads),
    Stage("fusion", "Fusing depth maps into a point cloud", 0.10, _fusion, _load_fusion),
    Stage("isolation", "Separating the product from the background", 0.04, _isolation, _load_isolation),
    Stage("mesh", "Building and exporting the mesh", 0.13, _mesh, _load_mesh),
    Stage("texture", "Texturing the model from the photos", 0.06, _texture, _load_texture),
    Stage("asset", "Making the shop-ready asset (GLB, USDZ, marketplace checks)", 0.05, _asset, _load_asset),
]
RELIEF_STAGES: list[Stage] = [
    Stage("capture", "Checking the photo", 0.05, _relief_capture, _load_capture, reads=_capture_reads),
    Stage("relief", "Turning the photo into a 3D relief", 0.95, _relief, sections=("depth_prior", "capture"),
          reads=_relief_reads),
]
STICKER_STAGES: list[Stage] = [
    Stage("capture", "Checking the photo", 0.05, _relief_capture, _load_capture, reads=_capture_reads),
    Stage("sticker", "Turning the photo into a 3D cartoon sticker", 0.95, _sticker, _load_sticker,
          sections=("depth_prior", "capture"), reads=_sticker_reads),
]
MODES: dict[RunMode, list[Stage]] = {"multi_view": MULTI_VIEW_STAGES, "relief": RELIEF_STAGES,
                                     "sticker": STICKER_STAGES}


def stage_label(name: str, mode: RunMode = "multi_view") -> str:
    """What the user reads for a stage: its label, else the name made readable."""
    labels = {s.name: s.label for s in MODES.get(mode, MULTI_VIEW_STAGES)}
    return labels.get(name) or name.replace("_", " ").capitalize()


def run_pipeline(photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
                 listener: ProgressListener = ignore_events, names: list[str] | None = None,
                 run_id: str | None = None, resume: bool = False) -> RunManifest:
    """Reconstruct a product from several photos into ``run_dir``; returns the final run record."""
    return run_stages("multi_view", photos, run_dir, config, listener, names, run_id, resume)


def run_relief(photo: Path, run_dir: Path, config: PipelineConfig | None = None,
               listener: ProgressListener = ignore_events, name: str | None = None,
               run_id: str | None = None, resume: bool = False) -> RunManifest:
    """Turn one photo into a depth relief (depth -> point cloud -> mesh) in ``run_dir``."""
    return run_stages("relief", [photo], run_dir, config, listener, [name] if name else None, run_id, resume)


def run_sticker(photo: Path, run_dir: Path, config: PipelineConfig | None = None,
                listener: ProgressListener = ignore_events, name: str | None = None,
                run_id: str | None = None, resume: bool = False, *, theme: str | None = None) -> RunManifest:
    """Turn one photo into a die-cut cartoon sticker (PNG, WebP) and a 3D sticker (GLB) in ``run_dir``.

    ``theme`` (free text or a theme's name) replaces ``config.sticker.theme``; it is matched to the nearest theme.
    """
    config = config or preset_config("balanced")
    if theme is not None:
        config = config.with_changes({"sticker": {"theme": theme}})
    return run_stages("sticker", [photo], run_dir, config, listener, [name] if name else None, run_id, resume)


def run_stages(mode: RunMode, photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
               listener: ProgressListener = ignore_events, names: list[str] | None = None,
               run_id: str | None = None, resume: bool = False, *, stages: list[Stage] | None = None) -> RunManifest:
    """Run the stages of ``mode`` on ``photos`` into ``run_dir``; returns the final run record.

    Never raises for bad input or a capture that cannot be reconstructed: the manifest's ``status`` and
    ``failure_reason`` say what happened. ``Cancelled`` raised by ``listener`` ends the run as cancelled.
    ``run_id`` is the job's id when the run belongs to one (one id per run). With ``resume``, finished stages of an
    earlier attempt in ``run_dir`` whose inputs and artefacts are unchanged are reused (module docstring).
    ``stages`` replaces the mode's stages (a part of the pipeline, or the job tests' timed stand-ins).
    """
    stages = stages or MODES[mode]
    config = config or preset_config("balanced")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_record(run_dir) if resume else None
    manifest = RunManifest.new(config.to_dict(), mode=mode, run_id=run_id or (previous.run_id if previous else None))
    if previous is not None:
        manifest.created = previous.created
    state = RunState(run_dir, config, [Path(p) for p in photos], names or [Path(p).name for p in photos],
                     previous=previous)
    log_handler = _attach_run_log(run_dir)
    total_weight = sum(s.weight for s in stages)
    done_weight = 0.0
    fingerprint = hashlib.sha256(mode.encode()).hexdigest()
    reusing = previous is not None
    manifest.save(run_dir)
    try:
        for index, stage in enumerate(stages):
            fingerprint = _fingerprint(stage, state, fingerprint)
            base = done_weight

            def stage_progress(fraction: float, message: str, _stage: Stage = stage, _base: float = base) -> None:
                fraction = min(max(fraction, 0.0), 1.0)
                listener(ProgressEvent(_stage.name, _stage.label, fraction,
                                       (_base + _stage.weight * fraction) / total_weight, message))

            if reusing:
                reused = _reuse(stage, state, manifest, fingerprint)
                if reused is not None:
                    setattr(state, stage.name, reused)
                    done_weight += stage.weight
                    stage_progress(1.0, "kept from the earlier attempt")
                    continue
                reusing = False  # this stage runs, so every later one runs too
                _clear_stage_folders(run_dir, stages[index:])
            record = StageRecord(stage.name, inputs_sha256=fingerprint)
            manifest.stages.append(record)
            manifest.save(run_dir)
            _clear_stage_folders(run_dir, [stage])  # nothing of a killed attempt may mix into this one

            logger.info("stage %s started", stage.name)
            started = time.perf_counter()
            try:
                stage_progress(0.0, "starting")  # every stage shows up, even one that has nothing to do
                output = stage.run(state, stage_progress)
            except Cancelled:
                record.status, record.seconds = "failed", round(time.perf_counter() - started, 2)
                record.findings.append(Finding("warning", "The run was cancelled during this stage."))
                manifest.status, manifest.failure_reason = "cancelled", "Cancelled by the user."
                return manifest
            except Exception as exc:  # a bug, not bad input: keep the trace for us, a sentence for the user
                record.status, record.seconds = "failed", round(time.perf_counter() - started, 2)
                logger.error("stage %s crashed:\n%s", stage.name, traceback.format_exc())
                reason = advice.cannot_write(exc) if advice.is_write_failure(exc) else (  # type: ignore[arg-type]
                    f"Internal error in the '{stage.label}' stage ({type(exc).__name__}: {exc}). The photos and "
                    "finished stages are kept; details are in logs/run.log. Please report it.")
                record.findings.append(Finding("error", reason))
                manifest.status, manifest.failure_reason = "failed", reason
                return manifest
            record.seconds = round(time.perf_counter() - started, 2)
            setattr(state, stage.name, output)
            _record_output(manifest, record, output, run_dir)
            if stage.name == "capture":
                manifest.photos = output.photos  # type: ignore[attr-defined]
            done_weight += stage.weight
            logger.info("stage %s %s in %.1f s", stage.name, record.status, record.seconds)
            if not output.ok:
                manifest.status, manifest.failure_reason = "failed", output.failure
                return manifest
            manifest.save(run_dir)
        manifest.status = "done"
        listener(ProgressEvent(stages[-1].name, "Finished", 1.0, 1.0, "Finished"))
        return manifest
    finally:
        manifest.save(run_dir)
        logging.getLogger().removeHandler(log_handler)
        log_handler.close()


def _previous_record(run_dir: Path) -> RunManifest | None:
    """The record of an earlier attempt in ``run_dir``, or None (none there, or damaged: then nothing is reused)."""
    if not (run_dir / MANIFEST_NAME).is_file():
        return None
    try:
        return load_manifest(run_dir)
    except (OSError, ManifestError) as exc:
        logger.warning("the earlier record in %s cannot be read (%s); every stage runs again", run_dir, exc)
        return None


def _fingerprint(stage: Stage, state: RunState, before: str) -> str:
    """sha256 of what ``stage`` is given: the fingerprint of the stage before it (which covers everything that
    stage was given), its config sections and the files from outside the run it reads."""
    config = state.config.to_dict()
    digest = hashlib.sha256(f"{before}\n{stage.name}\n".encode())
    sections = {name: config[name] for name in (stage.name, *stage.sections) if name in config}
    digest.update(json.dumps(sections, sort_keys=True, default=str).encode())
    if stage.name == "capture":  # the user's names are shown in every message and record
        digest.update(json.dumps(state.names).encode())
    for path in stage.reads(state):
        digest.update(f"\n{path.name}\0{checksum(path)[1]}".encode())
    return digest.hexdigest()


def _reuse(stage: Stage, state: RunState, manifest: RunManifest, fingerprint: str) -> StageOutput | None:
    """The stage's result rebuilt from an earlier attempt, recorded in ``manifest``; None when it must run again."""
    previous = state.previous
    old = previous.stage(stage.name) if previous is not None else None
    if previous is None or old is None or stage.load is None:
        return None
    if old.status != "done" or old.inputs_sha256 != fingerprint:
        logger.info("stage %s runs again: %s", stage.name,
                    "it did not finish" if old.status != "done" else "its inputs changed")
        return None
    artifacts = {key: record for key, record in previous.artifacts.items() if key.split(".", 1)[0] == stage.name}
    for key, record in artifacts.items():
        path = state.run_dir / record.path
        if not path.exists() or checksum(path) != (record.bytes, record.sha256):
            logger.warning("stage %s runs again: its artefact %s changed since it was recorded", stage.name, key)
            return None
    try:
        output = stage.load(state, old)
    except Exception:  # an artefact that verifies but cannot be read: run the stage again rather than fail
        logger.warning("stage %s runs again: its result could not be rebuilt\n%s", stage.name, traceback.format_exc())
        return None
    output.metrics, output.findings = old.metrics, list(old.findings)
    output.artifacts = [_registered(key, record, state.run_dir) for key, record in artifacts.items()]
    manifest.stages.append(StageRecord(old.name, "done", old.seconds, old.metrics, list(old.findings),
                                       inputs_sha256=fingerprint, resumed=True))
    manifest.artifacts.update(artifacts)
    if stage.name == "capture":
        manifest.photos = output.photos  # type: ignore[attr-defined]
    manifest.save(state.run_dir)
    logger.info("stage %s kept from the earlier attempt (artefacts verified)", stage.name)
    return output


def _registered(key: str, record: ArtifactRecord, run_dir: Path) -> Artifact:
    """The registry's artefact ``key``, or one rebuilt from its record (a stand-in stage outside the registry)."""
    if key in REGISTRY:
        return REGISTRY[key]
    kind = "folder" if (run_dir / record.path).is_dir() else "file"
    return Artifact(key, record.path.split("/", 1)[1], kind, "rebuilt from the run record")


def _clear_stage_folders(run_dir: Path, stages: list[Stage]) -> None:
    """Remove what earlier attempts left in these stages' run folders (the stages run again, from scratch)."""
    for stage in stages:
        folder = run_dir / stage.name
        if folder.is_dir():
            shutil.rmtree(folder)


def _record_output(manifest: RunManifest, record: StageRecord, output: StageOutput, run_dir: Path) -> None:
    """Copy a stage's output into its record; artefacts with their size and checksum.

    The checksums come first and the status last, so a record never says ``done`` without its artefacts.
    """
    artifacts = {}
    for stage_artifact in output.artifacts:
        size, sha256 = checksum(stage_artifact.path(run_dir))
        artifacts[stage_artifact.key] = ArtifactRecord(stage_artifact.run_path, size, sha256)
    manifest.artifacts.update(artifacts)
    record.metrics = output.metrics
    record.findings = list(output.findings)
    if not output.ok and output.failure and not any(f.message == output.failure for f in record.findings):
        record.findings.append(Finding("error", output.failure))
    record.status = "done" if output.ok else "failed"


def _attach_run_log(run_dir: Path) -> logging.Handler:
    """Everything logged during the run also goes to RUN_DIR/logs/run.log."""
    (run_dir / "logs").mkdir(exist_ok=True)
    handler = logging.FileHandler(run_dir / "logs" / "run.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


if __name__ == "__main__":  # `python -m core.pipeline`: the command line lives in core/cli/run.py
    from core.cli.run import main

    raise SystemExit(main())
