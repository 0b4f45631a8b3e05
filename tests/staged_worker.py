"""The job worker with the tests' resumable stand-in pipeline (conftest.staged_run): ``PRODUCT_STUDIO_WORKER``.

``python -m tests.staged_worker JOB_ID`` for the local backend; the Ray backend calls this module's ``run_job``.
"""

import sys

from core.jobs.worker import main
from tests.conftest import staged_run

run_job = staged_run
"""What a Ray task of the tests runs for a job (core/jobs/ray_backend.py looks it up by this name)."""

if __name__ == "__main__":
    sys.exit(main(run=run_job))
