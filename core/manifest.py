"""The run record: ``RUN_DIR/manifest.json``, written atomically when a run starts and after every stage.

Viewers, diagnostics and the review dashboard read only this file and the artefacts it names, through
``load_manifest``, which migrates records of older schema versions (so readers carry no fallbacks). The schema is
documented in the README ("The run record").
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

from core.photos import Photo

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2

Level = Literal["info", "warning", "error"]
StageStatus = Literal["running", "done", "failed", "skipped"]
RunStatus = Literal["running", "done", "failed", "cancelled"]
RunMode = Literal["multi_view", "relief", "sticker"]


class ManifestError(ValueError):
    """A manifest that cannot be read as a run record (damaged, or written by an unknown version)."""


@dataclass
class Finding:
    """A number turned into words: what happened and what the user can do about it."""

    level: Level
    message: str
    hint: str = ""


@dataclass
class PhotoRecord:
    """One input photo as the user gave it, and what the capture stage made of it."""

    index: int
    """Position in the photos the user gave (0-based)."""
    name: str
    """The user's file name (display only; never used as a path)."""
    original: str
    """Path of the untouched original, relative to the run folder."""
    size_bytes: int
    sha256: str
    status: Literal["accepted", "rejected"] = "accepted"
    reason: str = ""
    """Why it was rejected, naming the file and the fix."""
    warnings: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    working: str | None = None
    """File name of the oriented, downscaled working copy in capture/images (None when rejected)."""
    focal_px: float | None = None
    """Focal length in working-image pixels from EXIF, when present."""
    camera: str | None = None
    """Camera make and model from EXIF, when present."""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def photo(self) -> Photo:
        if self.working is None:
            raise ValueError(f"{self.name} was rejected and has no working copy")
        return Photo(self.index, self.name, self.working)


@dataclass
class StageRecord:
    name: str
    status: StageStatus = "running"
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    inputs_sha256: str = ""
    """Fingerprint of what the stage was given (core/pipeline.py): a resumed run reuses the stage only when it is
    unchanged."""
    resumed: bool = False
    """The stage was not run again: its result was rebuilt from the artefacts of an earlier attempt."""


@dataclass
class ArtifactRecord:
    """A finished artefact: where it is (relative to the run folder), how big, and its checksum."""

    path: str
    bytes: int = 0
    sha256: str = ""


