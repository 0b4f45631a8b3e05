"""The job system: a service around the engine that the app and the CLIs use, never the other way round.

``store`` (SQLite: jobs, uploaded photos, reviews; the data folder), ``intake`` (uploads and zips checked with the
capture stage's own checks, jobs submitted), ``dispatch`` (local worker processes, dead-worker detection, cancel),
``worker`` (the process that runs a job's pipeline), ``status`` (progress, ETA and quality verdicts for the pages).
"""
