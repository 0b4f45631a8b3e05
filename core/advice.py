"""What the studio tells its users, written once: capture advice, the thresholds that raise a finding, and the pure
functions that turn each stage's numbers into findings.

Stages measure and put numbers in their metrics; the words come from here, so the same advice reads the same
everywhere (the New capture page shows ``CAPTURE_GUIDE``) and every threshold that decides a warning sits beside the
measurement that chose it. Algorithm parameters (how a stage computes) stay in the stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.manifest import Finding
from core.photos import name_list

# --- capture advice ------------------------------------------------------------------------------------------------

ROUTINE = ("walk around the product and take a photo every 15-20 degrees, at two heights (20-40 sharp photos in "
           "all), the product filling most of the frame")
"""The one capture routine (orbit or turntable steps; two rings see the top and the sides)."""
MAT = "put the product on a textured mat (a newspaper works)"
LIGHT = "use soft, even light"
STILL = "keep the product and the camera's settings unchanged between shots"
CAPTURE_GUIDE = (f"Photograph the product from all sides: {ROUTINE}. {LIGHT.capitalize()}, a plain, non-reflective "
                 f"background, and {MAT} for plain products.")
"""Shown on the New capture page and in the README."""


def over_size_limit(size: int, limit: int) -> str:
    """'61.2 MB is over the 60.0 MB limit', in the limit's unit; in bytes when the two would read the same (never
    '60 MB is over the 60 MB limit')."""
    scale, unit = next((s, u) for s, u in ((1e6, "MB"), (1e3, "kB"), (1, "")) if limit >= s)
    shown, allowed = f"{size / scale:,.1f} {unit}", f"{limit / scale:,.1f} {unit}"
    if not unit or shown == allowed:
        return f"{size:,} bytes is over the {limit:,}-byte limit"
    return f"{shown} is over the {allowed} limit"


def _sentence(*parts: str) -> str:
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


# --- capture ---------------------------------------------------------------------------------------------------

MAX_EDGE_BLUR_PX = 1.4
"""Blur of the product's edges (about the Gaussian sigma, on a 512 px copy; core.stages.capture.edge_blur_px)
above which a photo is called blurry (1024 px renders: sharp 0.0, blurred by 1 px 0.65-0.7, by 2 px 1.55-1.6).
Judged on the product's outline and print, so a sharp plain product is not called blurry (the variance of the
Laplacian used before scored a sharp plain box on a plain backdrop 40, under its threshold of 60)."""
DARK_FRACTION = 0.5
"""Warn when more than this share of the product's pixels is near black (a black cloth around it does not count)."""
BRIGHT_FRACTION = 0.35
"""Warn when more than this share of the product's pixels is clipped white (a white sweep around it does not)."""
NEAR_DUPLICATE_BITS = 10
"""Photos whose 256-bit difference hashes differ in at most this many bits add no viewpoint (a burst, a re-export:
0-7 bits; neighbouring orbit photos 15 degrees apart: 30+). On a turntable the still backdrop brings turned photos
within 7-13 bits of each other, so the product's surroundings must match too (turned: 50+ bits)."""
SAME_EVERYWHERE_SHARE = 0.5
"""When more than this share of the photos are near-duplicates, the product itself looks alike from every side (a
plain, round product on a turntable): one finding says so instead of a duplicate warning per photo."""
FEW_PHOTOS = 12
"""Fewer usable photos than this get a warning: reconstructions are most reliable with 20-40."""

QUALITY_ISSUES: dict[str, tuple[str, str]] = {
    "blurry": ("{count} photo(s) look blurry: {names}.",
               "Retake them with steadier hands (a tripod), more light, or the focus on the product."),
    "dark": ("{count} photo(s) show the product too dark: {names}.",
             "Add light on the product; a dark backdrop may stay dark."),
    "bright": ("{count} photo(s) show the product overexposed (clipped white): {names}.",
               "Lower the exposure until the product keeps its detail; a white sweep may stay clipped."),
    "duplicate": ("{count} photo(s) are nearly identical to another one: {names}.",
                  "Turn the product or move the camera between shots: each photo should add a viewpoint."),
}
"""Per kind of photo problem: the one finding for all the photos it applies to, and what to do."""


def _where(metrics: Mapping[str, float]) -> str:
    return "the product" if metrics.get("product_found", 0.0) > 0 else "the photo"


def blurry(name: str, blur_px: float) -> str:
    return (f"{name}: looks blurry (edges about {blur_px:.1f} px wide, over {MAX_EDGE_BLUR_PX:.1f}); retake it with "
            "steadier hands, more light or the focus on the product.")