@dataclass
class RunManifest:
    run_id: str
    """The job id when the run belongs to a job (one id per run)."""
    created: str
    mode: RunMode = "multi_view"
    status: RunStatus = "running"
    failure_reason: str = ""
    photos: list[PhotoRecord] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    """Registered artefact key (core/artifacts.py) -> its record."""
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, config: dict[str, Any], mode: RunMode = "multi_view", run_id: str | None = None) -> RunManifest:
        now = datetime.now(UTC)
        return cls(run_id=run_id or new_run_id(now), created=now.isoformat(timespec="seconds"), mode=mode,
                   config=config, environment=environment_info())

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def all_findings(self) -> list[tuple[str, Finding]]:
        return [(s.name, f) for s in self.stages for f in s.findings]

    @property
    def accepted_photos(self) -> list[Photo]:
        return [p.photo for p in self.photos if p.status == "accepted" and p.working]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunManifest:
        """Build from JSON data of any known schema version; ManifestError when it is not a run record."""
        if not isinstance(data, dict):
            raise ManifestError("the run record is not a JSON object")
        data = migrate(data)
        try:
            record = dict(data)
            record["photos"] = [PhotoRecord(**p) for p in data.get("photos", [])]
            record["stages"] = [StageRecord(**{**s, "findings": [Finding(**f) for f in s.get("findings", [])]})
                                for s in data.get("stages", [])]
            record["artifacts"] = {k: ArtifactRecord(**v) for k, v in data.get("artifacts", {}).items()}
            known = set(cls.__dataclass_fields__)
            manifest = cls(**{k: v for k, v in record.items() if k in known})
        except (TypeError, AttributeError, KeyError) as exc:
            raise ManifestError(f"the run record is damaged ({exc})") from exc
        _check_types(manifest)
        return manifest

    def save(self, run_dir: Path) -> Path:
        """Write atomically: a temporary file in the same folder, fsync, then rename over the old one."""
        run_dir = Path(run_dir)
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


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxxxx``: sortable, unique; the job system uses the same ids for its jobs."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def load_manifest(run_dir: Path) -> RunManifest:
    """The run record of ``run_dir``: FileNotFoundError when there is none, ManifestError when it is damaged."""
    try:
        with open(Path(run_dir) / MANIFEST_NAME, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"the run record is not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError("the run record is not text") from exc
    return RunManifest.from_dict(data)


# --- migrations ------------------------------------------------------------------------------------------------

# Schema 1 artefact keys -> schema 2 keys (core/artifacts.py); paths stay where the old run wrote them.
_V1_ARTIFACT_KEYS = {
    "originals": "capture.originals", "images": "capture.images", "sparse_model": "sfm.model",
    "sfm_matches": "sfm.matches", "undistorted": "sfm.undistorted", "depth_maps": "depth.maps",
    "depth_prior": "depth_prior.maps", "dense_points_full": "fusion.points", "dense_points": "isolation.points",
    "mesh": "mesh.ply", "mesh_glb": "mesh.glb", "mesh_obj": "mesh.obj", "relief_depth": "relief.depth",
}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a record of an older schema version up to ``SCHEMA_VERSION`` (the only place that knows old layouts)."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ManifestError(f"the run record has schema version {version!r}; this studio reads up to "
                            f"{SCHEMA_VERSION}")
    if version == 1:
        data = _migrate_v1(data)
    return data


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    photos = []
    for index, p in enumerate(data.get("photos", [])):
        p = dict(p)
        p.setdefault("index", index)
        p["original"] = p.pop("stored_as", "")
        working = p.pop("working_image", None)
        p["working"] = Path(working).name if working else None
        photos.append(p)
    data["photos"] = photos
    relief = data.get("mode") == "single_photo"
    if relief:
        data["mode"] = "relief"
    artifacts = {}
    for key, path in data.get("artifacts", {}).items():
        new_key = _V1_ARTIFACT_KEYS.get(key, key)
        if relief and new_key.startswith("mesh."):
            new_key = "relief." + new_key.split(".", 1)[1]
        artifacts[new_key] = {"path": path} if isinstance(path, str) else path
    data["artifacts"] = artifacts
    data["stages"] = [{**s, "name": "depth"} if s.get("name") in ("depth_maps", "mvs") else s
                      for s in data.get("stages", [])]
    data["schema_version"] = SCHEMA_VERSION
    return data


def _check_types(manifest: RunManifest) -> None:
    """Fields the pages compute with must have their types; a hand-edited or damaged record fails here, once."""
    problems = []
    if not isinstance(manifest.status, str) or not isinstance(manifest.failure_reason, str):
        problems.append("status")
    for stage in manifest.stages:
        if not isinstance(stage.name, str) or not isinstance(stage.seconds, int | float) \
                or not isinstance(stage.metrics, dict):
            problems.append(f"stage {stage.name!r}")
        elif not all(isinstance(f.level, str) and isinstance(f.message, str) and isinstance(f.hint, str)
                     for f in stage.findings):
            problems.append(f"findings of stage {stage.name!r}")
    for photo in manifest.photos:
        if not isinstance(photo.name, str) or not isinstance(photo.warnings, list):
            problems.append("photos")
            break
    for key, record in manifest.artifacts.items():
        if not isinstance(record.path, str):
            problems.append(f"artefact {key!r}")
    if problems:
        raise ManifestError(f"the run record is damaged (wrongly typed: {', '.join(problems)})")


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
