"""Sticker stage, single photo -> 3D cartoon sticker customised by a theme prompt.

    theme      the prompt matched to the nearest of ten themes (keywords, else character n-gram similarity)
    cut-out    the studio's single-image segmentation (core/segmentation.py: the border's backdrop colours seed
               GrabCut), with the monocular depth model's far pixels as background hints when a model is found
    stylise    a cartoon of the theme (stylise.py: classical, or a local image-to-image model when installed)
    die-cut    white border of even width, soft shadow, the theme's outer accent (diecut.py): PNG and 512 px WebP
    3D         a closed, puffed solid following the die-cut outline, the printed face as its texture (solid.py): GLB

Bad input comes back as ``ok=False`` with a reason naming the photo and the fix: a photo the capture checks refuse
(not an image, too small), or one without a clear subject (nothing stands out, or it fills the frame).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core import advice
from core.artifacts import STICKER_CUTOUT, STICKER_GLB, STICKER_PLY, STICKER_PNG, STICKER_THEME, STICKER_WEBP
from core.config import CaptureConfig, DepthPriorConfig, StickerConfig
from core.manifest import Finding
from core.progress import StageProgress, no_progress
from core.segmentation import SegmentationHints, segment_product
from core.stages import StageOutput
from core.stages.capture import inspect_photo
from core.stages.sticker import diecut, solid, stylise
from core.stages.sticker.themes import THEMES, Theme, ThemeMatch, match_theme

__all__ = ["THEMES", "StickerResult", "Theme", "ThemeMatch", "match_theme", "run_sticker", "subject_problem"]

logger = logging.getLogger(__name__)

MIN_SUBJECT_SHARE = 0.01
"""A subject must cover at least this share of the photo (a 1 % blob is a speck: 32 x 24 px of a 320 x 240
photo; GrabCut on a plain photo with nothing in it finds nothing or a few noise pixels)."""
MAX_SUBJECT_SHARE = 0.85
"""...and at most this share: beyond it there is too little background to tell the subject from (a photo of a
texture, or a close-up running off the frame, segments as 95-100 %)."""
EDGE_TOUCH_SHARE = 0.05
"""The mask 'runs off' a side of the photo when it covers more than this share of that side's border pixels."""
LOW_CONFIDENCE = 0.3
"""Segmentation confidence under which the cut-out is flagged uncertain (clean renders and drawn subjects on plain
backdrops score 0.5-0.9; core/segmentation.py explains the score)."""
FAR_SHARE = 0.1
"""With a depth prior: the farthest tenth of the photo (by relative depth) is marked surely background."""


@dataclass
class StickerResult(StageOutput):
    """A die-cut cartoon sticker and its 3D solid."""

    theme: ThemeMatch | None = None
    stylizer: str = ""
    """'classical' or 'model'."""
    cutout: np.ndarray | None = field(default=None, repr=False)
    """(H, W) bool: the subject at the working photo's size."""
    subject: np.ndarray | None = field(default=None, repr=False)
    """(S, S) bool: the subject on the sticker canvas."""
    die: np.ndarray | None = field(default=None, repr=False)
    """(S, S) bool: the die-cut (subject + border) on the canvas."""
    solid: solid.Solid | None = field(default=None, repr=False)
    cartoon: np.ndarray | None = field(default=None, repr=False)
    """(S, S, 3) uint8: the stylised subject (before the die-cut)."""


def _read_photo(photo: Path, max_side: int) -> np.ndarray:
    from core.stages.relief import _read_photo as read_oriented  # the relief's reader: EXIF-oriented, downscaled

    return read_oriented(photo, max_side)[0]


def subject_problem(mask: np.ndarray) -> str | None:
    """Why a cut-out is no clear subject (None when it is one)."""
    share = float(mask.mean())
    if share < MIN_SUBJECT_SHARE:
        return "nothing stands out from the background" if share == 0 else \
            f"only {100 * share:.1f}% of the photo stands out from the background"
    if share > MAX_SUBJECT_SHARE:
        return f"the cut-out covers {100 * share:.0f}% of the photo: there is no background to separate it from"
    sides = [mask[0], mask[-1], mask[:, 0], mask[:, -1]]
    if all(side.mean() > EDGE_TOUCH_SHARE for side in sides):
        return "the cut-out runs off all four edges of the photo"
    return None


