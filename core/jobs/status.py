"""Jobs as the pages show them: progress with an ETA, a quality verdict for reviewers, log tails, durations."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from core.jobs.store import Job, Review
from core.manifest import RunManifest

FINAL_MODELS = ("mesh.glb", "mesh.ply", "relief.glb", "relief.ply", "sticker.glb", "sticker.ply")
"""Artefacts that make a finished run reviewable (a model of some kind)."""


@dataclass
class JobProgress:
    stage: str
    overall: float
    """Share of the whole run that is done."""
    elapsed_s: float
    eta_s: float | None
    message: str


def job_progress(job: Job, now: float | None = None) -> JobProgress:
    """Stage, overall fraction (the pipeline reports it weighted by stage), elapsed time and a rough ETA."""
    now = time.time() if now is None else now
    end = job.finished if job.is_final and job.finished else now
    elapsed = max(0.0, end - job.started) if job.started else 0.0
    overall = 1.0 if job.status == "done" else min(max(job.fraction, 0.0), 1.0)
    eta = None
    if job.status == "running" and overall > 0.02 and elapsed > 5:
        eta = elapsed * (1 - overall) / overall
    return JobProgress(job.stage, overall, elapsed, eta, job.message)


def quality_verdict(job: Job, manifest: RunManifest | None) -> tuple[str, str]:
    """A one-word verdict for reviewers and the reason behind it."""
    if job.status in ("queued", "starting", "running"):
        return "pending", "The run has not finished."
    if job.status == "cancelled":
        return "cancelled", "The run was cancelled."
    if job.status == "failed" or manifest is None or manifest.status != "done":
        reason = job.error or (manifest.failure_reason if manifest else "") or "The run did not finish."
        return "failed", reason
    findings = manifest.all_findings()
    errors = [f for _, f in findings if f.level == "error"]
    warnings = [f for _, f in findings if f.level == "warning"]
    if not any(key in manifest.artifacts for key in FINAL_MODELS):
        return "incomplete", "The run finished without a mesh."
    if errors:
        return "poor", errors[0].message
    if warnings:
        return "check", f"{len(warnings)} warning(s): {warnings[0].message}"
    return "good", "No problems found."


def review_row(job: Job, manifest: RunManifest | None, review: Review | None) -> dict[str, Any]:
    """One run as the review dashboard lists it (the Review page and the batch command's summary)."""
    verdict, why = quality_verdict(job, manifest)
    return {"id": job.id, "SKU": job.sku, "product": job.product_name,
            "date": datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M"), "status": job.status,
            "quality": verdict, "why": why, "reviewer": review.reviewer if review else "",
            "decision": review.decision if review else "pending"}


def log_tail(path: Path, lines: int = 40) -> str:
    """The end of a log file, for support ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
