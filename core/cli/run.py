"""The command line of the pipeline: ``python -m core.pipeline PHOTOS_DIR --out RUN_DIR [--preset P]``.

    python -m core.pipeline PHOTOS_DIR --out RUN_DIR [--preset preview|balanced|full] [--resume | --overwrite]
                            [--height-mm MM | --width-mm MM | --depth-mm MM]   (real size of the asset)
                            [--known-distance PHOTO:X1,Y1:X2,Y2:MM]   (or: two points on a photo, mm apart)
    python -m core.pipeline PHOTO.jpg --out RUN_DIR          (single photo -> 3D relief)
    python -m core.pipeline PHOTO.jpg --out RUN_DIR --sticker "kawaii and chibi"   (-> 3D cartoon sticker)

Progress goes to the terminal; exit status 0 when the run succeeded, 1 when it failed (the reason on stderr and in
RUN_DIR/manifest.json), 2 for bad command-line use. A RUN_DIR that is not empty is refused unless ``--resume`` (keep
the finished stages whose inputs, checked by sha256, and artefacts are unchanged; run the rest) or ``--overwrite``
(delete the earlier run's record and stage folders first) says what to do with it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from core.config import PRESET_DESCRIPTIONS, PRESETS, PipelineConfig, preset_config
from core.known_distance import EXAMPLE, SYNTAX, KnownDistanceError, parse_known_distance
from core.manifest import MANIFEST_NAME
from core.pipeline import MODES, run_pipeline, run_relief, run_sticker
from core.progress import TerminalProgress
from core.stages.sticker.themes import THEMES


def list_photos(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Every visible file in a folder, sorted by name: non-images are kept so the capture stage can name them.

    Links are followed only when they stay inside the folder (a link to /etc/passwd is never read); every entry
    left out (links leading out or nowhere, sub-folders, other non-files) is named in ``skipped``."""
    folder = Path(folder)
    root = folder.resolve()
    skipped = [] if skipped is None else skipped
    photos = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_symlink():
            target = path.resolve()
            if not target.exists():
                skipped.append(f"{path.name}: a link to nothing (dangling); skipped.")
                continue
            if not target.is_relative_to(root):
                skipped.append(f"{path.name}: a link that leads out of the photo folder; skipped (copy the photo "
                               "in instead).")
                continue
        if path.is_dir():
            skipped.append(f"{path.name}: a sub-folder; skipped (photos in sub-folders are not read).")
        elif not path.is_file():
            skipped.append(f"{path.name}: not a regular file; skipped.")
        else:
            photos.append(path)
    return photos


