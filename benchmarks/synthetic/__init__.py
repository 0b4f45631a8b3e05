"""The ground-truth capture generator: a development tool for tests, benchmarks and the bundled sample.

Not part of the engine (core/ never imports it). ``render_capture(spec, out_dir)`` renders photos, cameras,
depth, masks and the product mesh; ``load_ground_truth(out_dir)`` reads a capture back. Modules: ``spec`` (what a
capture is), ``textures``, ``shapes``, ``renderer``; ``python -m benchmarks.synthetic --help`` for the CLI.
"""

from benchmarks.synthetic.renderer import render_capture
from benchmarks.synthetic.spec import (
    DEFAULT_SEED,
    CaptureGroundTruth,
    CaptureSpec,
    ground_truth_scene,
    load_ground_truth,
    read_cameras_json,
)

SAMPLE_SPEC = CaptureSpec(object="procedural-bottle", mode="orbit", backdrop="plain", support="textured",
                          product_texture="packaging", num_views=24, width=800, height=600, image_format="jpg",
                          write_depth=False, write_masks=False, seed=DEFAULT_SEED)
"""The bundled sample capture (assets/sample): ``python -m benchmarks.synthetic --sample assets/sample``."""

__all__ = ["DEFAULT_SEED", "SAMPLE_SPEC", "CaptureGroundTruth", "CaptureSpec", "ground_truth_scene",
           "load_ground_truth", "read_cameras_json", "render_capture"]