def dark(name: str, share: float, where: str = "the product") -> str:
    return f"{name}: {where} is mostly dark ({share:.0%} of its pixels near black); add light."


def overexposed(name: str, share: float, where: str = "the product") -> str:
    return f"{name}: {where} is overexposed ({share:.0%} of its pixels clipped white); reduce exposure."


def near_duplicate(name: str, twin: str) -> str:
    return f"{name}: is nearly identical to {twin}; it adds no new viewpoint."


def quality_issues(metrics: Mapping[str, float]) -> list[str]:
    """Kinds of problem (keys of ``QUALITY_ISSUES``) in one photo's measurements."""
    issues = []
    if metrics.get("edge_blur_px", 0.0) > MAX_EDGE_BLUR_PX:
        issues.append("blurry")
    if metrics.get("dark_fraction", 0.0) > DARK_FRACTION:
        issues.append("dark")
    if metrics.get("bright_fraction", 0.0) > BRIGHT_FRACTION:
        issues.append("bright")
    return issues


def quality_warnings(name: str, metrics: Mapping[str, float]) -> list[str]:
    """Per-photo warnings from the capture stage's measurements (edge blur, dark and bright shares, all measured on
    the product when it was found)."""
    words = {"blurry": lambda: blurry(name, metrics["edge_blur_px"]),
             "dark": lambda: dark(name, metrics["dark_fraction"], _where(metrics)),
             "bright": lambda: overexposed(name, metrics["bright_fraction"], _where(metrics))}
    return [words[kind]() for kind in quality_issues(metrics)]


def issue_findings(issues: Mapping[str, Sequence[str]], accepted: int) -> list[Finding]:
    """One finding per kind of photo problem naming its photos (not one finding per photo)."""
    findings = []
    for kind, names in issues.items():
        if not names:
            continue
        if kind == "duplicate" and len(names) > SAME_EVERYWHERE_SHARE * accepted:
            findings.append(Finding(
                "warning", f"{len(names)} of {accepted} photos look like another one: the product may look the same "
                           "from every side (plain and round), so the photos cannot show how far it turned.",
                "Put a small patterned marker on the turntable plate or beside the product, or add a ring of photos "
                "with the product lying on its side."))
            continue
        message, hint = QUALITY_ISSUES[kind]
        findings.append(Finding("warning", message.format(count=len(names), names=name_list(names)), hint))
    return findings


def capture_findings(rejected_reasons: Sequence[str], issues: Mapping[str, Sequence[str]],
                     metrics: Mapping[str, Any], needed: int) -> list[Finding]:
    """Rejections, the photo problems (one finding per kind, naming the photos) and the verdict on the set."""
    findings = [Finding("error", reason) for reason in rejected_reasons]
    findings.extend(issue_findings(issues, metrics.get("photos_accepted", 0)))
    if metrics.get("cameras", 1) > 1 or metrics.get("resolutions", 1) > 1:
        mixed = [f"{count(metrics[key], noun)}" for key, noun in (("cameras", "camera"), ("resolutions", "resolution"))
                 if metrics.get(key, 1) > 1]
        findings.append(Finding(
            "warning", f"The photos come from {' and '.join(mixed)}; each is calibrated separately, which is less "
                       "accurate.",
            "Shoot all photos of one product with the same camera, zoom and resolution."))
    accepted, given = metrics.get("photos_accepted", 0), metrics.get("photos_given", 0)
    if accepted >= needed:
        findings.append(Finding("info", f"{accepted} of {count(given, 'photo')} accepted."))
    if needed > 1 and needed <= accepted < FEW_PHOTOS:
        findings.append(Finding("warning", f"Only {accepted} usable photos; reconstructions are most reliable with "
                                           "20-40.", _sentence(ROUTINE)))
    return findings


def too_few_photos(accepted: int, given: int, needed: int, rejected_reasons: Sequence[str]) -> str:
    return (f"Only {accepted} of {given} photos can be used; at least {needed} are needed. "
            + ("Rejected: " + " ".join(rejected_reasons[:5]) if rejected_reasons else
               "Add more photos of the product from different angles."))


# --- sfm -------------------------------------------------------------------------------------------------------

LOW_PLACED_FRACTION = 0.6
"""Below this share of photos placed the verdict is an error (the model misses whole sides), above a warning."""
HIGH_REPROJECTION_PX = 1.5
"""Mean reprojection error above this is suspicious (good captures: 0.3-1 px)."""
SHORT_TRACKS = 3.0
"""Points seen in fewer photos than this on average are poorly constrained."""
FEW_KEYPOINTS = 500
"""Median SIFT keypoints per photo below this: the product or background is very plain."""
MIN_CAMERA_SPREAD = 0.05
"""Camera spread / scene distance below this means the photos all landed at one spot: a failed reconstruction
(a turntable matched on its still background: ~0.01; real orbits: 0.5-1.2)."""

