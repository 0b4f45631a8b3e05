"""Operator settings read from the environment, in one place, each checked with a one-line message.

    PRODUCT_STUDIO_DATA             the data folder (jobs database, drafts, uploads, runs); default <repo>/data
    PRODUCT_STUDIO_MAX_JOBS         runs at once (default: one per two cores)
    PRODUCT_STUDIO_QUOTA_GB         the most the data folder may hold; uploads are refused above it (0 = no quota)
    PRODUCT_STUDIO_DRAFT_HOURS      unsubmitted uploads (closed tabs) are deleted after this many hours (default 48)
    PRODUCT_STUDIO_SAMPLE_RUNS      sample runs kept; older ones are deleted (default 3)
    PRODUCT_STUDIO_RUN_DAYS         finished runs not approved are deleted after this many days (0 = keep, default)

A wrong value (``PRODUCT_STUDIO_MAX_JOBS=two``, a data path that is a file) raises ``SettingsError`` whose message
names the variable and what it must be; the CLI and the app show that one line, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path


class SettingsError(ValueError):
    """An operator setting has a value the studio cannot use (the message says which and why)."""


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The whole number in ``$name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to a number of at least {minimum} "
                            "or unset it.") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below {minimum}; set it to at least {minimum} or unset it.")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to a number of at least {minimum:g} "
                            "or unset it.") from None
    if value < minimum:
        raise SettingsError(f"{name}={value:g} is below {minimum:g}; set it to at least {minimum:g} or unset it.")
    return value


def checked_data_dir(path: Path) -> Path:
    """``path`` as a usable data folder: created when missing; a file or an unwritable folder is refused."""
    if path.exists() and not path.is_dir():
        raise SettingsError(f"PRODUCT_STUDIO_DATA={path} is a file, not a folder; point it at a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"PRODUCT_STUDIO_DATA={path} cannot be created ({exc.strerror}); point it at a "
                            "writable folder.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"PRODUCT_STUDIO_DATA={path} is not writable; point it at a writable folder.")
    return path


def quota_bytes() -> int:
    """``$PRODUCT_STUDIO_QUOTA_GB`` in bytes (0: no quota)."""
    return int(env_float("PRODUCT_STUDIO_QUOTA_GB", 0.0) * 1e9)


def draft_retention_s() -> float:
    return env_float("PRODUCT_STUDIO_DRAFT_HOURS", 48.0, minimum=0.01) * 3600.0


def sample_runs_kept() -> int:
    return env_int("PRODUCT_STUDIO_SAMPLE_RUNS", 3, minimum=1)


def run_retention_s() -> float:
    """Seconds after which a finished, unapproved run is deleted (0: runs are kept)."""
    return env_float("PRODUCT_STUDIO_RUN_DAYS", 0.0) * 86400.0


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total
