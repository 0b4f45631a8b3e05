"""SfM stage: COLMAP structure-from-motion through pycolmap (SIFT, matching, incremental mapping).

Writes into ``RUN/sfm/``: the COLMAP database, every model found (``models/``), the largest as ``model/`` (COLMAP
binary), ``undistorted/`` (pinhole images and model for the dense stages) and ``matches.json`` (which photos matched
which). A capture that COLMAP cannot reconstruct is a result with a reason (``ok=False``), not an exception.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import advice
from core.artifacts import SFM_MATCHES, SFM_MODEL, SFM_UNDISTORTED
from core.config import SfmConfig, cpu_budget
from core.photos import Photo, PhotoSet
from core.progress import StageProgress, no_progress
from core.stages import StageOutput
from core.stages.capture import CaptureResult
from core.stages.sfm import trust

logger = logging.getLogger(__name__)

# Shares of the stage's progress bar, measured on 24-photo captures (mapping dominates on larger sets).
_EXTRACT, _MATCH, _MAP = 0.25, 0.35, 0.35


@dataclass
class SfmResult(StageOutput):
    """The reconstruction COLMAP found, where it is on disk, and its diagnostics."""

    model_dir: Path | None = None
    """COLMAP binary model of the largest reconstruction (openable with pycolmap.Reconstruction)."""
    undistorted_dir: Path | None = None
    """pycolmap.undistort_images output: images/ and sparse/ with PINHOLE cameras."""
    photos: PhotoSet = field(default_factory=lambda: PhotoSet([]))
    """The photos SfM was given (the accepted ones)."""
    registered: list[Photo] = field(default_factory=list)
    """The photos placed in the model."""


def route_colmap_log(run_dir: Path) -> None:
    """COLMAP logs through glog, by default onto stderr (raw ``I1203 ...``/``E1203 ...`` lines between the CLI's
    progress lines, even at minloglevel 2: "Failed to create any sparse model" is an ERROR). Send it to
    RUN_DIR/logs/colmap.<date>.<pid> instead (every level from warnings up, all of it when debugging) and keep
    only FATAL on stderr; our own findings say what went wrong in words."""
    import pycolmap

    log = pycolmap.logging
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    log.logtostderr, log.alsologtostderr, log.stderrthreshold = False, False, int(log.Level.FATAL)
    log.minloglevel = int(log.Level.INFO if logger.isEnabledFor(logging.DEBUG) else log.Level.WARNING)
    log.set_log_destination(log.Level.INFO, str(run_dir / "logs" / "colmap."))  # this file holds every level
    for level in (log.Level.WARNING, log.Level.ERROR):
        log.set_log_destination(level, "")  # no second copy per level (and none in /tmp, glog's default)


def run_sfm(capture: CaptureResult, run_dir: Path, config: SfmConfig,
            progress: StageProgress = no_progress) -> SfmResult:
    """Features, matching and incremental mapping on the capture's working images."""
    import pycolmap

    image_dir = capture.image_dir
    assert image_dir is not None, "capture stage must run first"
    photos = PhotoSet(sorted(capture.accepted, key=lambda p: p.working))
    image_names = [p.working for p in photos]
    work_dir = run_dir / "sfm"
    if work_dir.exists():
        shutil.rmtree(work_dir)  # a re-run starts from a clean database
    work_dir.mkdir(parents=True)
    database = work_dir / "database.db"
    pycolmap.set_random_seed(config.seed)
    route_colmap_log(run_dir)
    device = pycolmap.Device.cuda if pycolmap.has_cuda else pycolmap.Device.cpu
    threads = config.num_threads if config.num_threads > 0 else cpu_budget()  # the cores this run is given

    progress(0.0, f"finding features in {len(image_names)} photos")
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    fixed = static_background_masks(image_dir, image_names, work_dir / "masks", config)
    if fixed is not None:
        # A fixed camera (turntable): features on the still background would place every photo at the tripod.
        reader.mask_path = str(work_dir / "masks")
    if capture.shared_camera and capture.focal_px:
        # EXIF focal seeds the shared camera; SfM still refines it.
        width, height = _image_size(image_dir / image_names[0])
        extra = ",0" if config.camera_model in ("SIMPLE_RADIAL", "RADIAL") else ""
        reader.camera_params = f"{capture.focal_px},{width / 2},{height / 2}{extra}"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = config.max_num_features
    extraction.num_threads = threads
    camera_mode = pycolmap.CameraMode.SINGLE if capture.shared_camera else pycolmap.CameraMode.PER_IMAGE
    # Import first so image ids follow the sorted names, not the order in which extraction threads finish.
    pycolmap.Database.open(str(database)).close()
    pycolmap.import_images(database, image_dir, camera_mode=camera_mode, image_names=image_names, options=reader)
    chunk = 8  # a few photos per call, so the progress bar moves; each call still uses every core
    for start in range(0, len(image_names), chunk):
        progress(_EXTRACT * start / len(image_names), f"finding features ({start} of {len(image_names)} photos)")
        pycolmap.extract_features(database, image_dir, image_names=image_names[start:start + chunk],
                                  camera_mode=camera_mode, reader_options=reader, extraction_options=extraction,
                                  device=device)

    progress(_EXTRACT, "matching features between photos")
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = config.min_num_matches
    verification.ransac.random_seed = config.seed  # seeded per pair, so parallel verification is reproducible
    if len(image_names) <= config.exhaustive_max_images:
        matching_mode = "exhaustive"
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=device)
    else:
        # Large sets: neighbours in capture order, plus the photos most alike by retrieval, which closes the loop
        # when the photographer comes back round to the start (COLMAP's vocabulary trees cannot be fetched offline).
        matching_mode = "sequential+retrieval"
        pairs = sequential_pairs(len(image_names), config.sequential_overlap)
        pairs |= retrieval_pairs(database, image_names, config.retrieval_neighbours, config.seed)
        pairs_file = work_dir / "pairs.txt"
        pairs_file.write_text("".join(f"{image_names[i]} {image_names[j]}\n" for i, j in sorted(pairs)))
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = str(pairs_file)
        pycolmap.match_image_pairs(database, matching_options=matching, pairing_options=pairing,
                                   verification_options=verification, device=device)

    progress(_EXTRACT + _MATCH, "placing the cameras")
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.min_num_matches = config.min_num_matches
    mapping.num_threads = threads
    mapping.random_seed = config.seed
    mapping.mapper.random_seed = config.seed
    mapping.triangulation.random_seed = config.seed
    mapping.mapper.init_min_num_inliers = config.init_min_inliers
    mapping.mapper.abs_pose_min_num_inliers = config.register_min_inliers
    mapping.mapper.abs_pose_min_inlier_ratio = config.register_min_inlier_ratio
    placed = [0]

    def on_next_image() -> None:
        placed[0] += 1
        progress(_EXTRACT + _MATCH + _MAP * min(placed[0] / len(image_names), 1.0),
                 f"placing the cameras ({min(placed[0] + 1, len(image_names))} of {len(image_names)})")

    models_dir = work_dir / "models"
    models_dir.mkdir()
    models = pycolmap.incremental_mapping(database, image_dir, models_dir, options=mapping,
                                          next_image_callback=on_next_image)

    result = SfmResult(photos=photos)
    db_stats = _database_stats(database, image_names)
    result.metrics.update(focal_from_photos=int(bool(capture.shared_camera and capture.focal_px)),
                          matching_mode=matching_mode, photos_usable=len(image_names),
                          static_background_fraction=round(fixed.still_fraction if fixed else 0.0, 3),
                          keypoints_median=float(np.median([s["keypoints"] for s in db_stats.values()] or [0])))
    _write_match_matrix(SFM_MATCHES.path(run_dir), image_names, db_stats)
    result.artifacts.append(SFM_MATCHES)

    model = models[max(models, key=lambda k: models[k].num_reg_images())] if models else None
    progress(_EXTRACT + _MATCH + _MAP, "checking that the cameras can be trusted")
    model, report, recovery = trusted_model(model, database, image_dir, work_dir, threads, config, fixed)
    if model is None:
        result.ok = False
        result.failure = advice.SFM_NOTHING_PLACED + advice.sfm_turntable_tried(report.turntable)
        result.metrics.update(photos_registered=0, registered_fraction=0.0, num_models=0,
                              turntable=dict(report.turntable), trust_recovery=recovery)
        result.metrics["per_photo"] = [_photo_metrics(photo, db_stats, None) for photo in photos]
        result.findings = advice.sfm_findings(result.metrics)
        return result

    result.metrics.update(report.metrics(), trust_recovery=recovery)
    model_dir = SFM_MODEL.path(run_dir)
    model_dir.mkdir()
    model.write_binary(str(model_dir))
    result.model_dir = model_dir
    result.artifacts.append(SFM_MODEL)

    registered = {model.images[i].name for i in model.reg_image_ids()}
    result.registered = [p for p in photos if p.working in registered]
    result.metrics.update(_model_metrics(model))
    result.metrics["camera_spread_ratio"] = round(camera_spread_ratio(model), 4)
    result.metrics.update(
        photos_registered=len(registered),
        registered_fraction=round(len(registered) / len(image_names), 3),
        num_models=len(models),
        other_model_sizes=sorted((m.num_reg_images() for m in models.values()), reverse=True)[1:],
        per_photo=[_photo_metrics(photo, db_stats, model, report.problems) for photo in photos],
    )

    progress(0.97, "undistorting the photos for dense reconstruction")
    undistorted = SFM_UNDISTORTED.path(run_dir)
    pycolmap.undistort_images(undistorted, model_dir, image_dir)
    result.undistorted_dir = undistorted
    result.artifacts.append(SFM_UNDISTORTED)

    result.findings = advice.sfm_findings(result.metrics)
    dropped = [photos.by_working(n).name for n in result.metrics.get("trust_dropped", [])]
    if dropped and report.ok:
        result.findings.append(advice.sfm_dropped_untrusted(dropped, recovery))
    if not report.ok:
        result.ok = False
        checks = [c for found in report.problems.values() for c in found]
        result.failure = advice.sfm_untrusted([photos.by_working(n).name for n in report.untrusted], checks,
                                              report.folded) + advice.sfm_turntable_tried(report.turntable)
    elif result.metrics["camera_spread_ratio"] < advice.MIN_CAMERA_SPREAD:
        result.ok = False
        result.failure = advice.SFM_ONE_SPOT
    elif len(registered) < 3:
        result.ok = False
        result.failure = advice.sfm_too_few_placed(len(registered), len(image_names))
    progress(1.0, f"{len(registered)} of {len(image_names)} photos placed")
    return result


