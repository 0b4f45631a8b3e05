"""Runs the stages in order, writing the manifest after each one; also the command line for batch work.

    python -m core.pipeline PHOTOS_DIR --out RUN_DIR [--preset preview|balanced|full]
    python -m core.pipeline PHOTO.jpg --out RUN_DIR          (single photo -> 3D relief)

The app's worker processes call ``run_pipeline`` (multi-view) and ``run_single_photo`` with the same code.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import PRESET_DESCRIPTIONS, PRESETS, PipelineConfig, preset_config
from core.manifest import Finding, RunManifest, StageRecord, photo_names_by_working_image
from core.stage import Cancelled, ProgressFn, StageOutput

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What the stages of one run have produced so far (in memory; the manifest holds the record)."""

    run_dir: Path
    config: PipelineConfig
    photos: list[Path]
    display_names: list[str]
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    label: str
    """What the user sees while it runs."""
    weight: float
    """Share of a typical run's time, for the overall progress bar and ETA."""
    run: Callable[[RunContext, ProgressFn], StageOutput]


def _capture(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.capture import prepare_capture

    return prepare_capture(ctx.photos, ctx.run_dir, ctx.config.capture, progress, ctx.display_names)


def _sfm(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.sfm import run_sfm

    return run_sfm(ctx.results["capture"], ctx.run_dir, ctx.config.sfm, progress)


def _depth(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.mvs import estimate_depth_maps
    from core.scene import load_sparse_scene

    undistorted = ctx.results["sfm"].undistorted_dir
    ctx.results["scene"] = load_sparse_scene(undistorted / "sparse", undistorted / "images")
    return estimate_depth_maps(ctx.results["scene"], ctx.run_dir / "depth", ctx.config.dense, progress)


def _depth_prior(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.depth_prior import apply_depth_priors

    prior_config = dataclasses.replace(ctx.config.depth_prior)
    if prior_config.depth_dir:
        prior_config.depth_dir = str(_collect_supplied_depth(ctx, Path(prior_config.depth_dir)))
    return apply_depth_priors(ctx.results["scene"], ctx.results["depth"], ctx.run_dir / "depth_prior",
                              prior_config, progress)


def _collect_supplied_depth(ctx: RunContext, depth_dir: Path) -> Path:
    """Copy the user's depth maps into the run folder, renamed after the working photos the later stages use.

    A depth map is named like the photo file it belongs to (the CLI user's file, or the app's stored upload).
    Keeping a copy also means the run folder holds every input it was made from.
    """
    from core.depth_prior import find_depth_file

    target = ctx.run_dir / "supplied_depth"
    if not depth_dir.is_dir():
        return depth_dir  # the prior stage reports the missing folder
    target.mkdir(exist_ok=True)
    for source, record in zip(ctx.photos, ctx.results["capture"].photos, strict=True):
        found = find_depth_file(depth_dir, source.name) if record.working_image else None
        if found is not None:
            shutil.copyfile(found, target / f"{Path(record.working_image).stem}{found.suffix.lower()}")
    return target


def _fusion(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.fusion import fuse_depth_maps

    return fuse_depth_maps(ctx.results["depth_prior"], ctx.run_dir / "fusion", ctx.config.dense, progress)


def _isolation(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.isolation import isolate_product

    return isolate_product(ctx.results["fusion"], ctx.results["scene"], ctx.run_dir / "isolation", ctx.config.dense,
                           progress)


def _mesh(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.mesh import build_mesh

    return build_mesh(ctx.results["isolation"], ctx.run_dir / "mesh", ctx.config.mesh, progress)


MULTI_VIEW_STAGES: list[Stage] = [
    Stage("capture", "Checking photos", 0.03, _capture),
    Stage("sfm", "Placing cameras (structure from motion)", 0.30, _sfm),
    Stage("depth", "Estimating depth per photo (multi-view stereo)", 0.35, _depth),
    Stage("depth_prior", "Adding the monocular depth prior", 0.05, _depth_prior),
    Stage("fusion", "Fusing depth maps into a point cloud", 0.10, _fusion),
    Stage("isolation", "Separating the product from the background", 0.04, _isolation),
    Stage("mesh", "Building and exporting the mesh", 0.13, _mesh),
]


def run_pipeline(photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
                 progress: ProgressFn | None = None, display_names: list[str] | None = None,
                 manifest: RunManifest | None = None) -> RunManifest:
    """Reconstruct a product from several photos into ``run_dir``; returns the final run record.

    Never raises for bad input or a capture that cannot be reconstructed: the manifest's ``status`` and
    ``failure_reason`` say what happened. ``Cancelled`` raised by ``progress`` ends the run as cancelled.
    """
    config = config or preset_config("balanced")
    return _run_stages(MULTI_VIEW_STAGES, "multi_view", photos, run_dir, config, progress, display_names, manifest)


def run_single_photo(photo: Path, run_dir: Path, config: PipelineConfig | None = None,
                     progress: ProgressFn | None = None, display_name: str | None = None,
                     manifest: RunManifest | None = None) -> RunManifest:
    """Turn one photo into a depth relief (depth -> point cloud -> mesh) in ``run_dir``."""
    config = config or preset_config("balanced")
    return _run_stages(SINGLE_PHOTO_STAGES, "single_photo", [photo], run_dir, config, progress,
                       [display_name] if display_name else None, manifest)


def run_relief_job(photos: list[Path], run_dir: Path, config: PipelineConfig | None = None,
                   progress: ProgressFn | None = None, display_names: list[str] | None = None,
                   manifest: RunManifest | None = None) -> RunManifest:
    """``run_single_photo`` with ``run_pipeline``'s signature, so a job worker can run either (the first photo)."""
    return run_single_photo(photos[0], run_dir, config, progress, display_names[0] if display_names else None,
                            manifest)


def _run_stages(stages: list[Stage], mode: str, photos: list[Path], run_dir: Path, config: PipelineConfig,
                progress: ProgressFn | None, display_names: list[str] | None,
                manifest: RunManifest | None) -> RunManifest:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = manifest or RunManifest.new(config.to_dict(), mode=mode)  # type: ignore[arg-type]
    manifest.config, manifest.mode, manifest.status = config.to_dict(), mode, "running"  # type: ignore[assignment]
    ctx = RunContext(run_dir, config, [Path(p) for p in photos], display_names or [Path(p).name for p in photos])
    log_handler = _attach_run_log(run_dir)
    total_weight = sum(s.weight for s in stages)
    done_weight = 0.0
    report = progress or (lambda fraction, message: None)
    manifest.save(run_dir)
    try:
        for stage in stages:
            record = StageRecord(stage.name)
            manifest.stages = [s for s in manifest.stages if s.name != stage.name] + [record]
            manifest.save(run_dir)
            base = done_weight

            def stage_progress(fraction: float, message: str, _stage: Stage = stage, _base: float = base) -> None:
                overall = (_base + _stage.weight * min(max(fraction, 0.0), 1.0)) / total_weight
                report(overall, f"{_stage.label}: {message}")

            logger.info("stage %s started", stage.name)
            started = time.perf_counter()
            try:
                output = stage.run(ctx, stage_progress)
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
            ctx.results[stage.name] = output
            failure = _record_output(manifest, record, output, run_dir,
                                     _user_names(ctx) if stage.name != "capture" else {})
            if stage.name == "capture":
                manifest.photos = output.photos  # type: ignore[attr-defined]
            done_weight += stage.weight
            logger.info("stage %s %s in %.1f s", stage.name, record.status, record.seconds)
            if not output.ok:
                manifest.status, manifest.failure_reason = "failed", failure
                return manifest
            manifest.save(run_dir)
        manifest.status = "done"
        report(1.0, "Finished")
        return manifest
    finally:
        manifest.save(run_dir)
        logging.getLogger().removeHandler(log_handler)
        log_handler.close()


def _user_names(ctx: RunContext) -> dict[str, str]:
    """Working-copy names (and stems) -> the user's photo names, for the text the user reads."""
    capture = ctx.results.get("capture")
    names = photo_names_by_working_image(capture.accepted) if capture else {}
    return {**names, **{Path(working).stem: user for working, user in names.items()}}


def _record_output(manifest: RunManifest, record: StageRecord, output: StageOutput, run_dir: Path,
                   user_names: dict[str, str]) -> str:
    """Copy a stage's output into its record, naming photos as the user named them; returns the failure text."""

    def readable(text: str) -> str:
        for working in sorted(user_names, key=len, reverse=True):  # full names before their stems
            text = text.replace(working, user_names[working])
        return text

    record.status = "done" if output.ok else "failed"
    record.metrics = output.metrics
    record.findings = [Finding(f.level, readable(f.message), readable(f.hint)) for f in output.findings]
    failure = readable(output.failure)
    if not output.ok and failure and not any(f.message == failure for f in record.findings):
        record.findings.append(Finding("error", failure))
    for key, path in output.artifacts.items():
        manifest.artifacts[key] = str(Path(path).resolve().relative_to(run_dir.resolve()))
    return failure


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


def _single_capture(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.capture import prepare_capture

    return prepare_capture(ctx.photos, ctx.run_dir, ctx.config.capture, progress, ctx.display_names, min_photos=1)


def _relief(ctx: RunContext, progress: ProgressFn) -> StageOutput:
    from core.relief import build_relief

    from core.depth_prior import find_depth_file

    # The stored original (EXIF intact) rather than the working copy: the relief reads the focal length itself.
    photo = ctx.run_dir / ctx.results["capture"].accepted[0].stored_as
    depth_dir = ctx.config.depth_prior.depth_dir
    depth_file = find_depth_file(Path(depth_dir), ctx.photos[0].name) if depth_dir else None
    return build_relief(photo, ctx.run_dir / "relief", ctx.config, progress, depth_file=depth_file)


SINGLE_PHOTO_STAGES: list[Stage] = [
    Stage("capture", "Checking the photo", 0.05, _single_capture),
    Stage("relief", "Turning the photo into a 3D relief", 0.95, _relief),
]


def list_photos(folder: Path) -> list[Path]:
    """Every visible file in a folder, sorted by name: non-images are kept so the capture stage can name them."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------- command line

class TerminalProgress:
    """One progress line on stderr: bar, percent, stage message, elapsed, ETA."""

    def __init__(self, stream=sys.stderr, width: int = 28) -> None:
        self.stream, self.width = stream, width
        self.started = time.monotonic()
        self.interactive = stream.isatty()
        self.last_message = ""

    def __call__(self, fraction: float, message: str) -> None:
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        filled = round(self.width * fraction)
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}  {message}  "
                f"elapsed {_clock(elapsed)}  ETA {_clock(eta) if eta is not None else '--:--'}")
        if self.interactive:
            self.stream.write("\r\033[K" + line)
        elif message != self.last_message:  # logs and CI: one line per new message
            self.stream.write(line + "\n")
        self.last_message = message
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.pipeline",
        description="Product Studio: turn product photos into a 3D model (or one photo into a 3D relief).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets:\n" + "\n".join(f"  {name:9s} {text}" for name, text in PRESET_DESCRIPTIONS.items())
        + "\n\nExit status: 0 when the run succeeded, 1 when it failed (the reason is printed on stderr and stored "
          "in RUN_DIR/manifest.json), 2 for bad command-line use.",
    )
    parser.add_argument("photos", type=Path, help="folder of product photos (multi-view), or one photo file "
                                                  "(single-photo 3D relief)")
    parser.add_argument("--out", type=Path, required=True, help="run folder to create (manifest.json, models, exports)")
    parser.add_argument("--preset", choices=PRESETS, default="balanced", help="detail level (default: balanced)")
    parser.add_argument("--depth-prior-dir", type=Path, help="folder of per-photo depth maps (.npy float32, or 16-bit "
                                                             "PNG in millimetres) named like the photos")
    parser.add_argument("--depth-model", type=Path, help="local folder of a Depth Anything model (transformers format)")
    parser.add_argument("--no-depth-prior", action="store_true", help="do not use a monocular depth prior")
    parser.add_argument("--allow-download", action="store_true",
                        help="download the depth model when it is not found locally (needs network)")
    parser.add_argument("--seed", type=int, help="random seed for COLMAP (default: 0)")
    parser.add_argument("--target-faces", type=int, help="face budget of the final mesh (overrides the preset)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (including COLMAP's)")
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    config = preset_config(args.preset)
    if args.depth_prior_dir:
        config.depth_prior.depth_dir = str(args.depth_prior_dir.resolve())
    if args.depth_model:
        config.depth_prior.model_path = str(args.depth_model.resolve())
    if args.no_depth_prior:
        config.depth_prior.enabled = False
    if args.allow_download:
        config.depth_prior.allow_download = True
    if args.seed is not None:
        config.sfm.seed = args.seed
    if args.target_faces:
        config.mesh.target_faces = args.target_faces
    return config


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # the run log keeps INFO regardless
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.photos.exists():
        parser.error(f"{args.photos} does not exist")
    config = config_from_args(args)
    bar = TerminalProgress()
    try:
        if args.photos.is_dir():
            photos = list_photos(args.photos)
            if not photos:
                print(f"error: {args.photos} holds no files; put the product photos there.", file=sys.stderr)
                return 1
            manifest = run_pipeline(photos, args.out, config, bar)
        else:
            manifest = run_single_photo(args.photos, args.out, config, bar)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; finished stages are kept in " + str(args.out), file=sys.stderr)
        return 130
    bar.close()
    for photo in manifest.photos:
        if photo.status == "rejected":
            print(f"rejected: {photo.reason}", file=sys.stderr)
    if manifest.status != "done":
        print(f"error: {manifest.failure_reason}", file=sys.stderr)
        return 1
    total = sum(s.seconds for s in manifest.stages)
    print(f"done in {total:.0f} s: {args.out / 'manifest.json'}")
    for key, path in manifest.artifacts.items():
        print(f"  {key:16s} {args.out / path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
