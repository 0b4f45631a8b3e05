"""What a depth prior adds to CPU stereo on a plain, low-texture product: completeness and accuracy with and without.

A synthetic capture (a plain-coloured bottle on a textured mat, plain backdrop) is rendered with ground truth. To
measure the prior alone, the cameras are the true ones and the sparse points come from image corners lifted with the
true depth (what SfM would triangulate on the textured parts), so SfM errors do not blur the comparison. Then:

1. stereo only: ``core.stages.depth.run_depth``;
2. stereo + prior: priors simulated from the true depth with realistic distortions (an unknown scale and shift in
   inverse depth per photo, a smooth low-frequency warp of +-5 %, blurred depth edges, noise), one of them
   deliberately wrong (upside down), supplied as .npy files and merged by ``core.depth_prior.apply_depth_priors``.

Scores: per view on the product's pixels (true mask): share with a depth within tau of the truth (completeness),
share with a depth off by more than 5 tau (wrong), median error; and for the cloud that the real fusion stage keeps
(``core.stages.fusion.run_fusion``: multi-view consistency): precision/recall/F-score against the product mesh
(benchmarks/evaluate.py), cropped to the product's box. tau = 1 % of the product's bounding-box diagonal.

    python -m benchmarks.depth_prior_effect [--views 12] [--size 480x360] [--out benchmarks/out/depth_prior_effect]
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.evaluate import DEFAULT_TAUS, GroundTruthSurface
from benchmarks.synthetic import CaptureGroundTruth, CaptureSpec, ground_truth_scene, load_ground_truth, render_capture
from core.config import DepthConfig, DepthPriorConfig, FusionConfig
from core.stages.depth import DepthMap, DepthMaps, load_depth_map, run_depth
from core.stages.depth_prior import run_depth_prior
from core.stages.fusion import run_fusion

logger = logging.getLogger(__name__)

WRONG_VIEW = 3
"""Index of the view whose simulated prior is deliberately wrong (upside down)."""


def simulate_prior(depth: np.ndarray, rng: np.random.Generator, wrong: bool = False) -> np.ndarray:
    """A monocular-like prediction from true depth: inverse depth, blurred edges, smooth warp, noise, scale+shift."""
    far = np.nanmax(depth) if np.isfinite(depth).any() else 10.0
    inverse = 1.0 / np.where(np.isfinite(depth), depth, far * 2)
    inverse = cv2.GaussianBlur(inverse, (0, 0), 2.0)  # networks smear depth edges over a few pixels
    h, w = inverse.shape
    low = cv2.resize(rng.normal(size=(3, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    inverse = inverse * (1 + 0.05 * low / max(np.abs(low).max(), 1e-6))  # smooth low-frequency warp, +-5 %
    median = float(np.median(inverse))
    inverse = inverse + rng.normal(0, 0.005 * median, inverse.shape)
    scale = float(np.exp(rng.uniform(-1, 1)))
    shift = float(rng.uniform(-0.3, 0.3) * median)
    prior = (scale * inverse + shift).astype(np.float32)
    return prior[::-1].copy() if wrong else prior


def view_scores(views: list[DepthMap], gt: CaptureGroundTruth, tau: float) -> dict[str, Any]:
    """Per-view scores on the product's pixels, and their means."""
    rows = []
    for view, name in zip(views, gt.image_names, strict=True):
        truth = gt.load_depth(name)
        mask = gt.load_mask(name)
        if truth.shape != view.depth.shape:
            truth = cv2.resize(truth, (view.depth.shape[1], view.depth.shape[0]), interpolation=cv2.INTER_NEAREST)
            mask = cv2.resize(mask.astype(np.uint8), (view.depth.shape[1], view.depth.shape[0]),
                              interpolation=cv2.INTER_NEAREST) > 0
        mask &= np.isfinite(truth)
        depth = view.depth[mask]
        error = np.abs(depth - truth[mask])
        has = np.isfinite(depth)
        rows.append({"covered": float(has.mean()), "complete": float((error[has] <= tau).sum() / mask.sum()),
                     "wrong": float((error[has] > 5 * tau).sum() / mask.sum()),
                     "median_error_mm": float(np.median(error[has]) * 1000) if has.any() else None})
    mean = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in rows[0]}
    return {"mean": mean, "per_view": rows}


