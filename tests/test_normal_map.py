"""The tangent-space normal map baked from the dense points: its convention on known surfaces, and a run that writes
it into the texture stage and the asset's GLB (normalTexture, no Khronos validator error)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.synthetic import CaptureSpec, render_capture
from core.cli.run import list_photos
from core.config import preset_config
from core.gltf_validator import validate_gltf, validator_available
from core.manifest import load_manifest
from core.pipeline import run_pipeline
from core.stages.texture import (
    FLAT_NORMAL,
    DenseSurface,
    bake_normal_map,
    cell_atlas_mesh,
    shading_normals,
)


def _plane(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A unit square in z = 0, n x n quads split into triangles wound counter-clockwise about +z (normal +z)."""
    xs, ys = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    V = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    F = []
    for r in range(n):
        for c in range(n):
            a, b, d, e = r * (n + 1) + c, r * (n + 1) + c + 1, (r + 1) * (n + 1) + c, (r + 1) * (n + 1) + c + 1
            F += [(a, b, e), (a, e, d)]
    return V, np.array(F, np.int64)


def _dense_on_plane(normal: np.ndarray, count: int = 40_000) -> DenseSurface:
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-0.05, 1.05, (count, 2)), np.zeros(count)])
    return DenseSurface(points, np.tile(normal / np.linalg.norm(normal), (count, 1)))


def _texels(faces: np.ndarray, uv: np.ndarray, size: int, image: np.ndarray) -> np.ndarray:
    """(M, 3) the RGB texel at each face's UV centroid."""
    centre = uv[faces].mean(1)
    return image[(centre[:, 1] * size).astype(int), (centre[:, 0] * size).astype(int)].astype(np.float64)


def test_flat_surface_bakes_to_flat_normal(tmp_path: Path) -> None:
    V, F = _plane()
    vertices, faces, uv, size, cell = cell_atlas_mesh(V, F, 256)
    png = tmp_path / "normal.png"
    metrics = bake_normal_map(vertices, faces, uv, size, cell, _dense_on_plane(np.array([0.0, 0.0, 1.0])), png)
    image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    assert metrics["normal_reached_share"] == 1.0
    assert np.abs(_texels(faces, uv, size, image) - FLAT_NORMAL).max() <= 1
    # The gutters are dilated from the faces: the whole atlas is flat, no black.
    assert np.abs(image.astype(int) - FLAT_NORMAL).max() <= 1


def test_tilted_dense_surface_bakes_to_its_tangent_space_direction(tmp_path: Path) -> None:
    V, F = _plane()
    vertices, faces, uv, size, cell = cell_atlas_mesh(V, F, 256)
    tilted = np.array([np.sin(np.radians(30)), -np.sin(np.radians(10)), 1.0])
    tilted /= np.linalg.norm(tilted)
    png = tmp_path / "normal.png"
    bake_normal_map(vertices, faces, uv, size, cell, _dense_on_plane(tilted), png)
    image = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    decoded = _texels(faces, uv, size, image) / 127.5 - 1.0
    # glTF: x = right in the image (+u), y = up in the image (-v, the uv origin is the top-left), z = the normal.
    # Worked out here from each face's uv alone: the 3D directions of +u and -v (the plane's normal is +z).
    tri, tri_uv = vertices[faces], uv[faces]
    for k in range(len(faces)):
        duv = np.stack([tri_uv[k, 1] - tri_uv[k, 0], tri_uv[k, 2] - tri_uv[k, 0]])
        dp = np.stack([tri[k, 1] - tri[k, 0], tri[k, 2] - tri[k, 0]])
        jacobian = np.linalg.solve(duv, dp)  # rows: dP/du, dP/dv
        right = jacobian[0] / np.linalg.norm(jacobian[0])
        up = -jacobian[1] - right * (-jacobian[1] @ right)
        up /= np.linalg.norm(up)
        expected = np.array([tilted @ right, tilted @ up, tilted[2]])
        assert np.abs(decoded[k] - expected).max() < 0.02, (k, decoded[k], expected)
    # And a viewer shading with the map gets the dense normal back (the faces' centres).
    bary = np.full((len(faces), 3), 1 / 3)
    shaded = shading_normals(vertices, faces, uv, np.arange(len(faces)), bary, image)
    assert np.degrees(np.arccos(np.clip(shaded @ tilted, -1, 1))).max() < 1.5
    assert np.degrees(np.arccos(shading_normals(vertices, faces, uv, np.arange(len(faces)), bary)[:, 2].min())) < 1e-6


@pytest.mark.skipif(not validator_available(), reason="needs ./studio setup (Node.js, gltf-validator)")
def test_run_with_normal_map_writes_it_into_texture_and_glb(tmp_path: Path) -> None:
    import pygltflib

    spec = CaptureSpec(object="procedural-box", num_views=16, width=480, height=360, seed=5)
    capture = render_capture(spec, tmp_path / "capture")
    config = preset_config("test").with_changes({"depth_prior": {"enabled": False}, "texture": {"normal_map": True}})
    run_dir = tmp_path / "run"
    manifest = run_pipeline(list_photos(capture.image_dir), run_dir, config)
    assert manifest.status == "done", manifest.failure_reason
    manifest = load_manifest(run_dir)
    assert {"texture.normal", "asset.normal"} <= set(manifest.artifacts)
    normal = cv2.cvtColor(cv2.imread(str(run_dir / manifest.artifacts["texture.normal"].path)), cv2.COLOR_BGR2RGB)
    base = cv2.imread(str(run_dir / manifest.artifacts["texture.base_color"].path))
    assert normal.shape == base.shape
    texture = next(s for s in manifest.stages if s.name == "texture")
    assert texture.metrics["normal_reached_share"] > 0.5
    # Mostly near the mesh's own normal (blue), some texels tilted by the dense surface.
    assert np.median(normal[..., 2]) > 230 and (np.abs(normal[..., :2].astype(int) - 128) > 8).mean() > 0.01
    glb = run_dir / "asset" / "asset.glb"
    gltf = pygltflib.GLTF2().load_binary(str(glb))
    assert gltf.materials[0].normalTexture is not None
    assert validate_gltf(glb).errors == 0
    for name, entry in manifest.stages[-1].metrics.get("profiles", {}).items():
        variant = run_dir / entry["file"]
        if variant.suffix == ".glb":
            assert validate_gltf(variant).errors == 0, name