MAX_DROPPED_SHARE = 0.25
"""At most this share of the placed photos may be dropped as untrusted; beyond it the solution as a whole is suspect
(a mirrored photo drags its neighbours with it) and another solver must agree, or the stage fails."""


def trusted_model(model, database: Path, image_dir: Path, work_dir: Path, threads: int, config: SfmConfig,
                  fixed: FixedCamera | None = None):
    """The solution checked by the trust checks, recovered when it can be: drop the few photos that fail, or solve
    again with global mapping (GLOMAP: rotation averaging, a different failure mode from incremental mapping) as a
    cross-check. A fixed-camera capture (``fixed``) is solved again as a turntable when incremental mapping left
    photos out, placed nothing (``model`` None) or placed them wrong. Returns (model or None, TrustReport of the
    model returned, how it was recovered: "" when not needed)."""
    import pycolmap

    report = trust.check_model(model, database, seed=config.seed) if model is not None else trust.TrustReport()
    usable = _matched_images(database)
    placed = model.num_reg_images() if model is not None else 0
    if report.ok and placed and (fixed is None or placed >= len(usable)):
        return model, report, ""
    if fixed is not None:
        solved, solved_report, info = turntable_model(database, usable, fixed, model if report.ok and placed else None,
                                                      config.seed)
        report.turntable = info
        if solved is not None and solved.num_reg_images() > (placed if report.ok else 0):
            solved_report.turntable = info
            return solved, solved_report, "turntable"
    if model is None:
        return None, report, "none found"
    if report.ok:
        return model, report, ""
    logger.warning("untrusted cameras after incremental mapping: %s", report.problems)
    candidates = [(model, report, "dropped")]
    try:
        options = pycolmap.GlobalPipelineOptions()
        options.num_threads = threads
        options.random_seed = config.seed
        options.min_num_matches = config.min_num_matches
        global_dir = work_dir / "global"
        global_dir.mkdir(exist_ok=True)
        found = pycolmap.global_mapping(database, image_dir, global_dir, options)
        if found:
            other = found[max(found, key=lambda k: found[k].num_reg_images())]
            candidates.append((other, trust.check_model(other, database, seed=config.seed), "global mapping"))
            if candidates[-1][1].ok and other.num_reg_images() >= model.num_reg_images() * (1 - MAX_DROPPED_SHARE):
                return other, candidates[-1][1], "global mapping"
    except Exception as error:  # GLOMAP can fail on tiny or disconnected sets: the incremental answer still stands
        logger.warning("global mapping cross-check failed: %s", error)
    for candidate, found_report, how in candidates:
        placed = candidate.num_reg_images()
        if found_report.folded or len(found_report.untrusted) > MAX_DROPPED_SHARE * placed:
            continue
        trimmed = drop_images(candidate, found_report.untrusted)
        recheck = trust.check_model(trimmed, database, seed=config.seed)
        if recheck.ok and trimmed.num_reg_images() >= 3:
            recheck.dropped = list(found_report.untrusted)
            return trimmed, recheck, f"{how}: left out the photos that failed the checks"
    return model, report, "none found"


