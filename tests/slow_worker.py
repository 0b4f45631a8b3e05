"""The job worker with the tests' short, timed stand-in pipeline (conftest.slow_run): ``PRODUCT_STUDIO_WORKER``.

The dispatcher starts ``python -m tests.slow_worker JOB_ID`` instead of ``python -m core.jobs.worker JOB_ID`` when
that variable names this module, so job tests exercise real worker processes, the real store and real cancels in
seconds.
"""

import sys

from core.jobs.worker import main
from tests.conftest import slow_run

if __name__ == "__main__":
    sys.exit(main(run=slow_run))
