"""Reconstruct the bundled sample product through the job system, with progress on the terminal.

    python -m core.cli.sample [--preset preview|balanced|full] [--again]

Used by ``./studio sample`` before it starts the app, so the app opens with a finished run to look at.
The run is an ordinary job in the studio database: it shows up on Home, Viewer, Diagnostics and Review.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from core.config import PRESETS
from core.jobs.dispatch import dispatch
from core.jobs.intake import SAMPLE_SKU, sample_photos, submit_sample
from core.jobs.status import job_progress
from core.jobs.store import Store
from core.progress import TerminalProgress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.cli.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="balanced")
    parser.add_argument("--again", action="store_true", help="reconstruct even if a finished sample run exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not sample_photos():
        print("error: the sample photos are missing (assets/sample/images); regenerate them with "
              "`python -m benchmarks.synthetic --sample assets/sample`", file=sys.stderr)
        return 1
    store = Store()
    finished = [j for j in store.list_jobs(("done",)) if j.sku == SAMPLE_SKU and j.preset == args.preset]
    if finished and not args.again:
        print(f"the sample was already reconstructed (job {finished[0].id}); opening the studio")
        return 0
    job = submit_sample(store, preset=args.preset)
    print(f"reconstructing the sample product ({args.preset} preset) as job {job.id}")
    bar = TerminalProgress()
    while True:
        dispatch(store)  # also notices a worker that died
        current = store.get_job(job.id)
        if current is None:
            print("error: the job disappeared from the database", file=sys.stderr)
            return 1
        progress = job_progress(current)
        bar(progress.overall, progress.message or current.status)
        if current.is_final:
            break
        time.sleep(1.0)
    bar.close()
    if current.status != "done":
        print(f"error: the sample run {current.status}: {current.error}", file=sys.stderr)
        return 1
    print(f"done: {store.run_dir(current) / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