SFM_NOTHING_PLACED = (f"COLMAP could not place the cameras: the photos share too few matching features. "
                      f"{_sentence(ROUTINE, MAT)}")
SFM_ONE_SPOT = ("The photos were placed, but all at one spot: COLMAP matched the still background instead of the "
                "product (typical of a turntable in front of a patterned wall or table). Use a plain backdrop, or "
                "walk around the product instead of turning it.")


def sfm_too_few_placed(placed: int, usable: int) -> str:
    return (f"Only {placed} of {usable} photos could be placed, too few for a 3D model. "
            f"{_sentence(ROUTINE, MAT)}")


TRUST_CHECK_WORDS = {
    "below_support": "placed under the table",
    "not_looking": "placed looking away from the product",
    "upside_down": "placed upside down",
    "two_view": "placed where its matches with its neighbours say it was not",
    "unexplained": "placed where its matches with its neighbours cannot be explained",
    "facing_away": "placed on the far side of the product from what it sees",
}
"""Plain words for the trust checks of core.stages.sfm.trust."""
RESHOOT = ("Reshoot with the product filling most of the frame and something textured under it (a newspaper or a "
           "patterned mat that turns with the product on a turntable), a photo every 15-20 degrees.")


def sfm_untrusted(photos: Sequence[str], checks: Sequence[str], folded: bool) -> str:
    """The SfM failure when the solved cameras cannot be trusted (a confident wrong model is worse than none)."""
    what = sorted({TRUST_CHECK_WORDS.get(c, c) for c in checks})
    if folded:
        return ("The cameras were placed, but the solution is wrong: the photos' own matches disagree with where "
                f"they were put (the product looks alike from several sides). Photos not trusted: "
                f"{name_list(list(photos))}. {RESHOOT}")
    return (f"These photos were placed wrongly and could not be corrected: {name_list(list(photos))} "
            f"({'; '.join(what)}). Retake them, or {RESHOOT[0].lower()}{RESHOOT[1:]}")


TURNTABLE_FOCAL_ASSUMED = Finding(
    "warning", "The photos carry no focal length (EXIF) and the turns of a turntable do not measure it, so the lens "
               "was assumed: the model's proportions may be off by 10-15 %.",
    "Upload the camera's original files (they carry the focal length), or put a patterned mat on the turntable "
    "plate so ordinary mapping can measure the lens.")
"""Measured: a FUZE bottle on a plain plate, renders without EXIF, cameras within 0.8° but the assumed focal length
1229 px against the true 1098 px (solving for it found 949 px: the tracks on a small product leave it loose), and the
mesh F-score at 1 % of the size 0.29."""


def sfm_turntable_tried(turntable: Mapping[str, Any]) -> str:
    """What the turntable solve of a fixed-camera capture found when it was tried and not kept ("" otherwise)."""
    if not turntable or turntable.get("accepted"):
        return ""
    reason = turntable.get("reason", "no solution")
    return f" Solving the photos as one turntable was tried too, and not kept: {reason}."


def sfm_dropped_untrusted(photos: Sequence[str], how: str) -> Finding:
    return Finding("warning", f"{len(photos)} photo(s) were placed wrongly by SfM and left out of the model: "
                              f"{name_list(list(photos))} ({how}).",
                   "Retake them from the same spot with the product filling the frame; " + RESHOOT[0].lower()
                   + RESHOOT[1:])


