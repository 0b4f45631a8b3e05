"""The run record: ``RUN_DIR/manifest.json``, written atomically after every stage.

Viewers, diagnostics and the review dashboard read only this file and the artefacts it names.
The schema is documented in the README ("The run record").
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1

Level = Literal["info", "warning", "error"]
StageStatus = Literal["running", "done", "failed", "skipped"]
RunStatus = Literal["running", "done", "failed", "cancelled"]


@dataclass
class Finding:
    """A number turned into words: what happened and what the user can do about it."""

    level: Level
    message: str
    hint: str = ""


@dataclass
class PhotoRecord:
    """One input photo as the user gave it."""

    name: str
    """The user's file name (display only; never used as a path)."""
    stored_as: str
    """Path of the untouched original, relative to the run folder."""
    size_bytes: int
    sha256: str
    status: Literal["accepted", "rejected"] = "accepted"
    reason: str = ""
    """Why it was rejected, naming the fix."""
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    working_image: str | None = None
    """Path of the oriented, downscaled working copy, relative to the run folder."""
    focal_px: float | None = None
    """Focal length in working-image pixels from EXIF, when present."""
    camera: str | None = None
    """Camera make and model from EXIF, when present."""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class StageRecord:
    name: str
    status: StageStatus = "running"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class RunManifest:
    run_id: str
    created: str
    mode: Literal["multi_view", "single_photo"] = "multi_view"
    status: RunStatus = "running"
    failure_reason: str = ""
    photos: list[PhotoRecord] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    """Stable key -> path relative to the run folder (sparse_model, dense_points, mesh, mesh_glb, mesh_obj, ...)."""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, config: dict[str, Any], mode: Literal["multi_view", "single_photo"] = "multi_view") -> RunManifest:
        now = datetime.now(UTC)
        run_id = now.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return cls(run_id=run_id, created=now.isoformat(timespec="seconds"), mode=mode, config=config,
                   environment=environment_info())

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def all_findings(self) -> list[tuple[str, Finding]]:
        return [(s.name, f) for s in self.stages for f in s.findings]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunManifest:
        data = dict(data)
        data["photos"] = [PhotoRecord(**p) for p in data.get("photos", [])]
        stages = []
        for s in data.get("stages", []):
            s = dict(s)
            s["findings"] = [Finding(**f) for f in s.get("findings", [])]
            stages.append(StageRecord(**s))
        data["stages"] = stages
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, run_dir: Path) -> Path:
        """Write atomically: a temporary file in the same folder, fsync, then rename over the old one."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=run_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2, default=_json_default)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def photo_names_by_working_image(photos: list[PhotoRecord]) -> dict[str, str]:
    """Working-copy file name (what SfM and the dense stages call a photo) -> the user's name for it."""
    return {Path(p.working_image).name: p.name for p in photos if p.working_image}


def load_manifest(run_dir: Path) -> RunManifest:
    with open(Path(run_dir) / MANIFEST_NAME, encoding="utf-8") as fh:
        return RunManifest.from_dict(json.load(fh))


def _json_default(value: Any) -> Any:
    # numpy scalars and paths end up in metrics; store them as plain JSON values.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the manifest")


def environment_info() -> dict[str, Any]:
    """Library versions and compute device, so a run can be reproduced."""
    from importlib import metadata

    versions = {}
    for package in ("numpy", "opencv-python-headless", "pycolmap", "open3d-cpu", "open3d", "torch", "transformers",
                    "pillow", "plotly", "trimesh", "streamlit"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = f"cuda ({torch.cuda.get_device_name(0)})"
    except ImportError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "versions": versions,
    }
