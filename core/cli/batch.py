"""The batch command for catalogues: one folder of photos per SKU, every SKU queued, overall progress, a summary.

    python -m core.batch CATALOG_DIR --out RUNS_DIR [--backend local|ray] [--csv SKUS.csv] [--preset P]

``CATALOG_DIR/<SKU>/`` holds the photos of one product. ``RUNS_DIR`` is a studio data folder (the database and the
run folders): ``PRODUCT_STUDIO_DATA=RUNS_DIR ./studio app`` opens the review dashboard on the results. With
``--backend ray`` the jobs run on the Ray cluster at ``$RAY_ADDRESS`` (or a private local one), and RUNS_DIR must
be on storage every node sees. Running the same command again continues the batch: SKUs that are done, queued or
running are not queued again (failed ones are, with ``--retry-failed``); the summary covers every SKU of the
catalogue.

The optional CSV has a header row with ``sku`` and any of ``name``, ``known_dimension`` (``height 120 mm``,
``width 8.5 cm``, ``depth 0.3 m``) or ``height_mm`` / ``width_mm`` / ``depth_mm``, or ``known_distance`` (two points
on one of the SKU's photos, ``PHOTO:X1,Y1:X2,Y2:MM`` as ``--known-distance`` takes it, in quotes: it holds commas;
spreadsheets quote it themselves); a known size goes into the
job's configuration (the asset stage's real size) where this studio has that setting.

Exit status: 0 when every SKU finished, 1 when some failed or had no photos, 2 for bad command-line use.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import ALL_PRESETS, PipelineConfig
from core.jobs.backend import backend_named
from core.jobs.dispatch import dispatch
from core.jobs.intake import PHOTO_SUFFIXES, submit_folder
from core.jobs.status import job_progress, review_row
from core.jobs.store import Job, Store
from core.known_distance import KnownDistanceError, parse_known_distance
from core.manifest import ManifestError, load_manifest
from core.progress import TerminalProgress, clock

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
POLL_S = 1.0
"""How often progress is read from the store (one small query per SKU)."""
DIMENSIONS = ("height", "width", "depth")
_UNIT_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
_KNOWN = re.compile(r"^\s*(height|width|depth)\s*[:=]?\s*([0-9]+(?:\.[0-9]+)?)\s*(mm|cm|m)?\s*$", re.IGNORECASE)


@dataclass
class Sku:
    """One product of the catalogue: its folder of photos, and what the CSV says about it."""

    sku: str
    folder: Path
    name: str = ""
    known_mm: dict[str, float] = field(default_factory=dict)
    """Known dimensions in millimetres: 'height', 'width', 'depth'."""
    known_distance: str | None = None
    """Two points on one of its photos and the distance between them (``asset.known_distance``)."""

    @property
    def photos(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


class CatalogueError(ValueError):
    """A catalogue or CSV that cannot be used as given (the message names the file and the fix)."""


def read_catalogue(catalogue: Path, csv_path: Path | None = None) -> tuple[list[Sku], list[str]]:
    """The SKUs of ``catalogue`` (one sub-folder each, sorted) with what the CSV adds; and warnings."""
    if not catalogue.is_dir():
        raise CatalogueError(f"{catalogue} is not a folder; give a folder with one sub-folder of photos per SKU.")
    skus = {p.name: Sku(p.name, p) for p in sorted(catalogue.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if not skus:
        raise CatalogueError(f"{catalogue} has no sub-folders; put each SKU's photos in a folder named like the SKU.")
    warnings = []
    for row_number, row in _read_csv(csv_path) if csv_path else []:
        sku = skus.get(row["sku"])
        if sku is None:
            warnings.append(f"{csv_path.name} line {row_number}: no folder {row['sku']!r} in {catalogue}; skipped.")
            continue
        sku.name = row.get("name", "")
        where = f"{csv_path.name} line {row_number}"
        sku.known_mm = _known_dimensions(row, where)
        if row.get("known_distance"):
            try:
                sku.known_distance = parse_known_distance(row["known_distance"]).text
            except KnownDistanceError as exc:
                raise CatalogueError(f"{where}: {exc}") from None
            if sku.known_mm:
                raise CatalogueError(f"{where}: give a known dimension or a known_distance, not both.")
    return list(skus.values()), warnings


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "sku" not in [f.strip().lower() for f in reader.fieldnames]:
                raise CatalogueError(f"{path.name}: the first line must name the columns, with at least 'sku' "
                                     "(and 'name', 'known_dimension' or height_mm / width_mm / depth_mm, or "
                                     "'known_distance').")
            rows = []
            for row in reader:
                clean = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
                if clean.get("sku"):
                    rows.append((reader.line_num, clean))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogueError(f"{path.name}: cannot be read as a CSV file ({exc}); save it as UTF-8 CSV.") from exc


def _known_dimensions(row: dict[str, str], where: str) -> dict[str, float]:
    known = {}
    for dimension in DIMENSIONS:
        value = row.get(f"{dimension}_mm", "")
        if value:
            try:
                known[dimension] = float(value)
            except ValueError:
                raise CatalogueError(f"{where}: {dimension}_mm {value!r} is not a number of millimetres.") from None
    text = row.get("known_dimension", "")
    if text:
        match = _KNOWN.match(text)
        if not match:
            raise CatalogueError(f"{where}: known_dimension {text!r} is not like 'height 120 mm' (height, width or "
                                 "depth; mm, cm or m).")
        known[match[1].lower()] = float(match[2]) * _UNIT_MM[(match[3] or "mm").lower()]
    if any(v <= 0 for v in known.values()):
        raise CatalogueError(f"{where}: a known dimension must be more than zero.")
    return known


def size_changes(sku: Sku, config: PipelineConfig) -> tuple[dict[str, dict[str, Any]], str]:
    """Config changes that carry the SKU's known dimensions into its job, where the studio has such settings
    (the asset stage's ``<dimension>_mm``); and a warning when it has not."""
    if not sku.known_mm and not sku.known_distance:
        return {}, ""
    section = getattr(config, "asset", None)
    fields = {f.name for f in dataclasses.fields(section)} if dataclasses.is_dataclass(section) else set()
    changes: dict[str, Any] = {f"{d}_mm": v for d, v in sku.known_mm.items() if f"{d}_mm" in fields}
    if sku.known_distance and "known_distance" in fields:
        changes["known_distance"] = sku.known_distance
    if not changes:
        return {}, f"{sku.sku}: this studio cannot use a known size yet (no asset stage); the dimension is ignored."
    return {"asset": changes}, ""


def queue_catalogue(store: Store, skus: list[Sku], preset: str, retry_failed: bool = False) -> tuple[dict[str, str],
                                                                                                       list[str]]:
    """Queue a job per SKU that has none yet (or only a failed one, with ``retry_failed``); returns SKU -> job id
    (the newest job of each SKU) and messages."""
    from core.config import preset_config

    latest: dict[str, Job] = {}
    for job in sorted(store.list_jobs(), key=lambda j: j.created):
        latest[job.sku] = job
    jobs, messages = {}, []
    config = preset_config(preset)  # type: ignore[arg-type]
    for sku in skus:
        previous = latest.get(sku.sku)
        if previous is not None and not (retry_failed and previous.status in ("failed", "cancelled")):
            jobs[sku.sku] = previous.id
            continue
        if not sku.photos:
            messages.append(f"{sku.sku}: {sku.folder} holds no photos (JPEG, PNG, WebP, TIFF); skipped.")
            continue
        changes, warning = size_changes(sku, config)
        if warning:
            messages.append(warning)
        job = submit_folder(store, sku.folder, product_name=sku.name or sku.sku, sku=sku.sku, preset=preset,
                            start=False, changes=changes)
        jobs[sku.sku] = job.id
    return jobs, messages


def summary_rows(store: Store, skus: list[Sku], jobs: dict[str, str]) -> list[dict[str, Any]]:
    """The review dashboard's row of every SKU, with what a catalogue manager also wants to see."""
    latest = store.latest_reviews()
    rows = []
    for sku in skus:
        job = store.get_job(jobs[sku.sku]) if sku.sku in jobs else None
        if job is None:
            rows.append({"SKU": sku.sku, "product": sku.name, "status": "skipped", "quality": "",
                         "why": "no photos in its folder", "photos": 0})
            continue
        manifest = _manifest(store, job)
        row = review_row(job, manifest, latest.get(job.id))
        row.pop("id")
        accepted = sum(p.status == "accepted" for p in manifest.photos) if manifest else 0
        mesh = manifest.stage("mesh") if manifest else None
        row.update({"job": job.id, "photos": f"{accepted}/{len(store.photos(job.id))}",
                    "faces": mesh.metrics.get("faces", "") if mesh else "",
                    "seconds": round(job.finished - job.started) if job.finished and job.started else "",
                    "attempts": job.attempts, "run_folder": str(store.run_dir(job))})
        rows.append(row)
    return rows


def _manifest(store: Store, job: Job):
    try:
        return load_manifest(store.run_dir(job))
    except (FileNotFoundError, ManifestError):
        return None


COLUMNS = ["SKU", "product", "status", "quality", "why", "photos", "faces", "seconds", "attempts", "decision",
           "reviewer", "date", "job", "run_folder"]


def write_summary(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def watch(store: Store, job_ids: list[str], backend_name: str, bar: TerminalProgress) -> dict[str, int]:
    """Dispatch and show overall progress until every job is final; returns the final counts."""
    backend = backend_named(backend_name)
    while True:
        dispatch(store, backend=backend)
        jobs = [j for j in (store.get_job(i) for i in job_ids) if j is not None]
        counts = {"done": 0, "failed": 0, "running": 0, "queued": 0}
        for job in jobs:
            key = {"cancelled": "failed", "starting": "running"}.get(job.status, job.status)
            counts[key] = counts.get(key, 0) + 1
        overall = sum(job_progress(j).overall for j in jobs) / max(len(jobs), 1)
        bar(overall, f"SKUs: {counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
                     f"{counts['queued']} queued of {len(jobs)}")
        if all(j.is_final for j in jobs):
            return counts
        time.sleep(POLL_S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.batch", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2].replace("``", ""))
    parser.add_argument("catalogue", type=Path, metavar="CATALOG_DIR", help="one sub-folder of photos per SKU")
    parser.add_argument("--out", type=Path, required=True, metavar="RUNS_DIR",
                        help="studio data folder for the batch: database, run folders, summary.csv")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local worker processes (default) or the Ray cluster at $RAY_ADDRESS")
    parser.add_argument("--csv", type=Path, metavar="SKUS.csv", help="SKU, name, known dimension per product")
    parser.add_argument("--preset", choices=ALL_PRESETS, default="preview", help="detail level (default: preview)")
    parser.add_argument("--retry-failed", action="store_true", help="queue SKUs whose last job failed again")
    parser.add_argument("--no-wait", action="store_true", help="queue and start the jobs, then return")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.csv and not args.csv.is_file():
        parser.error(f"{args.csv} does not exist")
    try:
        skus, warnings = read_catalogue(args.catalogue, args.csv)
    except CatalogueError as exc:
        parser.error(str(exc))
    store = Store(args.out)
    jobs, messages = queue_catalogue(store, skus, args.preset, args.retry_failed)
    for message in warnings + messages:
        print(f"warning: {message}", file=sys.stderr)
    print(f"{len(jobs)} of {len(skus)} SKUs queued or under way in {args.out} ({args.backend} backend)",
          file=sys.stderr)
    started = time.monotonic()
    if args.no_wait:
        dispatch(store, backend=backend_named(args.backend))
        return 0
    bar = TerminalProgress(sys.stderr)  # the stream of now (a caller may have redirected it)
    try:
        counts = watch(store, list(jobs.values()), args.backend, bar)
    except KeyboardInterrupt:
        bar.close()
        print("stopped watching; the jobs go on. Run the same command again to watch them and write the summary.",
              file=sys.stderr)
        return 130
    bar.close()
    rows = summary_rows(store, skus, jobs)
    path = write_summary(args.out / SUMMARY_NAME, rows)
    elapsed = time.monotonic() - started
    for row in rows:
        print(f"  {row['SKU']:<16} {row['status']:<9} {row['quality']:<10} {str(row.get('faces', '')):>7}  "
              f"{row['why'][:70]}")
    print(f"{counts['done']} done, {counts['failed']} failed of {len(jobs)} SKUs in {clock(elapsed)}; "
          f"summary: {path}")
    return 0 if counts["done"] == len(skus) else 1
