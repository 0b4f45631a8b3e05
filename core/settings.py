"""Operator settings: the environment variables that size and clean the studio's storage, read and checked here.

    PRODUCT_STUDIO_DATA_QUOTA_GB        most the data folder's drafts, uploads and runs may hold (default 0 = none)
    PRODUCT_STUDIO_MIN_FREE_GB          uploads are refused when the disk has less free (default 2)
    PRODUCT_STUDIO_DRAFT_RETENTION_H    drafts nobody started are deleted after this many hours (default 48)

A value that is not a number stops the app or command with one line that names the variable (``SettingsError``).
"""

from __future__ import annotations

import os


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
