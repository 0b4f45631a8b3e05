"""What every pipeline stage returns, and how it reports progress.

A stage is one module with one typed entry function. It takes paths and config, reports progress through a
``ProgressFn``, and returns a ``StageOutput`` (or a subclass with extra fields). Expected failures (too few photos
placed, no overlap) come back as ``ok=False`` with a reason the user can act on; programming errors raise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import Finding

ProgressFn = Callable[[float, str], None]
"""progress(fraction in [0, 1] of the current stage, short message)."""


def no_progress(fraction: float, message: str) -> None:
    """A ProgressFn that ignores everything (for tests and library use)."""


class Cancelled(Exception):
    """Raised from a progress callback when the user cancelled the run."""


@dataclass
class StageOutput:
    """The common part of every stage result; the pipeline copies it into the manifest."""

    ok: bool = True
    failure: str = ""
    """Plain-language reason when ok is False, naming what the user can do."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Numbers only (and small lists/dicts of numbers), JSON-serialisable."""
    findings: list[Finding] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Stable artefact key -> absolute path of a file or folder this stage wrote."""
