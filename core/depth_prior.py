"""Depth priors: a monocular depth model (transformers) or depth maps supplied with the photos, aligned to the
reconstruction and merged with stereo where stereo is weak.

Kinds of prior values (``PriorKind``):

* ``relative``: affine-invariant inverse depth ("disparity-like", larger = nearer), what Depth Anything's relative
  checkpoints predict. Aligned with a scale and shift in inverse depth: ``1 / z = s * prior + b``.
* ``metric``: depth along the camera z axis (phone LiDAR/ToF, metric models, depth from another pipeline). Aligned
  with a scale and shift in depth: ``z = s * prior + b`` (SfM worlds have their own scale, so even metric maps are
  rescaled; the fitted scale says how many world units one metre is).

The model is found locally only (explicit path > PRODUCT_STUDIO_DEPTH_MODEL > ``models/`` > Hugging Face cache) and
downloaded only when ``DepthPriorConfig.allow_download`` is set. Without weights the stage says how to enable them and
the run goes on without a prior.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from core.config import DepthPriorConfig
from core.manifest import Finding
from core.stage import ProgressFn, no_progress

if TYPE_CHECKING:
    from core.mvs import DepthMaps, DepthView
    from core.scene import SparseScene

logger = logging.getLogger(__name__)

PriorKind = Literal["relative", "metric"]
ModelSource = Literal["explicit", "env", "project", "hf_cache", "download"]

ENV_VAR = "PRODUCT_STUDIO_DEPTH_MODEL"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = PROJECT_ROOT / "models"
"""Project folder searched for model folders (tests point it elsewhere)."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
DEPTH_SUFFIXES = (".npy", ".png")

# ImageNet statistics: what DINOv2-based depth models were trained with, used when the folder has no processor config.
_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------------------
# Finding the model
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Loading and inference
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Depth maps supplied with the photos
# ----------------------------------------------------------------------------------------------------------------