MIN_TURNTABLE_TRACKS = 30
"""Fewer multi-view tracks than this cannot tie 3+ photos to one turntable (a plain, rotationally symmetric product
leaves none: every frame is the same)."""


def turntable_model(database: Path, image_names: list[str], fixed: FixedCamera, model, seed: int = 0):
    """The capture solved as one turntable (``turntable_ba``), kept only when its trust checks pass (a few failing
    photos left out) and its camera height is determined: (model or None, TrustReport or None, what was found:
    a dict for the metrics). ``model``: a trusted incremental solution to start from."""
    from core.stages.sfm import turntable_ba

    if len(image_names) < 3:
        info = {"tracks": 0, "accepted": False,
                "reason": f"only {len(image_names)} photos share verified matches with another (at least 3 needed)"}
        logger.warning("turntable solve skipped: %s", info["reason"])
        return None, None, info
    tracks = turntable_ba.longest_tracks(turntable_ba.read_tracks(database, image_names))
    info = {"tracks": tracks.num_tracks, "accepted": False}
    if tracks.num_tracks < MIN_TURNTABLE_TRACKS:
        info["reason"] = (f"{tracks.num_tracks} multi-view tracks between {len(image_names)} photos "
                          f"(at least {MIN_TURNTABLE_TRACKS} needed)")
        logger.warning("turntable solve skipped: %s", info["reason"])
        return None, None, info
    ring_index = {name: k for k, ring in enumerate(fixed.rings) for name in ring}
    labels = sorted({ring_index.get(n, -1) for n in tracks.names})
    ring_of = np.array([labels.index(ring_index.get(n, -1)) for n in tracks.names])
    starts = turntable_ba.default_starts(tracks, ring_of)
    if model is not None:
        starts = turntable_ba.starts_from_model(tracks, ring_of, trust.model_cameras(model)) + starts
    solution = turntable_ba.solve(tracks, ring_of, starts, fix_intrinsics=True)
    solved = turntable_ba.to_reconstruction(tracks, solution)
    report = trust.check_turntable_model(solved, database, seed=seed)
    tilt = turntable_ba.tilt_std_deg(tracks, solution)
    info.update(start=solution.start, rings=int(ring_of.max()) + 1, placed=solved.num_reg_images(),
                observations_explained=solution.inliers, observations=len(tracks.observations),
                tilt_std_deg=round(tilt, 3), untrusted=report.untrusted)
    logger.info("turntable solution (start %s): %d of %d photos placed, %d of %d observations explained, tilt "
                "±%.2f°; untrusted: %s", solution.start, solved.num_reg_images(), len(tracks.names),
                solution.inliers, len(tracks.observations), tilt, report.problems)
    if tilt > turntable_ba.TILT_STD_MAX_DEG:
        info["reason"] = (f"the camera height is not determined by the matches (tilt ±{tilt:.2f}°, at most "
                          f"±{turntable_ba.TILT_STD_MAX_DEG}° trusted)")
        return None, None, info
    if not report.ok and len(report.untrusted) <= MAX_DROPPED_SHARE * solved.num_reg_images():
        trimmed = drop_images(solved, report.untrusted)
        recheck = trust.check_turntable_model(trimmed, database, seed=seed)
        if recheck.ok and trimmed.num_reg_images() >= 3:
            recheck.dropped = list(report.untrusted)
            solved, report = trimmed, recheck
    if not report.ok or solved.num_reg_images() < 3:
        info["reason"] = f"its cameras failed the trust checks: {report.problems}"
        return None, None, info
    info.update(accepted=True, placed=solved.num_reg_images())
    return solved, report, info