def _millimetres(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive length in millimetres (e.g. 213)")
    return value


def _known_distance(text: str) -> str:
    """The ``--known-distance`` value checked and written in its one form (the config's)."""
    try:
        return parse_known_distance(text).text
    except KnownDistanceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.pipeline",
        description="Product Studio: turn product photos into a 3D model (or one photo into a 3D relief).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets:\n" + "\n".join(f"  {name:9s} {PRESET_DESCRIPTIONS[name]}" for name in PRESETS)
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
    parser.add_argument("--masks-dir", type=Path, help="folder of product masks named like the photos (any image "
                                                       "format, white = product); used instead of computed ones")
    hull = parser.add_mutually_exclusive_group()
    hull.add_argument("--hull", action="store_true",
                      help="always fuse stereo with the visual hull carved from the product masks (by default only "
                           "where stereo finds too little of the product, as on plain products)")
    hull.add_argument("--no-hull", action="store_true", help="never use the visual hull: stereo alone")
    parser.add_argument("--no-masks", action="store_true",
                        help="no product masks (and so no visual hull): stereo alone, as before")
    parser.add_argument("--sticker", metavar="THEME",
                        help="one photo -> a die-cut 3D cartoon sticker (PNG, 512 px WebP, GLB) in the theme THEME: "
                             "free text matched to the nearest of " + ", ".join(t.name for t in THEMES)
                             + " (\"\" for the default)")
    parser.add_argument("--seed", type=int, help="random seed for COLMAP (default: 0)")
    parser.add_argument("--depth-method", choices=("patchmatch", "sweep"),
                        help="dense depth: PatchMatch (depth + normal per pixel) or the plane sweep "
                             "(overrides the preset)")
    parser.add_argument("--target-faces", type=int, help="face budget of the final mesh (overrides the preset)")
    parser.add_argument("--normal-map", action="store_true",
                        help="also bake a tangent-space normal map from the dense points (texture.normal_map)")
    for axis, what in (("height", "height"), ("width", "width (left to right, seen from the first photo)"),
                       ("depth", "depth (front to back, seen from the first photo)")):
        parser.add_argument(f"--{axis}-mm", type=_millimetres, metavar="MM",
                            help=f"the product's known {what} in millimetres: the asset is scaled to it "
                                 "(give one; height wins)")
    parser.add_argument("--known-distance", type=_known_distance, metavar=SYNTAX,
                        help="instead of a dimension: two points on one photo (its file name; pixels of the photo as "
                             "you see it, from its top-left corner) and the true distance between them in "
                             f"millimetres, e.g. {EXAMPLE}; the asset is scaled so they are that far apart")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (including COLMAP's)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true",
                          help="continue the run in RUN_DIR: keep its finished stages whose inputs (photos and "
                               "settings, checked by sha256) and artefacts are unchanged, run the rest")
    existing.add_argument("--overwrite", action="store_true",
                          help="start the run in RUN_DIR again: delete its earlier record and stage folders first")
    return parser


RUN_ENTRIES = sorted({stage.name for stages in MODES.values() for stage in stages} | {"logs", MANIFEST_NAME})
"""What the studio writes in a run folder (``--overwrite`` deletes only these)."""


def check_run_folder(out: Path, photos: Path, resume: bool, overwrite: bool) -> str | None:
    """Why ``out`` cannot be used as asked (None when it can); with ``overwrite`` the earlier run is deleted."""
    if not out.exists():
        return None
    if not out.is_dir():
        return f"{out} is a file; give a folder for the run."
    if not any(out.iterdir()):
        return None
    is_run = (out / MANIFEST_NAME).is_file()
    if not resume and not overwrite:
        what = "holds an earlier run" if is_run else "is not empty"
        return (f"{out} {what}. Add --resume to continue it (finished stages whose inputs are unchanged are kept), "
                "--overwrite to start again, or choose a new folder.")
    if not is_run:
        return f"{out} is not empty and holds no run ({MANIFEST_NAME}); choose an empty or new folder."
    if overwrite:
        doomed = [out / name for name in RUN_ENTRIES if (out / name).exists()]
        source = photos.resolve()
        if any(source == d.resolve() or source.is_relative_to(d.resolve()) for d in doomed):
            return f"the photos ({photos}) are inside the run folder {out}; move them out before --overwrite."
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return None


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The preset with the command line's changes (each option names one field of one config section)."""
    changes: dict[str, dict[str, Any]] = {"depth_prior": {}, "sfm": {}, "masks": {}, "depth": {}, "mesh": {},
                                          "relief": {}, "asset": {}}
    if args.masks_dir:
        changes["masks"]["supplied_dir"] = str(args.masks_dir.resolve())
    if args.hull or args.no_hull:
        changes.setdefault("fusion", {})["silhouettes"] = "on" if args.hull else "off"
    if args.no_masks:
        changes["masks"]["enabled"] = False
    if args.depth_prior_dir:
        changes["depth_prior"]["depth_dir"] = str(args.depth_prior_dir.resolve())
    if args.depth_model:
        changes["depth_prior"]["model_path"] = str(args.depth_model.resolve())
    if args.no_depth_prior:
        changes["depth_prior"]["enabled"] = False
    if args.allow_download:
        changes["depth_prior"]["allow_download"] = True
    if args.seed is not None:
        changes["sfm"]["seed"] = args.seed
    if args.sticker is not None:
        changes["sticker"] = {"theme": args.sticker}
    if args.depth_method:
        changes["depth"]["method"] = args.depth_method
    if args.normal_map:
        changes["texture"] = {"normal_map": True}
    if args.target_faces:
        changes["mesh"]["target_faces"] = changes["relief"]["target_faces"] = args.target_faces
    for axis in ("height", "width", "depth"):
        value = getattr(args, f"{axis}_mm")
        if value is not None:
            changes["asset"][f"{axis}_mm"] = value
    if args.known_distance:
        changes["asset"]["known_distance"] = args.known_distance
    return preset_config(args.preset).with_changes(changes)


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
    if args.sticker is not None and args.photos.is_dir():
        parser.error("--sticker makes a sticker from one photo: give a photo file, not a folder")
    given = [f"--{axis}-mm" for axis in ("height", "width", "depth") if getattr(args, f"{axis}_mm") is not None]
    if args.known_distance and given:
        parser.error(f"--known-distance and {given[0]} both set the real size; give one of them")
    config = config_from_args(args)
    problem = check_run_folder(args.out, args.photos, args.resume, args.overwrite)
    if problem:
        parser.error(problem)
    bar = TerminalProgress()
    try:
        if args.photos.is_dir():
            skipped: list[str] = []
            photos = list_photos(args.photos, skipped)
            for line in skipped:
                print(f"skipped: {line}", file=sys.stderr)
            if not photos:
                print(f"error: {args.photos} holds no files; put the product photos there.", file=sys.stderr)
                return 1
            manifest = run_pipeline(photos, args.out, config, bar.listener, resume=args.resume)
        elif args.sticker is not None:
            manifest = run_sticker(args.photos, args.out, config, bar.listener, resume=args.resume)
        else:
            manifest = run_relief(args.photos, args.out, config, bar.listener, resume=args.resume)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; finished stages are kept in " + str(args.out), file=sys.stderr)
        return 130
    bar.close()
    if args.resume:
        kept = [s.name for s in manifest.stages if s.resumed]
        print(f"resumed: kept {', '.join(kept)} from the earlier run" if kept else
              "resumed: nothing could be kept (the photos, settings or artefacts changed); every stage ran",
              file=sys.stderr)
    for photo in manifest.photos:
        if photo.status == "rejected":
            print(f"rejected: {photo.reason}", file=sys.stderr)
    if manifest.status != "done":
        print(f"error: {manifest.failure_reason}", file=sys.stderr)
        return 1
    total = sum(s.seconds for s in manifest.stages)
    print(f"done in {total:.0f} s: {args.out / 'manifest.json'}")
    for key, record in manifest.artifacts.items():
        print(f"  {key:20s} {args.out / record.path}")
    sticker = manifest.stage("sticker")
    for finding in sticker.findings if sticker else []:
        if finding.message.startswith("Theme:"):
            print(finding.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