def _depth_prior(image: np.ndarray, prior: DepthPriorConfig, config: StickerConfig
                 ) -> tuple[np.ndarray | None, Finding]:
    """Relative inverse depth of the photo (near = large) from the monocular model, or None, and what was done."""
    from core.stages import depth_prior as dp

    if not (config.use_depth_prior and prior.enabled):
        return None, advice.sticker_depth("No depth prior (switched off): the puff follows the outline.")
    lookup = dp.find_model(prior)
    if lookup.location is None:
        return None, advice.sticker_depth("No depth model found, so the cut-out uses colour alone and the puff "
                                          f"follows the outline. {lookup.how_to_enable}")
    model = dp.load_depth_model(lookup.location)
    prediction = dp.predict_relative_depth(model, [image], prior.input_size)[0]
    if model.kind == "metric":  # metric depth: nearer is smaller; turn it into 'near = large' like the others
        prediction = np.where(prediction > 0, 1.0 / np.maximum(prediction, 1e-6), np.nan)
    return prediction.astype(np.float32), advice.sticker_depth(
        f"Depth prior from {lookup.location.path.name}: it shapes the puff, and its farthest pixels guide the cut-out "
        "when that makes the cut-out more confident.")


def _fail(reason: str, findings: list[Finding] | None = None) -> StickerResult:
    return StickerResult(ok=False, failure=reason, findings=findings or [])