def sfm_findings(metrics: Mapping[str, Any]) -> list[Finding]:
    """Plain-language verdicts on the SfM numbers; ``per_photo[].photo`` are the user's names."""
    findings: list[Finding] = []
    usable = metrics.get("photos_usable", 0)
    placed = metrics.get("photos_registered", 0)
    fraction = placed / usable if usable else 0.0
    if placed == 0:
        findings.append(Finding("error", f"None of the {usable} photos could be placed.", _sentence(ROUTINE, MAT)))
        return findings
    if fraction < 1.0:
        unplaced = [p["photo"] for p in metrics.get("per_photo", []) if not p["registered"]]
        level = "warning" if fraction >= LOW_PLACED_FRACTION else "error"
        findings.append(Finding(
            level, f"Only {placed} of {usable} photos were placed ({fraction:.0%}). Not placed: {name_list(unplaced)}.",
            "The sides of this product may have too little texture or the photos too little overlap: "
            + _sentence(ROUTINE, MAT)))
    else:
        findings.append(Finding("info", f"All {usable} photos were placed."))
    still = metrics.get("static_background_fraction", 0.0)
    if still:
        findings.append(Finding("info", f"The camera stood still (turntable): {still:.0%} of each photo is background "
                                        "that does not move, and it was ignored when matching."))
    turntable = metrics.get("turntable") or {}
    if turntable.get("accepted") and metrics.get("trust_recovery") == "turntable":
        findings.append(Finding("info", f"The cameras were solved as one turntable (one fixed camera, one turn per "
                                        f"photo): ordinary mapping could not place them all correctly. "
                                        f"{turntable.get('placed')} photos placed, camera height known to "
                                        f"±{turntable.get('tilt_std_deg', 0):.1f}°."))
        if not metrics.get("focal_from_photos", 1):
            findings.append(TURNTABLE_FOCAL_ASSUMED)
    if metrics.get("num_models", 1) > 1:
        findings.append(Finding(
            "warning", f"COLMAP split the photos into {metrics['num_models']} separate groups; the largest "
                       f"({placed} photos) was kept, the others ({metrics.get('other_model_sizes')}) were dropped.",
            "Add photos between the groups so that neighbouring views overlap by at least half."))
    error = metrics.get("mean_reprojection_error_px")
    if error is not None and error > HIGH_REPROJECTION_PX:
        findings.append(Finding("warning", f"Mean reprojection error is {error:.2f} px (good captures are below 1 px).",
                                "Blurry photos, a moving product or a zoom change between photos cause this."))
    track = metrics.get("mean_track_length")
    if track is not None and track < SHORT_TRACKS:
        findings.append(Finding("warning", f"Points are seen in only {track:.1f} photos on average.",
                                _sentence(ROUTINE)))
    keypoints = metrics.get("keypoints_median", 0)
    if keypoints and keypoints < FEW_KEYPOINTS:
        findings.append(Finding("warning", f"Only about {keypoints:.0f} features per photo were found.",
                                _sentence(MAT, "add more light")))
    return findings


# --- masks -----------------------------------------------------------------------------------------------------

LOW_MASK_CONFIDENCE = 0.5
"""Masks below this confidence are named in a finding. Confidence = agreement with the other photos' hull x (0.5 +
0.5 x the photo's own edge and colour evidence); on renders of plain products, correct masks (IoU 0.9-0.99 with the
truth) score 0.6-0.9; one that swallowed the plate agrees with the others at 0.3 or less."""
MASKS_OFF = Finding("info", "Product masks switched off for this run: no silhouettes help plain products.")


def masks_findings(per_photo: Mapping[str, Mapping[str, float]]) -> list[Finding]:
    """One finding for all the photos whose mask is weak (naming them); keys are the user's photo names."""
    weak = [name for name, p in per_photo.items() if p.get("confidence", 0.0) < LOW_MASK_CONFIDENCE]
    if not weak:
        return []
    supplied = all(per_photo[name].get("supplied", 0) for name in weak)
    what = "the supplied masks disagree with the other photos" if supplied else "the product's outline is uncertain"
    return [Finding(
        "warning" if len(weak) > len(per_photo) // 3 else "info",
        f"{len(weak)} of {len(per_photo)} photos: {what} ({name_list(weak)}); they do not carve the silhouette hull.",
        "A plain backdrop in a colour unlike the product's gives clean outlines; or supply masks, named like the "
        "photos (white = product).")]


def masks_no_folder(folder: str) -> Finding:
    return Finding("warning", f"The mask folder {folder} does not exist; the masks were computed instead.",
                   "Check the --masks-dir path.")


def mask_unreadable(file: str) -> str:
    return f"{file} is not a readable image"


def mask_wrong_shape(file: str, width: int, height: int, photo: str, photo_width: int, photo_height: int) -> str:
    return f"{file} is {width}x{height} but its photo {photo} is {photo_width}x{photo_height}"


def mask_blank(file: str, colour: str) -> str:
    return f"{file} is all {colour}"


def supplied_masks_findings(problems: Sequence[str], used: int, photos: int) -> list[Finding]:
    """What became of the user's masks: the files not used (named, with why), and how many photos had none."""
    findings = []
    if problems:
        findings.append(Finding(
            "warning", f"{len(problems)} supplied mask(s) were not used: {'; '.join(problems[:4])}"
                       f"{' ...' if len(problems) > 4 else ''}.",
            "Masks must have their photo's shape and orientation, white (255) on the product, black elsewhere."))
    if used and used < photos:
        findings.append(Finding("info", f"{photos - used} of {photos} photos have no supplied mask; theirs were "
                                        "computed.", "Name each mask like its photo (any image format)."))
    return findings


