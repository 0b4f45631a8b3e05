"""The artefact registry: every file or folder a stage writes, declared once with its key, path and kind.

A key is ``<stage>.<name>`` and its path lies in ``RUN/<stage>/`` (stage name = run-folder name = artefact prefix).
Writers ask the registry where to write (``MESH_GLB.path(run_dir)``); the pipeline records what a stage wrote, with
its size and sha256, in the manifest; readers (core/report/runs.py) resolve recorded paths and refuse any that
leaves the run folder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ArtifactKind = Literal["file", "folder"]


@dataclass(frozen=True)
class Artifact:
    key: str
    """``<stage>.<name>``."""
    relative: str
    """Path inside the stage's run folder."""
    kind: ArtifactKind
    description: str

    @property
    def stage(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def run_path(self) -> str:
        """Path relative to the run folder."""
        return f"{self.stage}/{self.relative}"

    def path(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.stage / self.relative


CAPTURE_ORIGINALS = Artifact("capture.originals", "originals", "folder", "untouched uploads under generated names")
CAPTURE_IMAGES = Artifact("capture.images", "images", "folder", "oriented, downscaled working copies")
SFM_MODEL = Artifact("sfm.model", "model", "folder",
                     "COLMAP binary model of the largest reconstruction (pycolmap.Reconstruction opens it)")
SFM_MATCHES = Artifact("sfm.matches", "matches.json", "file",
                       "photo working names and the verified inlier matches between every pair")
SFM_UNDISTORTED = Artifact("sfm.undistorted", "undistorted", "folder",
                           "pinhole images and model (images/, sparse/) used by the dense stages")
MASKS_IMAGES = Artifact("masks.images", "images", "folder",
                        "per-photo product mask <stem>.png (255 = product) at the size of the undistorted images")
DEPTH_MAPS = Artifact("depth.maps", "maps", "folder",
                      "per-photo <stem>.npz: depth, confidence, image, camera (core.stages.depth.load_depth_map)")
DEPTH_PRIOR_SUPPLIED = Artifact("depth_prior.supplied", "supplied", "folder",
                                "the user's depth maps, copied in under the photos' working stems")
DEPTH_PRIOR_MAPS = Artifact("depth_prior.maps", "maps", "folder",
                            "depth maps merged with the prior where it was used (<stem>.npz, the depth.maps layout)")
DEPTH_PRIOR_PRIORS = Artifact("depth_prior.priors", "priors", "folder",
                              "per-photo prior: raw, aligned, per-pixel source and the fit (<stem>.npz)")
FUSION_POINTS = Artifact("fusion.points", "points.ply", "file", "fused coloured point cloud with normals")
ISOLATION_POINTS = Artifact("isolation.points", "points.ply", "file", "the product's coloured points")
ISOLATION_FRAME = Artifact("isolation.frame", "frame.json", "file",
                           "where the product stands: up direction, focus point, support plane")
MESH_PLY = Artifact("mesh.ply", "mesh.ply", "file", "the final mesh with vertex colours (reconstruction frame)")
MESH_GLB = Artifact("mesh.glb", "mesh.glb", "file", "the final mesh as glTF binary (y-up, standing on y = 0)")
MESH_OBJ = Artifact("mesh.obj", "mesh.obj", "file", "the final mesh as OBJ (+ mesh.mtl), vertex colours")
TEXTURE_MESH = Artifact("texture.mesh", "textured.npz", "file",
                        "the UV-mapped mesh: vertices, faces, uv (glTF v down), reconstruction frame")
TEXTURE_BASE_COLOR = Artifact("texture.base_color", "base_color.png", "file",
                              "the base-colour atlas baked from the photos (square, power of two)")
TEXTURE_NORMAL = Artifact("texture.normal", "normal.png", "file",
                          "the tangent-space normal map baked from the dense surface (the atlas's layout), optional")
ASSET_GLB = Artifact("asset.glb", "asset.glb", "file",
                     "the shop-ready asset: glTF 2.0 PBR, textured, metres, Y-up on Y = 0, front +Z")
ASSET_USDZ = Artifact("asset.usdz", "asset.usdz", "file", "the asset as USDZ (UsdPreviewSurface, texture packaged)")
ASSET_OBJ = Artifact("asset.obj", "asset.obj", "file", "the asset as OBJ with UVs (+ asset.mtl, asset.png)")
ASSET_MTL = Artifact("asset.mtl", "asset.mtl", "file", "the OBJ's material (map_Kd asset.png)")
ASSET_TEXTURE = Artifact("asset.texture", "asset.png", "file", "the asset's base-colour texture (PNG)")
ASSET_NORMAL = Artifact("asset.normal", "asset_normal.png", "file", "the asset's tangent-space normal map (PNG)")
ASSET_CHECKS = Artifact("asset.checks", "checks.json", "file",
                        "frame, size and each marketplace profile's pass/fail with reasons and the file that passes")
ASSET_VARIANTS = Artifact("asset.variants", "variants", "folder",
                          "per-profile variants (<profile>.glb / .usdz) written where the asset itself fails")
RELIEF_PLY = Artifact("relief.ply", "relief.ply", "file", "the single-photo relief mesh with vertex colours")
RELIEF_GLB = Artifact("relief.glb", "relief.glb", "file", "the relief as glTF binary")
RELIEF_OBJ = Artifact("relief.obj", "relief.obj", "file", "the relief as OBJ (+ relief.mtl)")
RELIEF_DEPTH = Artifact("relief.depth", "depth.npy", "file", "the depth used for the relief (float32, NaN unknown)")
STICKER_PNG = Artifact("sticker.png", "sticker.png", "file",
                      "the die-cut cartoon sticker: square RGBA PNG, white border, soft shadow")
STICKER_WEBP = Artifact("sticker.webp", "sticker.webp", "file", "the sticker as a 512 x 512 WebP (WhatsApp, Telegram)")
STICKER_GLB = Artifact("sticker.glb", "sticker.glb", "file",
                       "the 3D sticker: a closed puffed solid, the cartoon as its front texture (glTF binary)")
STICKER_PLY = Artifact("sticker.ply", "sticker.ply", "file", "the 3D sticker with vertex colours (for the viewer)")
STICKER_CUTOUT = Artifact("sticker.cutout", "cutout.png", "file",
                          "the subject's mask at the working photo's size (255 = subject)")
STICKER_THEME = Artifact("sticker.theme", "theme.json", "file",
                         "the theme used and why (the prompt, keywords or text similarity), and the stylisation")

REGISTRY: dict[str, Artifact] = {a.key: a for a in [
    CAPTURE_ORIGINALS, CAPTURE_IMAGES, SFM_MODEL, SFM_MATCHES, SFM_UNDISTORTED, MASKS_IMAGES, DEPTH_MAPS,
    DEPTH_PRIOR_SUPPLIED, DEPTH_PRIOR_MAPS, DEPTH_PRIOR_PRIORS, FUSION_POINTS, ISOLATION_POINTS, ISOLATION_FRAME,
    MESH_PLY, MESH_GLB, MESH_OBJ, TEXTURE_MESH, TEXTURE_BASE_COLOR, TEXTURE_NORMAL, ASSET_GLB, ASSET_USDZ, ASSET_OBJ,
    ASSET_MTL, ASSET_TEXTURE, ASSET_NORMAL, ASSET_CHECKS, ASSET_VARIANTS, RELIEF_PLY, RELIEF_GLB, RELIEF_OBJ,
    RELIEF_DEPTH,
    STICKER_PNG, STICKER_WEBP, STICKER_GLB, STICKER_PLY, STICKER_CUTOUT, STICKER_THEME,
]}


def artifact(key: str) -> Artifact:
    """The registered artefact ``key`` (KeyError names the known keys)."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown artefact {key!r}; known: {', '.join(sorted(REGISTRY))}") from None


def checksum(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder's files (names, in sorted order, and contents)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, file_sha256(path)
    digest = hashlib.sha256()
    total = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        total += file.stat().st_size
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file_sha256(file).encode() + b"\n")
    return total, digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
