"""Dense stages on ground-truth cameras: masks, depth, fusion (+ visual hull), isolation, mesh, scored.

A development option: camera errors are the SfM stage's business, so this runs the stages after SfM on the true
cameras of a rendered capture (sparse points: image corners lifted with the true depth, as SfM would triangulate
them on the textured parts; ``benchmarks.synthetic.ground_truth_scene``) and scores

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

from benchmarks.evaluate import GroundTruthSurface, sample_mesh
from benchmarks.synthetic import ground_truth_scene, load_ground_truth
from core.config import preset_config
from core.geometry import boundary_loops, silhouette_iou
from core.segmentation import mask_iou

logger = logging.getLogger(__name__)


def run(capture_dir: Path, out: Path, preset: str = "balanced", use_hull: bool = True,
        reuse_depth: bool = False, depth_method: str | None = None) -> dict[str, Any]:
    """The stages after SfM on a capture's true cameras, into ``out`` (a run folder), scored."""
    import open3d as o3d

    from core.stages.depth import DepthMapRecord, DepthMaps, load_depth_map, run_depth
    from core.stages.fusion import run_fusion
    from core.stages.isolation import run_isolation
    from core.stages.masks import run_masks
    from core.stages.mesh import run_mesh

    gt = load_ground_truth(capture_dir)
    config = preset_config(preset)  # type: ignore[arg-type]
    if depth_method:
        config = config.with_changes({"depth": {"method": depth_method}})
    config = config.with_changes({"fusion": {"silhouettes": "on" if use_hull else "off"}})
    scene = ground_truth_scene(gt)
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"capture": str(capture_dir), "preset": preset, "hull": use_hull,
                              "depth_method": config.depth.method}

    t0 = time.process_time()
    masks = run_masks(scene, out, config.masks)
    timings["masks"] = time.process_time() - t0
    ious = [mask_iou(masks.mask_for(p), gt.load_mask(p.name)) for p in scene.photos]
    report["masks"] = {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
                       "confidence_median": masks.metrics["median_confidence"],
                       "per_photo": {p.name: {"iou": round(i, 4), "confidence": masks.confidence_for(p)}
                                     for p, i in zip(scene.photos, ious, strict=True)}}
    t0 = time.process_time()
    maps_dir = out / "depth" / "maps"
    if reuse_depth and maps_dir.is_dir():  # development: the same capture, only later stages changed
        records = []
        for path in sorted(maps_dir.glob("*.npz")):
            depth_map = load_depth_map(path)
            records.append(DepthMapRecord(depth_map.photo, depth_map.camera, path, [], (0.0, 0.0)))
        depth = DepthMaps(maps=records)
    else:
        depth = run_depth(scene, out, config.depth, masks=[masks.mask_for(p) for p in scene.photos])
    timings["depth"] = time.process_time() - t0
    t0 = time.process_time()
    fused = run_fusion(depth, out, config.fusion, silhouettes=masks.silhouettes(scene) if use_hull else None)
    timings["fusion"] = time.process_time() - t0
    report["fusion"] = {k: v for k, v in fused.metrics.items() if not isinstance(v, dict | list)}
    t0 = time.process_time()
    isolated = run_isolation(fused, scene, out, config.isolation)
    timings["isolation"] = time.process_time() - t0
    t0 = time.process_time()
    mesh = run_mesh(isolated, out, config.mesh)
    timings["mesh"] = time.process_time() - t0
    surface = GroundTruthSurface.from_mesh(gt.mesh_path, gt.camera_list())
    report["dense_points"] = surface.evaluate(isolated.points).to_dict()
    if mesh.ok and mesh.mesh is not None:
        vertices, triangles = np.asarray(mesh.mesh.vertices), np.asarray(mesh.mesh.triangles)
        report["mesh"] = surface.evaluate(sample_mesh(vertices, triangles, 500_000)).to_dict()
        report["mesh"]["silhouette_iou"] = silhouette_iou(vertices, triangles, gt.camera_list(),
                                                          [gt.load_mask(n) for n in gt.image_names])
        report["mesh"]["holes"], report["mesh"]["boundary_edges"] = boundary_loops(triangles)
        report["mesh"]["metrics"] = {k: v for k, v in mesh.metrics.items() if not isinstance(v, dict | list)}
        o3d.io.write_triangle_mesh(str(out / "mesh_eval.ply"), mesh.mesh)
    else:
        report["mesh"] = {"failure": mesh.failure}
    report["cpu_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    return report


def summary(report: dict[str, Any]) -> str:
    m, mesh = report["masks"], report["mesh"]
    line = (f"{Path(report['capture']).name} {report['preset']} {report['depth_method']} hull={report['hull']}: "
            f"masks IoU {m['iou_mean']:.3f} "
            f"(min {m['iou_min']:.3f}), conf median {m['confidence_median']:.2f}")
    if "fscore" in mesh:
        line += (f"; mesh F@0.5% {mesh['fscore'][0]:.3f} F@1% {mesh['fscore'][1]:.3f} (P {mesh['precision'][1]:.3f} "
                 f"R {mesh['recall'][1]:.3f}), silhouette IoU {mesh['silhouette_iou']['mean']:.3f}, "
                 f"boundary edges {mesh['boundary_edges']}")
    return line + f"; CPU seconds {report['cpu_seconds']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_on_truth", description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path, help="a capture folder written by the synthetic renderer")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--no-hull", action="store_true", help="stereo only (today's fusion), for comparison")
    parser.add_argument("--depth-method", choices=("patchmatch", "sweep"), default=None,
                        help="override the preset's depth method")
    parser.add_argument("--reuse-depth", action="store_true", help="reuse the depth maps of an earlier run in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("benchmarks/out/dense_on_truth") / f"{args.capture.name}_{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    report = run(args.capture, out, args.preset, not args.no_hull, args.reuse_depth, args.depth_method)
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
