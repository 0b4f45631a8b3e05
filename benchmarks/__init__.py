"""Accuracy and speed of the pipeline against ground truth (not part of the unit tests)."""
