"""The stages of a reconstruction, one module (or small package) each, one typed entry function each.

Multi-view: capture -> sfm -> masks -> depth -> depth_prior -> fusion -> isolation -> mesh -> asset. Single photo:
capture -> relief.
A stage's name is its module, its config section (core/config.py), its run folder (``RUN/<stage>/``) and the prefix
of its artefacts (core/artifacts.py). Every entry function takes its typed inputs (earlier stages' results), the run
folder, its config section and a ``StageProgress``, and returns a ``StageOutput`` subclass. Expected failures (too
few photos placed, no overlap) come back as ``ok=False`` with a reason the user can act on; programming errors raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.artifacts import Artifact
from core.manifest import Finding


@dataclass
class StageOutput:
    """The common part of every stage result; the pipeline copies it into the manifest."""

    ok: bool = True
    failure: str = ""
    """Plain-language reason when ok is False, naming what the user can do."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Numbers only (and small lists/dicts of numbers), JSON-serialisable."""
    findings: list[Finding] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    """Registered artefacts this stage wrote (complete when the stage returns)."""