def _matched_images(database: Path) -> list[str]:
    """Names of the images with at least one verified pair (the ones any solver could place)."""
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        names = {im.image_id: im.name for im in db.read_all_images()}
        pair_ids, geometries = db.read_two_view_geometries()
        matched = set()
        for pair_id, geometry in zip(pair_ids, geometries, strict=True):
            if len(geometry.inlier_matches):
                matched.update(pycolmap.pair_id_to_image_pair(pair_id))
        return sorted(names[i] for i in matched)
    finally:
        db.close()


def drop_images(model, names: list[str]):
    """A copy of ``model`` without the named photos (their observations go; points seen by fewer than 2 go too)."""
    import pycolmap

    trimmed = pycolmap.Reconstruction(model)
    for name in names:
        image = trimmed.find_image_with_name(name)
        if image is not None and image.has_pose:
            trimmed.deregister_frame(image.frame_id)
    for point_id in [i for i, p in trimmed.points3D.items() if p.track.length() < 2]:
        trimmed.delete_point3D(point_id)
    return trimmed


@dataclass(frozen=True)
class FixedCamera:
    """What the still-background check found: a camera that did not move while the product turned."""

    still_fraction: float
    """Share of the frames that is still (masked out of feature extraction)."""
    rings: list[list[str]]
    """Photos taken from one spot (a camera height of the turntable), each list one ring."""


