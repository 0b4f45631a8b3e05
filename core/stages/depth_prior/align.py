"""Aligning a prior to the reconstruction: a robust scale and shift (in inverse depth for relative priors, in depth
for metric ones), a smooth low-frequency correction, and the targets it is fitted to (sparse SfM depths and
confident stereo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.stages.depth_prior.model import PriorKind

STEREO_CONFIDENT = 0.25
"""Stereo depths with at least this confidence are used to fit the prior."""
MAX_STEREO_SAMPLES = 5000
"""Confident stereo pixels used in a fit (a random subset), so the sparse points keep a say."""


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


def supplied_kind(priors: dict[int, np.ndarray],
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
