"""The identity of one photo, which every stage receives.

A photo has three names and they never mix: its ``index`` (position in what the user gave), the user's ``name``
(what every message, finding and page shows) and ``working``, the file name of its working copy in
``RUN/capture/images`` (what COLMAP, the depth maps and every per-photo file are named after). Stages get ``Photo``
objects from the capture stage and look them up by working name with ``PhotoSet``, so they write the user's names
from the start instead of having them patched in later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Photo:
    index: int
    """Position in the photos the user gave (0-based)."""
    name: str
    """The user's file name: display only, never a path."""
    working: str
    """File name of the working copy (``capture/images/<working>``)."""

    @property
    def stem(self) -> str:
        """The working name without its suffix: per-photo files of later stages are ``<stem>.<ext>``."""
        return Path(self.working).stem


class PhotoSet(Sequence[Photo]):
    """The accepted photos of a run, looked up by working name or stem."""

    def __init__(self, photos: Iterable[Photo]) -> None:
        self._photos = list(photos)
        self._by_working = {p.working: p for p in self._photos}
        self._by_stem = {p.stem: p for p in self._photos}

    def __getitem__(self, index):  # type: ignore[override]
        return self._photos[index]

    def __len__(self) -> int:
        return len(self._photos)

    def __iter__(self) -> Iterator[Photo]:
        return iter(self._photos)

    def by_working(self, working: str) -> Photo:
        """The photo whose working copy is ``working`` (a file name, or a path ending in one)."""
        return self._by_working[Path(working).name]

    def by_stem(self, stem: str) -> Photo | None:
        return self._by_stem.get(stem)

    def names(self, workings: Iterable[str]) -> list[str]:
        """The user's names of the given working names, in order."""
        return [self.by_working(w).name for w in workings]


def name_list(names: Sequence[str], limit: int = 8) -> str:
    """'a, b, c' with at most ``limit`` names and '...' for the rest: how findings list photos."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
