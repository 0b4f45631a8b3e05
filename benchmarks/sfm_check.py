"""Run plain pycolmap SfM on a rendered capture and compare the cameras with its ground truth.

A quality check of the renders themselves (independent of core.pipeline)::

    python -m benchmarks.sfm_check CAPTURE_DIR [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.evaluate import PoseReport, evaluate_poses
from benchmarks.synthetic import load_ground_truth
from core.scene import cameras_from_model

logger = logging.getLogger(__name__)


def run_sfm(image_dir: Path, work_dir: Path) -> tuple[Path | None, dict[str, float]]:
    """Features, exhaustive matching and incremental mapping on the CPU; returns the largest model folder."""
    import pycolmap

    work_dir.mkdir(parents=True, exist_ok=True)
    db = work_dir / "database.db"
    db.unlink(missing_ok=True)
    timings = {}
    start = time.perf_counter()
    pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu)
    timings["extract_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    timings["match_s"] = time.perf_counter() - start
    start = time.perf_counter()
    sparse = work_dir / "sparse"
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir()
    models = pycolmap.incremental_mapping(db, image_dir, sparse)
    timings["map_s"] = time.perf_counter() - start
    if not models:
        return None, timings
    best = max(models, key=lambda k: models[k].num_reg_images())
    return sparse / str(best), timings


def check_capture(capture_dir: Path, work_dir: Path) -> tuple[PoseReport, dict[str, float]]:
    gt = load_ground_truth(capture_dir)
    model, timings = run_sfm(gt.image_dir, work_dir)
    estimated = cameras_from_model(model) if model is not None else {}
    return evaluate_poses(estimated, gt.cameras, gt.object_diagonal), timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sfm_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="sfm_check_"))
    report, timings = check_capture(args.capture, work)
    print(report.summary())
    print(", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