def static_background_masks(image_dir: Path, image_names: list[str], mask_dir: Path,
                            config: SfmConfig) -> FixedCamera | None:
    """Masks hiding the still background of photos taken from a fixed camera (a turntable), when there are some.

    Two photos were taken from the same spot when most of the *textured* pixels of one look the same at the same
    place in the other (plain areas match anywhere, so they do not count). In a walk-around capture no photo has
    such a partner; on a turntable each has all the others from its tripod height. A pixel is then still background
    when it looks the same in at least half of its photo's partners: the product turns, the backdrop does not.
    Returns the still share and the photos taken from each spot, or None (no masks written) when the camera was
    not fixed.
    """
    import cv2

    if len(image_names) < 4:
        return None
    greys = [cv2.imread(str(image_dir / name), cv2.IMREAD_GRAYSCALE) for name in image_names]
    full_size = greys[0].shape
    if any(g is None or g.shape != full_size for g in greys):
        return None  # mixed sizes: not one fixed camera
    small_size = (max(1, full_size[1] // 4), max(1, full_size[0] // 4))
    small = np.stack([cv2.GaussianBlur(cv2.resize(g, small_size, interpolation=cv2.INTER_AREA).astype(np.float32),
                                       (0, 0), 1.0) for g in greys])
    local_mean = np.stack([cv2.blur(g, (5, 5)) for g in small])
    local_var = np.stack([cv2.blur(g * g, (5, 5)) for g in small]) - local_mean**2
    textured = np.sqrt(np.maximum(local_var, 0)) > config.static_texture_std

    still = np.zeros(small.shape, dtype=bool)
    partner_counts = []
    ring = list(range(len(small)))  # union-find over same-spot partners: one ring per camera spot
    for i in range(len(small)):
        same = np.abs(small - small[i]) < config.static_pixel_diff
        share = (same & textured[i]).reshape(len(small), -1).sum(1) / max(int(textured[i].sum()), 1)
        share[i] = 0.0
        partners = np.flatnonzero(share > config.same_spot_share)
        partner_counts.append(len(partners))
        for j in partners:
            a, b = _ring_root(ring, i), _ring_root(ring, int(j))
            ring[max(a, b)] = min(a, b)
        if len(partners) >= 2:
            still[i] = same[partners].sum(0) >= max(2, len(partners) / 2)
    if np.median(partner_counts) < 2:
        return None
    fraction = float(still.mean())
    mask_dir.mkdir(parents=True, exist_ok=True)
    for name, still_pixels in zip(image_names, still, strict=True):
        keep = cv2.dilate((~still_pixels).astype(np.uint8), np.ones((5, 5), np.uint8))  # a margin around what moves
        mask = cv2.resize(keep * 255, (full_size[1], full_size[0]), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(mask_dir / f"{name}.png"), mask)  # COLMAP's naming: <image name>.png
    groups: dict[int, list[str]] = {}
    for i, name in enumerate(image_names):
        groups.setdefault(_ring_root(ring, i), []).append(name)
    logger.info("fixed camera detected: %.0f%% of the frame is still and was masked; %d camera spot(s)",
                100 * fraction, len(groups))
    return FixedCamera(fraction, list(groups.values()))


def _ring_root(parent: list[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def camera_spread_ratio(model) -> float:
    """How far apart the cameras are, relative to how far they are from the scene (≈0 when all at one spot)."""
    centres = np.array([model.images[i].projection_center() for i in model.reg_image_ids()])
    points = np.array([p.xyz for p in model.points3D.values()])
    if len(centres) < 2 or not len(points):
        return 0.0
    spread = np.median(np.linalg.norm(centres - centres.mean(0), axis=1))
    distance = np.median(np.linalg.norm(points - np.median(centres, axis=0), axis=1))
    return float(spread / max(distance, 1e-12))


def sequential_pairs(count: int, overlap: int) -> set[tuple[int, int]]:
    """Each photo with its ``overlap`` successors and, further away, successors at powers of two."""
    pairs = set()
    for i in range(count):
        steps = set(range(1, overlap + 1)) | {2**k for k in range(count.bit_length())}
        pairs.update((i, i + step) for step in steps if i + step < count)
    return pairs


def retrieval_pairs(database: Path, image_names: list[str], neighbours: int, seed: int,
                    words: int = 256, sample: int = 100_000) -> set[tuple[int, int]]:
    """Each photo with its ``neighbours`` most similar photos by a tf-idf bag of SIFT words.

    The vocabulary is learnt from this capture's own descriptors (k-means), which needs no download and suits a
    single product: what the photos share is what the words describe.
    """
    import cv2
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        descriptors = [np.asarray(db.read_descriptors(ids[name]).data, dtype=np.float32) for name in image_names]
    finally:
        db.close()
    rng = np.random.default_rng(seed)
    stacked = np.concatenate([d for d in descriptors if len(d)])
    training = stacked[rng.choice(len(stacked), min(sample, len(stacked)), replace=False)]
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 20, 1.0)
    _, _, centres = cv2.kmeans(training, words, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    histograms = np.zeros((len(image_names), words), dtype=np.float32)
    for i, desc in enumerate(descriptors):
        if len(desc):
            assigned = [m.trainIdx for m in matcher.match(desc, centres)]
            histograms[i] = np.bincount(assigned, minlength=words)
    idf = np.log(len(image_names) / (1.0 + (histograms > 0).sum(0)))
    weighted = histograms / np.maximum(histograms.sum(1, keepdims=True), 1) * idf
    weighted /= np.maximum(np.linalg.norm(weighted, axis=1, keepdims=True), 1e-12)
    similarity = weighted @ weighted.T
    np.fill_diagonal(similarity, -np.inf)
    pairs = set()
    for i in range(len(image_names)):
        for j in np.argsort(-similarity[i])[:neighbours]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return pairs


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


def _database_stats(database: Path, image_names: list[str]) -> dict[str, dict]:
    """Keypoints per photo and verified inlier matches per pair, read from the COLMAP database."""
    import pycolmap

    db = pycolmap.Database.open(str(database))
    try:
        images = {im.image_id: im.name for im in db.read_all_images()}
        stats = {name: {"keypoints": 0, "pairs": {}} for name in image_names}
        for image_id, name in images.items():
            stats[name]["keypoints"] = int(db.num_keypoints_for_image(image_id))
        pair_ids, geometries = db.read_two_view_geometries()
        for pair_id, geometry in zip(pair_ids, geometries, strict=True):
            id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
            inliers = len(geometry.inlier_matches)
            if inliers:
                stats[images[id1]]["pairs"][images[id2]] = inliers
                stats[images[id2]]["pairs"][images[id1]] = inliers
        return stats
    finally:
        db.close()


def _write_match_matrix(path: Path, image_names: list[str], stats: dict[str, dict]) -> None:
    """Verified inlier matches between every pair of photos, for the diagnostics heatmap."""
    index = {name: i for i, name in enumerate(image_names)}
    matrix = np.zeros((len(image_names), len(image_names)), dtype=int)
    for name, entry in stats.items():
        for other, inliers in entry["pairs"].items():
            matrix[index[name], index[other]] = inliers
    path.write_text(json.dumps({"images": image_names, "inlier_matches": matrix.tolist()}))


def _model_metrics(model) -> dict:
    """Summary numbers of a reconstruction, and histograms for the diagnostics page."""
    errors = np.array([p.error for p in model.points3D.values()], dtype=float)
    tracks = np.array([p.track.length() for p in model.points3D.values()], dtype=float)
    error_top = max(2.0, float(np.percentile(errors, 99))) if len(errors) else 2.0
    error_counts, error_edges = np.histogram(errors, bins=20, range=(0.0, error_top))
    longest = int(tracks.max()) if len(tracks) else 2
    track_counts, track_edges = np.histogram(tracks, bins=np.arange(2, longest + 2))
    cameras = [{"model": c.model_name, "width": c.width, "height": c.height,
                "focal_px": round(c.mean_focal_length(), 2)} for c in model.cameras.values()]
    return {
        "sparse_points": int(model.num_points3D()),
        "mean_reprojection_error_px": round(float(model.compute_mean_reprojection_error()), 4),
        "mean_track_length": round(float(model.compute_mean_track_length()), 3),
        "mean_observations_per_photo": round(float(model.compute_mean_observations_per_reg_image()), 1),
        "reprojection_error_histogram": {"edges": error_edges.round(3).tolist(), "counts": error_counts.tolist()},
        "track_length_histogram": {"edges": track_edges.tolist(), "counts": track_counts.tolist()},
        "cameras": cameras,
    }


def _photo_metrics(photo: Photo, stats: dict[str, dict], model, untrusted: dict[str, list[str]] | None = None
                   ) -> dict:
    name = photo.working
    image = model.find_image_with_name(name) if model is not None else None
    registered = image is not None and image.has_pose
    return {
        "name": name,
        "photo": photo.name,
        "registered": bool(registered),
        "trusted": bool(registered) and name not in (untrusted or {}),
        "untrusted": list((untrusted or {}).get(name, [])),
        "keypoints": stats[name]["keypoints"],
        "matched_neighbours": len(stats[name]["pairs"]),
        "observations": int(image.num_points3D) if registered else 0,
    }
