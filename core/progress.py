"""Progress, written once: what a stage reports, what listeners receive, and the terminal bar.

A stage reports ``progress(fraction, message)`` for its own work (``StageProgress``). The pipeline turns that into a
``ProgressEvent`` (which stage, its label, the stage's fraction, the run's overall fraction, the message) for its
listener: the CLI's terminal bar, the job worker's database writes. Nobody parses progress text.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

StageProgress = Callable[[float, str], None]
"""progress(fraction in [0, 1] of the current stage, short message)."""


def no_progress(fraction: float, message: str) -> None:
    """A StageProgress that ignores everything (for tests and library use)."""


class Cancelled(Exception):
    """Raised from a progress callback when the user cancelled the run."""


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report of a run."""

    stage: str
    """The stage's name (core/stages/<stage>)."""
    label: str
    """What the user reads for the stage ("Placing cameras")."""
    stage_fraction: float
    overall: float
    """Share of the whole run that is done (stages weighted by their typical share of the time)."""
    message: str
    """What the stage is doing now, without the label."""


ProgressListener = Callable[[ProgressEvent], None]


def ignore_events(event: ProgressEvent) -> None:
    """A ProgressListener that ignores everything."""


class TerminalProgress:
    """One progress line on stderr: bar, percent, message, elapsed, ETA.

    Call it as a ``StageProgress`` (fraction, message), or hand ``.listener`` to the pipeline for its events.
    """

    def __init__(self, stream: TextIO = sys.stderr, width: int = 28) -> None:
        self.stream, self.width = stream, width
        self.started = time.monotonic()
        self.interactive = stream.isatty()
        self.last_message = ""

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        elapsed = time.monotonic() - self.started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
        filled = round(self.width * fraction)
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%}  {message}  "
                f"elapsed {clock(elapsed)}  ETA {clock(eta) if eta is not None else '--:--'}")
        if self.interactive:
            self.stream.write("\r\033[K" + line)
        elif message != self.last_message:  # logs and CI: one line per new message
            self.stream.write(line + "\n")
        self.last_message = message
        self.stream.flush()

    def listener(self, event: ProgressEvent) -> None:
        self(event.overall, f"{event.label}: {event.message}")

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def clock(seconds: float) -> str:
    """m:ss."""
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"