# --- depth -----------------------------------------------------------------------------------------------------

LOW_CENTRE_COVERAGE = 0.6
"""Warn when less than this share of the product area (a disc where the cameras converge) gets a depth (on renders:
75-90% for textured products, 10-20% for plain ones)."""

DEPTH_NO_PHOTOS = "Dense depth needs at least two placed photos; add photos that overlap."
DEPTH_NOTHING = (f"No photo got a depth map: the photos share too few matched points. {_sentence(ROUTINE)}")


def depth_findings(names: Sequence[str], centre_fractions: Sequence[float]) -> list[Finding]:
    """Verdicts from the coverage in the middle of the photos (where the product is), not of whole photos: a plain
    backdrop rightly gets no depth and says nothing about the product."""
    findings = []
    if not len(centre_fractions):
        return findings
    mean = float(sum(centre_fractions) / len(centre_fractions))
    if mean < LOW_CENTRE_COVERAGE:
        findings.append(Finding(
            "warning", f"Only {mean:.0%} of the product area got a reliable depth; the product may be shiny, "
                       "see-through or plain, or the photos are too far apart.", _sentence(LIGHT, MAT, ROUTINE)))
    weak = [n for n, f in zip(names, centre_fractions, strict=True) if f < 0.5 * LOW_CENTRE_COVERAGE]
    if weak and len(weak) <= len(names) // 3:  # more than that: the warning above already says it
        findings.append(Finding(
            "info", f"{len(weak)} photo(s) gave little depth: {name_list(weak, 5)}.",
            "These photos may be blurred or not centred on the product; retake them if the model has gaps there."))
    return findings


# --- depth prior -----------------------------------------------------------------------------------------------


def depth_prior_findings(metrics: Mapping[str, Any], source: str, rejected: Sequence[str]) -> list[Finding]:
    """What the prior did: where it was used, where it was rejected and why, and a metric scale when it has one."""
    findings = []
    if metrics.get("accepted_views"):
        findings.append(Finding(
            "info", f"Depth prior from {source}: used in {metrics['accepted_views']} of {metrics['prior_views']} "
                    f"photos, median fit error {metrics['median_residual']:.1%}; {metrics['prior_fraction']:.0%} of "
                    f"pixels came from the prior and {metrics['stereo_fraction']:.0%} from stereo.",
            "Prior depths only fill where stereo is weak; fusion keeps them only where several views agree."))
    if rejected:
        findings.append(Finding(
            "warning", f"The depth prior was rejected for {len(rejected)} photo(s): {'; '.join(rejected[:3])}"
                       f"{' ...' if len(rejected) > 3 else ''}.",
            "Those photos use stereo only. If the depth maps were supplied, check that they belong to these photos "
            "and hold depth (not colour)."))
    spread = metrics.get("metric_scale_spread")
    if spread is not None and spread < METRIC_SCALE_AGREEMENT:
        findings.append(Finding(
            "info", f"The supplied depth maps read as metric: 1 m is {metrics['world_units_per_metre']:.4g} model "
                    f"units (photos agree within {spread:.1%}), so the model can be given its real size.",
            "Sizes are as good as the depth sensor (phone LiDAR: about 1 cm)."))
    return findings


METRIC_SCALE_AGREEMENT = 0.05
"""Supplied metric depth maps give the model's real size when their per-photo scales agree within this share."""
DEPTH_PRIOR_OFF = "Depth prior switched off for this run."
DEPTH_PRIOR_NO_FOLDER = Finding("warning", "The folder of supplied depth maps does not exist; no supplied depth maps "
                                           "were used.", "Check the --depth-prior-dir path.")


def depth_prior_missing_maps(missing: int, total: int) -> Finding:
    return Finding("info", f"{missing} of {total} photos have no supplied depth map (name each like its photo: "
                           "IMG_0001.jpg -> IMG_0001.npy or IMG_0001.png).",
                   "The monocular model (when installed) covers those photos.")


def depth_prior_no_model(how_to_enable: str) -> Finding:
    return Finding("info", "No depth prior was used: the monocular depth model is not installed. Plain or shiny "
                           "surfaces may have gaps.", how_to_enable)


def depth_prior_unreadable(photo: str, problem: str) -> Finding:
    return Finding("warning", f"The depth map supplied for {photo} could not be read ({problem}); it was ignored.",
                   "Save depth maps as float32 .npy or 16-bit PNG in millimetres, with the photo's shape.")


# --- fusion ----------------------------------------------------------------------------------------------------

