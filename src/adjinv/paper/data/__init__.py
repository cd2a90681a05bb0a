"""Datasets, spec strings, corruptions and composites of the paper's experiments."""
