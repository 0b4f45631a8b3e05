"""Command lines around the engine: ``python -m core.pipeline`` (run.py) and ``python -m core.cli.sample``."""