LOW_CONFIRMED_SHARE = 0.3
"""Warn when less than this share of the depth estimates is confirmed by other photos (textured renders: 45-70%)."""
DISAGREEING_PHOTO_SHARE = 0.25
"""A photo keeping less than this share of the median photo's confirmed depths disagrees with the others."""

FUSION_TOO_FEW_MAPS = "Fusion needs depth maps from at least two photos; add overlapping photos."
FUSION_NOTHING = ("No depth was confirmed by two or more photos, so no 3D points could be made. Check that the photos "
                  f"overlap ({ROUTINE}) and that the product did not move between shots.")


def fusion_findings(per_photo_kept: Mapping[str, float], confirmed_share: float) -> list[Finding]:
    """Photos that disagree with the rest, and a low confirmed share overall; keys are the user's photo names."""
    findings = []
    kept = sorted(per_photo_kept.values())
    if kept:
        median = kept[len(kept) // 2]
        outliers = [name for name, k in per_photo_kept.items() if k < DISAGREEING_PHOTO_SHARE * median]
        if outliers and len(outliers) <= len(kept) // 3:
            findings.append(Finding(
                "warning", f"{len(outliers)} photo(s) disagree with the others and were mostly ignored: "
                           f"{name_list(outliers, 5)}.",
                "The product or the camera may have moved during these shots, or they are blurred; retake them."))
    if confirmed_share < LOW_CONFIRMED_SHARE:
        findings.append(Finding(
            "warning", f"Only {confirmed_share:.0%} of the depth estimates were confirmed by other photos.",
            "The product may be shiny or plain, or may have moved between shots; " + STILL + " and " + LIGHT + "."))
    return findings


def silhouette_findings(metrics: Mapping[str, Any]) -> list[Finding]:
    """How much of the surface the silhouettes made (the hull and the completed plain faces)."""
    hull = metrics.get("hull_share", 0.0)
    if not metrics.get("hull", 0):
        reason = metrics.get("hull_reason")
        if metrics.get("hull_not_needed"):
            return [Finding("info", f"No visual hull: {reason}.")]
        return [Finding("info", f"No visual hull: {reason}.", "Plain products need clean product masks: a plain "
                                "backdrop unlike the product's colour.")] if reason else []
    completed = metrics.get("completion_share", 0.0)
    findings = [Finding("info", f"The product's outline in {metrics.get('masks_used', 0)} photos carved its visual "
                                f"hull; {completed:.0%} of the surface came from plain faces completed between "
                                f"confident edges and {hull:.0%} from the hull alone.")]
    if metrics.get("plain_stereo_dropped"):
        findings.append(Finding(
            "info", f"Stereo on the product's plain surfaces matched their shading, which turned with the camera "
                    f"({metrics.get('plain_stereo_deep_in_hull', 0.0):.0%} of it lay deep inside the silhouettes): "
                    "those surfaces come from the outline instead.",
            "Lights that stand with the camera (a turntable in a lightbox) move the shading over a plain product; "
            "a printed or textured product is not affected."))
    if hull > HULL_SHARE_WARNING:
        findings.append(Finding(
            "warning", f"{hull:.0%} of the surface is only the silhouettes' hull: hollows and flat faces seen at a "
                       "slant may be too full.", _sentence(MAT, "take a ring of photos from lower down")))
    return findings


HULL_SHARE_WARNING = 0.5
"""Warn when more than this share of the surface is only hull (plain box on true cameras: 2 %; plain bottle: 30 %)."""


# --- isolation -------------------------------------------------------------------------------------------------

ISOLATION_NOTHING = "There are no 3D points to cut the product from."
ISOLATION_NO_TABLE = Finding(
    "info", "No table surface was found under the product, so only the background was removed.",
    "This is fine for hanging or hand-held products; otherwise place the product on a flat, patterned mat.")
ISOLATION_KEPT_ALL = Finding(
    "warning", "The product could not be separated from the table and background; the model keeps them.",
    "Keep the product in the middle of every photo and walk all the way around it; a patterned mat under it helps "
    "find the table.")
ISOLATION_LITTLE_AROUND = Finding("info", "Almost every point was kept as product: little table or background showed.",
                                  "Nothing to do if the model looks right.")
ALMOST_ALL_KEPT = 0.9
"""Share of points kept as product above which the isolation says little table or background showed."""


# --- mesh ------------------------------------------------------------------------------------------------------

MESH_TOO_FEW_POINTS = ("Too few 3D points to build a surface; the photos need more overlap or more texture on the "
                       "product.")
MESH_EMPTY = ("The surface came out empty after cleanup; the point cloud is too sparse or noisy. Try the 'full' preset "
              "or retake the photos closer.")


MESH_MIN_MASK_AGREEMENT = 0.88
"""Mean silhouette IoU of the mesh with the trusted masks below which the mesh is called wrong (an error: the run's
verdict is "poor"). Balanced, 24 photos: good meshes 0.93 (cracker box orbit, mesh F@1% 0.98), 0.96 (plain box on a
turntable, 0.85); the plain bottle on a turntable whose stereo matched the camera-fixed shading, 0.82 (mesh F@1%
0.31)."""


def mesh_findings(metrics: Mapping[str, Any]) -> list[Finding]:
    wrong = []
    agreement = metrics.get("mask_agreement_mean")
    if agreement is not None and agreement < MESH_MIN_MASK_AGREEMENT:
        checked = metrics.get("masks_checked", 0)
        wrong = [Finding("error", f"The model's outline disagrees with the product's outline in the photos (overlap "
                                  f"{agreement:.0%} over {checked} photos): its shape is wrong, do not publish it.",
                         "A plain, shiny or uniformly coloured product gives the stereo matching nothing to hold on "
                         "to: put a few small markers (stickers, a patterned mat that turns with it) beside it, or "
                         "light it evenly from all sides, and reshoot.")]
    return wrong + _mesh_closure_findings(metrics)


def _mesh_closure_findings(metrics: Mapping[str, Any]) -> list[Finding]:
    holes = metrics.get("holes", 0)
    if metrics.get("base_capped", 0):
        return [Finding("info", f"The mesh is closed; its base, which no photo sees, is a flat cap on the table "
                                f"({metrics.get('base_faces', 0)} faces, marked in the mesh metrics).",
                        "Photograph the underside separately if the base matters.")]
    if holes > 0:
        return [Finding("info", f"The mesh has {holes} open hole(s), usually where no photo saw the surface (often "
                                "the base).", "Add photos from lower or higher angles if the holes show; the base "
                                              "under the product is never seen.")]
    return []


# --- texture ---------------------------------------------------------------------------------------------------

TEXTURE_NO_MESH = "There is no mesh to texture (the mesh stage made none)."
TEXTURE_UNSEEN_SHARE = 0.15
"""Share of faces no photo sees above which the texture is called patchy (a closed product on a table leaves its
base unseen: 3-8 % of the faces on the soup can and bottle captures)."""


def texture_findings(metrics: Mapping[str, Any]) -> list[Finding]:
    share = metrics.get("unseen_share", 0.0)
    if share > TEXTURE_UNSEEN_SHARE:
        return [Finding("warning", f"{100 * share:.0f} % of the model's surface is seen by no photo; it is painted "
                                   "with the mesh's colours instead of the photos'.",
                        "Add photos from the angles that are missing (lower, higher, all around).")]
    if metrics.get("unseen_faces", 0):
        return [Finding("info", f"{metrics['unseen_faces']} faces no photo sees (usually the base) take the mesh's "
                                "colours in the texture.")]
    return []


# --- relief ----------------------------------------------------------------------------------------------------

RELIEF_NO_PRIOR = ("A single-photo relief needs depth, and the depth prior is switched off. Turn it on, or supply a "
                   "depth map for the photo (--depth-prior-dir).")
RELIEF_EMPTY = "The depth map gave no surface to mesh (it is empty or all discontinuities)."


def relief_no_depth(how_to_enable: str) -> str:
    return ("A single-photo relief needs depth, and neither the depth model nor a depth map for this photo was found. "
            + how_to_enable)


def relief_background_kept(reason: str) -> Finding:
    return Finding("info", f"The background was kept: {reason}.",
                   "Photograph the product on a table, away from the wall, filling the frame.")


def relief_assumed_focal(assumed: str) -> Finding:
    return Finding("info", f"The photo has no focal length in its EXIF data; the relief assumes {assumed}. "
                           "Proportions in depth may be off.",
                   "Upload the original camera file (with EXIF) for a better field of view.")


def relief_unreadable_depth(photo: str, problem: str) -> str:
    return (f"The depth map supplied for {photo} could not be read ({problem}). Save it as float32 .npy (metres) or "
            "16-bit PNG (millimetres) named like the photo.")


def relief_supplied_depth(photo: str, unit: str) -> Finding:
    return Finding("info", f"Depth from the map supplied for {photo}, read as {unit}: the relief is to scale if that "
                           "map is metric.")


def relief_metric_model(model: str) -> Finding:
    return Finding("info", f"Depth from the metric model {model}: sizes are the model's estimate in metres "
                           "(typically within 10-20%).")


def relief_flat_prediction(model: str) -> str:
    return (f"The depth model {model} saw no depth in this photo; try a photo with the product filling more of the "
            "frame, or supply a depth map.")


def relief_relative_depth(note: str) -> Finding:
    return Finding("info", f"Depth from the model is relative: the relief has true proportions across the photo but "
                           f"its depth extent is a guess ({note}) and it has no real-world size.",
                   "For true size, supply a metric depth map (phone LiDAR) or use several photos.")


# --- sticker ---------------------------------------------------------------------------------------------------

def sticker_no_subject(photo: str, why: str) -> str:
    return (f"{photo}: no clear subject to cut out ({why}). Photograph one object on a plain, contrasting "
            "background with some space around it, then try again.")


def sticker_theme(theme: str, reason: str, prompt: str) -> Finding:
    asked = f"'{prompt}'" if prompt.strip() else "no theme"
    return Finding("info", f"Theme: {theme} ({reason}; you asked for {asked}).",
                   "Pick a theme from the list, or use one of its words, to choose it for sure.")


def sticker_stylisation(message: str, classical: bool) -> Finding:
    return Finding("info", message, "The classical style needs no model; a local image-to-image model paints more "
                                    "freely." if classical else "")


def sticker_model_failed(problem: str) -> Finding:
    return Finding("warning", f"The image-to-image model failed ({problem}); the classical stylisation was used.",
                   "Check the model folder (a diffusers img2img model) or remove it.")


def sticker_depth(used: str) -> Finding:
    return Finding("info", used)


def sticker_low_confidence(photo: str, confidence: float) -> Finding:
    return Finding("warning", f"The cut-out of {photo} is uncertain (confidence {confidence:.2f}): its outline may "
                              "include some background or miss a part.",
                   "A plain background that differs in colour from the subject gives a clean cut-out.")


# --- asset -----------------------------------------------------------------------------------------------------

ASSET_NO_MESH = "There is no mesh to turn into an asset; the mesh stage made none."
ASSET_SIZE_UNKNOWN = Finding("warning", "The model's real size is unknown, so it is in reconstruction units, not "
                                        "millimetres; marketplaces that need a real size will refuse it.",
                             "Give one known dimension: --height-mm (or --width-mm, --depth-mm), or the known "
                             "dimension in the New capture form; or a known distance between two points on a "
                             "photo: --known-distance, or 'Set the real size from two points' in the Viewer.")


def asset_distance_over_dimension(axis: str, given_mm: float, measured_mm: float, photo: str) -> Finding:
    """Both a known dimension and a known distance were given: the distance was used; how far apart they are."""
    return Finding("warning", f"Both a known {axis} ({given_mm:g} mm) and a known distance on {photo} were given; "
                              f"the distance was used, which makes the {axis} {measured_mm:.0f} mm "
                              f"({100 * (measured_mm / given_mm - 1):+.1f} % from the {axis} given).",
                   "Give only one of them (a large difference means one of them is wrong).")


def asset_open(boundary_edges: int) -> Finding:
    return Finding("warning", f"The asset's surface is not closed ({boundary_edges} open edges): a shopper turning "
                              "it may see through a hole.", "Add photos of the parts no photo saw.")


def asset_unknown_profile(name: str, known: Sequence[str]) -> Finding:
    return Finding("warning", f"Unknown marketplace profile '{name}' was not checked.",
                   f"Known profiles: {', '.join(known)}.")


def asset_profile(label: str, entry: Mapping[str, Any]) -> Finding:
    """One finding per marketplace profile: passes, passes with a variant, or fails with its reasons."""
    if entry["pass"]:
        return Finding("info", f"{label}: passes.")
    variant = entry.get("variant")
    reasons = "; ".join(entry["reasons"])
    if variant and variant["pass"]:
        return Finding("info", f"{label}: the asset fails ({reasons}); the variant {variant['file']} passes.",
                       "Upload the variant to this marketplace.")
    left = "; ".join(variant["reasons"]) if variant else reasons
    return Finding("warning", f"{label}: fails ({left}).", "See the reasons; a known dimension fixes the real size.")


WRITE_ERRNOS = {13, 1, 28, 30, 122}
"""EACCES, EPERM, ENOSPC, EROFS, EDQUOT: the run folder cannot be written (permissions, a full disk, a quota)."""


def cannot_write(exc: OSError) -> str:
    """The one message for a run folder that cannot be written (issue 15 item 4), wherever it is noticed."""
    return (f"Cannot write to the run folder: it is not writable or the disk is full ({exc.strerror or exc}). Your "
            "photos are kept; ask an admin to free space or fix the folder's permissions, then retry.")


def is_write_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def count(number: int, noun: str) -> str:
    """'1 camera', '2 cameras' (issue 15: no '1 cameras')."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
