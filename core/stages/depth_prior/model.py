"""The monocular depth model: found locally only (explicit path > ``PRODUCT_STUDIO_DEPTH_MODEL`` > ``models/`` >
Hugging Face cache), downloaded only when ``DepthPriorConfig.allow_download`` is set, loaded once per process, run
batched on the CPU or a GPU. Without weights the callers say how to enable them and go on without a prior.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from core.config import DepthPriorConfig

logger = logging.getLogger(__name__)

PriorKind = Literal["relative", "metric"]
"""``relative``: affine-invariant inverse depth (Depth Anything's relative checkpoints); ``metric``: depth along z."""
ModelSource = Literal["explicit", "env", "project", "hf_cache", "download"]

ENV_VAR = "PRODUCT_STUDIO_DEPTH_MODEL"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODELS_DIR = PROJECT_ROOT / "models"
"""Project folder searched for model folders (tests point it elsewhere)."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# ImageNet statistics: what DINOv2-based depth models were trained with, used when the folder has no processor config.
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelLocation:
    """A local folder holding depth model weights, and how it was found."""

    path: Path
    source: ModelSource
    name: str
    """Checkpoint name for display (the Hugging Face repo id, or the folder name)."""


@dataclass
class ModelLookup:
    """The outcome of searching for the model: a location, or a message saying how to enable it."""

    location: ModelLocation | None
    message: str
    tried: list[str] = field(default_factory=list)
    """Each place looked at, with why it did not hold a model."""
    how_to_enable: str = ""
    """What the user can do to make the model available (empty when it was found)."""


def is_model_folder(path: Path) -> bool:
    """A folder with a transformers config and weights."""
    return path.is_dir() and (path / "config.json").is_file() and any((path / w).is_file() for w in WEIGHT_FILES)


def _repo_id(config: DepthPriorConfig) -> str | None:
    """The Hugging Face repo id in ``config.model`` (None when it names a local folder)."""
    name = config.model.strip()
    if not name or Path(name).expanduser().is_dir() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    return name


def _hf_cache_dir() -> Path:
    # Read at call time (huggingface_hub reads its constants at import, which tests and users may change after).
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return Path(hf_home).expanduser() / "hub"


def _from_hf_cache(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(_hf_cache_dir()))
    if isinstance(found, str) and is_model_folder(Path(found).parent):
        return Path(found).parent
    return None


def _download(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, cache_dir=str(_hf_cache_dir()),
                                        allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:  # no network, no such repo, proxy errors: all mean "not available"
        logger.warning("could not download %s: %s", repo_id, exc)
        return None
    return folder if is_model_folder(folder) else None


def find_model(config: DepthPriorConfig) -> ModelLookup:
    """Search explicit path > environment variable > ``models/`` > Hugging Face cache > download (if allowed)."""
    tried: list[str] = []
    repo_id = _repo_id(config)
    display = repo_id or Path(config.model).name

    explicit: list[str] = [p for p in (config.model_path,) if p]
    if repo_id is None and config.model.strip():
        explicit.append(config.model)  # config.model may itself be a local folder
    for raw in explicit:
        path = Path(raw).expanduser()
        if is_model_folder(path):
            return ModelLookup(ModelLocation(path.resolve(), "explicit", display), f"depth model from {path}", tried)
        tried.append(f"{path} (given explicitly): not a model folder (needs config.json and model.safetensors)")

    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        if is_model_folder(path):
            return ModelLookup(ModelLocation(path.resolve(), "env", display), f"depth model from ${ENV_VAR}", tried)
        tried.append(f"{path} (from ${ENV_VAR}): not a model folder (needs config.json and model.safetensors)")

    basename = display.split("/")[-1]
    candidates = [MODELS_DIR / basename]
    if repo_id:
        candidates += [MODELS_DIR / repo_id, MODELS_DIR / repo_id.replace("/", "--")]
    for path in candidates:
        if is_model_folder(path):
            return ModelLookup(ModelLocation(path.resolve(), "project", display), f"depth model from {path}", tried)
    tried.append(f"{MODELS_DIR / basename}: missing")

    if repo_id:
        cached = _from_hf_cache(repo_id)
        if cached is not None:
            return ModelLookup(ModelLocation(cached, "hf_cache", repo_id), "depth model from the Hugging Face cache",
                               tried)
        tried.append(f"Hugging Face cache {_hf_cache_dir()}: no {repo_id}")
        if config.allow_download:
            downloaded = _download(repo_id)
            if downloaded is not None:
                return ModelLookup(ModelLocation(downloaded, "download", repo_id), f"downloaded {repo_id}", tried)
            tried.append(f"download of {repo_id}: failed (no network?)")

    how = (f"To enable it put the model folder in {MODELS_DIR / basename} (on a machine with network: "
           f"`hf download {repo_id or display} --local-dir models/{basename}`), or set {ENV_VAR}=/path/to/folder, "
           "or supply per-photo depth maps with --depth-prior-dir.")
    message = f"no depth prior: the model {display} was not found ({'; '.join(tried)}). {how}"
    return ModelLookup(None, message, tried, how)


def resolve_model(config: DepthPriorConfig) -> ModelLocation | None:
    """The model folder to use, or None when no weights can be found (see ``find_model`` for the reason)."""
    lookup = find_model(config)
    if lookup.location is None:
        logger.info(lookup.message)
    return lookup.location


@dataclass
class DepthModel:
    """A loaded depth model with what inference needs to know about it."""

    model: Any
    """The transformers model (AutoModelForDepthEstimation), in eval mode on ``device``."""
    device: str
    kind: PriorKind
    """What the model predicts: relative inverse depth or metric depth."""
    location: ModelLocation
    mean: tuple[float, float, float] = _DEFAULT_MEAN
    std: tuple[float, float, float] = _DEFAULT_STD
    patch_size: int = 14
    """Input sides are rounded to a multiple of this (the ViT patch size)."""


_MODEL_CACHE: dict[tuple[str, str], DepthModel] = {}
_MODEL_LOCK = threading.Lock()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_depth_model(location: ModelLocation, device: str | None = None) -> DepthModel:
    """Load the model once per process and device (later calls return the same object)."""
    device = device or default_device()
    key = (str(location.path.resolve()), device)
    with _MODEL_LOCK:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        from transformers import AutoModelForDepthEstimation

        model = AutoModelForDepthEstimation.from_pretrained(str(location.path), local_files_only=True)
        model.eval().to(device)
        config = model.config
        kind: PriorKind = "metric" if getattr(config, "depth_estimation_type", "relative") == "metric" else "relative"
        backbone = getattr(config, "backbone_config", None)
        patch = int(getattr(backbone, "patch_size", 14) or 14)
        mean, std = _DEFAULT_MEAN, _DEFAULT_STD
        processor_file = location.path / "preprocessor_config.json"
        if processor_file.is_file():  # read the normalisation directly: the processor classes may need torchvision
            data = json.loads(processor_file.read_text(encoding="utf-8"))
            mean = tuple(data.get("image_mean", mean))  # type: ignore[assignment]
            std = tuple(data.get("image_std", std))  # type: ignore[assignment]
        loaded = DepthModel(model, device, kind, location, mean, std, patch)
        _MODEL_CACHE[key] = loaded
        logger.info("loaded depth model %s (%s, %s) on %s", location.name, location.source, kind, device)
        return loaded


def model_input_shape(height: int, width: int, input_size: int, multiple: int = 14) -> tuple[int, int]:
    """(h, w) fed to the model: the longer side about ``input_size``, both sides multiples of the patch size."""
    scale = input_size / max(height, width)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def predict_relative_depth(model: DepthModel, images: list[np.ndarray], input_size: int,
                           batch_size: int | None = None) -> list[np.ndarray]:
    """Per image (H, W, 3 uint8 RGB), the model's prediction at the image's own size (float32, H x W).

    For relative models this is inverse depth up to scale and shift; for metric models, depth in metres
    (``model.kind`` says which). Images of the same shape are batched together.
    """
    import torch
    import torch.nn.functional as F

    if batch_size is None:
        batch_size = 16 if model.device.startswith("cuda") else 4
    mean = np.asarray(model.mean, dtype=np.float32)
    std = np.asarray(model.std, dtype=np.float32)
    results: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i} has shape {image.shape}; expected H x W x 3 RGB")
        groups.setdefault(image.shape[:2], []).append(i)
    for (height, width), indices in groups.items():
        in_h, in_w = model_input_shape(height, width, input_size, model.patch_size)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            batch = np.stack([
                (cv2.resize(images[i], (in_w, in_h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
                 - mean) / std for i in chunk])
            pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(model.device)
            with torch.inference_mode():
                predicted = model.model(pixel_values=pixels).predicted_depth
                # Back to the photo's size; align_corners=False keeps the pixel-centre convention of geometry.py.
                predicted = F.interpolate(predicted[:, None].float(), size=(height, width), mode="bilinear",
                                          align_corners=False)[:, 0]
            for i, depth in zip(chunk, predicted.cpu().numpy(), strict=True):
                results[i] = depth.astype(np.float32)
    return [r for r in results if r is not None]