def run_sticker(photo: Path, run_dir: Path, config: StickerConfig, prior: DepthPriorConfig, capture: CaptureConfig,
                progress: StageProgress = no_progress, name: str | None = None) -> StickerResult:
    """Turn one photo into a die-cut cartoon sticker (PNG, WebP) and a 3D sticker (GLB) in ``RUN/sticker/``.

    ``config.theme`` is the user's prompt; ``name`` the user's name of the photo.
    """
    started = time.perf_counter()
    photo = Path(photo)
    name = name or photo.name
    findings: list[Finding] = []
    progress(0.0, "reading the photo")
    check = inspect_photo(photo, capture, name)
    if not check.accepted:
        return _fail(check.reason)
    match = match_theme(config.theme)
    theme = match.theme
    findings.append(advice.sticker_theme(theme.name, match.reason, config.theme))
    image = _read_photo(photo, capture.working_max_side)
    height, width = image.shape[:2]
    timings: dict[str, float] = {}

    progress(0.1, "cutting out the subject")
    tick = time.perf_counter()
    disparity, depth_note = _depth_prior(image, prior, config)
    findings.append(depth_note)
    segmentation = segment_product(image, max_side=config.segmentation_max_side)
    depth_hinted = False
    if disparity is not None and np.isfinite(disparity).any():
        # The far pixels as sure background; kept only when the cut-out becomes more confident (a depth model that
        # is wrong about this photo must not cut the subject: a random tiny model's hints drop the IoU to 0.68).
        far = disparity < np.nanpercentile(disparity, 100 * FAR_SHARE)
        hinted = segment_product(image, SegmentationHints(background=far), max_side=config.segmentation_max_side)
        if hinted.confidence > segmentation.confidence:
            segmentation, depth_hinted = hinted, True
    cutout = segmentation.mask
    timings["cutout_s"] = time.perf_counter() - tick
    problem = subject_problem(cutout)
    if problem:
        return _fail(advice.sticker_no_subject(name, problem), findings)
    if segmentation.confidence < LOW_CONFIDENCE:
        findings.append(advice.sticker_low_confidence(name, segmentation.confidence))

    progress(0.3, f"stylising ({theme.name})")
    tick = time.perf_counter()
    size = config.size_px
    framing = diecut.frame_subject(cutout, size, diecut.canvas_margin(config.border_px))
    canvas, subject = diecut.to_canvas(image, cutout, framing)
    choice = stylise.choose_stylizer(config, size / 1024)
    stylizer: stylise.Stylizer = choice.stylizer
    findings.append(advice.sticker_stylisation(choice.message, stylizer.name == "classical"))
    try:
        cartoon = stylizer.stylise(canvas, subject, theme)
    except Exception as exc:  # a model that cannot run here (memory, a broken folder): the classical style instead
        if not isinstance(stylizer, stylise.ModelStylizer):
            raise
        logger.warning("the stylisation model failed: %s", exc)
        findings.append(advice.sticker_model_failed(f"{type(exc).__name__}: {exc}"))
        stylizer = stylizer.classical
        cartoon = stylizer.stylise(canvas, subject, theme)
    timings["stylise_s"] = time.perf_counter() - tick

    progress(0.6, "die-cutting")
    tick = time.perf_counter()
    sticker = diecut.compose(cartoon, subject, theme, config.border_px)
    diecut.write_png(sticker.rgba, STICKER_PNG.path(run_dir))
    webp_quality = diecut.write_webp(sticker.rgba, STICKER_WEBP.path(run_dir), config.webp_size)
    Image.fromarray(cutout.astype(np.uint8) * 255).save(STICKER_CUTOUT.path(run_dir))
    timings["diecut_s"] = time.perf_counter() - tick

    progress(0.75, "building the 3D sticker")
    tick = time.perf_counter()
    relief = None
    if disparity is not None:
        near = cv2.warpAffine(np.nan_to_num(disparity, nan=float(np.nanmin(disparity))), framing.matrix,
                              (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = near[subject]
        lo, hi = (np.percentile(inside, [2, 98]) if inside.size else (0.0, 1.0))
        relief = np.where(subject, np.clip((near - lo) / max(hi - lo, 1e-6), 0, 1), 0).astype(np.float32)
    body = solid.build_solid(sticker.alpha, config.mesh_cells, config.size_mm, config.thickness_mm, config.puff_mm,
                             relief)
    solid.write_glb(body, sticker.front, STICKER_GLB.path(run_dir))
    solid.write_ply(body, sticker.front, STICKER_PLY.path(run_dir))
    timings["solid_s"] = time.perf_counter() - tick

    colours = len(np.unique(cartoon[subject].reshape(-1, 3), axis=0)) if subject.any() else 0
    record = {"prompt": config.theme, "theme": theme.key, "theme_name": theme.name, "how": match.how,
              "reason": match.reason, "score": match.score, "similarities": match.similarities,
              "stylizer": stylizer.name, "stylizer_note": choice.message, "accent": theme.accent}
    STICKER_THEME.path(run_dir).write_text(json.dumps(record, indent=2), encoding="utf-8")
    extent = np.ptp(body.vertices, axis=0) * 1000
    metrics = {
        "width": width, "height": height, "subject_share": round(float(cutout.mean()), 4),
        "cutout_confidence": round(segmentation.confidence, 3), "size_px": size, "border_px": config.border_px,
        "palette_colours": theme.colours, "cartoon_colours": colours, "theme_score": round(match.score, 4),
        "depth_prior": float(disparity is not None), "depth_hinted_cutout": float(depth_hinted),
        "model_stylizer": float(stylizer.name == "model"),
        "vertices": len(body.vertices), "faces": len(body.faces), "webp_quality": webp_quality,
        "webp_bytes": STICKER_WEBP.path(run_dir).stat().st_size,
        "size_mm": [round(float(v), 2) for v in extent],
        **{k: round(v, 2) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("sticker: theme %s (%s), %d colours, %d faces, %.1f s", theme.key, match.reason, colours,
                len(body.faces), metrics["seconds"])
    progress(1.0, "sticker done")
    return StickerResult(metrics=metrics, findings=findings,
                         artifacts=[STICKER_PNG, STICKER_WEBP, STICKER_GLB, STICKER_PLY, STICKER_CUTOUT, STICKER_THEME],
                         theme=match, stylizer=stylizer.name, cutout=cutout, subject=subject, die=sticker.die,
                         solid=body, cartoon=cartoon)
