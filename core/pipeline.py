"""Runs the stages of a run in order, writing the manifest when the run starts and after every stage.

    run_pipeline(photos, run_dir, config)        several photos -> a 3D model (MULTI_VIEW_STAGES)
    run_relief(photo, run_dir, config)           one photo -> a 3D relief (RELIEF_STAGES)

The command line (``python -m core.pipeline``, code in core/cli/run.py) and the job worker (core/jobs/worker.py)
call the same ``run_stages``. Stages receive the typed results of the stages before them (``RunState``) and report
progress through a ``StageProgress``; listeners receive ``ProgressEvent``s.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.artifacts import checksum
from core.config import PipelineConfig, preset_config
from core.manifest import ArtifactRecord, Finding, RunManifest, RunMode, StageRecord
from core.progress import Cancelled, ProgressEvent, ProgressListener, StageProgress, ignore_events
from core.stages import StageOutput

if TYPE_CHECKING:  # the stages import their heavy libraries (pycolmap, Open3D, torch) only when a run needs them
    from core.scene import SparseScene
    from core.stages.capture import CaptureResult
    from core.stages.depth import DepthMaps
    from core.stages.fusion import FusedCloud
    from core.stages.isolation import IsolatedCloud
    from core.stages.masks import MasksResult
    from core.stages.mesh import MeshResult
    from core.stages.relief import ReliefResult
    from core.stages.sfm import SfmResult

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
    relief: ReliefResult | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    """The stage's module in core/stages, its config section, run folder and artefact prefix."""
    label: str
    """What the user sees while it runs."""
    weight: float
    """Share of a typical run's time, for the overall progress bar and ETA."""
    run: Callable[[RunState, StageProgress], StageOutput]


def _capture(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.capture import run_capture

    return run_capture(state.sources, state.run_dir, state.config.capture, progress, state.names)


def _sfm(state: RunState, progress: StageProgress) -> StageOutput:
    from core.scene import load_sparse_scene
    from core.stages.sfm import run_sfm

    assert state.capture is not None
    result = run_sfm(state.capture, state.run_dir, state.config.sfm, progress)
    if result.ok and result.undistorted_dir is not None:
        state.scene = load_sparse_scene(result.undistorted_dir, result.photos)
    return result


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


def _depth(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.depth import run_depth

    assert state.scene is not None
    return run_depth(state.scene, state.run_dir, state.config.depth, progress)


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


def _fusion(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.fusion import run_fusion

    assert state.depth_prior is not None and state.scene is not None
    silhouettes = state.masks.silhouettes(state.scene) if state.masks is not None else None
    return run_fusion(state.depth_prior, state.run_dir, state.config.fusion, progress, silhouettes)


def _isolation(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.isolation import run_isolation

    assert state.fusion is not None and state.scene is not None
    return run_isolation(state.fusion, state.scene, state.run_dir, state.config.isolation, progress)


def _mesh(state: RunState, progress: StageProgress) -> StageOutput:
    from core.stages.mesh import run_mesh

    assert state.isolation is not None
    return run_mesh(state.isolation, state.run_dir, state.config.mesh, progress)


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


MULTI_VIEW_STAGES: list[Stage] = [
    Stage("capture", "Checking photos", 0.03, _capture),
    Stage("sfm", "Placing cameras (structure from motion)", 0.30, _sfm),
    Stage("masks", "Finding the product's outline in every photo", 0.08, _masks),
    Stage("depth", "Estimating depth per photo (multi-view stereo)", 0.35, _depth),
    Stage("depth_prior", "Adding the monocular depth prior", 0.05, _depth_prior),
    Stage("fusion", "Fusing depth maps into a point cloud", 0.10, _fusion),
    Stage("isolation", "Separating the product from the background", 0.04, _isolation),
    Stage("mesh", "Building and exporting the mesh", 0.13, _mesh),
]
RELIEF_STAGES: list[Stage] = [
    Stage("capture", "Checking the photo", 0.05, _relief_capture),
    Stage("relief", "Turning the photo into a 3D relief", 0.95, _relief),
]
MODES: dict[RunMode, list[Stage]] = {"multi_view": MULTI_VIEW_STAGES, "relief": RELIEF_STAGES}


def stage_label(name: str, mode: RunMode = "multi_view") -> str:
    """What the user reads for a stage: its label, else the name made readable."""
    labels = {s.name: s.label for s in MODES.get(mode, MULTI_VIEW_STAGES)}
    return labels.get(name) or name.replace("_", " ").capitalize()


def run_pipeline(photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
                 listener: ProgressListener = ignore_events, names: list[str] | None = None,
                 run_id: str | None = None) -> RunManifest:
    """Reconstruct a product from several photos into ``run_dir``; returns the final run record."""
    return run_stages("multi_view", photos, run_dir, config, listener, names, run_id)


def run_relief(photo: Path, run_dir: Path, config: PipelineConfig | None = None,
               listener: ProgressListener = ignore_events, name: str | None = None,
               run_id: str | None = None) -> RunManifest:
    """Turn one photo into a depth relief (depth -> point cloud -> mesh) in ``run_dir``."""
    return run_stages("relief", [photo], run_dir, config, listener, [name] if name else None, run_id)


def run_stages(mode: RunMode, photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
               listener: ProgressListener = ignore_events, names: list[str] | None = None,
               run_id: str | None = None) -> RunManifest:
    """Run the stages of ``mode`` on ``photos`` into ``run_dir``; returns the final run record.

    Never raises for bad input or a capture that cannot be reconstructed: the manifest's ``status`` and
    ``failure_reason`` say what happened. ``Cancelled`` raised by ``listener`` ends the run as cancelled.
    ``run_id`` is the job's id when the run belongs to one (one id per run).
    """
    stages = MODES[mode]
    config = config or preset_config("balanced")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = RunManifest.new(config.to_dict(), mode=mode, run_id=run_id)
    state = RunState(run_dir, config, [Path(p) for p in photos], names or [Path(p).name for p in photos])
    log_handler = _attach_run_log(run_dir)
    total_weight = sum(s.weight for s in stages)
    done_weight = 0.0
    manifest.save(run_dir)
    try:
        for stage in stages:
            record = StageRecord(stage.name)
            manifest.stages.append(record)
            manifest.save(run_dir)
            base = done_weight

            def stage_progress(fraction: float, message: str, _stage: Stage = stage, _base: float = base) -> None:
                fraction = min(max(fraction, 0.0), 1.0)
                listener(ProgressEvent(_stage.name, _stage.label, fraction,
                                       (_base + _stage.weight * fraction) / total_weight, message))

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
                reason = (f"Internal error in the '{stage.label}' stage ({type(exc).__name__}: {exc}). The photos and "
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


def _record_output(manifest: RunManifest, record: StageRecord, output: StageOutput, run_dir: Path) -> None:
    """Copy a stage's output into its record; artefacts with their size and checksum."""
    record.status = "done" if output.ok else "failed"
    record.metrics = output.metrics
    record.findings = list(output.findings)
    if not output.ok and output.failure and not any(f.message == output.failure for f in record.findings):
        record.findings.append(Finding("error", output.failure))
    for artifact in output.artifacts:
        path = artifact.path(run_dir)
        size, sha256 = checksum(path)
        manifest.artifacts[artifact.key] = ArtifactRecord(artifact.run_path, size, sha256)


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
