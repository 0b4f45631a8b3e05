"""Operator settings: the environment variables that size and clean the studio's storage, read and checked here.

    PRODUCT_STUDIO_DATA_QUOTA_GB        most the data folder's drafts, uploads and runs may hold (default 0 = none)
    PRODUCT_STUDIO_MIN_FREE_GB          uploads are refused when the disk has less free (default 2)
    PRODUCT_STUDIO_DRAFT_RETENTION_H    drafts nobody started are deleted after this many hours (default 48)
    PRODUCT_STUDIO_SAMPLE_RUNS          sample runs kept; older ones are deleted at server start (default 3)
    PRODUCT_STUDIO_RUN_DAYS             finished runs nobody approved are deleted after this many days (0 = keep)
    PRODUCT_STUDIO_MAX_JOBS             runs at once (core/jobs/backend.py; default one per two cores)

A value that is not a number stops the app or command with one line that names the variable (``SettingsError``).
"""

from __future__ import annotations

import os
from pathlib import Path


class SettingsError(ValueError):
    """A setting with a value that cannot be used; the message is one line for the operator."""


def number_setting(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to a number (at least {minimum:g}) or unset "
                            "it.") from None
    if not value >= minimum:
        raise SettingsError(f"{name}={raw!r} is below {minimum:g}; set it to at least {minimum:g} or unset it.")
    return value


def data_quota_bytes() -> int:
    return int(number_setting("PRODUCT_STUDIO_DATA_QUOTA_GB", 0.0) * 1e9)


def min_free_bytes() -> int:
    return int(number_setting("PRODUCT_STUDIO_MIN_FREE_GB", 2.0) * 1e9)


def draft_retention_s() -> float:
    return number_setting("PRODUCT_STUDIO_DRAFT_RETENTION_H", 48.0) * 3600.0


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The whole number in ``$name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.lstrip("-").isdigit():
        raise SettingsError(f"{name}={raw!r} is not a whole number; set it to a number of at least {minimum} "
                            "or unset it.")
    if int(raw) < minimum:
        raise SettingsError(f"{name}={raw} is below {minimum}; set it to at least {minimum} or unset it.")
    return int(raw)


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


def sample_runs_kept() -> int:
    """``$PRODUCT_STUDIO_SAMPLE_RUNS``: sample runs kept; older ones are deleted (default 3)."""
    return env_int("PRODUCT_STUDIO_SAMPLE_RUNS", 3, minimum=1)


def run_retention_s() -> float:
    """``$PRODUCT_STUDIO_RUN_DAYS``: finished runs nobody approved are deleted after this many days (0 = kept)."""
    return number_setting("PRODUCT_STUDIO_RUN_DAYS", 0.0) * 86400.0
