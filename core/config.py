"""Run configuration: one frozen dataclass section per stage, four presets, recorded whole in every manifest.

Section name = stage name (core/stages/<name>) = run-folder name. Sections are frozen: change them with
``config.with_changes({"depth": {"num_depth_planes": 64}})``, which raises on an unknown section or field, so a
misspelt key can never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PresetName = Literal["preview", "balanced", "full", "test"]
PRESETS: tuple[PresetName, ...] = ("preview", "balanced", "full")
"""The presets a user chooses from; ``test`` (tiny and fast, for the test suite) is not offered."""
ALL_PRESETS: tuple[PresetName, ...] = (*PRESETS, "test")


@dataclass(frozen=True)
class CaptureConfig:
    """Photo checks and the working copies made for reconstruction."""

    working_max_side: int = 1024
    """Photos are downscaled so their longer side is at most this many pixels."""
    min_side: int = 200
    """Photos whose shorter side is smaller than this are rejected."""
    max_pixels: int = 100_000_000
    """Declared pixel count above which a file is refused before decoding (decompression bombs)."""
    max_file_bytes: int = 60_000_000
    """Files larger than this are refused."""
    min_photos: int = 3
    """A multi-view run needs at least this many usable photos."""


@dataclass(frozen=True)
class SfmConfig:
    """COLMAP structure-from-motion through pycolmap."""

    max_num_features: int = 8192
    """SIFT keypoints per photo. Measured on the soup-can orbit (24 x 1024x768, SfM CPU seconds): 8192 -> 103 s
    (extract 29, match 31, map 27, trust 14), median rotation error 0.007°; 4096 -> 93 s (27, 29, 21, 14), 0.009°.
    Extraction is the scale-space pyramid more than the keypoints, so halving them saves only 10 %: kept for the
    plain products, whose few features are all on the product."""
    exhaustive_max_images: int = 60
    """Exhaustive matching up to this many photos; above, capture-order neighbours plus retrieved look-alikes."""
    sequential_overlap: int = 8
    """Successors in capture order each photo is matched with (large sets)."""
    retrieval_neighbours: int = 10
    """Most similar photos (bag of SIFT words) each photo is also matched with (large sets; closes loops)."""
    min_num_matches: int = 15
    """Two-view geometries with fewer inlier matches are ignored."""
    init_min_inliers: int = 50
    """Inlier matches the first image pair needs (COLMAP's 100 leaves sparse rings unstarted)."""
    register_min_inliers: int = 15
    """2D-3D inliers a photo needs to be placed (COLMAP's 30 drops 3 of 16 Middlebury templeSparseRing photos)."""
    register_min_inlier_ratio: float = 0.15
    """Inlier ratio a photo needs to be placed."""
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model for the photos."""
    static_pixel_diff: float = 6.0
    """Grey-level difference under which a pixel looks the same in two photos (still background test)."""
    static_texture_std: float = 4.0
    """Local grey-level spread above which a pixel counts as textured (only texture tells camera positions apart)."""
    same_spot_share: float = 0.5
    """Share of textured pixels two photos must have in common to count as taken from the same spot (turntable)."""
    seed: int = 0
    """Random seed for COLMAP (RANSAC, mapping)."""
    num_threads: int = -1
    """Threads for COLMAP; -1 uses the cores the run is given (``cpu_budget``)."""


@dataclass(frozen=True)
class MasksConfig:
    """Product masks per photo (silhouettes for the visual hull; the product's region for the later stages)."""

    enabled: bool = True
    """Compute product masks (and let fusion carve the visual hull with them)."""
    supplied_dir: str | None = None
    """Folder of the user's masks, named like the photos (any image format, white = product); used as given."""
    max_side: int = 480
    """Segmentation runs on a copy with this longer side (GrabCut is the cost: ~0.7 s a photo at 480 px; the outline
    is then refined at full size)."""
    iterations: int = 4
    """GrabCut iterations per pass."""
    refine: bool = True
    """A second pass with the hull of the other photos' masks as hints (shadows, bits of plate)."""


@dataclass(frozen=True)
class DepthConfig:
    """Per-photo dense depth (multi-view stereo)."""

    max_side: int = 640
    """Longer side of the images used for dense depth."""
    num_source_views: int = 4
    """Source photos per reference photo."""
    num_depth_planes: int = 96
    """Depth hypotheses in the plane sweep (with PatchMatch: the half-resolution sweep that initialises it)."""
    method: Literal["patchmatch", "sweep"] = "patchmatch"
    """``patchmatch``: a depth and a normal per pixel (slanted windows, core/stages/depth/patchmatch.py); ``sweep``:
    fronto-parallel planes only. soup_orbit balanced (benchmarks/RESULTS.md, 2026-12-03): depth maps F@0.5%/1%
    0.85/0.93 -> 0.93/0.96, fused points 0.84/0.92 -> 0.89/0.92, mesh 0.74/0.80 -> 0.78/0.81 for depth 45 -> 148 s
    (whole run 175 -> 262 s)."""
    coarse_iterations: int = 3
    """PatchMatch propagation + refinement rounds at half resolution (with the 2 full-resolution and 1 geometric
    rounds: 6 s a photo at 640 px on 2 cores, the issue's ~150 s budget for 24 photos; not swept further)."""
    iterations: int = 2
    """PatchMatch rounds at full resolution."""
    geometric_iterations: int = 1
    """PatchMatch rounds with the other photos' depth maps in the cost (geometric consistency); 0 = none."""
    mask_margin: float = 0.03
    """With product masks PatchMatch searches the mask dilated by this share of the longer side (the rest gets no
    depth)."""
    seed: int = 0
    """Seed of PatchMatch's random hypotheses (the same seed gives the same maps)."""


@dataclass(frozen=True)
class DepthPriorConfig:
    """Monocular depth prior (transformers) or depth maps supplied with the photos."""

    enabled: bool = True
    """Use a depth prior when one can be found."""
    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    """Hugging Face checkpoint name, or a local folder."""
    model_path: str | None = None
    """Explicit local model folder (overrides everything else)."""
    allow_download: bool = False
    """Download the model when it is not found locally and the network is there."""
    input_size: int = 518
    """Longer side fed to the model."""
    depth_dir: str | None = None
    """Folder of per-photo depth maps (.npy float32 or 16-bit PNG in millimetres), same base names as the photos."""


@dataclass(frozen=True)
class FusionConfig:
    """Multi-view consistency and the fused point cloud."""

    min_consistent_views: int = 2
    """A depth is kept only when this many other views agree with it."""
    silhouettes: Literal["auto", "on", "off"] = "auto"
    """Fuse stereo with the visual hull of the product masks (drop stereo outside it, complete plain faces, fill
    from the hull where stereo has nothing). ``auto``: only where stereo confirms too little of the product
    (``fusion.hull.MAX_STEREO_COVERAGE``): a plain product needs the hull, a textured one's stereo is better than
    any hull; ``on`` / ``off`` force it (``--hull`` / ``--no-hull``). Balanced, mesh F@0.5%/1%: plain box orbit
    0.13/0.24 off, 0.72/0.88 auto (on); soup-can orbit 0.96/0.98 off and auto (off), on: 0.78/0.82 before the
    gate's checks (masks that cut stereo, the masks' vote, fill only where stereo has nothing), 0.91/0.94 with them."""
    hull_resolution: int = 160
    """Voxels along the longest side of the hull's box (a 0.2 m product: 1.3 mm voxels; its distance field is
    finer than that)."""


@dataclass(frozen=True)
class IsolationConfig:
    """Keeping the product, dropping the table and the room."""

    enabled: bool = True
    """Remove the support plane and background, keep the object the cameras look at."""


@dataclass(frozen=True)
class MeshConfig:
    """Meshing, cleanup, decimation, exports."""

    target_faces: int = 100_000
    """Face budget after decimation."""
    poisson_depth: int = 9
    """Octree depth of screened Poisson reconstruction (an upper bound: meshing uses at most ~2 points per cell)."""
    close_base: bool = True
    """Close the unseen base of a product standing on a table with a flat cap on the table (a closed model)."""


@dataclass(frozen=True)
class TextureConfig:
    """UV atlas and the base-colour texture baked from the photos."""

    enabled: bool = True
    """Bake a texture (off: the model keeps only its vertex colours)."""
    size: int = 2048
    """Side of the square atlas in texels (a power of two; grows when the faces would get too few texels)."""
    max_views: int = 0
    """Photos considered per face, spread over the capture (0 = all)."""
    normal_map: bool = False
    """Also bake a tangent-space normal map from the dense points onto the final mesh (GLB normalTexture, USDZ).

    Off: it buys nothing measurable. Shading-normal error against the true mesh in the held-out novel views
    (benchmarks/normal_map_effect.py, balanced runs, mean / median degrees, smooth vertex normals -> with the map):
    cracker box 6.04 / 2.52 -> 6.96 / 2.82, decimated to 25k faces 5.56 / 2.05 -> 6.92 / 2.80; soup can on a
    turntable 9.74 / 5.48 -> 10.54 / 5.77, 25k 9.25 / 4.91 -> 10.53 / 5.77. The fused points' normals are noisier
    than the Poisson mesh's (32 neighbours instead of 8: medians 2.32 and 5.19 but means 6.36 and 9.90, and a 37-49 s
    bake; plane fits to 32 points worse; the 100k mesh baked onto its 25k decimation 5.96 / 2.45 and 9.62 / 5.37:
    decimation smooths away noise, not detail). It adds 13-15 s to the texture stage (4-5 s without) and a ~5.3 MB
    PNG to the GLB (the cracker box's 11.6 MB -> ~17 MB, over Shopify's and Google's 15 MB)."""


@dataclass(frozen=True)
class ReliefConfig:
    """Single photo -> 3D relief."""

    target_faces: int = 100_000
    """Face budget of the relief grid."""
    remove_background: bool = True
    """Cut the table and background away from the product."""


@dataclass(frozen=True)
class StickerConfig:
    """Single photo -> 3D cartoon sticker customised by a theme prompt."""

    theme: str = ""
    """The user's theme: free text or a theme's name, matched to the nearest theme (empty: the default theme)."""
    size_px: int = 1024
    """Side of the square sticker PNG (the cut-out is stylised at this size; it is also the GLB's texture)."""
    webp_size: int = 512
    """Side of the square WebP (WhatsApp and Telegram stickers are 512 x 512)."""
    border_px: int = 24
    """Width of the white die-cut border around the silhouette, in sticker-PNG pixels (2.3 % of 1024 px, the
    look of a printed die-cut sticker)."""
    palette_size: int = 0
    """Most colours of the cartoon's fills (0: the theme's own palette size; larger values are capped by it)."""
    size_mm: float = 80.0
    """Longer side of the 3D sticker (a typical laptop sticker is 50-100 mm)."""
    thickness_mm: float = 1.5
    """Height of the flat back slab (the rim's height)."""
    puff_mm: float = 2.5
    """How far the front rises above the rim at the middle (the puffed look)."""
    mesh_cells: int = 192
    """Grid cells across the sticker for the 3D solid (192: ~4 px cells at 1024 px, ~60k faces)."""
    segmentation_max_side: int = 480
    """The cut-out's GrabCut runs at this longer side; the outline is then refined at full size."""
    use_depth_prior: bool = True
    """Separate the subject and shape the puff with the monocular depth model when one is found."""
    model_path: str | None = None
    """Local image-to-image model folder for the stylisation (else $PRODUCT_STUDIO_STICKER_MODEL, else
    models/sticker; none found: the classical stylisation)."""


@dataclass(frozen=True)
class AssetConfig:
    """The shop-ready asset: real size and pose, GLB/USDZ/OBJ exports, marketplace checks and variants."""

    height_mm: float | None = None
    """Known height of the product in millimetres (the catalogue's); the model is scaled to it."""
    width_mm: float | None = None
    """Known width (left to right as seen from the first photo), used when no height is given."""
    depth_mm: float | None = None
    """Known depth (front to back as seen from the first photo), used when neither height nor width is given."""
    known_distance: str | None = None
    """A known distance between two points picked on a photo, ``PHOTO:X1,Y1:X2,Y2:MM`` (core/known_distance.py): the
    user's photo name, two pixel positions in the original photo as the user sees it, the distance in millimetres.
    The model is scaled so the two points, found on the mesh along the photo's camera rays, are that far apart. It
    wins over a height, width or depth given as well (a warning then compares the two)."""
    profiles: tuple[str, ...] = ("shopify", "amazon", "google", "apple", "web")
    """Marketplace profiles the asset is checked against (core/stages/asset/profiles.py); a variant is written for
    each one the asset fails where fewer triangles or a smaller texture can fix it."""
    texture_size: int = 2048
    """Largest texture side (a power of two) of the asset; the baked atlas of a mesh without a texture uses it."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs, recorded in its manifest."""

    preset: PresetName = "balanced"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    sfm: SfmConfig = field(default_factory=SfmConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    depth_prior: DepthPriorConfig = field(default_factory=DepthPriorConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    isolation: IsolationConfig = field(default_factory=IsolationConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    relief: ReliefConfig = field(default_factory=ReliefConfig)
    sticker: StickerConfig = field(default_factory=StickerConfig)
    asset: AssetConfig = field(default_factory=AssetConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_changes(self, changes: Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
        """A copy with some fields of some sections changed; unknown sections or fields raise ValueError."""
        sections: dict[str, Any] = {}
        for name, values in changes.items():
            section = getattr(self, name, None)
            if name == "preset" or not dataclasses.is_dataclass(section):
                raise ValueError(f"unknown config section {name!r}; sections: {', '.join(section_names())}")
            known = {f.name for f in dataclasses.fields(section)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(unknown)} in config section {name!r}; "
                                 f"its fields: {', '.join(sorted(known))}")
            # JSON has no tuples: a recorded tuple field comes back as a list (frozen sections keep tuples).
            values = {k: tuple(v) if isinstance(v, list) and isinstance(getattr(section, k), tuple) else v
                      for k, v in values.items()}
            sections[name] = dataclasses.replace(section, **values)
        return dataclasses.replace(self, **sections)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """The configuration a manifest or job recorded (strict: unknown keys raise ValueError)."""
        data = dict(data)
        preset = data.pop("preset", "balanced")
        if preset not in ALL_PRESETS:
            raise ValueError(f"unknown preset {preset!r}")
        return cls(preset=preset).with_changes(_migrate_sections(data))


CPUS_ENV = "PRODUCT_STUDIO_CPUS"
"""Cores a run may use; the job backends set it from the job's resource request (core/jobs/backend.py)."""


def cpu_budget() -> int:
    """Cores this run may use: ``$PRODUCT_STUDIO_CPUS`` when set, else the cores this process may run on.

    Stages size their thread pools with this rather than the machine's count, so a job given 2 of 16 cores on a
    cluster node uses 2 (and two such jobs side by side do not fight over the same cores).
    """
    configured = os.environ.get(CPUS_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def section_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PipelineConfig) if f.name != "preset"]


def _migrate_sections(data: dict[str, Any]) -> dict[str, Any]:
    """Sections of schema-1 records: ``dense`` held depth, fusion and isolation settings; capture held blur and
    exposure thresholds (those now live in core/advice.py with the other finding thresholds); ``fusion.silhouettes``
    was a bool."""
    data = {k: dict(v) for k, v in data.items()}
    dense = data.pop("dense", None)
    if dense is not None:
        depth = data.setdefault("depth", {})
        for key in ("max_side", "num_source_views", "num_depth_planes"):
            if key in dense:
                depth[key] = dense[key]
        if "min_consistent_views" in dense:
            data.setdefault("fusion", {})["min_consistent_views"] = dense["min_consistent_views"]
        if "isolate_product" in dense:
            data.setdefault("isolation", {})["enabled"] = dense["isolate_product"]
    for key in ("blur_threshold", "dark_fraction", "bright_fraction"):
        data.get("capture", {}).pop(key, None)
    data.get("sfm", {}).pop("min_camera_spread", None)
    fusion = data.get("fusion", {})
    if isinstance(fusion.get("silhouettes"), bool):  # records from before the automatic hull: on/off as chosen
        fusion["silhouettes"] = "on" if fusion["silhouettes"] else "off"
    return data


# Working resolution, dense effort and face budget per preset, in the spirit of Object Capture detail levels.
_PRESET_CHANGES: dict[PresetName, dict[str, dict[str, Any]]] = {
    "preview": {
        # 800 px photos, 4096 SIFT features. 640 px and 2048 features took the soup-can orbit preview to 52 s (from
        # 86 s) at the same mesh F, but on the bundled sample the mesh then disagreed with the masks (overlap 0.862
        # with 640 px, 0.875 with 2048 features, 0.893 with neither; the check fails under 0.88): kept.
        # SIFT's first octave 0 (no 2x upsampling) cut the previews' SfM 3-4x (soup can 36.9 -> 12.8 s; whole
        # previews 41-55 s over 7 captures) with rotations still within 0.18°, but its ~3x fewer sparse points seed
        # the masks worse (cracker box masks IoU 0.95 -> 0.81, plain box 0.99 -> 0.97, mesh F@1% 0.91 -> 0.81;
        # the sample's masks fell below trust, so its mesh went unchecked): not taken.
        "capture": {"working_max_side": 800},
        "masks": {"max_side": 400, "iterations": 3},
        "fusion": {"hull_resolution": 128},
        "sfm": {"max_num_features": 4096},
        # The sweep: PatchMatch at 400 px would take ~40 s of the preview's 60 s (~6 s a photo at 640 px, x0.4).
        "depth": {"max_side": 400, "num_source_views": 3, "num_depth_planes": 64, "method": "sweep"},
        "depth_prior": {"input_size": 364},
        "mesh": {"target_faces": 25_000, "poisson_depth": 8},
        "texture": {"size": 1024},
        "relief": {"target_faces": 25_000},
        "sticker": {"size_px": 768, "border_px": 18, "mesh_cells": 128},
        "asset": {"texture_size": 1024},
    },
    "balanced": {},
    "full": {
        "capture": {"working_max_side": 1600},
        "sfm": {"max_num_features": 12000},
        "depth": {"max_side": 960, "num_source_views": 6, "num_depth_planes": 128},
        "mesh": {"target_faces": 250_000, "poisson_depth": 10},
        "texture": {"size": 4096},
        "relief": {"target_faces": 250_000},
        "asset": {"texture_size": 4096},
    },
    # The whole pipeline in seconds on small photos, for the test suite (not offered to users).
    "test": {
        "capture": {"working_max_side": 640},
        "masks": {"max_side": 320, "iterations": 2},
        "fusion": {"hull_resolution": 96},
        "sfm": {"max_num_features": 2048},
        # The sweep: the suite runs the pipeline several times (PatchMatch is tested on its own, test_patchmatch.py).
        "depth": {"max_side": 320, "num_source_views": 3, "num_depth_planes": 48, "method": "sweep"},
        "depth_prior": {"input_size": 140},
        "mesh": {"target_faces": 10_000, "poisson_depth": 7},
        "texture": {"size": 512},
        "relief": {"target_faces": 10_000},
        "sticker": {"size_px": 512, "border_px": 12, "mesh_cells": 96, "segmentation_max_side": 320},
        "asset": {"texture_size": 512},
    },
}

PRESET_DESCRIPTIONS: dict[PresetName, str] = {
    "preview": "fast check of a capture (about 1 minute for 24 photos); ~25k faces",
    "balanced": "the default for the shop (a few minutes for 24 photos); ~100k faces",
    "full": "highest detail (several times longer); ~250k faces",
    "test": "tiny and fast, for the test suite",
}


def preset_config(name: PresetName = "balanced") -> PipelineConfig:
    """The configuration of a named preset."""
    if name not in ALL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PipelineConfig(preset=name).with_changes(_PRESET_CHANGES[name])
