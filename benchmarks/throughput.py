"""Catalogue throughput: SKUs per hour through the batch command on a local Ray cluster, with 1 and 2 workers.

    python -m benchmarks.throughput [--skus 4] [--preset preview] [--workers 1,2] [--views 12 --size 640x480]

Renders a catalogue of generated captures (bottles and boxes with packaging texture, on a textured mat, different
seeds; ground truth kept), starts a private Ray cluster with this machine's cores, and runs
``python -m core.batch CATALOGUE --out RUNS --backend ray`` once per worker count. N workers = N jobs at once, each
given cores / N CPUs (``PRODUCT_STUDIO_JOB_CPUS``), so every configuration uses the same cores and the figure shows
how well jobs side by side use them; on a real cluster each node adds its own cores. Every run is also scored on its
poses against the ground truth, so a fast but wrong configuration cannot pass for a good one. Writes the section
"throughput" of benchmarks/RESULTS.md (kept when ``benchmarks.run`` rewrites the file) and throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.evaluate import evaluate_poses
from benchmarks.run import BENCH_DIR, REPO_ROOT, machine_info, write_section
from benchmarks.synthetic import CaptureSpec, load_ground_truth, render_capture
from core.jobs.backend import JOB_CPUS_ENV
from core.jobs.store import Store
from core.report.runs import open_run
from core.scene import cameras_from_model


def render_catalogue(root: Path, skus: int, views: int, size: tuple[int, int]) -> dict[str, Path]:
    """SKU -> capture folder (photos in images/, ground truth beside them); rendered once and reused."""
    captures = {}
    for i in range(skus):
        sku = f"SKU-{i + 1:03d}"
        folder = root / "captures" / f"{sku}_{views}x{size[0]}x{size[1]}"
        try:
            load_ground_truth(folder)
        except (FileNotFoundError, ValueError, KeyError):
            spec = CaptureSpec(object="procedural-bottle" if i % 2 == 0 else "procedural-box", mode="orbit",
                               support="textured", backdrop="plain", num_views=views, width=size[0],
                               height=size[1], seed=100 + i)
            render_capture(spec, folder)
        captures[sku] = folder
    return captures


def run_batch(captures: dict[str, Path], out: Path, preset: str, workers: int, cpus: int) -> dict[str, Any]:
    from core.cli import batch

    catalogue = out / "catalogue"
    for sku, folder in captures.items():
        shutil.copytree(load_ground_truth(folder).image_dir, catalogue / sku)
    os.environ[JOB_CPUS_ENV] = str(max(1, cpus // workers))
    started = time.perf_counter()
    code = batch.main([str(catalogue), "--out", str(out / "runs"), "--backend", "ray", "--preset", preset])
    wall = time.perf_counter() - started
    store = Store(out / "runs")
    jobs = {j.sku: j for j in store.list_jobs()}
    per_sku = []
    for sku, folder in captures.items():
        job = jobs[sku]
        run = open_run(store.run_dir(job))
        truth = load_ground_truth(folder)
        model = run.artifact("sfm.model") if run else None
        estimated = {run.photo_name(n): c for n, c in cameras_from_model(model).items()} if model else {}
        poses = evaluate_poses(estimated, truth.cameras, truth.object_diagonal)
        mesh = run.manifest.stage("mesh") if run else None
        per_sku.append({"sku": sku, "status": job.status, "seconds": round(job.finished - job.started, 1)
                        if job.finished and job.started else None, "placed": poses.num_registered,
                        "photos": poses.num_images, "rotation_deg": round(poses.median_rotation_deg, 3),
                        "faces": mesh.metrics.get("faces") if mesh else None})
    done = sum(1 for s in per_sku if s["status"] == "done")
    return {"workers": workers, "cpus_per_job": max(1, cpus // workers), "exit": code, "wall_s": round(wall, 1),
            "done": done, "skus_per_hour": round(3600 * done / wall, 1), "per_sku": per_sku}


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "## Catalogue throughput (Ray backend, batch command)",
        "",
        f"`{result['command']}` on {m['date']} at commit {m.get('git', 'unknown')}: {result['skus']} SKUs of "
        f"{result['views']} photos {result['size']}, preset {result['preset']}, a private Ray cluster with "
        f"{result['cpus']} CPUs on this machine ({m['cpu_count']} cores, load average at start "
        f"{m['load_avg_at_start']}). N workers = N jobs at once with {result['cpus']}/N cores each. The machine is "
        "shared with other work: the figures are indicative (wall clock), the comparison between rows is the point.",
        "",
        "| workers | cores per job | wall s | SKUs done | SKUs per hour | seconds per SKU (each job) | photos placed |"
        " median rotation error ° | mesh faces |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        skus = run["per_sku"]
        seconds = [s["seconds"] for s in skus if s["seconds"] is not None]
        lines.append(
            f"| {run['workers']} | {run['cpus_per_job']} | {run['wall_s']:.0f} | {run['done']}/{len(skus)} | "
            f"{run['skus_per_hour']:.0f} | {np.median(seconds):.0f} (median) | "
            f"{sum(s['placed'] for s in skus)}/{sum(s['photos'] for s in skus)} | "
            f"{np.median([s['rotation_deg'] for s in skus]):.3f} | "
            f"{', '.join(str(s['faces']) for s in skus)} |")
    lines += ["", "Same cameras with either worker count: the SfM stage is bit-identical whatever the thread count "
              "(checked by tests/test_ray.py against the local backend)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, default=4)
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out" / "throughput")
    parser.add_argument("--report", type=Path, default=BENCH_DIR, help="folder of RESULTS.md and throughput.json")
    args = parser.parse_args(argv)
    import ray

    from core.jobs.ray_backend import NAMESPACE

    size = tuple(int(v) for v in args.size.split("x"))
    cpus = os.cpu_count() or 2
    machine = machine_info()
    captures = render_catalogue(args.out, args.skus, args.views, size)  # type: ignore[arg-type]
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    runs = []
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            out = args.out / f"workers-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            runs.append(run_batch(captures, out, args.preset, workers, cpus))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "per_sku"}), flush=True)
    finally:
        ray.shutdown()
    result = {"command": "python -m benchmarks.throughput " + " ".join(argv or []), "machine": machine,
              "skus": args.skus, "views": args.views, "size": args.size, "preset": args.preset, "cpus": cpus,
              "runs": runs}
    (args.report / "throughput.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    write_section(args.report / "RESULTS.md", "throughput", report(result))
    print(f"wrote {args.report / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
