"""``python -m core.batch CATALOG_DIR --out RUNS_DIR [--backend ray]``: the catalogue batch command.

The code is in core/cli/batch.py; this module is the short name to run it by.
"""

import sys

from core.cli.batch import main

if __name__ == "__main__":
    sys.exit(main())
