"""Run configuration: one dataclass per stage, three presets, recorded whole in every manifest."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

PresetName = Literal["preview", "balanced", "full"]
PRESETS: tuple[PresetName, ...] = ("preview", "balanced", "full")


@dataclass
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
    max_edge_blur_px: float = 1.4
    """Blur of the product's edges (about the Gaussian sigma, on a 512 px copy) above which a photo is called blurry
    (1024 px renders: sharp 0.0, blurred by 1 px 0.65-0.7, by 2 px 1.55-1.6)."""
    dark_fraction: float = 0.5
    """Warn when more than this share of the product's pixels is near black."""
    bright_fraction: float = 0.35
    """Warn when more than this share of the product's pixels is clipped white."""


@dataclass
class SfmConfig:
    """COLMAP structure-from-motion through pycolmap."""

    max_num_features: int = 8192
    """SIFT keypoints per photo."""
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
    min_camera_spread: float = 0.05
    """Camera spread / scene distance below which the photos all landed at one spot (a failed reconstruction)."""
    seed: int = 0
    """Random seed for COLMAP (RANSAC, mapping)."""
    num_threads: int = -1
    """Threads for COLMAP; -1 uses all cores."""


@dataclass
class DenseConfig:
    """Per-view depth, fusion, product isolation."""

    max_side: int = 640
    """Longer side of the images used for dense depth."""
    num_source_views: int = 4
    """Source photos per reference photo."""
    num_depth_planes: int = 96
    """Depth hypotheses in the plane sweep."""
    min_consistent_views: int = 2
    """A depth is kept only when this many other views agree with it."""
    isolate_product: bool = True
    """Remove the support plane and background, keep the object the cameras look at."""


@dataclass
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


@dataclass
class MeshConfig:
    """Meshing, cleanup, decimation, exports."""

    target_faces: int = 100_000
    """Face budget after decimation."""
    poisson_depth: int = 9
    """Octree depth of screened Poisson reconstruction (an upper bound: meshing uses at most ~2 points per cell)."""
    close_base: bool = True
    """Close the unseen base of a product standing on a table with a flat cap on the table (a closed model)."""


@dataclass
class PipelineConfig:
    """Everything a run needs, recorded in its manifest."""

    preset: PresetName = "balanced"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    sfm: SfmConfig = field(default_factory=SfmConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)
    depth_prior: DepthPriorConfig = field(default_factory=DepthPriorConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in sections:
                continue
            if isinstance(value, dict):
                section_cls = type(getattr(cls(), name))
                kwargs[name] = section_cls(**value)
            else:
                kwargs[name] = value
        return cls(**kwargs)


# Working resolution, dense effort and face budget per preset, in the spirit of Object Capture detail levels.
_PRESET_OVERRIDES: dict[PresetName, dict[str, dict[str, Any]]] = {
    "preview": {
        "capture": {"working_max_side": 800},
        "sfm": {"max_num_features": 4096},
        "dense": {"max_side": 400, "num_source_views": 3, "num_depth_planes": 64},
        "depth_prior": {"input_size": 364},
        "mesh": {"target_faces": 25_000, "poisson_depth": 8},
    },
    "balanced": {},
    "full": {
        "capture": {"working_max_side": 1600},
        "sfm": {"max_num_features": 12000},
        "dense": {"max_side": 960, "num_source_views": 6, "num_depth_planes": 128},
        "mesh": {"target_faces": 250_000, "poisson_depth": 10},
    },
}

PRESET_DESCRIPTIONS: dict[PresetName, str] = {
    "preview": "fast check of a capture (about 1 minute for 24 photos); ~25k faces",
    "balanced": "the default for the shop (a few minutes for 24 photos); ~100k faces",
    "full": "highest detail (several times longer); ~250k faces",
}


def preset_config(name: PresetName = "balanced") -> PipelineConfig:
    """The configuration of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PipelineConfig(preset=name)
    for section, values in _PRESET_OVERRIDES[name].items():
        target = getattr(config, section)
        for key, value in values.items():
            setattr(target, key, value)
    return config
