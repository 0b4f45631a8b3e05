"""Merging an aligned prior with stereo: confident stereo stays, weak stereo is confirmed or replaced, holes are
filled — only inside the photo's depth range and away from the prior's own (blurred) depth edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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

SOURCE_NONE, SOURCE_STEREO, SOURCE_PRIOR = 0, 1, 2


@dataclass
class PriorMerge:
    """One view's merged depth, where each pixel came from, and counts for the diagnostics."""

    depth: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    """(H, W) uint8: 0 no depth, 1 stereo, 2 prior."""
    stats: dict[str, float]


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


def agreement(prior_depth: np.ndarray, index: np.ndarray, target: np.ndarray) -> float | None:
    """Share of target depths the aligned prior matches within AGREEMENT (None when there are too few to say)."""
    if len(index) < 20:
        return None
    values = prior_depth.ravel()[index]
    ok = np.isfinite(values)
    if ok.sum() < 20:
        return 0.0
    return float(np.mean(np.abs(values[ok] / target[ok] - 1) <= AGREEMENT) * ok.mean())
