"""Depth-prior stage: a monocular depth model (transformers) or depth maps supplied with the photos, aligned to the
reconstruction and merged with stereo where stereo is weak.

Kinds of prior values (``PriorKind``):

* ``relative``: affine-invariant inverse depth ("disparity-like", larger = nearer), what Depth Anything's relative
  checkpoints predict. Aligned with a scale and shift in inverse depth: ``1 / z = s * prior + b``.
* ``metric``: depth along the camera z axis (phone LiDAR/ToF, metric models, depth from another pipeline). Aligned
  with a scale and shift in depth: ``z = s * prior + b`` (SfM worlds have their own scale, so even metric maps are
  rescaled; the fitted scale says how many world units one metre is).

Its concerns, one module each: ``model`` (finding, loading and running the model), ``supplied`` (the user's depth
files), ``align`` (robust scale and shift, smooth correction), ``merge`` (prior and stereo per pixel); this module is
the stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import advice
from core.artifacts import DEPTH_PRIOR_MAPS, DEPTH_PRIOR_PRIORS, DEPTH_PRIOR_SUPPLIED
from core.config import DepthPriorConfig
from core.manifest import Finding
from core.photos import Photo
from core.progress import StageProgress, no_progress
from core.scene import SparseScene
from core.stages.depth import DepthMap, DepthMapRecord, DepthMaps, load_depth_map, save_depth_map
from core.stages.depth_prior.align import (
    Alignment,
    align_prior,
    alignment_targets,
    smooth_correction,
    sparse_depth_samples,
    supplied_kind,
)
from core.stages.depth_prior.merge import (
    MIN_SANITY_AGREEMENT,
    SOURCE_PRIOR,
    SOURCE_STEREO,
    agreement,
    merge_prior,
    prior_edges,
)
from core.stages.depth_prior.model import (
    ENV_VAR,
    DepthModel,
    PriorKind,
    find_model,
    load_depth_model,
    predict_relative_depth,
)
from core.stages.depth_prior.supplied import find_depth_file, read_depth_file

logger = logging.getLogger(__name__)

__all__ = ["ENV_VAR", "Alignment", "PriorView", "align_prior", "find_depth_file", "find_model", "load_depth_model",
           "load_prior_view", "predict_relative_depth", "prior_edges", "read_depth_file", "run_depth_prior"]


@dataclass
class PriorView:
    """What the depth-prior stage kept for one photo, for display."""

    prior_depth: np.ndarray
    """The prior after alignment, in the reconstruction's depth units."""
    stereo_fraction: float
    """Share of pixels whose merged depth came from stereo."""
    prior_fraction: float
    """Share of pixels whose merged depth came from the prior."""


def load_prior_view(run_dir: Path, photo: Photo) -> PriorView | None:
    """What ``run_depth_prior`` kept of the prior for ``photo`` (None when the prior was not used for it)."""
    side_file = DEPTH_PRIOR_PRIORS.path(run_dir) / f"{photo.stem}.npz"
    if not side_file.is_file():
        return None
    with np.load(side_file) as data:
        source = data["source"]
        return PriorView(data["prior_depth"], float(np.mean(source == SOURCE_STEREO)),
                         float(np.mean(source == SOURCE_PRIOR)))


