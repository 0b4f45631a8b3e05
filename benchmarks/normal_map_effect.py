"""What a normal map baked from the dense points buys (issue 12): shading-normal error in held-out views.

On a finished run of a synthetic capture, the final mesh (and the same mesh decimated to fewer faces, where a normal
map should matter more) is laid out in the texture stage's cell atlas, and a tangent-space normal map is baked onto
it from the run's dense points (``core.stages.texture.bake_normal_map``). In every held-out novel view the normal a
glTF viewer shades each pixel with is compared with the true mesh's normal there, with and without the map
(``benchmarks.run.shading_normal_error``, over the product's true mask). Nothing is written into the run folder.

    python -m benchmarks.normal_map_effect RUN_DIR CAPTURE_DIR [--faces 0 25000] [--out /tmp/normal_map_effect]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2

logger = logging.getLogger(__name__)


def measure(run_dir: Path, capture_dir: Path, budgets: list[int], out: Path, size: int = 2048) -> dict[str, Any]:
    """{budget: {faces, bake_seconds, reached_share, smooth_normals: {...}, normal_map: {...}}} (0 = the run's
    own mesh)."""
    import numpy as np
    import open3d as o3d

    from benchmarks.evaluate import GroundTruthSurface, evaluate_poses
    from benchmarks.run import _sfm_cameras, shading_normal_error
    from benchmarks.synthetic import load_ground_truth, read_cameras_json
    from core.report.runs import open_run
    from core.stages.mesh import decimate
    from core.stages.texture import bake_normal_map, cell_atlas_mesh, load_dense_surface

    run = open_run(run_dir)
    truth = load_ground_truth(capture_dir)
    alignment = evaluate_poses(_sfm_cameras(run), truth.cameras, truth.object_diagonal).alignment
    if alignment is None:
        raise RuntimeError("the run's cameras do not align with the ground truth")
    surface = GroundTruthSurface.from_mesh(truth.mesh_path, num_samples=1000)
    dense = load_dense_surface(run.run_dir)
    if dense is None:
        raise RuntimeError("the run has no dense points with normals")
    cameras = read_cameras_json(capture_dir / "novel" / "cameras.json")
    mesh = o3d.io.read_triangle_mesh(str(run.artifact("mesh.ply")))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for budget in budgets:
        model = mesh if budget <= 0 else decimate(mesh, budget)[0]
        vertices, faces, uv, side, cell = cell_atlas_mesh(np.asarray(model.vertices), np.asarray(model.triangles),
                                                          size)
        png = out / f"normal_{budget or 'full'}.png"
        start = time.perf_counter()
        metrics = bake_normal_map(vertices, faces, uv, side, cell, dense, png)
        seconds = time.perf_counter() - start
        image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
        placed = alignment.apply(vertices)
        errors = shading_normal_error({"smooth_normals": (placed, faces, uv, None),
                                       "normal_map": (placed, faces, uv, image)}, surface, cameras,
                                      capture_dir / "novel")
        results[str(budget or "full")] = {"faces": len(faces), "atlas": side, "bake_seconds": round(seconds, 2),
                                          "reached_share": metrics["normal_reached_share"], **errors}
        logger.info("%s: %s", budget or "full", results[str(budget or "full")])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("capture_dir", type=Path)
    parser.add_argument("--faces", type=int, nargs="+", default=[0, 25_000],
                        help="face budgets (0 = the run's own mesh)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/normal_map_effect"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = measure(args.run_dir, args.capture_dir, args.faces, args.out)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