def run(out: Path, views: int, size: tuple[int, int], planes: int, obj: str = "procedural-bottle",
        reuse_stereo: bool = False) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    capture_dir = out / "capture"
    spec = CaptureSpec(object=obj, product_texture="plain", support="textured", backdrop="plain",
                       num_views=views, width=size[0], height=size[1])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (capture_dir / "capture.json").exists():
        render_capture(spec, capture_dir)
    gt = load_ground_truth(capture_dir)
    timings["render_s"] = time.perf_counter() - t0
    scene = ground_truth_scene(gt)
    tau = 0.01 * gt.object_diagonal

    t0 = time.perf_counter()
    dense = DepthConfig(max_side=max(size), num_source_views=4, num_depth_planes=planes)
    cache = out / "stereo_cache.pkl"
    if reuse_stereo and cache.is_file():  # the stereo maps of an earlier run: only merge and fusion are measured
        stereo = pickle.loads(cache.read_bytes())
        if not all(Path(r.path).is_file() for r in stereo.maps):
            stereo = run_depth(scene, out / "stereo", dense)
    else:
        stereo = run_depth(scene, out / "stereo", dense)
    cache.write_bytes(pickle.dumps(stereo))
    timings["stereo_s"] = time.perf_counter() - t0
    if not stereo.ok:
        raise RuntimeError(stereo.failure)

    prior_dir = out / "priors"
    prior_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    stereo_views = [load_depth_map(r.path) for r in stereo.maps]
    for i, (name, view) in enumerate(zip(gt.image_names, stereo_views, strict=True)):
        truth = gt.load_depth(name)
        truth = cv2.resize(truth, (view.camera.width, view.camera.height), interpolation=cv2.INTER_NEAREST)
        np.save(prior_dir / f"{Path(name).stem}.npy", simulate_prior(truth, rng, wrong=i == WRONG_VIEW))
    t0 = time.perf_counter()
    shutil.rmtree(out / "merged", ignore_errors=True)
    merged: DepthMaps = run_depth_prior(scene, stereo, out / "merged", DepthPriorConfig(depth_dir=str(prior_dir)),
                                       supplied_dir=prior_dir)
    timings["prior_s"] = time.perf_counter() - t0
    merged_views = [load_depth_map(r.path) for r in merged.maps]

    surface = GroundTruthSurface.from_mesh(gt.mesh_path, gt.camera_list(), num_samples=50_000)
    report: dict[str, Any] = {"spec": spec.to_dict(), "tau_m": tau, "sparse_points": len(scene.points),
                              "wrong_prior_view": gt.image_names[WRONG_VIEW]}
    for label, maps, depth_views in (("stereo_only", stereo, stereo_views),
                                     ("stereo_plus_prior", merged, merged_views)):
        t0 = time.perf_counter()
        fused = run_fusion(maps, out / f"fused_{label}", FusionConfig())
        timings[f"fusion_{label}_s"] = time.perf_counter() - t0
        surf = surface.evaluate(fused.points)
        report[label] = {"views": view_scores(depth_views, gt, tau), "cloud": surf.to_dict()}
    per_view = merged.metrics.get("per_view", {})
    report["prior_stage"] = {k: v for k, v in merged.metrics.items() if k != "per_view"}
    report["prior_per_view"] = per_view
    report["wrong_prior_rejected"] = not per_view.get(gt.image_names[WRONG_VIEW], {}).get("accepted", 1.0)
    report["findings"] = [f"{f.level}: {f.message}" for f in merged.findings]
    report["timings"] = {k: round(v, 2) for k, v in timings.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return report


def summary(report: dict[str, Any]) -> str:
    taus = DEFAULT_TAUS  # what GroundTruthSurface.evaluate scored at: 0.5 % and 1 % of the size
    cloud_heads = " | ".join(f"P@{t:.1%} | R@{t:.1%} | F@{t:.1%}" for t in taus)
    lines = [f"{report['spec']['object']}: tau = {report['tau_m'] * 1000:.1f} mm (1 % of its diagonal); "
             f"wrong prior on {report['wrong_prior_view']} rejected: {report['wrong_prior_rejected']}",
             f"| | covered | within tau | wrong (>5 tau) | median err (mm) | {cloud_heads} |",
             "|---|---|---|---|---|" + "---|" * 3 * len(taus)]
    for label in ("stereo_only", "stereo_plus_prior"):
        v, c = report[label]["views"]["mean"], report[label]["cloud"]
        cloud = " | ".join(f"{c['precision'][k]:.3f} | {c['recall'][k]:.3f} | {c['fscore'][k]:.3f}"
                           for k in range(len(taus)))
        lines.append(f"| {label} | {v['covered']:.1%} | {v['complete']:.1%} | {v['wrong']:.1%} | "
                     f"{v['median_error_mm']:.2f} | {cloud} |")
    lines.append(f"timings: {report['timings']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.depth_prior_effect",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", default="480x360", help="WIDTHxHEIGHT of the renders")
    parser.add_argument("--planes", type=int, default=64, help="depth planes of the stereo sweep")
    parser.add_argument("--object", default="procedural-bottle", help="procedural-bottle or procedural-box (plain)")
    parser.add_argument("--reuse-stereo", action="store_true",
                        help="reuse the stereo maps of an earlier run in --out (measures merge and fusion only)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/depth_prior_effect"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))
    report = run(args.out, args.views, (width, height), args.planes, args.object, args.reuse_stereo)
    logger.info("\n%s", summary(report))
    (args.out / "summary.md").write_text(summary(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