def run_depth_prior(scene: SparseScene, depth_maps: DepthMaps, run_dir: Path, config: DepthPriorConfig,
                    progress: StageProgress = no_progress, supplied_dir: Path | None = None) -> DepthMaps:
    """Align a depth prior to each photo and merge it with the stereo depth where stereo is weak.

    Returns new ``DepthMaps``: photos whose prior was accepted point to merged maps in ``RUN/depth_prior/maps/``
    (the depth stage's layout); the prior itself (``prior`` raw, ``prior_depth`` aligned), the per-pixel ``source``
    (0 none, 1 stereo, 2 prior) and the fit are in ``RUN/depth_prior/priors/<stem>.npz``. The other photos keep
    their stereo maps. Supplied maps come from ``supplied_dir``, named after the photos' working stems (the pipeline
    copies the user's ``config.depth_dir`` there with ``copy_supplied_depth``). Never fails the run: without a prior
    it returns the stereo maps and says how to enable one.
    """
    records = list(depth_maps.maps)
    unchanged = DepthMaps(ok=depth_maps.ok, failure=depth_maps.failure, maps=records)
    if not config.enabled:
        unchanged.metrics = {"prior_views": 0}
        unchanged.findings = [Finding("info", advice.DEPTH_PRIOR_OFF)]
        return unchanged
    if not records:
        unchanged.metrics = {"prior_views": 0}
        return unchanged

    supplied: dict[int, Path] = {}
    findings: list[Finding] = []
    if supplied_dir is not None:
        for i, record in enumerate(records):
            found = find_depth_file(supplied_dir, record.photo.stem)
            if found is not None:
                supplied[i] = found
        missing = len(records) - len(supplied)
        if missing:
            findings.append(advice.depth_prior_missing_maps(missing, len(records)))

    need_model = [i for i in range(len(records)) if i not in supplied]
    model: DepthModel | None = None
    if need_model:
        lookup = find_model(config)
        if lookup.location is not None:
            model = load_depth_model(lookup.location)
        else:
            logger.info(lookup.message)  # every place searched, for whoever installs the model
            findings.append(advice.depth_prior_no_model(lookup.how_to_enable))
    if model is None and not supplied:
        unchanged.metrics = {"prior_views": 0, "model_available": 0}
        unchanged.findings = findings
        return unchanged

    out_dir, priors_dir = DEPTH_PRIOR_MAPS.path(run_dir), DEPTH_PRIOR_PRIORS.path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(0.0, "reading depth maps")
    views: list[DepthMap] = [load_depth_map(r.path) for r in records]
    priors: dict[int, np.ndarray] = {}
    for i, path in supplied.items():
        try:
            priors[i] = read_depth_file(path, (views[i].camera.width, views[i].camera.height))
        except (ValueError, OSError, ZeroDivisionError) as exc:
            # Named as the user named it (the photo's stem, issue 15 item 8), not by the run's internal copy.
            user_map = f"{Path(records[i].photo.name).stem}{path.suffix.lower()}"
            findings.append(advice.depth_prior_unreadable(records[i].photo.name, str(exc).replace(path.name, user_map)))
    if model is not None:
        progress(0.05, f"monocular depth for {advice.count(len(need_model), 'photo')} ({model.device})")
        predicted = predict_relative_depth(model, [views[i].image for i in need_model], config.input_size)
        priors.update(zip(need_model, predicted, strict=True))

    # Targets per view: sparse SfM depths and confident stereo.
    targets: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, int]] = {}
    for i in priors:
        view = views[i]
        scene_index = scene.photos.index(view.photo) if view.photo in scene.photos else -1
        points = scene.points[scene.visibility[scene_index]] if scene_index >= 0 else np.empty((0, 3))
        rc, z = sparse_depth_samples(points, view.camera)
        index, target, weight = alignment_targets(view.depth, view.confidence, rc, z, seed=i)
        targets[i] = (index, target, weight, len(z))
    folder_kind = supplied_kind({i: priors[i] for i in supplied if i in priors}, targets)

    new_records: list[DepthMapRecord] = []
    per_view: dict[str, dict[str, float]] = {}
    rejected: list[str] = []
    for n, (i, record) in enumerate(enumerate(records)):
        progress(0.5 + 0.5 * n / len(records), f"aligning prior {n + 1}/{len(records)}")
        view = views[i]
        stats: dict[str, float] = {"from_file": float(i in supplied), "accepted": 0.0}
        if i not in priors:
            per_view[record.photo.name] = stats
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
            checks = {"sparse points": agreement(aligned, index[:n_sparse], target[:n_sparse]),
                      "confident stereo": agreement(aligned, index[n_sparse:], target[n_sparse:])}
            for what, share in checks.items():
                if share is not None:
                    stats[f"agreement_{what.split()[-1]}"] = share
                    if share < MIN_SANITY_AGREEMENT and not reason:
                        reason = f"the aligned prior agrees with only {share:.0%} of the {what}"
        if reason:
            rejected.append(f"{record.photo.name} ({reason})")
            per_view[record.photo.name] = stats
            new_records.append(record)
            continue
        assert aligned is not None
        merged = merge_prior(view.depth, view.confidence, aligned, record.depth_range)
        stats.update(merged.stats)
        stats["accepted"] = 1.0
        per_view[record.photo.name] = stats
        stem = record.photo.stem
        normal = None
        if view.normal is not None:  # stereo normals stay where the stereo depth stayed
            normal = np.where((merged.depth == view.depth)[..., None], view.normal, np.nan).astype(np.float32)
        path = save_depth_map(DepthMap(view.photo, view.camera, merged.depth, merged.confidence, view.image, normal),
                              out_dir / f"{stem}.npz")
        priors_dir.mkdir(exist_ok=True)
        np.savez_compressed(priors_dir / f"{stem}.npz", prior=prior.astype(np.float32),
                            prior_depth=aligned, source=merged.source,
                            alignment=np.array([fit.scale, fit.shift, fit.residual, fit.inlier_fraction]),
                            inverse_depth=np.array(fit.kind == "relative"))
        new_records.append(DepthMapRecord(record.photo, record.camera, path.resolve(), record.source_views,
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
    # Metric maps fix the reconstruction's scale: z_world = s * z_metric + b, so s is world units per metre.
    metric_scales = [s["scale"] for s in accepted if s["from_file"] and not s["inverse_depth"]]
    if len(metric_scales) >= 2:
        per_metre = float(np.median(metric_scales))
        spread = float(np.subtract(*np.percentile(metric_scales, [75, 25])) / per_metre)
        metrics["world_units_per_metre"], metrics["metric_scale_spread"] = per_metre, spread
    findings.extend(advice.depth_prior_findings(metrics, " and ".join(sources), rejected))
    artifacts = [DEPTH_PRIOR_MAPS, DEPTH_PRIOR_PRIORS] if accepted else []
    if supplied:
        artifacts.append(DEPTH_PRIOR_SUPPLIED)
    progress(1.0, "depth prior done")
    logger.info("depth prior: %d/%d views accepted", len(accepted), len(priors))
    return DepthMaps(ok=depth_maps.ok, failure=depth_maps.failure, metrics=metrics, findings=findings,
                     artifacts=artifacts, maps=new_records)