def find_depth_file(depth_dir: Path, image_name: str) -> Path | None:
    """The depth file for a photo: same base name, .npy or .png (case-insensitive suffix).

    The pipeline copies the user's maps into the run under the working copies' names (core.pipeline), so this
    stays the one simple rule a user is told: name each depth map like its photo.
    """
    stem = Path(image_name).stem
    folder = Path(depth_dir)
    for suffix in DEPTH_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_depth_file(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A supplied depth map as float32 (NaN unknown), resized to ``size`` = (width, height) when given.

    ``.npy``: float values as stored (depth in metres, or a model's relative output). ``.png``: 16-bit, millimetres,
    0 = no measurement; returned in metres.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        depth = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        depth = np.squeeze(depth)
        depth = np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)
    elif suffix == ".png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError(f"{path.name}: not a readable PNG")
        if raw.dtype != np.uint16:
            raise ValueError(f"{path.name}: depth PNGs must be 16-bit (millimetres); this one is {raw.dtype}")
        if raw.ndim == 3:
            raw = raw[..., 0]
        depth = np.where(raw > 0, raw.astype(np.float32) / 1000.0, np.nan).astype(np.float32)
    else:
        raise ValueError(f"{path.name}: depth maps must be .npy or 16-bit .png")
    if depth.ndim != 2:
        raise ValueError(f"{path.name}: expected a 2-D depth map, got shape {depth.shape}")
    if size is not None:
        # Resizing is fine (LiDAR maps are small); a different shape means another crop or orientation.
        aspect, wanted = depth.shape[1] / depth.shape[0], size[0] / size[1]
        if abs(np.log(aspect / wanted)) > 0.05:
            turned = " (turned by 90 degrees?)" if abs(np.log(aspect * wanted)) < 0.05 else ""
            raise ValueError(f"{path.name} is {depth.shape[1]}x{depth.shape[0]} but the photo is {size[0]}x{size[1]}"
                             f"{turned}; depth maps must have the photo's shape and orientation")
    if size is not None and (depth.shape[1], depth.shape[0]) != tuple(size):
        depth = resize_depth(depth, size)
    return depth


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a depth map with NaN holes to (width, height): bilinear over valid pixels only, holes stay holes."""
    valid = np.isfinite(depth)
    filled = np.where(valid, depth, 0).astype(np.float32)
    shrinking = size[0] < depth.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    num = cv2.resize(filled, size, interpolation=interp)
    den = cv2.resize(valid.astype(np.float32), size, interpolation=interp)
    out = np.full(num.shape, np.nan, dtype=np.float32)
    # Keep pixels mostly backed by measurements; half-covered ones at hole borders would mix in the zeros' absence.
    keep = den > 0.5
    out[keep] = num[keep] / den[keep]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Alignment: scale and shift, robust
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """A fitted scale and shift that maps a prior to the reconstruction's depth, and whether to trust it."""

    scale: float
    shift: float
    residual: float
    """Median |relative depth error| of the inliers after the fit (0.02 = 2 %)."""
    inlier_fraction: float
    """Share of the compared depths within the inlier threshold."""
    ok: bool
    reason: str = ""
    """Why the prior was rejected (empty when ok)."""
    kind: PriorKind = "relative"
    num_points: int = 0
    """Depths compared."""

    def apply(self, prior: np.ndarray) -> np.ndarray:
        """The prior as depth in world units (NaN where the fitted model gives no positive depth)."""
        return aligned_depth(prior, self.scale, self.shift, self.kind)


def aligned_depth(prior: np.ndarray, scale: float, shift: float, kind: PriorKind) -> np.ndarray:
    """Depth from a prior and its scale/shift (in inverse depth for relative priors, in depth for metric ones)."""
    value = scale * prior.astype(np.float64) + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = 1.0 / value if kind == "relative" else value
    return np.where(np.isfinite(depth) & (value > 1e-12), depth, np.nan).astype(np.float32)


def _weighted_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Least squares of the relative residual (s x + b - y) / y with weights w."""
    # Normal equations of a 2-parameter problem, in closed form (lstsq goes through LAPACK for nothing here).
    q = w / (y * y)
    sxx, sx, s1 = (q * x * x).sum(), (q * x).sum(), q.sum()
    sxy, sy = (q * x * y).sum(), (q * y).sum()
    det = sxx * s1 - sx * sx
    if not abs(det) > 1e-300:
        return float("nan"), float("nan")
    return float((sxy * s1 - sx * sy) / det), float((sxx * sy - sx * sxy) / det)


def align_prior(prior: np.ndarray, target_depth: np.ndarray, weights: np.ndarray | None = None,
                kind: PriorKind = "relative", *, inlier_threshold: float = 0.05, min_points: int = 20,
                min_inlier_fraction: float = 0.5, min_explained: float = 0.5, iterations: int = 256,
                max_samples: int = 20000, seed: int = 0) -> Alignment:
    """Fit ``target ~ prior`` with a positive scale and a shift, robustly (RANSAC, then Huber IRLS).

    ``prior``, ``target_depth`` and ``weights`` have the same shape (maps or flat arrays); target depths that are
    NaN/<=0 or have zero weight are ignored. Residuals are relative depth errors, so the same threshold works for
    both kinds. The fit is rejected when too few depths are compared, when too few agree, or when the prior does not
    explain the target's depth variation better than a constant (an unrelated or near/far-flipped prior).
    """
    prior = np.asarray(prior, dtype=np.float64).ravel()
    target = np.asarray(target_depth, dtype=np.float64).ravel()
    w = np.ones_like(target) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    valid = np.isfinite(prior) & np.isfinite(target) & (target > 0) & np.isfinite(w) & (w > 0)
    if kind == "metric":
        valid &= prior > 0
    n = int(valid.sum())
    if n < min_points:
        return Alignment(float("nan"), float("nan"), float("nan"), 0.0, False,
                         f"only {n} reconstructed depths to compare with (need {min_points})", kind, n)
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(valid)
    if n > max_samples:  # plenty for two parameters; keeps the RANSAC matrix small
        idx = rng.choice(idx, max_samples, replace=False)
    x = prior[idx]
    y = 1.0 / target[idx] if kind == "relative" else target[idx]
    w = w[idx] / w[idx].max()
    tau = inlier_threshold

    # RANSAC on pairs (MSAC score), positive scale only.
    i = rng.integers(0, len(x), iterations)
    j = rng.integers(0, len(x), iterations)
    dx = x[i] - x[j]
    good = np.abs(dx) > 1e-12 * (np.abs(x).max() + 1e-12)
    s_h = np.where(good, (y[i] - y[j]) / np.where(good, dx, 1.0), 0.0)
    b_h = y[i] - s_h * x[i]
    good &= s_h > 0
    if not good.any():
        slope, _ = _weighted_fit(x, y, w)
        why = "near and far look reversed" if slope < 0 else "the prior is flat where the reconstruction is not"
        return Alignment(float("nan"), float("nan"), float("nan"), 0.0, False,
                         f"no positive scale fits the prior: {why}", kind, n)
    s_h, b_h = s_h[good], b_h[good]
    r = (s_h[:, None] * x[None] + b_h[:, None] - y[None]) / y[None]
    cost = (np.minimum(r**2, tau**2) * w[None]).sum(1)
    best = int(np.argmin(cost))
    s0, b0 = float(s_h[best]), float(b_h[best])

    # IRLS with Huber weights from the RANSAC start: uses every inlier, not just the two that were sampled.
    s, b = s0, b0
    delta = tau / 2
    for _ in range(10):
        r = (s * x + b - y) / y
        huber = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-12))
        huber[np.abs(r) > 3 * tau] = 0.0  # gross outliers get no say at all
        if huber.sum() < 2:
            break
        s_new, b_new = _weighted_fit(x, y, w * huber)
        if not np.isfinite(s_new) or s_new <= 0:
            break
        converged = abs(s_new - s) <= 1e-9 * abs(s) and abs(b_new - b) <= 1e-9 * (abs(b) + abs(s))
        s, b = s_new, b_new
        if converged:
            break

    r = (s * x + b - y) / y
    inliers = np.abs(r) < tau
    inlier_fraction = float(np.average(inliers, weights=w))
    residual = float(np.median(np.abs(r[inliers]))) if inliers.any() else float("inf")
    # Constant model for comparison: how much depth variation there is to explain at all.
    const = (np.median(y) - y) / y
    spread = float(np.median(np.abs(const)))
    fit_error = float(np.median(np.abs(r)))
    explained = 1.0 - fit_error / spread if spread > 0 else 1.0

    reason = ""
    if inlier_fraction < min_inlier_fraction:
        reason = (f"the prior agrees with only {inlier_fraction:.0%} of the reconstructed depths "
                  f"(within {tau:.0%}; need {min_inlier_fraction:.0%})")
    elif spread > tau and explained < min_explained:
        reason = f"the prior explains only {max(explained, 0):.0%} of the depth variation (unrelated or flipped?)"
    if reason:
        slope, _ = _weighted_fit(x, y, w)
        if slope < 0:
            reason += "; near and far look reversed"
    return Alignment(s, b, residual, inlier_fraction, not reason, reason, kind, n)


def _hat_weights(coords: np.ndarray, length: int, nodes: int) -> np.ndarray:
    """(len(coords), nodes) linear-interpolation weights of positions on ``nodes`` evenly spaced nodes."""
    t = np.clip(coords / max(length, 1) * (nodes - 1), 0, nodes - 1)
    lo = np.minimum(np.floor(t).astype(np.int64), nodes - 2)
    frac = t - lo
    out = np.zeros((len(coords), nodes))
    out[np.arange(len(coords)), lo] = 1 - frac
    out[np.arange(len(coords)), lo + 1] = frac
    return out


@dataclass(frozen=True)
class WarpCorrection:
    """A smooth multiplicative correction of an aligned prior (monocular depth bends at low frequency)."""

    field: np.ndarray
    """(H, W) float32 factor applied to the aligned depth."""
    residual_before: float
    residual_after: float
    """Median |relative depth error| on the fit targets before and after."""
    max_correction: float
    """Largest |factor - 1| over the image."""


def smooth_correction(aligned: np.ndarray, index: np.ndarray, target: np.ndarray, weights: np.ndarray,
                      cells: tuple[int, int] = (6, 4), smoothness: float = 0.05, limit: float = 0.15,
                      inlier_threshold: float = 0.05) -> WarpCorrection | None:
    """Fit a smooth log-depth correction on a coarse grid to the targets that agree with the aligned prior.

    ``index`` holds flat pixel indices of ``target`` depths in ``aligned``. Cells without targets follow their
    neighbours (a Laplacian penalty) and fade to no correction. Returns None when there are too few agreeing targets
    or the correction does not lower the error.
    """
    h, w = aligned.shape
    values = aligned.ravel()[index].astype(np.float64)
    ok = np.isfinite(values) & (values > 0) & np.isfinite(target) & (target > 0) & (weights > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(target / values)
    ok &= np.abs(log_ratio) < inlier_threshold
    if ok.sum() < 100:
        return None
    rows, cols = np.divmod(index[ok], w)
    nx, ny = cells[0] + 1, cells[1] + 1
    wx = _hat_weights(cols + 0.5, w, nx)
    wy = _hat_weights(rows + 0.5, h, ny)
    basis = (wy[:, :, None] * wx[:, None, :]).reshape(len(rows), ny * nx)
    wt = weights[ok] / weights[ok].sum()
    # Laplacian between neighbouring nodes (smoothness) plus a weak pull to zero (unobserved cells: no correction).
    pairs = [(r * nx + c, r * nx + c + 1) for r in range(ny) for c in range(nx - 1)]
    pairs += [(r * nx + c, (r + 1) * nx + c) for r in range(ny - 1) for c in range(nx)]
    reg = np.zeros((len(pairs), ny * nx))
    for k, (a, b) in enumerate(pairs):
        reg[k, a], reg[k, b] = 1.0, -1.0
    sw = np.sqrt(wt)
    A = np.concatenate([basis * sw[:, None], np.sqrt(smoothness / len(pairs)) * reg,
                        np.sqrt(smoothness * 0.01 / (nx * ny)) * np.eye(nx * ny)])
    rhs = np.concatenate([log_ratio[ok] * sw, np.zeros(len(pairs) + nx * ny)])
    nodes = np.linalg.solve(A.T @ A, A.T @ rhs)  # 35 unknowns, regularised: the normal equations are well posed
    nodes = np.clip(nodes, -limit, limit).reshape(ny, nx)
    full_wy = _hat_weights(np.arange(h) + 0.5, h, ny)
    full_wx = _hat_weights(np.arange(w) + 0.5, w, nx)
    field = np.exp(full_wy @ nodes @ full_wx.T).astype(np.float32)
    before = float(np.median(np.abs(values[ok] / target[ok] - 1)))
    corrected = values[ok] * field.ravel()[index[ok]]
    after = float(np.median(np.abs(corrected / target[ok] - 1)))
    if not after < before:
        return None
    return WarpCorrection(field, before, after, float(np.abs(field - 1).max()))


# ----------------------------------------------------------------------------------------------------------------
# Merging with stereo (the stage)
# ----------------------------------------------------------------------------------------------------------------

STEREO_CONFIDENT = 0.25
"""Stereo depths with at least this confidence are used to fit the prior."""
STEREO_KEEP = 0.1
"""Stereo depths with at least this confidence are kept as they are (the level fusion trusts: on renders 97% of them
lie within 2% of the truth); weaker ones are confirmed or replaced by the prior."""
PRIOR_CONFIDENCE = 0.2
"""Confidence given to depths taken from the prior (above the dense stage's floor, below confident stereo)."""
AGREEMENT = 0.05
"""Relative depth difference within which stereo and the aligned prior are said to agree."""
EDGE_RATIO = 1.1
"""A prior pixel whose 5x5 neighbourhood spans a larger far/near ratio sits on a (blurred) depth edge: not used."""
MIN_SANITY_AGREEMENT = 0.5
"""An aligned prior must agree with at least this share of the confident stereo and of the sparse depths."""
MAX_STEREO_SAMPLES = 5000
"""Confident stereo pixels used in a fit (a random subset), so the sparse points keep a say."""

SOURCE_NONE, SOURCE_STEREO, SOURCE_PRIOR = 0, 1, 2


@dataclass
class PriorMerge:
    """One view's merged depth, where each pixel came from, and counts for the diagnostics."""

    depth: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    """(H, W) uint8: 0 no depth, 1 stereo, 2 prior."""
    stats: dict[str, float]


def sparse_depth_samples(points: np.ndarray, camera: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (rows, cols) and depths of world points that project inside ``camera``'s image."""
    if len(points) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    uv, z = camera.project(points)
    cols = np.floor(uv[:, 0]).astype(np.int64)
    rows = np.floor(uv[:, 1]).astype(np.int64)
    inside = (z > 0) & (cols >= 0) & (rows >= 0) & (cols < camera.width) & (rows < camera.height)
    return np.stack([rows[inside], cols[inside]]), z[inside]


def alignment_targets(stereo_depth: np.ndarray, stereo_confidence: np.ndarray, sparse_rc: np.ndarray,
                      sparse_z: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (prior pixel index, target depth, weight) from sparse SfM depths (weight 1) and confident stereo."""
    h, w = stereo_depth.shape
    confident = np.flatnonzero((stereo_confidence.ravel() >= STEREO_CONFIDENT) & np.isfinite(stereo_depth.ravel()))
    if len(confident) > MAX_STEREO_SAMPLES:
        confident = np.random.default_rng(seed).choice(confident, MAX_STEREO_SAMPLES, replace=False)
    sparse_idx = sparse_rc[0] * w + sparse_rc[1] if sparse_rc.size else np.empty(0, dtype=np.int64)
    index = np.concatenate([sparse_idx, confident]).astype(np.int64)
    target = np.concatenate([sparse_z, stereo_depth.ravel()[confident]])
    weight = np.concatenate([np.ones(len(sparse_z)), stereo_confidence.ravel()[confident]])
    return index, target, weight


def prior_edges(depth: np.ndarray) -> np.ndarray:
    """Pixels near a depth discontinuity of a (possibly blurred) depth map."""
    filled = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
    kernel = np.ones((5, 5), np.uint8)
    high = cv2.dilate(filled, kernel)
    low = cv2.erode(np.where(np.isfinite(depth), depth, np.inf).astype(np.float32), kernel)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ~(high <= EDGE_RATIO * low)


def merge_prior(stereo_depth: np.ndarray, stereo_confidence: np.ndarray, prior_depth: np.ndarray,
                depth_range: tuple[float, float] | None = None) -> PriorMerge:
    """Keep confident stereo; fill missing and replace weak-and-disagreeing stereo with the aligned prior.

    The prior is only used inside ``depth_range`` (the view's sparse depth range) and away from its own depth edges,
    where monocular models blur foreground into background.
    """
    finite = np.isfinite(stereo_depth)
    confident = finite & (stereo_confidence >= STEREO_KEEP)
    usable = np.isfinite(prior_depth) & ~prior_edges(prior_depth)
    if depth_range is not None:
        usable &= (prior_depth >= depth_range[0]) & (prior_depth <= depth_range[1])
    weak = finite & ~confident
    with np.errstate(divide="ignore", invalid="ignore"):
        agrees = weak & usable & (np.abs(stereo_depth / prior_depth - 1) <= AGREEMENT)
    replace = weak & usable & ~agrees
    fill = ~finite & usable

    depth = stereo_depth.astype(np.float32).copy()
    confidence = stereo_confidence.astype(np.float32).copy()
    depth[replace | fill] = prior_depth[replace | fill]
    confidence[replace | fill] = PRIOR_CONFIDENCE
    confidence[agrees] = np.maximum(confidence[agrees], PRIOR_CONFIDENCE)  # the prior corroborates weak stereo
    source = np.zeros(depth.shape, dtype=np.uint8)
    source[finite & ~replace] = SOURCE_STEREO
    source[replace | fill] = SOURCE_PRIOR
    n = depth.size
    stats = {"stereo_fraction": float((source == SOURCE_STEREO).sum() / n),
             "prior_fraction": float((source == SOURCE_PRIOR).sum() / n),
             "filled_fraction": float(fill.sum() / n),
             "replaced_fraction": float(replace.sum() / n),
             "confirmed_fraction": float(agrees.sum() / n)}
    return PriorMerge(depth, confidence, source, stats)


def _agreement(prior_depth: np.ndarray, index: np.ndarray, target: np.ndarray) -> float | None:
    """Share of target depths the aligned prior matches within AGREEMENT (None when there are too few to say)."""
    if len(index) < 20:
        return None
    values = prior_depth.ravel()[index]
    ok = np.isfinite(values)
    if ok.sum() < 20:
        return 0.0
    return float(np.mean(np.abs(values[ok] / target[ok] - 1) <= AGREEMENT) * ok.mean())


def _supplied_kind(priors: dict[int, np.ndarray],
                   targets: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]]) -> PriorKind:
    """Whether a folder of supplied maps holds depth or disparity-like values, decided once for the whole folder.

    One source made the folder, so a single odd map must not pick the other reading (an upside-down disparity map
    read as depth can fit a ground plane well enough).
    """
    votes: dict[PriorKind, list[Alignment]] = {"metric": [], "relative": []}
    for i, prior in priors.items():
        index, target, weight, _ = targets[i]
        for kind in votes:
            fit = align_prior(prior.ravel()[index], target, weight, kind)
            if fit.ok:
                votes[kind].append(fit)

    def score(kind: PriorKind) -> tuple[int, float]:
        fits = votes[kind]
        return len(fits), -float(np.median([f.residual for f in fits])) if fits else 0.0
    return max(("metric", "relative"), key=score)  # ties go to "metric": depth maps are the usual supplied kind


@dataclass
class PriorView:
    """What the depth-prior stage kept for one photo, for display."""

    prior_depth: np.ndarray
    """The prior after alignment, in the reconstruction's depth units."""
    stereo_fraction: float
    """Share of pixels whose merged depth came from stereo."""
    prior_fraction: float
    """Share of pixels whose merged depth came from the prior."""


def load_prior_view(merged_depth_path: Path) -> PriorView | None:
    """The prior kept beside a merged depth map written by ``apply_depth_priors`` (None when there is none)."""
    side_file = Path(merged_depth_path).parent / "priors" / Path(merged_depth_path).name
    if not side_file.is_file():
        return None
    with np.load(side_file) as data:
        source = data["source"]
        return PriorView(data["prior_depth"], float(np.mean(source == SOURCE_STEREO)),
                         float(np.mean(source == SOURCE_PRIOR)))


def apply_depth_priors(scene: SparseScene, depth_maps: DepthMaps, out_dir: Path, config: DepthPriorConfig,
                       progress: ProgressFn = no_progress) -> DepthMaps:
    """Align a depth prior to each view and merge it with the stereo depth where stereo is weak.

    Returns new ``DepthMaps``: views whose prior was accepted point to merged maps ``out_dir/<index>_<stem>.npz`` (the
    mvs layout); the prior itself (``prior`` raw, ``prior_depth`` aligned), the per-pixel ``source`` (0 none, 1 stereo,
    2 prior) and the fit are in ``out_dir/priors/<index>_<stem>.npz``, so ``*.npz`` in ``out_dir`` are all depth maps.
    The other views keep their stereo maps. Never fails the run: without a prior it returns the stereo maps and says
    how to enable one.
    """
    from core.mvs import DepthMapRecord, DepthMaps, DepthView, load_depth_view, save_depth_view

    out_dir = Path(out_dir)
    records = list(depth_maps.views)
    unchanged = DepthMaps(ok=depth_maps.ok, failure=depth_maps.failure, views=records)
    if not config.enabled:
        unchanged.metrics = {"prior_views": 0}
        unchanged.findings = [Finding("info", "Depth prior switched off for this run.")]
        return unchanged
    if not records:
        unchanged.metrics = {"prior_views": 0}
        return unchanged

    supplied: dict[int, Path] = {}
    findings: list[Finding] = []
    if config.depth_dir:
        depth_dir = Path(config.depth_dir)
        if not depth_dir.is_dir():
            findings.append(Finding("warning", f"The depth-map folder {depth_dir} does not exist; no supplied depth "
                                               "maps were used.", "Check the --depth-prior-dir path."))
        else:
            for i, record in enumerate(records):
                found = find_depth_file(depth_dir, record.name)
                if found is not None:
                    supplied[i] = found
            missing = len(records) - len(supplied)
            if missing:
                findings.append(Finding("info", f"{missing} of {len(records)} photos have no depth map in {depth_dir} "
                                                "(same base name, .npy or 16-bit .png).",
                                        "The monocular model (when installed) covers those photos."))

    need_model = [i for i in range(len(records)) if i not in supplied]
    model: DepthModel | None = None
    if need_model:
        lookup = find_model(config)
        if lookup.location is not None:
            model = load_depth_model(lookup.location)
        else:
            logger.info(lookup.message)  # every place searched, for whoever installs the model
            findings.append(Finding("info", "No depth prior was used: the monocular depth model is not installed. "
                                            "Plain or shiny surfaces may have gaps.", lookup.how_to_enable))
    if model is None and not supplied:
        unchanged.metrics = {"prior_views": 0, "model_available": 0}
        unchanged.findings = findings
        return unchanged

    out_dir.mkdir(parents=True, exist_ok=True)
    progress(0.0, "reading depth maps")
    views: list[DepthView] = [load_depth_view(r.path) for r in records]
    priors: dict[int, np.ndarray] = {}
    for i, path in supplied.items():
        try:
            priors[i] = read_depth_file(path, (views[i].camera.width, views[i].camera.height))
        except (ValueError, OSError) as exc:
            findings.append(Finding("warning", f"Depth map {path.name} could not be read ({exc}); it was ignored.",
                                    "Save depth maps as float32 .npy or 16-bit PNG in millimetres."))
    if model is not None:
        progress(0.05, f"monocular depth for {len(need_model)} photos ({model.device})")
        predicted = predict_relative_depth(model, [views[i].image for i in need_model], config.input_size)
        priors.update(zip(need_model, predicted, strict=True))

    # Targets per view: sparse SfM depths and confident stereo.
    targets: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    for i in priors:
        view = views[i]
        scene_index = scene.image_names.index(view.name) if view.name in scene.image_names else -1
        points = scene.points[scene.visibility[scene_index]] if scene_index >= 0 else np.empty((0, 3))
        rc, z = sparse_depth_samples(points, view.camera)
        index, target, weight = alignment_targets(view.depth, view.confidence, rc, z, seed=i)
        targets[i] = (index, target, weight, len(z))
    folder_kind = _supplied_kind({i: priors[i] for i in supplied if i in priors}, targets)

    new_records: list[DepthMapRecord] = []
    per_view: dict[str, dict[str, float]] = {}
    rejected: list[str] = []
    for n, (i, record) in enumerate(enumerate(records)):
        progress(0.5 + 0.5 * n / len(records), f"aligning prior {n + 1}/{len(records)}")
        view = views[i]
        stats: dict[str, float] = {"from_file": float(i in supplied), "accepted": 0.0}
        if i not in priors:
            per_view[record.name] = stats
            new_records.append(record)
            continue
        prior = priors[i]
        index, target, weight, n_sparse = targets[i]
        kind: PriorKind = folder_kind if i in supplied else model.kind  # type: ignore[union-attr]
        fit = align_prior(prior.ravel()[index], target, weight, kind)
        stats.update({"scale": fit.scale, "shift": fit.shift, "residual": fit.residual,
                      "inlier_fraction": fit.inlier_fraction, "compared": float(fit.num_points),
                      "inverse_depth": float(fit.kind == "relative")})
        reason = fit.reason
        aligned = fit.apply(prior) if fit.ok else None
        if aligned is not None:
            # Monocular depth bends at low frequency: a smooth correction fitted to the agreeing targets undoes some.
            warp = smooth_correction(aligned, index, target, weight)
            if warp is not None:
                aligned = aligned * warp.field
                stats.update({"warp_max": warp.max_correction, "residual_after_warp": warp.residual_after})
            # Sanity check per source: the fit could be carried by one kind of target while the other disagrees.
            checks = {"sparse points": _agreement(aligned, index[:n_sparse], target[:n_sparse]),
                      "confident stereo": _agreement(aligned, index[n_sparse:], target[n_sparse:])}
            for what, share in checks.items():
                if share is not None:
                    stats[f"agreement_{what.split()[-1]}"] = share
                    if share < MIN_SANITY_AGREEMENT and not reason:
                        reason = f"the aligned prior agrees with only {share:.0%} of the {what}"
        if reason:
            rejected.append(f"{record.name} ({reason})")
            per_view[record.name] = stats
            new_records.append(record)
            continue
        assert aligned is not None
        merged = merge_prior(view.depth, view.confidence, aligned, record.depth_range)
        stats.update(merged.stats)
        stats["accepted"] = 1.0
        per_view[record.name] = stats
        stem = Path(record.path).stem
        path = save_depth_view(DepthView(view.name, view.camera, merged.depth, merged.confidence, view.image),
                               out_dir / f"{stem}.npz")
        (out_dir / "priors").mkdir(exist_ok=True)
        np.savez_compressed(out_dir / "priors" / f"{stem}.npz", prior=prior.astype(np.float32),
                            prior_depth=aligned, source=merged.source,
                            alignment=np.array([fit.scale, fit.shift, fit.residual, fit.inlier_fraction]),
                            inverse_depth=np.array(fit.kind == "relative"))
        new_records.append(DepthMapRecord(record.name, record.camera, path.resolve(), record.source_views,
                                          record.depth_range))

    accepted = [s for s in per_view.values() if s["accepted"]]
    metrics: dict[str, Any] = {
        "prior_views": len(priors),
        "accepted_views": len(accepted),
        "model_available": float(model is not None),
        "supplied_views": len(supplied),
        "median_residual": float(np.median([s["residual"] for s in accepted])) if accepted else None,
        "prior_fraction": float(np.mean([s["prior_fraction"] for s in accepted])) if accepted else 0.0,
        "stereo_fraction": float(np.mean([s["stereo_fraction"] for s in accepted])) if accepted else 0.0,
        "per_view": per_view,
    }
    sources = [f"{len(supplied)} supplied depth maps"] if supplied else []
    if model is not None:
        sources.append(f"{model.location.name} ({model.location.source}, {model.device})")
    source = " and ".join(sources)
    if accepted:
        findings.append(Finding(
            "info", f"Depth prior from {source}: used in {len(accepted)} of {len(priors)} photos, median fit error "
                    f"{metrics['median_residual']:.1%}; {metrics['prior_fraction']:.0%} of pixels came from the prior "
                    f"and {metrics['stereo_fraction']:.0%} from stereo.",
            "Prior depths only fill where stereo is weak; fusion keeps them only where several views agree."))
    if rejected:
        findings.append(Finding(
            "warning", f"The depth prior was rejected for {len(rejected)} photo(s): {'; '.join(rejected[:3])}"
                       f"{' ...' if len(rejected) > 3 else ''}.",
            "Those photos use stereo only. If the depth maps were supplied, check that they belong to these photos "
            "and hold depth (not colour)."))
    # Metric maps fix the reconstruction's scale: z_world = s * z_metric + b, so s is world units per metre.
    metric_scales = [s["scale"] for s in accepted if s["from_file"] and not s["inverse_depth"]]
    if len(metric_scales) >= 2:
        per_metre = float(np.median(metric_scales))
        spread = float(np.subtract(*np.percentile(metric_scales, [75, 25])) / per_metre)
        metrics["world_units_per_metre"], metrics["metric_scale_spread"] = per_metre, spread
        if spread < 0.05:
            findings.append(Finding(
                "info", f"The supplied depth maps read as metric: 1 m is {per_metre:.4g} model units (photos agree "
                        f"within {spread:.1%}), so the model can be given its real size.",
                "Sizes are as good as the depth sensor (phone LiDAR: about 1 cm)."))
    artifacts = {"depth_prior": out_dir.resolve()} if accepted else {}
    progress(1.0, "depth prior done")
    logger.info("depth prior: %d/%d views accepted", len(accepted), len(priors))
    return DepthMaps(ok=depth_maps.ok, failure=depth_maps.failure, metrics=metrics, findings=findings,
                     artifacts=artifacts, views=new_records)
