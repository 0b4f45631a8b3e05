"""Dense stages on ground-truth cameras: masks, depth, fusion (+ visual hull), isolation, mesh, scored.

A development option: camera errors are the SfM stage's business, so this runs the stages after SfM on the true
cameras of a rendered capture (sparse points: image corners lifted with the true depth, as SfM would triangulate
them on the textured parts; ``benchmarks.depth_prior_effect.sparse_scene_from_truth``) and scores

* the masks against the rendered masks (IoU per photo, and the confidence the stage gave each);
* the mesh against the product mesh (F-score at 0.5 % / 1 % of the diagonal, benchmarks/evaluate.py) and by its
  silhouettes (the mesh ray-cast into every true camera, IoU with the rendered masks);
* whether the mesh is closed (boundary edges) and how much of it came from the hull.

    python -m benchmarks.dense_on_truth CAPTURE_DIR [--out DIR] [--preset balanced] [--no-hull]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.depth_prior_effect import sparse_scene_from_truth
from benchmarks.evaluate import GroundTruthSurface
from core.config import preset_config
from core.geometry import PinholeCamera
from core.segmentation import mask_iou
from core.synthetic import CaptureGroundTruth, load_ground_truth

logger = logging.getLogger(__name__)


def mesh_silhouettes(vertices: np.ndarray, triangles: np.ndarray, cameras: list[PinholeCamera]) -> list[np.ndarray]:
    """Per camera, the pixels (centres) whose ray hits the mesh."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(triangles.astype(np.uint32)))
    out = []
    for cam in cameras:
        u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
        d = np.stack([(u - cam.K[0, 2]) / cam.K[0, 0], (v - cam.K[1, 2]) / cam.K[1, 1], np.ones_like(u)], -1) @ cam.R
        rays = np.concatenate([np.broadcast_to(cam.center, d.shape), d], -1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
        out.append(np.isfinite(hit))
    return out


def silhouette_iou(vertices: np.ndarray, triangles: np.ndarray, gt: CaptureGroundTruth) -> dict[str, float]:
    """Mean and lowest IoU of the mesh's silhouettes with the rendered product masks."""
    silhouettes = mesh_silhouettes(vertices, triangles, gt.camera_list())
    ious = [mask_iou(s, gt.load_mask(n)) for s, n in zip(silhouettes, gt.image_names, strict=True)]
    return {"mean": float(np.mean(ious)), "min": float(np.min(ious))}


def run(capture_dir: Path, out: Path, preset: str = "balanced", use_hull: bool = True, use_fill: bool = True,
        reuse_depth: bool = False) -> dict[str, Any]:
    import open3d as o3d

    from core.fusion import fuse_depth_maps
    from core.isolation import isolate_product
    from core.mesh import boundary_loops, build_mesh
    from core.mvs import estimate_depth_maps
    from core.stages.fusion.hull import hull_fusion
    from core.stages.masks import MasksConfig, run_masks

    gt = load_ground_truth(capture_dir)
    config = preset_config(preset)  # type: ignore[arg-type]
    scene = sparse_scene_from_truth(gt)
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"capture": str(capture_dir), "preset": preset, "hull": use_hull, "fill": use_fill}

    t0 = time.perf_counter()
    masks = run_masks(scene, out, MasksConfig())
    timings["masks"] = time.perf_counter() - t0
    ious = [mask_iou(masks.mask_for(n), gt.load_mask(n)) for n in gt.image_names]
    report["masks"] = {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
                       "confidence_median": masks.metrics["median_confidence"],
                       "per_photo": {n: {"iou": round(i, 4), "confidence": masks.confidence[n]}
                                     for n, i in zip(gt.image_names, ious, strict=True)}}

    t0 = time.perf_counter()
    if reuse_depth and (out / "depth").is_dir():  # development: the same capture, only later stages changed
        from core.mvs import DepthMapRecord, DepthMaps, load_depth_view

        records = []
        for path in sorted((out / "depth").glob("*.npz")):
            view = load_depth_view(path)
            records.append(DepthMapRecord(view.name, view.camera, path, [], (0.0, 0.0)))
        depth = DepthMaps(views=records)
    else:
        depth = estimate_depth_maps(scene, out / "depth", config.dense)
    timings["depth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fused = fuse_depth_maps(depth, out / "fusion", config.dense)
    timings["fusion"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    isolated = isolate_product(fused, scene, out / "isolation", config.dense)
    timings["isolation"] = time.perf_counter() - t0
    if use_hull:
        t0 = time.perf_counter()
        isolated, stats = hull_fusion(isolated, scene, masks, depth if use_fill else None)
        report["hull_fusion"] = stats
        timings["hull"] = time.perf_counter() - t0
    np.savez(out / "cloud.npz", points=isolated.points, normals=isolated.normals, colors=isolated.colors,
             plane=isolated.plane if isolated.plane is not None else np.zeros(0), up=isolated.up,
             voxel=isolated.voxel_size)  # for working on the mesh stage alone
    t0 = time.perf_counter()
    mesh = build_mesh(isolated, out / "mesh", config.mesh)
    timings["mesh"] = time.perf_counter() - t0
    surface = GroundTruthSurface.from_mesh(gt.mesh_path, gt.camera_list())
    report["dense_points"] = surface.evaluate(isolated.points).to_dict()
    if mesh.ok and mesh.mesh is not None:
        vertices, triangles = np.asarray(mesh.mesh.vertices), np.asarray(mesh.mesh.triangles)
        from benchmarks.evaluate import sample_mesh

        report["mesh"] = surface.evaluate(sample_mesh(vertices, triangles, 500_000)).to_dict()
        report["mesh"]["silhouette_iou"] = silhouette_iou(vertices, triangles, gt)
        report["mesh"]["holes"], report["mesh"]["boundary_edges"] = boundary_loops(triangles)
        report["mesh"]["metrics"] = {k: v for k, v in mesh.metrics.items() if not isinstance(v, dict | list)}
        o3d.io.write_triangle_mesh(str(out / "mesh_eval.ply"), mesh.mesh)
    else:
        report["mesh"] = {"failure": mesh.failure}
    report["timings"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return report


def summary(report: dict[str, Any]) -> str:
    m, mesh = report["masks"], report["mesh"]
    line = (f"{Path(report['capture']).name} {report['preset']} hull={report['hull']}: masks IoU {m['iou_mean']:.3f} "
            f"(min {m['iou_min']:.3f}), conf median {m['confidence_median']:.2f}")
    if "fscore" in mesh:
        line += (f"; mesh F@0.5% {mesh['fscore'][0]:.3f} F@1% {mesh['fscore'][1]:.3f} (P {mesh['precision'][1]:.3f} "
                 f"R {mesh['recall'][1]:.3f}), silhouette IoU {mesh['silhouette_iou']['mean']:.3f}, "
                 f"boundary edges {mesh['boundary_edges']}")
    return line + f"; seconds {report['timings']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_on_truth", description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path, help="a capture folder written by the synthetic renderer")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--no-hull", action="store_true", help="stereo only (today's fusion), for comparison")
    parser.add_argument("--no-fill", action="store_true", help="hull without the planar completion")
    parser.add_argument("--reuse-depth", action="store_true", help="reuse the depth maps of an earlier run in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("benchmarks/out/dense_on_truth") / f"{args.capture.name}_{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    report = run(args.capture, out, args.preset, not args.no_hull, not args.no_fill, args.reuse_depth)
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
