"""Check one uploaded photo in a child process: ``python -m core.jobs.photo_check PHOTO NAME MAX_FILE_BYTES
MAX_PIXELS``.

The app (core/jobs/intake.py) sends photos here that only a whole decode can check (not JPEG, more than
``core.stages.capture.IN_PROCESS_PIXELS``), so the server process never holds such a photo's pixels; the check is
the capture stage's own, and the thumbnail is made here too. Prints one JSON object: the check's status, reason,
warnings, width and height.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.config import CaptureConfig
from core.stages.capture import inspect_photo


def main(argv: list[str] | None = None) -> int:
    from core.jobs.intake import make_thumbnail

    photo, name, max_file_bytes, max_pixels = argv if argv is not None else sys.argv[1:]
    path = Path(photo)
    check = inspect_photo(path, CaptureConfig(max_file_bytes=int(max_file_bytes), max_pixels=int(max_pixels)), name)
    if check.accepted:
        make_thumbnail(path, path.parent / "thumbs")
    print(json.dumps({"status": check.status, "reason": check.reason, "warnings": check.warnings,
                      "width": check.width, "height": check.height}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
